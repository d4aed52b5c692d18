"""Exports of stored results for other tools, written by DuckDB ``COPY`` straight from the store.

* NeMo manifest JSONL per run — ``audio_filepath``, ``duration``, ``text``, ``pred_text`` (plus
  ``utt_id``, the raw texts and the normalizer), readable by NeMo's ``speech_to_text_eval.py``
  and ``manifest_utils.read_manifest``.
* open_asr_leaderboard-style JSONL per run — file ``MODEL_<model>_DATASET_<corpus>_<split>.jsonl``
  with rows ``audio_filepath``, ``duration``, ``time``, ``text``, ``pred_text`` as that
  project's ``write_manifest`` writes them, so its ``score_results`` can read the folder.
* Slice metrics and paired comparisons as CSV, one row per stored row, with model and corpus.
* A streaming run's emission log as JSONL (``stream/<run>.jsonl``) in the format ``asr-eval
  import-stream`` reads: per emission, its committed increment (``final: true``) and then, when
  the tentative tail changed, the tail (``final: false``), with ``emit_s`` (computation-unaware
  clock), ``emit_aware_s`` and ``chunk`` — so an exported log re-imports as the same hypotheses.

``text``/``pred_text`` are the *normalized* reference and hypothesis the scores were computed from
(as the leaderboard writes them); an unscored hypothesis falls back to the raw text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from asr_eval.report.select import RunInfo, Selection, check_store, select
from asr_eval.slices import COMPARISON_COLUMNS, SLICE_METRIC_COLUMNS
from asr_eval.store import connect


@dataclass(frozen=True)
class ExportResult:
    files: tuple[Path | str, ...]  # local files, or URLs for an export to object storage
    rows: dict[str, int]  # file name -> rows written


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _slug(text: str) -> str:
    """File-name-safe text, '/' → '-' as open_asr_leaderboard does for model and dataset ids."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text.replace("/", "-")).strip("-") or "x"


def _predictions_sql(extra: str) -> str:
    return f"""
    SELECT coalesce(u.source_path, h.utt_id) AS audio_filepath, u.duration_s AS duration, {extra}
    FROM hypotheses h
    JOIN eval_runs r ON r.run_id = h.run_id
    LEFT JOIN utterances u ON u.corpus_id = r.corpus_id AND u.utt_id = h.utt_id
    LEFT JOIN utterance_scores s ON s.run_id = h.run_id AND s.utt_id = h.utt_id AND s.normalizer = $norm
    WHERE h.run_id = $run
    ORDER BY h.utt_id"""


_TEXTS = "coalesce(s.ref_norm, u.text) AS text, coalesce(s.hyp_norm, h.hyp_raw, '') AS pred_text"


def export_nemo_manifest(con: duckdb.DuckDBPyConnection, run_id: str, path: str | Path,
                         normalizer: str | None) -> int:
    """One run's predictions as a NeMo manifest (JSON lines); returns the number of rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sql = _predictions_sql(f"{_TEXTS}, h.utt_id, u.text AS text_raw, h.hyp_raw AS pred_text_raw, "
                           "CASE WHEN s.run_id IS NULL THEN NULL ELSE $norm END AS normalizer")
    con.execute(f"COPY ({sql}) TO {_sql_path(path)} (FORMAT json)", {"run": run_id, "norm": normalizer})
    return _count_lines(path)


def leaderboard_name(run: RunInfo, tag: str = "") -> str:
    split = _slug(run.split or "all") + (f"-{_slug(tag)}" if tag else "")
    return f"MODEL_{_slug(run.model_name)}_DATASET_{_slug(run.corpus_name)}_{split}.jsonl"


def export_leaderboard(con: duckdb.DuckDBPyConnection, run: RunInfo, out_dir: str | Path,
                       normalizer: str | None, tag: str = "") -> Path:
    """One run as open_asr_leaderboard JSONL. Per-utterance decode times are not recorded, so
    ``time`` apportions the run's processing time by duration (duration / RTFx): the file's
    RTFx then equals the run's, and it is null when the run has no RTFx."""
    path = Path(out_dir) / leaderboard_name(run, tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    sql = _predictions_sql(f"u.duration_s / $rtfx AS time, {_TEXTS}")
    con.execute(f"COPY ({sql}) TO {_sql_path(path)} (FORMAT json)",
                {"run": run.run_id, "norm": normalizer, "rtfx": run.rtfx or None})
    return path


def export_slice_metrics_csv(con: duckdb.DuckDBPyConnection, sel: Selection, path: str | Path) -> int:
    """Stored per-slice metrics (incl. the '_all' row) of the selected runs as CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ", ".join(f"sm.{c}" for c in SLICE_METRIC_COLUMNS if c != "run_id")
    sql = f"""
    SELECT sm.run_id, r.model_id, coalesce(m.name, r.model_id) AS model_name, r.corpus_id, r.split, {cols}
    FROM slice_metrics sm JOIN eval_runs r USING (run_id) LEFT JOIN models m ON m.model_id = r.model_id
    WHERE sm.run_id IN (SELECT unnest($runs)) AND sm.normalizer = $norm
    ORDER BY r.corpus_id, sm.slice_attr, sm.slice_value, sm.run_id"""
    con.execute(f"COPY ({sql}) TO {_sql_path(path)} (FORMAT csv, HEADER)",
                {"runs": sel.run_ids, "norm": sel.normalizer})
    return _count_lines(path) - 1


def export_comparisons_csv(con: duckdb.DuckDBPyConnection, sel: Selection, path: str | Path) -> int:
    """Stored paired comparisons between the selected runs as CSV (raw and adjusted p, evidence, MDE)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sql = f"""
    SELECT {', '.join(COMPARISON_COLUMNS)} FROM comparisons
    WHERE run_a IN (SELECT unnest($runs)) AND run_b IN (SELECT unnest($runs)) AND normalizer = $norm
    ORDER BY metric, slice_attr, slice_value, run_a, run_b"""
    con.execute(f"COPY ({sql}) TO {_sql_path(path)} (FORMAT csv, HEADER)",
                {"runs": sel.run_ids, "norm": sel.normalizer})
    return _count_lines(path) - 1


def export_stream_log(con: duckdb.DuckDBPyConnection, run_id: str, path: str | Path) -> int:
    """A streaming run's emission log as import-stream JSONL (module docstring); returns lines written."""
    import json

    from asr_eval.streaming.store import stored_logs

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for utt, ems in stored_logs(con, run_id).items():
        shown = ""
        for e in ems:
            base = {"utt_id": utt, "emit_s": e.emit_s, "emit_aware_s": e.emit_aware_s, "chunk": e.chunk}
            if e.text or e.final or e.tentative == "" != shown:
                lines.append({**base, "text": e.text, "final": True, **({"tentative": e.tentative} if e.tentative else {})})
            elif e.tentative != shown:
                lines.append({**base, "text": e.tentative, "final": False})
            shown = e.tentative
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8")
    tmp.replace(path)
    return len(lines)


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def export_all(db: str | Path | duckdb.DuckDBPyConnection, out_dir: str | Path, runs: Sequence[str] = (),
               corpora: Sequence[str] = (), normalizer: str | None = None) -> ExportResult:
    """Every export for the selected runs into ``out_dir`` (nemo/, leaderboard/, stream/, CSVs), a
    folder or a URL: DuckDB writes local files, so for a URL they are written to a temporary folder
    and uploaded (each file one PUT); ``files`` then holds the URLs."""
    from asr_eval import storage

    dest = storage.location(out_dir)
    if not dest.is_local:
        import tempfile

        storage.makedirs(dest)
        with tempfile.TemporaryDirectory(prefix="asr-eval-export-") as tmp:
            res = export_all(db, tmp, runs, corpora, normalizer)
            urls = []
            for f in res.files:
                url = dest / Path(f).relative_to(tmp).as_posix()
                storage.put_file(Path(f), url)
                urls.append(storage.redact(url))
        return ExportResult(tuple(urls), res.rows)
    own = not isinstance(db, duckdb.DuckDBPyConnection)
    con = connect(db, read_only=True) if own else db
    try:
        check_store(con, str(db) if own else "the database")
        sel = select(con, runs, corpora, normalizer)
        out = Path(out_dir)
        files: list[Path] = []
        counts: dict[str, int] = {}
        for run in (*sel.runs, *sel.unscored):
            p = out / "nemo" / f"{_slug(run.run_id)}.jsonl"
            counts[p.name] = export_nemo_manifest(con, run.run_id, p, sel.normalizer)
            # The same model twice on one corpus split would share a leaderboard file name.
            tag = run.run_id[:8] if leaderboard_name(run) in counts else ""
            lb = export_leaderboard(con, run, out / "leaderboard", sel.normalizer, tag)
            counts[lb.name] = _count_lines(lb)
            files += [p, lb]
            if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'stream_events'"
                           ).fetchall()[0][0] and con.execute("SELECT count(*) FROM stream_events WHERE run_id = ?",
                                                               [run.run_id]).fetchall()[0][0]:
                sp = out / "stream" / f"{_slug(run.run_id)}.jsonl"
                counts[sp.name] = export_stream_log(con, run.run_id, sp)
                files.append(sp)
        if sel.runs:
            for name, fn in (("slice_metrics.csv", export_slice_metrics_csv),
                             ("comparisons.csv", export_comparisons_csv)):
                counts[name] = fn(con, sel, out / name)
                files.append(out / name)
        return ExportResult(tuple(files), counts)
    finally:
        if own:
            con.close()
