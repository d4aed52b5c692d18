"""The single DuckDB writer step: register models and runs, load their verified parts, then
analyse (score, slice, compare). Workers never open the store."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from asr_eval import storage
from asr_eval.corpus_handle import Corpus, open_corpus
from asr_eval.errors import AsrEvalError
from asr_eval.provenance import package_versions
from asr_eval.metrics.stats import DEFAULT_ADJUSTMENT, MIN_REF_CHARS, MIN_UTTS
from asr_eval.scoring.analysis import analyse, check_options
from asr_eval.scoring.parts import RunInfo, RunSpec, part_path, transcribe_corpus, verified_parts
from asr_eval.store.load import load_corpus, load_hypotheses, register_model, upsert_eval_run
from asr_eval.streaming.store import DEFAULT_ALIGN_MODEL, analyse_streams, timing_source


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def check_parts(info: RunInfo, corpus: Corpus) -> None:
    """Every shard of the run's split has its part where this process reads the parts root (a
    worker that wrote to a disk the driver cannot see leaves none); else an error, before anything
    of any run is loaded."""
    missing = [part_path(info.parts_dir, s.name) for s in corpus.shards_for(info.split)
               if storage.stat(part_path(info.parts_dir, s.name)) is None]
    if missing:
        raise AsrEvalError(
            f"run {info.run_id}: {len(missing)} hypothesis part(s) missing from {storage.redact(info.parts_dir)} "
            f"(e.g. {storage.redact(missing[0])}); nothing of the run was loaded. On a cluster the parts root "
            "must be where the driver can read it (a URL such as s3://bucket/parts, or a shared filesystem); "
            "re-run the same command to transcribe the missing shards")


def record_run(con: duckdb.DuckDBPyConnection, info: RunInfo, started_at: datetime | None = None) -> int:
    """Model row, hypotheses (hash-checked parts) and the eval_runs row of one run."""
    register_model(con, info.model)
    parts = verified_parts(info.parts_dir)
    n = load_hypotheses(con, info.run_id, parts)
    if info.stream:
        from asr_eval.streaming.store import load_stream_events

        load_stream_events(con, info.run_id, parts)
    n_split = con.execute(
        "SELECT count(*) FROM utterances WHERE corpus_id = ? AND (? IS NULL OR split = ?)",
        [info.corpus_id, info.split, info.split]).fetchone()[0]
    eng = info.engine
    upsert_eval_run(con, {
        "run_id": info.run_id, "corpus_id": info.corpus_id, "split": info.split, "model_id": info.model_id,
        "status": "done", "started_at": started_at or _now(), "finished_at": _now(),
        "device": eng.get("device"), "dtype": eng.get("compute_type"), "batch_size": info.batch_size,
        "decode_params": info.recipe, "versions": package_versions(), "n_utts": n, "audio_s": info.audio_s,
        "proc_s": info.proc_s, "rtfx": info.rtfx,
        "peak_gpu_mem_bytes": info.peak_mem if str(eng.get("device", "")).startswith("cuda") else None,
        "kind": "model", "engine": eng.get("name"), "engine_version": eng.get("version"),
        "compute_type": eng.get("compute_type"), "preprocessing": info.preprocessing, "recipe": info.recipe.get("name"),
        "strategy": info.strategy, "strategy_params": info.strategy_params or None,
        "stream_policy": (info.stream or {}).get("policy"), "stream_params": _stream_params(info.stream),
        "engine_options": info.engine_options or None,
        "provenance": {"engine": eng.get("identity"), "peak_memory_bytes": info.peak_mem, **info.extra},
        "n_missing": max(0, n_split - n),
    })
    return n


def _stream_params(stream: dict | None) -> dict | None:
    """``eval_runs.stream_params``: the chunk size and the policy's parameters, flat."""
    return None if not stream else {"chunk_s": stream["chunk_s"], **stream["params"]}


def score_models(corpus_dir: str | Path, specs: Sequence[RunSpec | str], db: str | Path, split: str | None = "auto",
                 slices: Sequence[str] | None = None, normalizer: str = "zh-v1", parts_root: str | Path | None = None,
                 n_boot: int = 1000, ci_method: str = "auto", progress: bool = True, min_utts: int = MIN_UTTS,
                 min_ref_chars: int = MIN_REF_CHARS, adjust: str = DEFAULT_ADJUSTMENT,
                 align_model: str | None = DEFAULT_ALIGN_MODEL, ray_address: str | None = None) -> list[str]:
    """End to end for ``asr-eval score``: transcribe each run spec (parts, resumable), then load,
    score, slice and compare in one writer step. Returns the run ids in spec order. With
    ``ray_address`` ('auto', 'ray://host:10001', 'local') the shards are transcribed by Ray tasks
    (``scoring.distributed``) and this process is the single writer."""
    from asr_eval.engines import create_engine
    from asr_eval.text import get_profile

    get_profile(normalizer)  # fail fast on an unknown profile, before any inference
    check_options(ci_method, adjust)
    corpus = open_corpus(corpus_dir)
    split = corpus.resolve_split(split)
    corpus.require_all(split)  # a damaged shard fails here, before any model is loaded
    parts_root = parts_root or Path(db).parent / "parts"
    specs = [RunSpec.make(s) if isinstance(s, str) else s for s in specs]
    if ray_address:
        from asr_eval.scoring.distributed import transcribe_on_ray

        started = _now()
        results = transcribe_on_ray(corpus, split, specs, str(parts_root), ray_address, progress)
        return finalize_runs(corpus, db, results, normalizer, slices, n_boot, ci_method, started, min_utts,
                             min_ref_chars, adjust, align_model)
    runs: list[tuple[RunInfo, datetime]] = []
    for spec in specs:
        started = _now()
        engine = create_engine(spec.engine, spec.model, spec.device, spec.compute_type, spec.threads,
                               spec.engine_options)
        t0 = time.perf_counter()
        info = transcribe_corpus(engine, corpus, split, spec, parts_root, spec.batch_size, progress=progress)
        info.extra["wall_s"] = round(time.perf_counter() - t0, 3)
        runs.append((info, started))
        del engine  # free the weights before loading the next model (large-v2 + v3 together are 6 GB)
    return write_runs(corpus, db, [r for r, _ in runs], normalizer, slices, n_boot, ci_method,
                      started={r.run_id: s for r, s in runs}, min_utts=min_utts, min_ref_chars=min_ref_chars,
                      adjust=adjust, align_model=align_model)


def write_runs(corpus_dir: str | Path, db: str | Path, runs: Sequence[RunInfo], normalizer: str = "zh-v1",
               slices: Sequence[str] | None = None, n_boot: int = 1000, ci_method: str = "auto",
               started: dict[str, datetime] | None = None, min_utts: int = MIN_UTTS,
               min_ref_chars: int = MIN_REF_CHARS, adjust: str = DEFAULT_ADJUSTMENT,
               align_model: str | None = DEFAULT_ALIGN_MODEL) -> list[str]:
    """The single writer for a set of runs on one corpus: load, record, analyse (and score the
    streaming runs' latency against reference timing aligned with ``align_model``)."""
    from asr_eval.store import connect

    corpus = open_corpus(corpus_dir)
    for info in runs:
        if info.corpus_id != corpus.corpus_id:
            raise AssertionError(f"run {info.run_id} is on {info.corpus_id}, not {corpus.corpus_id}")
        check_parts(info, corpus)
    con = connect(db)
    try:
        load_corpus(con, corpus)
        for info in runs:
            record_run(con, info, (started or {}).get(info.run_id))
        ids = list(dict.fromkeys(r.run_id for r in runs))
        analyse(con, ids, normalizer, slices, n_boot, 0, ci_method, min_utts, min_ref_chars, adjust)
        analyse_streams(con, ids, timing_source(align_model), normalizer, slices, n_boot)
    finally:
        con.close()
    return ids


def finalize_runs(corpus_dir: str | Path, db: str | Path, shard_results: Sequence[dict], normalizer: str = "zh-v1",
                  slices: Sequence[str] | None = None, n_boot: int = 1000, ci_method: str = "auto",
                  started_at: datetime | None = None, min_utts: int = MIN_UTTS, min_ref_chars: int = MIN_REF_CHARS,
                  adjust: str = DEFAULT_ADJUSTMENT, align_model: str | None = DEFAULT_ALIGN_MODEL) -> list[str]:
    """The single writer after distributed inference: per-shard results (``transcribe_shard_part``)
    are summed into runs, then written like ``score_models`` does."""
    runs: dict[str, RunInfo] = {}
    for r in shard_results:
        part = RunInfo.from_json(r)
        agg = runs.get(part.run_id)
        if agg is None:
            runs[part.run_id] = part
            continue
        agg.audio_s += part.audio_s
        agg.proc_s += part.proc_s
        agg.n_utts += part.n_utts
        agg.shards_done += part.shards_done
        agg.shards_skipped += part.shards_skipped
        if part.peak_mem:
            agg.peak_mem = max(agg.peak_mem or 0, part.peak_mem)
    return write_runs(corpus_dir, db, list(runs.values()), normalizer, slices, n_boot, ci_method,
                      started={k: started_at or _now() for k in runs}, min_utts=min_utts,
                      min_ref_chars=min_ref_chars, adjust=adjust, align_model=align_model)
