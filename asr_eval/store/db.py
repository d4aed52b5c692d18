"""Open the store and bring it to the current schema version (see ``schema.py``).

Only one process may hold a DuckDB file read-write; a second open fails at once. We turn
that failure into a message that says which process pattern to use instead.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from asr_eval.errors import AsrEvalError
from asr_eval.store.schema import MIGRATIONS, SCHEMA_VERSION
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
    for i in range(version, SCHEMA_VERSION):
        with transaction(con):
            con.execute(MIGRATIONS[i])
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(i + 1)])
    return SCHEMA_VERSION


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
