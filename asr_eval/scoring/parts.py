"""Inference → Parquet hypothesis parts, one per (run, shard), resumable."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from asr_eval.audio import decode_flac
from asr_eval.models.record import model_row
from asr_eval.provenance import stable_hash
from asr_eval.shards import iter_shard_rows, read_index, shard_paths
from asr_eval.store.load import corpus_id_for


@dataclass
class RunInfo:
    run_id: str
    model_id: str
    corpus_id: str
    split: str | None
    parts_dir: Path
    n_utts: int = 0
    audio_s: float = 0.0
    proc_s: float = 0.0
    shards_done: int = 0
    shards_skipped: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def rtfx(self) -> float:
        return self.audio_s / self.proc_s if self.proc_s else 0.0


def make_run_id(model_id: str, corpus_id: str, split: str | None, decode: dict, dtype: str) -> str:
    """Deterministic, so a restarted run finds its own finished parts."""
    short = model_id.split("@")[0].rstrip("/").split("/")[-1].replace(":", "-")
    return f"{short}-{stable_hash([model_id, corpus_id, split, decode, dtype], 10)}"


def default_split(corpus_dir: str | Path) -> str | None:
    splits = read_index(corpus_dir)["splits"]
    return "test" if "test" in splits else None


def _part_path(parts_dir: Path, shard: Path) -> Path:
    return parts_dir / f"part-{shard.stem}.parquet"


def transcribe_shard(lm, shard: Path, split: str | None, params, batch_size: int, window: int = 256,
                     on_batch: Callable[[int, float], None] | None = None) -> tuple[pa.Table, float, float]:
    """Transcribe one shard's rows of ``split``; returns (part table, audio_s, proc_s)."""
    from asr_eval.inference import transcribe_arrays

    ids: list[str] = []
    hyps: list[str | None] = []
    ntok: list[int] = []
    audio_s = proc_s = 0.0
    rows = iter_shard_rows(shard, split, columns=["utt_id", "split", "audio", "duration_s"], batch_rows=window)
    while chunk := list(itertools.islice(rows, window)):
        audios = [decode_flac(r["audio"]) for r in chunk]
        res = transcribe_arrays(lm, audios, params, batch_size=batch_size)
        ids += [r["utt_id"] for r in chunk]
        hyps += list(res.texts)
        ntok += list(res.n_tokens)
        dur = sum(r["duration_s"] for r in chunk)
        audio_s += dur
        proc_s += res.proc_s
        if on_batch:
            on_batch(len(chunk), dur)
    table = pa.table({"utt_id": pa.array(ids, pa.string()), "hyp_raw": pa.array(hyps, pa.string()),
                      "n_tokens": pa.array(ntok, pa.int32()), "shard": pa.array([shard.name] * len(ids), pa.string())})
    return table, audio_s, proc_s


def _write_part(path: Path, table: pa.Table, stats: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    table = table.replace_schema_metadata({b"asr_eval_stats": json.dumps(stats).encode()})
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def part_stats(path: Path) -> dict:
    md = pq.read_schema(path).metadata or {}
    return json.loads(md.get(b"asr_eval_stats", b"{}"))


def transcribe_corpus(lm, corpus_dir: str | Path, split: str | None, params, parts_root: str | Path,
                      batch_size: int = 16, shards: Sequence[Path] | None = None, progress: bool = True) -> RunInfo:
    """Decode every shard of ``split`` into ``parts_root/RUN_ID/part-*.parquet``; finished
    parts are skipped, so a run killed part-way resumes where it stopped."""
    corpus_dir = Path(corpus_dir)
    cid = corpus_id_for(corpus_dir)
    run_id = make_run_id(lm.model_id, cid, split, params.to_dict(), lm.dtype)
    parts_dir = Path(parts_root) / run_id
    parts_dir.mkdir(parents=True, exist_ok=True)
    info = RunInfo(run_id, lm.model_id, cid, split, parts_dir)
    idx = read_index(corpus_dir)
    by_file = {s["file"]: s for s in idx["shards"]}
    paths = list(shards) if shards is not None else shard_paths(corpus_dir)
    total = sum((by_file[p.name]["splits"].get(split, 0) if split else by_file[p.name]["rows"]) for p in paths)
    bar = _bar(progress, f"score {lm.spec.name}", total)
    try:
        for p in paths:
            n_split = by_file[p.name]["splits"].get(split, 0) if split else by_file[p.name]["rows"]
            if n_split == 0:
                continue
            part = _part_path(parts_dir, p)
            if part.exists():
                st = part_stats(part)
                info.audio_s += st.get("audio_s", 0.0)
                info.proc_s += st.get("proc_s", 0.0)
                info.n_utts += st.get("n", 0)
                info.shards_skipped += 1
                if bar:
                    bar[0].update(bar[1], advance=n_split)
                continue

            def tick(n: int, _dur: float) -> None:
                if bar:
                    bar[0].update(bar[1], advance=n)

            table, audio_s, proc_s = transcribe_shard(lm, p, split, params, batch_size, on_batch=tick)
            _write_part(part, table, {"audio_s": audio_s, "proc_s": proc_s, "n": table.num_rows})
            info.audio_s += audio_s
            info.proc_s += proc_s
            info.n_utts += table.num_rows
            info.shards_done += 1
    finally:
        if bar:
            bar[0].stop()
    return info


def _bar(enabled: bool, label: str, total: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    p = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    p.start()
    return p, p.add_task(label, total=total)


# ───────────────────────── distributed building blocks ─────────────────────────
# A Prefect/Ray worker calls ``transcribe_shard_part`` once per (model, shard); it writes a
# Parquet part and returns JSON-able stats. One process then calls ``finalize_runs``.

_MODEL_CACHE: dict[tuple[str, str], object] = {}


def cached_model(name: str, device: str = "auto"):
    """Load a model once per worker process (Ray workers run many shard tasks)."""
    from asr_eval.models import load

    key = (name, device)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()  # one model per worker at a time: large checkpoints are GBs
        _MODEL_CACHE[key] = load(name, device=device)
    return _MODEL_CACHE[key]


def transcribe_shard_part(model: str, corpus_dir: str, shard_file: str, split: str | None, decode: dict,
                          parts_root: str, device: str = "auto", batch_size: int | None = None) -> dict:
    """Transcribe one shard with one model into its part file (skipped when it exists)."""
    from asr_eval.inference import DecodeParams, auto_batch_size, peak_gpu_memory_bytes

    lm = cached_model(model, device)
    params = DecodeParams(**decode)
    cid = corpus_id_for(corpus_dir)
    run_id = make_run_id(lm.model_id, cid, split, params.to_dict(), lm.dtype)
    parts_dir = Path(parts_root) / run_id
    parts_dir.mkdir(parents=True, exist_ok=True)
    shard = Path(corpus_dir) / shard_file
    part = _part_path(parts_dir, shard)
    bs = batch_size or auto_batch_size(lm, lm.device)
    skipped = part.exists()
    if not skipped:
        table, audio_s, proc_s = transcribe_shard(lm, shard, split, params, bs)
        _write_part(part, table, {"audio_s": audio_s, "proc_s": proc_s, "n": table.num_rows})
    st = part_stats(part)
    return {"run_id": run_id, "corpus_id": cid, "split": split, "model": model_row(lm), "device": lm.device,
            "dtype": lm.dtype, "batch_size": bs, "decode": params.to_dict(), "parts_dir": str(parts_dir),
            "audio_s": st.get("audio_s", 0.0), "proc_s": st.get("proc_s", 0.0), "n": st.get("n", 0),
            "skipped": skipped, "peak_gpu": peak_gpu_memory_bytes()}


def shards_for_split(corpus_dir: str | Path, split: str | None) -> list[str]:
    """Shard files that hold rows of ``split`` (all shards when split is None)."""
    return [s["file"] for s in read_index(corpus_dir)["shards"] if split is None or s["splits"].get(split)]


