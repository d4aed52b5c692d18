"""Hallucination over silence in the store: per recording (``hallucination_scores``) and per slice
(``hallucination_slices``; membership from ``asr_eval.slices``, the whole run is ``_all``/``all``),
for every run whose recordings have reference segments — offline long-form runs, streaming runs and
imported streaming logs alike. The measures are ``asr_eval.metrics.hallucination``'s.

Each recording's time bound comes from what the run stored: a streaming run's (or imported log's)
emission log (``stream_events``: the computation-unaware emission time of each committed
character); an offline run's hypothesis segments (``hypotheses.segments``); else none. A recording
of a streaming run without a log has no hypothesis (nothing inserted). Recordings without
reference segments are not measured (no row, not zeros); a run with none has no rows at all.

``hallucination_scores`` is called by ``scoring.analysis.analyse`` right after a run's scores (so by
the writer, ``import-stream``, ``import-hyps`` and every rescore), and by ``store.db.migrate`` for the
runs an older store scored. Readers at the end serve ``stream_summary`` and the report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import duckdb

from asr_eval import slices as slices_mod
from asr_eval.errors import AsrEvalError
from asr_eval.metrics.hallucination import (
    MIN_SILENCE_S,
    HypothesisUnits,
    ReferenceUnits,
    measure,
)
from asr_eval.store.tx import replace_rows

SUMS = ("ref_units", "inserted", "inserted_in_silence", "repeated_insertions")


def _segments(v: Any) -> list | None:
    return json.loads(v) if isinstance(v, str) else v


def hallucination_scores(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str = "zh-v1",
                         slices: Sequence[str] | None = None) -> int:
    """Measure every recording of a run that has reference segments, store the rows, then
    ``hallucination_slices``. Returns the number of recordings measured."""
    from asr_eval.text import get_profile

    prof = get_profile(normalizer)
    run = con.execute("SELECT corpus_id, split, stream_policy FROM eval_runs WHERE run_id = ?", [run_id]).fetchall()
    if not run:
        raise AsrEvalError(f"unknown run {run_id}; see `asr-eval runs`")
    cid, split, policy = run[0]
    found = con.execute("""
        SELECT u.utt_id, u.duration_s, u.segments::VARCHAR, h.hyp_raw, h.segments::VARCHAR
        FROM utterances u LEFT JOIN hypotheses h ON h.run_id = ? AND h.utt_id = u.utt_id
        WHERE u.corpus_id = ? AND (? IS NULL OR u.split = ?) AND u.segments IS NOT NULL
        ORDER BY u.utt_id""", [run_id, cid, split, split]).fetchall()
    logs: dict[str, list] = {}
    if policy is not None and found:
        from asr_eval.streaming.store import stored_logs

        logs = stored_logs(con, run_id)
    rows = []
    for utt, dur, ref_segs, hyp_raw, hyp_segs in found:
        segs = _segments(ref_segs)
        if not segs:
            continue
        ref = ReferenceUnits.from_segments(segs, float(dur or 0.0), prof)
        if policy is not None:
            hyp = HypothesisUnits.committed(logs.get(utt, []), prof)
        else:
            hyp = HypothesisUnits.segmented(hyp_raw, _segments(hyp_segs), prof)
        m = measure(ref, hyp)
        rows.append({
            "run_id": run_id, "utt_id": utt, "normalizer": prof.name, "normalizer_hash": prof.rules_hash,
            "time_bound": m.bound, "min_silence_s": MIN_SILENCE_S, "ref_units": m.ref_units, "hyp_units": m.hyp_units,
            "inserted": m.inserted, "inserted_in_silence": m.inserted_in_silence,
            "repeated_insertions": m.repeated_insertions, "silence_s": round(m.silence_s, 6),
            "examples": json.dumps([{"text": e.text, "gap_start_s": e.gap_start_s, "gap_end_s": e.gap_end_s,
                                     "emit_s": e.emit_s, "repeated": e.repeated} for e in m.examples],
                                   ensure_ascii=False)})
    replace_rows(con, "hallucination_scores", "run_id = ? AND normalizer = ?", [run_id, prof.name], rows)
    hallucination_slices(con, run_id, prof.name, slices)
    return len(rows)


def hallucination_slices(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str = "zh-v1",
                         slices: Sequence[str] | None = None) -> int:
    """Sums over the measured recordings of the whole run and of every value of ``slices``
    (default: ``asr_eval.slices.available_slices``)."""
    from asr_eval.text import get_profile

    prof = get_profile(normalizer)
    have = con.execute("SELECT 1 FROM hallucination_scores WHERE run_id = ? AND normalizer = ? LIMIT 1",
                       [run_id, prof.name]).fetchall()
    rows: list[dict[str, Any]] = []
    if have:
        cid = con.execute("SELECT corpus_id FROM eval_runs WHERE run_id = ?", [run_id]).fetchall()[0][0]
        attrs = [slices_mod.ALL_ATTR] + [a for a in (slices if slices is not None
                                                     else slices_mod.available_slices(con, cid))
                                         if a != slices_mod.ALL_ATTR]
        members = slices_mod.membership_sql(attrs)
        cur = con.execute(f"""
            SELECT m.attr AS slice_attr, m.value AS slice_value, count(*) AS n,
                   {', '.join(f'sum(s.{c})::BIGINT AS {c}' for c in SUMS)}, sum(s.silence_s) AS silence_s,
                   max(s.min_silence_s) AS min_silence_s
            FROM hallucination_scores s JOIN {members} m ON m.corpus_id = $cid AND m.utt_id = s.utt_id
            WHERE s.run_id = $run AND s.normalizer = $norm
            GROUP BY ALL ORDER BY ALL""", {"cid": cid, "run": run_id, "norm": prof.name,
                                            **({"attrs": attrs} if "$attrs" in members else {})})
        names = [d[0] for d in cur.description]
        rows = [{"run_id": run_id, "normalizer": prof.name, "normalizer_hash": prof.rules_hash,
                 **dict(zip(names, r))} for r in cur.fetchall()]
    return replace_rows(con, "hallucination_slices", "run_id = ? AND normalizer = ?", [run_id, prof.name], rows)


# ───────────────────────────── readers ─────────────────────────────


def has_hallucination_tables(con: duckdb.DuckDBPyConnection) -> bool:
    """False for a store that predates them (opened read-only, not migrated)."""
    from asr_eval.store.schema import HALLUCINATION_TABLES

    have = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    return all(t in have for t in HALLUCINATION_TABLES)


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def stored_hallucination_slices(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str,
                                include_all: bool = True) -> list[dict[str, Any]]:
    """Stored ``hallucination_slices`` rows of some runs, ``_all`` first, slices in order, runs in
    the given order (none on a store without the tables)."""
    if not run_ids or not has_hallucination_tables(con):
        return []
    rows = _dicts(con.execute(f"""
        SELECT * FROM hallucination_slices WHERE normalizer = $norm AND run_id IN (SELECT unnest($runs))
        {'' if include_all else f"AND slice_attr <> '{slices_mod.ALL_ATTR}'"}""",
                              {"norm": normalizer, "runs": list(run_ids)}))
    order = {r: i for i, r in enumerate(run_ids)}
    return sorted(rows, key=lambda r: (r["slice_attr"] != slices_mod.ALL_ATTR, r["slice_attr"],
                                       slices_mod.value_key(r["slice_value"]), order.get(r["run_id"], 0)))


def run_totals(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str) -> dict[str, dict[str, Any]]:
    """Each measured run's whole-run row: ``n`` (recordings measured), ``ref_units``, ``inserted``,
    ``inserted_in_silence``, ``repeated_insertions``, ``silence_s``."""
    keep = ("n", *SUMS, "silence_s", "min_silence_s")
    return {r["run_id"]: {k: r[k] for k in keep} for r in stored_hallucination_slices(con, run_ids, normalizer)
            if r["slice_attr"] == slices_mod.ALL_ATTR}


def top_examples(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str, k: int = 3) -> list[dict[str, Any]]:
    """A run's ``k`` longest examples of text in silence over all its recordings (ties: by
    recording, then time), each with its ``utt_id``."""
    if not has_hallucination_tables(con):
        return []
    out = []
    for utt, ex in con.execute("SELECT utt_id, examples::VARCHAR FROM hallucination_scores WHERE run_id = ? AND "
                               "normalizer = ? AND inserted_in_silence > 0 ORDER BY utt_id",
                               [run_id, normalizer]).fetchall():
        out += [{"utt_id": utt, **e} for e in json.loads(ex or "[]")]
    return sorted(out, key=lambda e: (-len(e["text"]), e["utt_id"], e["gap_start_s"]))[:k]
