"""Open the store and bring it to the current schema version (see ``schema.py``).

Only one process may hold a DuckDB file read-write; a second open fails at once. We turn
that failure into a message that says which process pattern to use instead.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from asr_eval.errors import AsrEvalError
from asr_eval.store.schema import HALLUCINATION_SINCE, MIGRATIONS, SCHEMA_VERSION, TAXONOMY_ON_MER_UNITS
from asr_eval.store.tx import transaction

DEFAULT_DB = Path("reports") / "asr_eval.duckdb"


def _current_version(con: duckdb.DuckDBPyConnection) -> int:
    # fetchall, not fetchone: DuckDB 2 keeps a partly fetched result open on the connection, and
    # the caller's next `con.sql(...)` would fail with "connection has an unfinished result".
    has_meta = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'"
    ).fetchall()[0][0]
    if not has_meta:
        return 0
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else 0


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply pending migrations; return the schema version now in force."""
    version = _current_version(con)
    if version > SCHEMA_VERSION:
        raise AsrEvalError(
            f"store schema version {version} is newer than this asr-eval ({SCHEMA_VERSION}); "
            "upgrade asr-eval"
        )
    redo = _classified_runs(con) if 4 <= version < TAXONOMY_ON_MER_UNITS else []
    measure = _segmented_runs(con) if 2 <= version < HALLUCINATION_SINCE else []  # segments: since v2
    for i in range(version, SCHEMA_VERSION):
        with transaction(con):
            con.execute(MIGRATIONS[i])
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(i + 1)])
    if redo:
        _reclassify(con, redo)
    if measure:
        _measure_hallucination(con, measure)
    return SCHEMA_VERSION


def _classified_runs(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int, list[str]]]:
    """(run, normalizer, n_boot, slice columns) of every stored error taxonomy."""
    return [(r, n, int(b or 1000), list(a)) for r, n, b, a in con.execute(
        "SELECT run_id, normalizer, max(n_boot), list(DISTINCT slice_attr ORDER BY slice_attr) FROM error_slices "
        "GROUP BY ALL ORDER BY ALL").fetchall()]


def _reclassify(con: duckdb.DuckDBPyConnection, runs: list[tuple[str, str, int, list[str]]]) -> None:
    """v6 moved the error taxonomy to MER units and dropped the character-level rows: classify
    those runs again from their stored normalized texts (no inference), with the slices, bootstrap
    size and interval method they had. A run that cannot be (its normalizer profile is gone) is
    left unclassified: ``asr-eval errors`` / ``rescore`` say what to do."""
    from asr_eval.progress import heartbeat
    from asr_eval.scoring.analysis import stored_ci_method
    from asr_eval.scoring.errors import error_taxonomy
    from asr_eval.slices import ALL_ATTR

    with heartbeat(f"store schema v{TAXONOMY_ON_MER_UNITS}: the error taxonomy of {len(runs)} run(s) on MER units",
                   spinner=False):
        for run, norm, n_boot, attrs in runs:
            try:
                error_taxonomy(con, run, norm, [a for a in attrs if a != ALL_ATTR], n_boot=n_boot,
                               ci_method=stored_ci_method(con, run))
            except AsrEvalError:
                continue


def _segmented_runs(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, list[str]]]:
    """(run, normalizer, slice columns) of every scored run on a corpus with reference segments."""
    return [(r, n, list(a)) for r, n, a in con.execute("""
        SELECT s.run_id, s.normalizer, list(DISTINCT s.slice_attr ORDER BY s.slice_attr) FROM slice_metrics s
        JOIN eval_runs e USING (run_id)
        WHERE e.corpus_id IN (SELECT DISTINCT corpus_id FROM utterances WHERE segments IS NOT NULL)
        GROUP BY ALL ORDER BY ALL""").fetchall()]


def _measure_hallucination(con: duckdb.DuckDBPyConnection, runs: list[tuple[str, str, list[str]]]) -> None:
    """v7 added hallucination over silence: measure the runs an older store scored on recordings
    with reference segments (from their stored hypotheses, segments and emission logs; no
    inference), with the slices they were scored with. A run that cannot be (its normalizer
    profile is gone) is left unmeasured: ``rescore`` says what to do."""
    from asr_eval.progress import heartbeat
    from asr_eval.scoring.hallucination import hallucination_scores
    from asr_eval.slices import ALL_ATTR

    with heartbeat(f"store schema v{HALLUCINATION_SINCE}: hallucination over silence of {len(runs)} run(s)",
                   spinner=False):
        for run, norm, attrs in runs:
            try:
                hallucination_scores(con, run, norm, [a for a in attrs if a != ALL_ATTR])
            except AsrEvalError:
                continue


def connect(path: str | Path = DEFAULT_DB, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Connect to the store (creating and migrating it unless ``read_only``)."""
    path = Path(path)
    if read_only and not path.exists():
        raise AsrEvalError(f"no store at {path}: run `asr-eval score` first or pass --db")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        raise AsrEvalError(
            f"cannot open store {path}: {exc}. DuckDB lets one process hold the file; "
            "stop the other asr-eval process (or point --db at a copy) and retry"
        ) from exc
    if not read_only:
        migrate(con)
    elif 0 < _current_version(con) < SCHEMA_VERSION:  # an older store: bring it up to date once, then read
        con.close()
        connect(path).close()
        return connect(path, read_only=True)
    return con
