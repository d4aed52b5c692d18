"""Streaming evaluation end to end — what ``asr-eval stream``, ``asr-eval import-stream``, the
``stream`` flow and the report call:

* ``stream_models``: per model configuration, one *offline* run (the same model, engine, recipe
  and preprocessing under a long-form strategy, ``vad`` by default) and one streaming run per
  policy × chunk size; all transcribed through ``scoring.parts`` (resumable parts) and written by
  the single writer, which scores CER per slice, compares every pair (so ΔCER of each streaming
  run against its offline run, paired over recordings, is a stored comparison) and scores the
  streaming metrics against the corpus's reference timing.
* ``import_stream``: another system's streaming log (a folder of whisper_streaming outputs, or a
  JSONL file) → a run of ``kind = 'import'`` with ``stream_policy = 'import'``, scored the same way
  and compared with every stored run of the split. The run id hashes the name and the log bytes,
  so importing the same log twice gives one run.
* ``stream_summary``: one row per streaming run (CER with its interval, ΔCER against a chosen
  offline run, latency per clock, flicker, compute, real time) for tables, JSON and the report.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from asr_eval.errors import AsrEvalError
from asr_eval.metrics.stats import Evidence, insufficient, stored_reliable
from asr_eval.scoring.parts import RunSpec
from asr_eval.slices import ALL_ATTR, ALL_VALUE
from asr_eval.streaming.base import Emission
from asr_eval.streaming.store import DEFAULT_ALIGN_MODEL

NO_OFFLINE = ("none", "")
IMPORT_POLICY = "import"


@dataclass(frozen=True)
class StreamRuns:
    """Run ids of one ``stream_models`` call: streaming runs in order, and each one's offline run."""

    streams: list[str]
    offline_of: dict[str, str]

    @property
    def offline(self) -> list[str]:
        return list(dict.fromkeys(self.offline_of.values()))


def stream_specs(bases: Sequence[RunSpec], axes: Sequence[dict[str, Any]], offline_strategy: str = "vad"
                 ) -> tuple[list[RunSpec], list[tuple[int, int | None]]]:
    """The run specs to transcribe — for each base configuration its offline spec (unless
    ``offline_strategy`` is ``none``), then one streaming spec per axis — and, per streaming spec,
    (its index, its offline spec's index or None)."""
    from asr_eval.scoring.parts import _strategies

    specs: list[RunSpec] = []
    pairs: list[tuple[int, int | None]] = []
    for base in bases:
        off = None
        if offline_strategy not in NO_OFFLINE:
            (name, params), = _strategies([offline_strategy], {})
            off = len(specs)
            specs.append(replace(base, strategy=name, strategy_params=params, stream=None))
        for axis in axes:
            pairs.append((len(specs), off))
            specs.append(replace(base, strategy="short", strategy_params={}, stream=dict(axis)))
    return specs, pairs


def stream_models(corpus_dir: str | Path, bases: Sequence[RunSpec], axes: Sequence[dict[str, Any]], db: str | Path,
                  offline_strategy: str = "vad", split: str | None = "auto", normalizer: str = "zh-v1",
                  slices: Sequence[str] | None = None, parts_root: str | Path | None = None, n_boot: int = 1000,
                  progress: bool = True, align_model: str | None = DEFAULT_ALIGN_MODEL) -> StreamRuns:
    """Transcribe and score the offline and streaming runs of every base configuration."""
    from asr_eval.scoring.writer import score_models

    specs, pairs = stream_specs(bases, axes, offline_strategy)
    ids = score_models(corpus_dir, specs, db, split=split, slices=slices, normalizer=normalizer,
                       parts_root=parts_root, n_boot=n_boot, progress=progress, align_model=align_model)
    by_spec = dict(enumerate(ids))
    return StreamRuns([by_spec[i] for i, _ in pairs],
                      {by_spec[i]: by_spec[o] for i, o in pairs if o is not None})


# ───────────── other systems' streaming logs ─────────────


@dataclass(frozen=True)
class StreamImport:
    run_id: str
    model_id: str
    split: str | None
    format: str
    n_matched: int  # recordings with a log
    n_missing: int  # recordings of the split without one: scored as full deletions
    compared_with: tuple[str, ...]

    @property
    def n(self) -> int:
        """Recordings of the split the run's CER is computed over (with and without a log)."""
        return self.n_matched + self.n_missing


def _read_logs(path: Path, known: Mapping[str, float], stems: Mapping[str, str]) -> tuple[dict[str, list[Emission]],
                                                                                         str, str]:
    """(emissions per utt_id, format, sha256 of the log bytes) of a folder or a JSONL file."""
    from asr_eval.streaming.logs import read_jsonl_stream, read_stream_folder

    h = hashlib.sha256()
    if path.is_dir():
        logs = read_stream_folder(path, known, stems)
        for p in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
        return logs, "whisper_streaming", h.hexdigest()
    if path.is_file():
        logs = read_jsonl_stream(path, known)
        h.update(path.read_bytes())
        return logs, "jsonl", h.hexdigest()
    raise AsrEvalError(f"{path} does not exist; pass a folder of whisper_streaming logs (one per recording) "
                       "or a JSONL streaming log")


def import_stream(corpus_dir: str | Path, path: str | Path, name: str, db: str | Path, split: str | None = "auto",
                  normalizer: str = "zh-v1", slices: Sequence[str] | None = None, n_boot: int = 1000,
                  engine_notes: str | None = None, align_model: str | None = DEFAULT_ALIGN_MODEL) -> StreamImport:
    """Read, validate (every problem of every file is one error; nothing half-imported), then —
    one writer — register the run, its hypotheses (each recording's committed text) and its
    emission log, score it per slice, compare it with the split's stored runs, and score its
    streaming metrics."""
    import pyarrow as pa

    from asr_eval.corpus_handle import open_corpus
    from asr_eval.importing import import_run_id
    from asr_eval.provenance import package_versions
    from asr_eval.scoring.analysis import analyse_with_stored
    from asr_eval.store import connect
    from asr_eval.store.load import load_corpus, load_hypotheses, register_model, upsert_eval_run
    from asr_eval.streaming.store import analyse_streams, store_stream_log, timing_source
    from asr_eval.text import get_profile

    name = (name or "").strip()
    if not name:
        raise AsrEvalError("--name must name the system the streaming log comes from (e.g. whisper-streaming-base)")
    get_profile(normalizer)
    corpus = open_corpus(corpus_dir)
    split = corpus.resolve_split(split)
    meta = corpus.read_metadata().to_pylist()
    rows = [r for r in meta if split is None or r["split"] == split]
    known = {r["utt_id"]: float(r["duration_s"]) for r in rows}
    stems = {Path(r["source_path"]).stem: r["utt_id"] for r in rows if r.get("source_path")}
    logs, fmt, sha = _read_logs(Path(path), known, stems)
    if not logs:
        raise AsrEvalError(f"{path}: no recording of split {split or 'all'} has a log; nothing to import")
    run_id = import_run_id(f"stream-{name}", sha, corpus.corpus_id, split)
    model_id = f"import:{name}@{sha[:12]}"
    ids = sorted(logs)
    hyps = pa.table({"utt_id": pa.array(ids, pa.string()),
                     "hyp_raw": pa.array(["".join(e.text for e in logs[u]) for u in ids], pa.string())})
    stats = {u: {"audio_s": known[u]} for u in ids}  # compute is unknown for another system's log
    now = datetime.now(UTC).replace(tzinfo=None)
    con = connect(db)
    try:
        load_corpus(con, corpus)
        register_model(con, {"model_id": model_id, "name": name, "source": "import", "path": str(Path(path).resolve()),
                             "revision": sha, "display_name": name, "config": {"format": fmt, "engine_notes": engine_notes}})
        n = load_hypotheses(con, run_id, hyps)
        store_stream_log(con, run_id, logs, stats)
        upsert_eval_run(con, {
            "run_id": run_id, "corpus_id": corpus.corpus_id, "split": split, "model_id": model_id, "status": "done",
            "started_at": now, "finished_at": now, "versions": package_versions(), "n_utts": n,
            "audio_s": sum(known[u] for u in ids), "kind": "import", "engine": "import", "preprocessing": None,
            "recipe": None, "strategy": None, "stream_policy": IMPORT_POLICY, "stream_params": {"format": fmt},
            "n_missing": len(known) - n,
            "provenance": {"source": str(Path(path).resolve()), "source_sha256": sha, "format": fmt,
                           "engine_notes": engine_notes, "clock": "the log's emission times (both clocks)"}})
        others = analyse_with_stored(con, [run_id], normalizer, slices, n_boot)
        analyse_streams(con, [run_id], timing_source(align_model), normalizer, slices, n_boot)
    finally:
        con.close()
    return StreamImport(run_id, model_id, split, fmt, n, len(known) - n, tuple(others))


# ───────────── reading the results ─────────────


def _cer_row(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str) -> dict[str, Any]:
    """A run's whole-run CER row (``cer``, interval, ``n``, ``reliable`` by the minimum-evidence rule);
    ``reliable`` False and no numbers when it is not scored."""
    got = _one(con, "SELECT cer, cer_lo, cer_hi, n, coalesce(ref_chars, cer_n) AS ref_chars, reliable FROM "
                    "slice_metrics WHERE run_id = ? AND normalizer = ? AND slice_attr = ? AND slice_value = ?",
               [run_id, normalizer, ALL_ATTR, ALL_VALUE])
    if got is None:
        return {"reliable": False}
    return {**got, "reliable": stored_reliable(got["reliable"], got["n"], got["ref_chars"])}


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> dict[str, Any] | None:
    cur = con.execute(sql, params)
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))


def offline_runs(con: duckdb.DuckDBPyConnection, stream_ids: Sequence[str]) -> dict[str, str]:
    """Each streaming run's offline counterpart in the store: a finished non-streaming run of the
    same weights, engine, compute type, preprocessing and recipe on the same corpus split (a
    long-form strategy preferred, ``vad`` first, then the latest). Imported logs have none."""
    out: dict[str, str] = {}
    for rid in stream_ids:
        found = con.execute("""
            SELECT o.run_id FROM eval_runs s JOIN eval_runs o
              ON o.corpus_id = s.corpus_id AND o.split IS NOT DISTINCT FROM s.split AND o.model_id = s.model_id
             AND o.engine IS NOT DISTINCT FROM s.engine AND o.compute_type IS NOT DISTINCT FROM s.compute_type
             AND o.preprocessing IS NOT DISTINCT FROM s.preprocessing AND o.recipe IS NOT DISTINCT FROM s.recipe
            WHERE s.run_id = ? AND o.stream_policy IS NULL AND o.status = 'done' AND coalesce(s.kind, 'model') = 'model'
            ORDER BY (o.strategy = 'vad') DESC, (coalesce(o.strategy, 'short') <> 'short') DESC, o.finished_at DESC
            LIMIT 1""", [rid]).fetchall()
        if found:
            out[rid] = found[0][0]
    return out


def latency_evidence(row: Mapping[str, Any]) -> Evidence:
    """The evidence of a ``stream_slices`` row's latencies: its recordings with a log and their
    matched characters (``Evidence``: below the minimum, the medians carry no interval)."""
    return Evidence(int(row.get("n") or 0), int(row.get("n_matched") or 0))


def stream_summary(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str = "zh-v1",
                   offline_of: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One dict per streaming run of ``run_ids``: ``run_id``, ``policy``, ``chunk_s``, ``n`` (the
    recordings CER is computed over: every recording of the split, those without a log scored as
    full deletions), ``n_missing`` (recordings without a log), ``n_streamed`` (recordings with a
    log: what the latencies and flicker are computed over), ``cer`` (+ ``cer_lo``/``cer_hi``,
    ``cer_reliable``), ``offline_run`` and ``delta_cer`` (streaming − offline, + interval,
    ``delta_reliable`` and verdict; all None without an offline comparison), ``latency_median_s``/
    ``latency_p90_s``/``latency_mean_s``/``first_emission_median_s`` as ``{"unaware": …,
    "aware": …}``, the median's interval per clock (``latency_reliable``), ``flicker``,
    ``commits_per_minute``, ``decode_calls``, ``compute_per_audio_s``, ``real_time``,
    ``timing_method``; hallucination over silence (``asr_eval.metrics.hallucination``, summed over
    the recordings with reference segments; all None when none has them): ``inserted_in_silence``,
    ``repeated_insertions``, ``inserted`` (every inserted character) and ``silence_s``.

    The ``*_reliable`` flags are the minimum-evidence rule (``metrics.stats.Evidence``): a thin
    number is shown as its point estimate alone (†), without interval or verdict; ΔCER is thin when
    its paired recordings are too few or either run's CER is thin."""
    from asr_eval.scoring.hallucination import run_totals
    from asr_eval.streaming.base import CLOCKS
    from asr_eval.streaming.store import stored_stream_slices

    offline_of = dict(offline_of or {})
    out = []
    by_run = {r["run_id"]: r for r in stored_stream_slices(con, run_ids, normalizer)
              if r["slice_attr"] == ALL_ATTR}
    halluc = run_totals(con, run_ids, normalizer)
    for rid in run_ids:
        s = by_run.get(rid)
        if s is None:
            continue
        run = _one(con, "SELECT stream_policy, stream_params, kind, n_missing FROM eval_runs WHERE run_id = ?",
                   [rid]) or {}
        params = json.loads(run.get("stream_params") or "{}")
        cer = _cer_row(con, rid, normalizer)
        n_missing = int(run.get("n_missing") or 0)
        n = int(cer["n"]) if cer.get("n") is not None else int(s["n"] or 0) + n_missing
        off = offline_of.get(rid)
        cmp = None
        if off:
            cmp = _one(con, "SELECT delta, delta_lo, delta_hi, verdict, reliable, run_a, n, ref_chars FROM comparisons "
                            "WHERE normalizer = ? AND metric = 'cer' AND slice_attr = ? AND slice_value = ? AND "
                            "((run_a = ? AND run_b = ?) OR (run_a = ? AND run_b = ?))",
                       [normalizer, ALL_ATTR, ALL_VALUE, off, rid, rid, off])
            if cmp and cmp["run_a"] == rid:  # stored the other way round: streaming − offline is −delta
                cmp = {**cmp, "delta": -cmp["delta"], "delta_lo": -cmp["delta_hi"], "delta_hi": -cmp["delta_lo"]}
        delta_ok = None if cmp is None else bool(stored_reliable(cmp["reliable"], cmp["n"], cmp["ref_chars"])
                                                 and cer["reliable"] and _cer_row(con, off, normalizer)["reliable"])
        verdict = None
        if cmp:
            stored = cmp["verdict"] or ""
            verdict = stored if delta_ok or stored.startswith("insufficient data") else (
                insufficient(cmp["n"]) + ": a run compared has too little data")
        row: dict[str, Any] = {
            "run_id": rid, "policy": run.get("stream_policy"), "chunk_s": params.get("chunk_s"), "params": params,
            "kind": run.get("kind"), "n": n, "n_missing": n_missing, "n_streamed": int(s["n"] or 0),
            "cer": cer.get("cer"), "cer_lo": cer.get("cer_lo"), "cer_hi": cer.get("cer_hi"),
            "cer_reliable": cer["reliable"], "offline_run": off,
            "delta_cer": None if not cmp else cmp["delta"], "delta_cer_lo": None if not cmp else cmp["delta_lo"],
            "delta_cer_hi": None if not cmp else cmp["delta_hi"], "delta_reliable": delta_ok,
            "delta_verdict": verdict, "latency_reliable": latency_evidence(s).reliable,
            "flicker": s["flicker"], "commits_per_minute": s["commits_per_minute"], "decode_calls": s["decode_calls"],
            "compute_per_audio_s": s["compute_per_audio_s"], "real_time": s["real_time"],
            "timing_method": s["timing_method"]}
        for key in ("latency_median_s", "latency_p90_s", "latency_mean_s", "first_emission_median_s",
                    "latency_median_lo", "latency_median_hi"):
            row[key] = {c: s[f"{key}_{c}"] for c in CLOCKS}
        h = halluc.get(rid, {})
        row |= {k: h.get(k) for k in ("inserted_in_silence", "repeated_insertions", "inserted", "silence_s")}
        out.append(row)
    return out
