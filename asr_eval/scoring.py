"""Score models on a corpus: inference into Parquet parts (resumable per shard), then the
single writer loads them, normalizes, scores per utterance, and computes per-slice rates
with bootstrap CIs and paired A/B comparisons. Rescoring re-runs only the second half."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asr_eval.audio import decode_flac
from asr_eval.errors import AsrEvalError
from asr_eval.provenance import package_versions, stable_hash
from asr_eval.shards import iter_shard_rows, read_index, shard_paths
from asr_eval.store.load import (
    corpus_id_for, load_corpus, load_hypotheses, register_model, upsert_eval_run,
)

MAX_AUTO_SLICE_VALUES = 50  # columns with more distinct values (ids, sentences) are not default slices


# ───────────────────────── inference → parts ─────────────────────────


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


def model_row(lm, **lineage) -> dict:
    """The ``models`` row of a loaded model. A checkpoint exported by ``asr-eval finetune``
    carries its lineage file, so scoring it into a fresh store keeps base/corpus/run/step."""
    f = Path(lm.spec.path or "") / "asr_eval_lineage.json"
    if not lineage and lm.spec.path and f.is_file():
        saved = json.loads(f.read_text(encoding="utf-8"))
        lineage = {k: saved.get(k) for k in ("base_model_id", "corpus_id", "training_run_id", "step")}
    return {"model_id": lm.model_id, "name": lm.spec.name, "source": lm.spec.source, "path": lm.spec.path,
            "revision": lm.revision, "num_mel_bins": lm.num_mel_bins, "n_params": lm.n_params,
            "config": lm.config_dict(), **lineage}


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


# ───────────────────────── scoring (no model) ─────────────────────────


def score_run(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str = "zh-v1") -> int:
    """Normalize + align every utterance of a run. A missing hypothesis scores as all deletions."""
    from asr_eval.metrics import score_many
    from asr_eval.text import get_profile

    prof = get_profile(normalizer)
    t = con.sql(
        """
        SELECT u.utt_id, u.text AS ref, h.hyp_raw AS hyp
        FROM eval_runs r
        JOIN utterances u ON u.corpus_id = r.corpus_id AND (r.split IS NULL OR u.split = r.split)
        LEFT JOIN hypotheses h ON h.run_id = r.run_id AND h.utt_id = u.utt_id
        WHERE r.run_id = ? ORDER BY u.utt_id
        """, params=[run_id]).to_arrow_table()
    if t.num_rows == 0:
        raise AsrEvalError(f"run {run_id} has no utterances to score (unknown run id or empty split)")
    scores = score_many(t.column("ref").to_pylist(), t.column("hyp").to_pylist(), prof, with_alignment=True)
    n = t.num_rows
    scores = scores.add_column(0, "run_id", pa.array([run_id] * n, pa.string()))
    scores = scores.add_column(1, "utt_id", t.column("utt_id"))
    scores = scores.add_column(2, "normalizer", pa.array([prof.name] * n, pa.string()))
    scores = scores.add_column(3, "normalizer_hash", pa.array([prof.rules_hash] * n, pa.string()))
    cols = [r[0] for r in con.execute("DESCRIBE utterance_scores").fetchall()]
    con.execute("BEGIN")
    con.execute("DELETE FROM utterance_scores WHERE run_id = ? AND normalizer = ?", [run_id, prof.name])
    con.register("_scores", scores)
    con.execute(f"INSERT INTO utterance_scores ({', '.join(cols)}) SELECT {', '.join(cols)} FROM _scores")
    con.unregister("_scores")
    con.execute("COMMIT")
    return n


def _replace_rows(con: duckdb.DuckDBPyConnection, table: str, where: str, params: list, rows: list[dict]) -> int:
    """Replace a run's rows of ``table`` in one transaction (re-analysis is idempotent)."""
    con.execute("BEGIN")
    con.execute(f"DELETE FROM {table} WHERE {where}", params)
    if rows:
        tbl = pa.Table.from_pylist(rows)
        con.register("_rows", tbl)
        con.execute(f"INSERT INTO {table} ({', '.join(tbl.column_names)}) SELECT * FROM _rows")
        con.unregister("_rows")
    con.execute("COMMIT")
    return len(rows)


def available_slices(con: duckdb.DuckDBPyConnection, corpus_id: str) -> list[str]:
    """Slice attributes worth a table by default: few distinct values."""
    rows = con.execute(
        "SELECT attr, count(DISTINCT value) FROM utterance_attrs WHERE corpus_id = ? GROUP BY attr ORDER BY attr",
        [corpus_id]).fetchall()
    return [a for a, k in rows if 1 <= k <= MAX_AUTO_SLICE_VALUES]


def _run_arrays(con, run_id: str, normalizer: str, attr: str | None) -> pa.Table:
    if attr is None or attr == "speaker":
        val = "'all'" if attr is None else "coalesce(u.speaker, '(none)')"
        return con.sql(
            f"""SELECT s.utt_id, {val} AS value, u.duration_s, u.speaker,
                   s.cer_s + s.cer_d + s.cer_i AS cer_e, s.cer_n, s.mer_s + s.mer_d + s.mer_i AS mer_e, s.mer_n,
                   s.wer_s + s.wer_d + s.wer_i AS wer_e, s.wer_n, s.cer_s, s.cer_d, s.cer_i
                FROM utterance_scores s JOIN eval_runs r ON r.run_id = s.run_id
                JOIN utterances u ON u.corpus_id = r.corpus_id AND u.utt_id = s.utt_id
                WHERE s.run_id = ? AND s.normalizer = ? ORDER BY s.utt_id""", params=[run_id, normalizer]).to_arrow_table()
    return con.sql(
        """SELECT s.utt_id, coalesce(a.value, '(none)') AS value, u.duration_s, u.speaker,
               s.cer_s + s.cer_d + s.cer_i AS cer_e, s.cer_n, s.mer_s + s.mer_d + s.mer_i AS mer_e, s.mer_n,
               s.wer_s + s.wer_d + s.wer_i AS wer_e, s.wer_n, s.cer_s, s.cer_d, s.cer_i
            FROM utterance_scores s JOIN eval_runs r ON r.run_id = s.run_id
            JOIN utterances u ON u.corpus_id = r.corpus_id AND u.utt_id = s.utt_id
            LEFT JOIN utterance_attrs a ON a.corpus_id = r.corpus_id AND a.utt_id = s.utt_id AND a.attr = ?
            WHERE s.run_id = ? AND s.normalizer = ? ORDER BY s.utt_id""", params=[attr, run_id, normalizer]).to_arrow_table()


def _codes(values: list) -> tuple[np.ndarray, list[str]]:
    labels = sorted(set(values), key=lambda v: (_num_key(v), v))
    lut = {v: i for i, v in enumerate(labels)}
    return np.array([lut[v] for v in values], dtype=np.int64), labels


def _num_key(v: str) -> float:
    try:
        return float(v.split("-")[0].rstrip("s").lstrip("<>"))
    except (ValueError, AttributeError):
        return float("inf")


def _groups(speakers: list) -> np.ndarray:
    codes, _ = _codes([s or "(none)" for s in speakers])
    return codes


def slice_metrics(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str = "zh-v1",
                  slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                  block_by_speaker: bool = False) -> int:
    """Pooled CER/MER/WER with bootstrap 95% CIs for the whole run ('_all') and every slice."""
    from asr_eval.metrics import bootstrap_ci_by_slice
    from asr_eval.text import get_profile

    prof = get_profile(normalizer)
    cid = con.execute("SELECT corpus_id FROM eval_runs WHERE run_id = ?", [run_id]).fetchall()[0][0]
    attrs: list[str | None] = [None] + list(slices if slices is not None else available_slices(con, cid))
    out = []
    for attr in attrs:
        t = _run_arrays(con, run_id, prof.name, attr)
        if t.num_rows == 0:
            continue
        codes, labels = _codes(t.column("value").to_pylist())
        groups = _groups(t.column("speaker").to_pylist()) if block_by_speaker else None
        arr = {c: np.asarray(t.column(c).to_numpy(zero_copy_only=False), dtype=np.int64)
               for c in ("cer_e", "cer_n", "mer_e", "mer_n", "wer_e", "wer_n", "cer_s", "cer_d", "cer_i")}
        dur = np.asarray(t.column("duration_s").to_numpy(zero_copy_only=False), dtype=np.float64)
        cer = bootstrap_ci_by_slice(arr["cer_e"], arr["cer_n"], codes, len(labels), n_boot=n_boot, seed=seed, groups=groups)
        mer = bootstrap_ci_by_slice(arr["mer_e"], arr["mer_n"], codes, len(labels), n_boot=n_boot, seed=seed, groups=groups)
        for k, label in enumerate(labels):
            m = codes == k
            wer_n = int(arr["wer_n"][m].sum())
            out.append({
                "run_id": run_id, "normalizer": prof.name, "normalizer_hash": prof.rules_hash,
                "slice_attr": attr or "_all", "slice_value": str(label), "n": int(m.sum()),
                "hours": float(dur[m].sum() / 3600),
                "cer": cer[k].rate, "cer_lo": cer[k].lo, "cer_hi": cer[k].hi,
                "mer": mer[k].rate, "mer_lo": mer[k].lo, "mer_hi": mer[k].hi,
                "wer": float(arr["wer_e"][m].sum() / wer_n) if wer_n else None,
                "cer_s": int(arr["cer_s"][m].sum()), "cer_d": int(arr["cer_d"][m].sum()),
                "cer_i": int(arr["cer_i"][m].sum()), "cer_n": int(arr["cer_n"][m].sum()),
                "n_boot": n_boot, "ci_method": "speaker-block" if block_by_speaker else "utterance",
            })
    return _replace_rows(con, "slice_metrics", "run_id = ? AND normalizer = ?", [run_id, prof.name], out)


def compare_runs(con: duckdb.DuckDBPyConnection, run_a: str, run_b: str, normalizer: str = "zh-v1",
                 slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                 block_by_speaker: bool = False) -> int:
    """Paired bootstrap (Bisani & Ney 2004) + sign test of run_b against run_a, on the
    utterances both scored, for the whole run and every slice; CER and MER."""
    from asr_eval.metrics import paired_bootstrap
    from asr_eval.text import get_profile

    prof = get_profile(normalizer)
    cids = {r[0] for r in con.execute("SELECT corpus_id FROM eval_runs WHERE run_id IN (?, ?)", [run_a, run_b]).fetchall()}
    if len(cids) != 1:
        raise AsrEvalError(f"runs {run_a} and {run_b} are on different corpora; a paired test needs the same utterances")
    cid = cids.pop()
    attrs: list[str | None] = [None] + list(slices if slices is not None else available_slices(con, cid))
    out = []
    for attr in attrs:
        ta = _run_arrays(con, run_a, prof.name, attr)
        tb = _run_arrays(con, run_b, prof.name, attr)
        common = sorted(set(ta.column("utt_id").to_pylist()) & set(tb.column("utt_id").to_pylist()))
        if not common:
            continue
        ia = {u: i for i, u in enumerate(ta.column("utt_id").to_pylist())}
        ib = {u: i for i, u in enumerate(tb.column("utt_id").to_pylist())}
        sel_a = np.array([ia[u] for u in common])
        sel_b = np.array([ib[u] for u in common])
        values = np.array(ta.column("value").to_pylist(), dtype=object)[sel_a]
        speakers = np.array(ta.column("speaker").to_pylist(), dtype=object)[sel_a]
        for metric in ("cer", "mer"):
            ea = np.asarray(ta.column(f"{metric}_e").to_numpy(zero_copy_only=False), np.int64)[sel_a]
            eb = np.asarray(tb.column(f"{metric}_e").to_numpy(zero_copy_only=False), np.int64)[sel_b]
            n = np.asarray(ta.column(f"{metric}_n").to_numpy(zero_copy_only=False), np.int64)[sel_a]
            for label in sorted(set(values), key=lambda v: (_num_key(v), v)):
                m = values == label
                groups = _groups(list(speakers[m])) if block_by_speaker else None
                r = paired_bootstrap(ea[m], eb[m], n[m], n_boot=n_boot, seed=seed, groups=groups)
                out.append({
                    "run_a": run_a, "run_b": run_b, "normalizer": prof.name, "metric": metric,
                    "slice_attr": attr or "_all", "slice_value": str(label), "n": int(m.sum()),
                    "rate_a": r.rate_a, "rate_b": r.rate_b, "delta": r.delta, "delta_lo": r.lo, "delta_hi": r.hi,
                    "p_b_better": r.p_b_better, "sign_test_p": r.sign_test_p, "verdict": r.verdict,
                })
    return _replace_rows(con, "comparisons", "run_a = ? AND run_b = ? AND normalizer = ?",
                         [run_a, run_b, prof.name], out)


def analyse(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str = "zh-v1",
            slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
            block_by_speaker: bool = False) -> None:
    """Score, slice and compare a set of runs of one corpus (every pair, first run as A)."""
    for r in run_ids:
        score_run(con, r, normalizer)
        slice_metrics(con, r, normalizer, slices, n_boot, seed, block_by_speaker)
    for a, b in itertools.combinations(run_ids, 2):
        compare_runs(con, a, b, normalizer, slices, n_boot, seed, block_by_speaker)


def rescore(con: duckdb.DuckDBPyConnection, normalizer: str, run_ids: Sequence[str] | None = None,
            slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0) -> list[str]:
    """Re-normalize and rescore stored hypotheses — no inference. Runs are grouped by corpus
    and split so comparisons stay paired."""
    rows = con.execute("SELECT run_id, corpus_id, split FROM eval_runs WHERE status = 'done' ORDER BY started_at").fetchall()
    if run_ids:
        missing = set(run_ids) - {r[0] for r in rows}
        if missing:
            raise AsrEvalError(f"unknown run ids {sorted(missing)}; see `asr-eval runs`")
        rows = [r for r in rows if r[0] in set(run_ids)]
    groups: dict[tuple, list[str]] = {}
    for run_id, cid, split in rows:
        groups.setdefault((cid, split), []).append(run_id)
    for ids in groups.values():
        analyse(con, ids, normalizer, slices, n_boot, seed)
    return [r[0] for r in rows]


def score_models(corpus_dir: str | Path, models: Sequence[str], db: str | Path, split: str | None = "auto",
                 slices: Sequence[str] | None = None, batch_size: int | None = None, device: str = "auto",
                 normalizer: str = "zh-v1", params=None, parts_root: str | Path | None = None,
                 n_boot: int = 1000, block_by_speaker: bool = False, progress: bool = True) -> list[str]:
    """End to end for ``asr-eval score``: transcribe each model (parts, resumable), then load,
    score, slice and compare in one writer step. Returns the run ids in model order."""
    from asr_eval.inference import DecodeParams, auto_batch_size, peak_gpu_memory_bytes
    from asr_eval.models import load
    from asr_eval.store import connect
    from asr_eval.text import get_profile

    get_profile(normalizer)  # fail fast on an unknown profile, before any inference
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
        analyse(con, run_ids, normalizer, slices, n_boot, 0, block_by_speaker)
    finally:
        con.close()
    return run_ids


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


def finalize_runs(corpus_dir: str | Path, db: str | Path, shard_results: Sequence[dict], normalizer: str = "zh-v1",
                  slices: Sequence[str] | None = None, n_boot: int = 1000, block_by_speaker: bool = False,
                  started_at: datetime | None = None) -> list[str]:
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
        analyse(con, list(runs), normalizer, slices, n_boot, 0, block_by_speaker)
    finally:
        con.close()
    return list(runs)
