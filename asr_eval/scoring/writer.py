"""The single DuckDB writer step: register models and runs, load parts, then analyse."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from asr_eval.metrics.stats import DEFAULT_ADJUSTMENT, MIN_REF_CHARS, MIN_UTTS
from asr_eval.models.record import model_row
from asr_eval.provenance import package_versions
from asr_eval.scoring.analysis import analyse, check_options
from asr_eval.scoring.parts import RunInfo, default_split, transcribe_corpus
from asr_eval.shards import read_index
from asr_eval.store.load import load_corpus, load_hypotheses, register_model, upsert_eval_run


def record_run(con: duckdb.DuckDBPyConnection, mrow: dict, info: RunInfo, params, batch_size: int,
               started_at: datetime, device: str, dtype: str, peak_gpu: int | None = None) -> None:
    """The single-writer step for one run: model row (see ``model_row``), eval_run row, hypotheses."""
    register_model(con, mrow)
    parts = sorted(info.parts_dir.glob("part-*.parquet"))
    n = load_hypotheses(con, info.run_id, parts)
    upsert_eval_run(con, {
        "run_id": info.run_id, "corpus_id": info.corpus_id, "split": info.split, "model_id": mrow["model_id"],
        "status": "done", "started_at": started_at, "finished_at": datetime.now(UTC).replace(tzinfo=None),
        "device": device, "dtype": dtype, "batch_size": batch_size, "decode_params": params.to_dict(),
        "versions": package_versions(), "n_utts": n, "audio_s": info.audio_s, "proc_s": info.proc_s,
        "rtfx": info.rtfx, "peak_gpu_mem_bytes": peak_gpu,
    })


def score_models(corpus_dir: str | Path, models: Sequence[str], db: str | Path, split: str | None = "auto",
                 slices: Sequence[str] | None = None, batch_size: int | None = None, device: str = "auto",
                 normalizer: str = "zh-v1", params=None, parts_root: str | Path | None = None,
                 n_boot: int = 1000, ci_method: str = "auto", progress: bool = True, min_utts: int = MIN_UTTS,
                 min_ref_chars: int = MIN_REF_CHARS, adjust: str = DEFAULT_ADJUSTMENT) -> list[str]:
    """End to end for ``asr-eval score``: transcribe each model (parts, resumable), then load,
    score, slice and compare in one writer step. Returns the run ids in model order."""
    from asr_eval.inference import DecodeParams, auto_batch_size, peak_gpu_memory_bytes
    from asr_eval.models import load
    from asr_eval.store import connect
    from asr_eval.text import get_profile

    get_profile(normalizer)  # fail fast on an unknown profile, before any inference
    check_options(ci_method, adjust)
    corpus_dir = Path(corpus_dir)
    read_index(corpus_dir)
    split = default_split(corpus_dir) if split == "auto" else split
    params = params or DecodeParams()
    parts_root = Path(parts_root) if parts_root else Path(db).parent / "parts"
    loaded = []
    for name in models:
        started = datetime.now(UTC).replace(tzinfo=None)
        lm = load(name, device=device)
        bs = batch_size or auto_batch_size(lm, lm.device)
        t0 = time.perf_counter()
        info = transcribe_corpus(lm, corpus_dir, split, params, parts_root, bs, progress=progress)
        info.extra["wall_s"] = time.perf_counter() - t0
        loaded.append((model_row(lm), info, bs, started, lm.device, lm.dtype, peak_gpu_memory_bytes()))
        del lm  # free the weights before loading the next model (large-v2 + v3 together are 6 GB)
    con = connect(db)
    try:
        cid = load_corpus(con, corpus_dir)
        run_ids = []
        for mrow, info, bs, started, dev, dt, peak in loaded:
            assert info.corpus_id == cid
            record_run(con, mrow, info, params, bs, started, dev, dt, peak)
            run_ids.append(info.run_id)
        analyse(con, run_ids, normalizer, slices, n_boot, 0, ci_method, min_utts, min_ref_chars, adjust)
    finally:
        con.close()
    return run_ids


def finalize_runs(corpus_dir: str | Path, db: str | Path, shard_results: Sequence[dict], normalizer: str = "zh-v1",
                  slices: Sequence[str] | None = None, n_boot: int = 1000, ci_method: str = "auto",
                  started_at: datetime | None = None, min_utts: int = MIN_UTTS, min_ref_chars: int = MIN_REF_CHARS,
                  adjust: str = DEFAULT_ADJUSTMENT) -> list[str]:
    """The single writer: aggregate per-shard results into runs, load, score, slice, compare."""
    from asr_eval.inference import DecodeParams
    from asr_eval.store import connect

    runs: dict[str, dict] = {}
    for r in shard_results:
        agg = runs.setdefault(r["run_id"], {**r, "audio_s": 0.0, "proc_s": 0.0, "n": 0, "peak_gpu": None})
        agg["audio_s"] += r["audio_s"]
        agg["proc_s"] += r["proc_s"]
        agg["n"] += r["n"]
        if r.get("peak_gpu"):
            agg["peak_gpu"] = max(agg["peak_gpu"] or 0, r["peak_gpu"])
    con = connect(db)
    try:
        load_corpus(con, corpus_dir)
        for run_id, r in runs.items():
            info = RunInfo(run_id, r["model"]["model_id"], r["corpus_id"], r["split"], Path(r["parts_dir"]),
                           n_utts=r["n"], audio_s=r["audio_s"], proc_s=r["proc_s"])
            record_run(con, r["model"], info, DecodeParams(**r["decode"]), r["batch_size"],
                       started_at or datetime.now(UTC).replace(tzinfo=None), r["device"], r["dtype"], r["peak_gpu"])
        analyse(con, list(runs), normalizer, slices, n_boot, 0, ci_method, min_utts, min_ref_chars, adjust)
    finally:
        con.close()
    return list(runs)
