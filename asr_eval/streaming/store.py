"""Streaming runs in the store: emission logs loaded from parts, metrics per recording and per
slice, and their one reader. Called by the single writer (``scoring.writer``) and by
``import-stream``; the schema is ``store/schema.py`` (``stream_*`` tables).

Per recording (``stream_scores``) the metrics are ``asr_eval.streaming.metrics.stream_metrics``
against the corpus's reference timing (``asr_eval.streaming.timing``). Per slice
(``stream_slices``; the whole run is the slice ``_all``/``all``, membership from
``asr_eval.slices``) they are pooled over the slice's recordings:

- latency mean / median / p90 over every matched character of every recording (each clock), with
  a percentile-bootstrap 95 % interval of the median that resamples *recordings* (characters of
  one recording are not independent), ``n_boot`` replicates, seed fixed;
- first-emission median over every segment that has one;
- flicker = Σ retracted ÷ Σ written characters; commits per minute = Σ commits ÷ Σ audio minutes;
- compute per audio second = Σ compute s ÷ Σ audio s; real time = every recording's lag bounded
  (NULL for imported logs, whose compute is unknown).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asr_eval.errors import AsrEvalError
from asr_eval.slices import ALL_ATTR, membership_sql, value_key
from asr_eval.store.tx import insert_arrow, replace_rows, transaction
from asr_eval.streaming.base import CLOCKS, Emission, StreamResult
from asr_eval.streaming.metrics import ReferenceTiming, latency_stats, stream_metrics
from asr_eval.streaming.run import STATS_FIELDS, emissions_from_json

CI_LEVEL = 0.95


# ───────────── loading ─────────────


def _events_table(run_id: str, logs: Mapping[str, Sequence[Emission]]) -> pa.Table:
    cols: dict[str, list] = {k: [] for k in ("run_id", "utt_id", "seq", "chunk", "emit_s", "emit_aware_s", "text",
                                             "tentative", "final")}
    for utt, ems in logs.items():
        for i, e in enumerate(ems):
            for k, v in (("run_id", run_id), ("utt_id", utt), ("seq", i), ("chunk", e.chunk), ("emit_s", e.emit_s),
                         ("emit_aware_s", e.emit_aware_s), ("text", e.text), ("tentative", e.tentative),
                         ("final", e.final)):
                cols[k].append(v)
    return pa.table(cols, schema=pa.schema([("run_id", pa.string()), ("utt_id", pa.string()), ("seq", pa.int32()),
                                            ("chunk", pa.int32()), ("emit_s", pa.float64()),
                                            ("emit_aware_s", pa.float64()), ("text", pa.string()),
                                            ("tentative", pa.string()), ("final", pa.bool_())]))


def store_stream_log(con: duckdb.DuckDBPyConnection, run_id: str, logs: Mapping[str, Sequence[Emission]],
                     stats: Mapping[str, Mapping[str, Any]]) -> int:
    """Replace a run's emission log and per-recording compute rows in one transaction."""
    rec_cols = ["utt_id", "audio_s", "chunk_s", "n_chunks", "decode_calls", "compute_s", "real_time", "final_lag_s",
                "max_lag_s", "lag_slope"]
    recs = pa.Table.from_pylist([{"run_id": run_id, **{c: (stats[u].get(c) if c != "utt_id" else u) for c in rec_cols}}
                                 for u in logs], schema=pa.schema(
        [("run_id", pa.string()), ("utt_id", pa.string()), ("audio_s", pa.float64()), ("chunk_s", pa.float64()),
         ("n_chunks", pa.int32()), ("decode_calls", pa.int32()), ("compute_s", pa.float64()),
         ("real_time", pa.bool_()), ("final_lag_s", pa.float64()), ("max_lag_s", pa.float64()),
         ("lag_slope", pa.float64())]))
    with transaction(con):
        con.execute("DELETE FROM stream_events WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM stream_recordings WHERE run_id = ?", [run_id])
        events = _events_table(run_id, logs)
        if events.num_rows:
            insert_arrow(con, "stream_events", events)
        if recs.num_rows:
            insert_arrow(con, "stream_recordings", recs)
    return len(logs)


def load_stream_events(con: duckdb.DuckDBPyConnection, run_id: str, parts: Sequence[Path]) -> int:
    """A streaming run's hash-checked parts (``emissions``, ``stream_stats`` columns) → the store."""
    logs: dict[str, list[Emission]] = {}
    stats: dict[str, dict] = {}
    for p in parts:
        t = pq.read_table(p, columns=["utt_id", "emissions", "stream_stats"])
        for u, e, s in zip(*(t.column(c).to_pylist() for c in ("utt_id", "emissions", "stream_stats"))):
            logs[u] = emissions_from_json(e)
            stats[u] = json.loads(s)
    return store_stream_log(con, run_id, logs, stats)


def stored_logs(con: duckdb.DuckDBPyConnection, run_id: str, utt_id: str | None = None) -> dict[str, list[Emission]]:
    """A run's emission log per recording (only ``utt_id``'s when given), in order."""
    out: dict[str, list[Emission]] = {}
    for u, a, b, t, tt, k, f in con.execute(
            "SELECT utt_id, emit_s, emit_aware_s, text, tentative, chunk, final FROM stream_events WHERE run_id = ? "
            "AND (? IS NULL OR utt_id = ?) ORDER BY utt_id, seq", [run_id, utt_id, utt_id]).fetchall():
        out.setdefault(u, []).append(Emission(a, b, t or "", tt or "", k, bool(f)))
    return out


def _recording_stats(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, dict[str, Any]]:
    cur = con.execute(f"SELECT utt_id, {', '.join(c for c in STATS_FIELDS)} FROM stream_recordings WHERE run_id = ?",
                      [run_id])
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names[1:], r[1:])) for r in cur.fetchall()}


# ───────────── scoring ─────────────

TimingSource = Callable[[str, "str | None", str], Mapping[str, ReferenceTiming]]  # (corpus path, split, profile)
DEFAULT_ALIGN_MODEL = "bundled:whisper-base"


def timing_source(align_model: str | None = DEFAULT_ALIGN_MODEL) -> TimingSource:
    """Reference timing of a corpus split by forced alignment with ``align_model`` (computed once
    per corpus and cached beside its shards: ``asr_eval.streaming.timing``); ``None`` or ``"none"``:
    the declared uniform fallback inside each segment."""
    def get(corpus_dir: str, split: str | None, profile: str) -> Mapping[str, ReferenceTiming]:
        from asr_eval.streaming.timing import corpus_timing, ct2_aligner

        aligner = ct2_aligner(align_model) if align_model and align_model != "none" else None
        return corpus_timing(corpus_dir, split, profile, aligner)

    return get


def score_stream_run(con: duckdb.DuckDBPyConnection, run_id: str, timings: Mapping[str, ReferenceTiming],
                     normalizer: str = "zh-v1") -> int:
    """``stream_scores`` of every recording of a streaming run (its stored log and compute rows)."""
    from asr_eval.text import get_profile

    prof = get_profile(normalizer)
    logs = stored_logs(con, run_id)
    stats = _recording_stats(con, run_id)
    rows = []
    for utt, ems in logs.items():
        if utt not in timings:
            raise AsrEvalError(f"streaming run {run_id}: no reference timing for recording {utt!r} "
                               "(the corpus changed after the run? re-run `asr-eval stream`)")
        st = stats.get(utt, {})
        res = StreamResult(text="".join(e.text for e in ems), emissions=ems, decode_calls=st.get("decode_calls") or 0,
                           compute_s=st.get("compute_s") or 0.0, audio_s=st.get("audio_s") or 0.0,
                           chunk_s=st.get("chunk_s") or 0.0, n_chunks=st.get("n_chunks") or 0)
        m = stream_metrics(res, timings[utt], prof.name)
        rows.append({
            "run_id": run_id, "utt_id": utt, "normalizer": prof.name, "normalizer_hash": prof.rules_hash,
            "timing_method": m.timing_method, "n_ref_chars": m.n_ref_chars, "n_matched": m.n_matched,
            "latency_unaware": _ms(m.clocks["unaware"].latencies_s), "latency_aware": _ms(m.clocks["aware"].latencies_s),
            "first_emission_unaware": json.dumps(m.clocks["unaware"].first_emission_s),
            "first_emission_aware": json.dumps(m.clocks["aware"].first_emission_s),
            "retracted_chars": m.retracted_chars, "written_chars": m.written_chars,
            "n_commits": sum(1 for e in ems if e.text.strip())})
    replace_rows(con, "stream_scores", "run_id = ? AND normalizer = ?", [run_id, prof.name], rows)
    return len(rows)


def _ms(values: Sequence[float]) -> str:
    """Latencies as stored: a JSON list rounded to 0.1 ms."""
    return json.dumps([round(v, 4) for v in values])


def _median_ci(per_rec: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> tuple[float | None, float | None]:
    """Percentile-bootstrap interval of the pooled median, resampling recordings."""
    have = [a for a in per_rec if len(a)]
    if len(have) < 2 or n_boot <= 0:
        return None, None
    meds = np.empty(n_boot)
    k = len(have)
    for b in range(n_boot):
        meds[b] = np.median(np.concatenate([have[i] for i in rng.integers(0, k, k)]))
    alpha = (1 - CI_LEVEL) / 2
    return float(np.quantile(meds, alpha)), float(np.quantile(meds, 1 - alpha))


def aggregate(recs: Sequence[Mapping[str, Any]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """One slice's pooled streaming metrics from its recordings' rows (module docstring)."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"n": len(recs), "audio_s": float(sum(r["audio_s"] or 0.0 for r in recs)),
                           "n_matched": int(sum(r["n_matched"] or 0 for r in recs))}
    for clock in CLOCKS:
        per = [np.asarray(json.loads(r[f"latency_{clock}"]) or [], float) for r in recs]
        pooled = np.concatenate(per) if per else np.empty(0)
        st = latency_stats(pooled.tolist())
        lo, hi = _median_ci(per, n_boot, rng)
        first = [f for r in recs for f in json.loads(r[f"first_emission_{clock}"]) or [] if f is not None]
        out |= {f"latency_mean_s_{clock}": st.mean_s, f"latency_median_s_{clock}": st.median_s,
                f"latency_p90_s_{clock}": st.p90_s, f"latency_median_lo_{clock}": lo,
                f"latency_median_hi_{clock}": hi,
                f"first_emission_median_s_{clock}": latency_stats(first).median_s}
    written = sum(r["written_chars"] or 0 for r in recs)
    out["flicker"] = sum(r["retracted_chars"] or 0 for r in recs) / written if written else 0.0
    out["commits_per_minute"] = sum(r["n_commits"] or 0 for r in recs) / (out["audio_s"] / 60) if out["audio_s"] else 0.0
    known = [r for r in recs if r["decode_calls"] is not None]
    out["decode_calls"] = int(sum(r["decode_calls"] for r in known)) if known else None
    out["compute_per_audio_s"] = (sum(r["compute_s"] or 0.0 for r in known) / sum(r["audio_s"] or 0.0 for r in known)
                                  if known and sum(r["audio_s"] or 0.0 for r in known) else None)
    rt = [r["real_time"] for r in recs if r["real_time"] is not None]
    out["real_time"] = all(rt) if rt else None
    out["timing_method"] = ", ".join(sorted({r["timing_method"] for r in recs if r["timing_method"]}))
    return out


def stream_slices(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str = "zh-v1",
                  slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0) -> int:
    """``stream_slices`` of a scored streaming run: the whole run and every value of ``slices``
    (default: the slice columns ``score`` tables by default)."""
    from asr_eval.slices import available_slices

    cid = con.execute("SELECT corpus_id FROM eval_runs WHERE run_id = ?", [run_id]).fetchall()
    if not cid:
        raise AsrEvalError(f"unknown run {run_id}")
    attrs = [ALL_ATTR] + [a for a in (slices if slices is not None else available_slices(con, cid[0][0]))
                          if a != ALL_ATTR]
    members = membership_sql(attrs)
    cur = con.execute(f"""
        SELECT m.attr, m.value, s.*, r.audio_s, r.decode_calls, r.compute_s, r.real_time
        FROM stream_scores s
        JOIN stream_recordings r ON r.run_id = s.run_id AND r.utt_id = s.utt_id
        JOIN {members} m ON m.corpus_id = $cid AND m.utt_id = s.utt_id
        WHERE s.run_id = $run AND s.normalizer = $norm""",
                      {"cid": cid[0][0], "run": run_id, "norm": normalizer,
                       **({"attrs": attrs} if "$attrs" in members else {})})
    names = [d[0] for d in cur.description]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in cur.fetchall():
        d = dict(zip(names, r))
        groups.setdefault((d["attr"], d["value"]), []).append(d)
    rows = [{"run_id": run_id, "normalizer": normalizer, "slice_attr": a, "slice_value": v, "n_boot": n_boot,
             **aggregate(recs, n_boot, seed)} for (a, v), recs in sorted(groups.items())]
    replace_rows(con, "stream_slices", "run_id = ? AND normalizer = ?", [run_id, normalizer], rows)
    return len(rows)


def recorded_align_model(con: duckdb.DuckDBPyConnection, run_id: str) -> str | None:
    """The model a streaming run's reference timing was aligned with, read back from its stored
    ``timing_method`` (``streaming.timing`` writes ``aligned:ct2-align:<model id>:…``): None for the
    uniform fallback, the default for a run not scored yet — so a rescore keeps each run's timing."""
    from asr_eval.streaming.timing import aligner_model, method_aligner

    row = con.execute("SELECT timing_method FROM stream_scores WHERE run_id = ? AND timing_method IS NOT NULL "
                      "LIMIT 1", [run_id]).fetchone()
    if row is None:
        return DEFAULT_ALIGN_MODEL
    if row[0] == "uniform":
        return None
    return aligner_model(method_aligner(row[0])) or DEFAULT_ALIGN_MODEL


def rescore_streams(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str = "zh-v1",
                    slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0) -> list[str]:
    """``analyse_streams`` for a rescore: each streaming run with the reference timing it was
    scored with (``recorded_align_model``), never silently re-timed with another aligner."""
    groups: dict[str | None, list[str]] = {}
    for r in stream_run_ids(con, run_ids):
        groups.setdefault(recorded_align_model(con, r), []).append(r)
    for model, ids in groups.items():
        analyse_streams(con, ids, timing_source(model), normalizer, slices, n_boot, seed)
    return [r for ids in groups.values() for r in ids]


def stream_run_ids(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> list[str]:
    """Those of ``run_ids`` that are streaming runs (ours or imported logs), in order."""
    if not run_ids:
        return []
    found = {r[0] for r in con.execute(
        "SELECT run_id FROM eval_runs WHERE stream_policy IS NOT NULL AND run_id IN (SELECT unnest(?))",
        [list(run_ids)]).fetchall()}
    return [r for r in run_ids if r in found]


def analyse_streams(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], timing: TimingSource,
                    normalizer: str = "zh-v1", slices: Sequence[str] | None = None, n_boot: int = 1000,
                    seed: int = 0) -> list[str]:
    """Score and slice the streaming runs among ``run_ids`` (others are skipped); reference timing
    is obtained once per (corpus, split) through ``timing``. Returns the streaming runs."""
    streams = stream_run_ids(con, run_ids)
    cache: dict[tuple, Mapping[str, ReferenceTiming]] = {}
    for r in streams:
        path, split = con.execute("SELECT c.path, e.split FROM eval_runs e JOIN corpora c USING (corpus_id) "
                                  "WHERE e.run_id = ?", [r]).fetchall()[0]
        key = (path, split)
        if key not in cache:
            cache[key] = timing(path, split, normalizer)
        score_stream_run(con, r, cache[key], normalizer)
        stream_slices(con, r, normalizer, slices, n_boot, seed)
    return streams


# ───────────── reading ─────────────


def stored_stream_slices(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str,
                         include_all: bool = True) -> list[dict[str, Any]]:
    """Stored ``stream_slices`` rows of some runs (every column), ``_all`` first, slices in order."""
    cur = con.execute(f"""
        SELECT * FROM stream_slices WHERE normalizer = $norm AND run_id IN (SELECT unnest($runs))
        {'' if include_all else f"AND slice_attr <> '{ALL_ATTR}'"}""", {"norm": normalizer, "runs": list(run_ids)})
    names = [d[0] for d in cur.description]
    found = [dict(zip(names, r)) for r in cur.fetchall()]
    order = {r: i for i, r in enumerate(run_ids)}
    return sorted(found, key=lambda r: (r["slice_attr"] != ALL_ATTR, r["slice_attr"], value_key(r["slice_value"]),
                                        order.get(r["run_id"], 0)))
