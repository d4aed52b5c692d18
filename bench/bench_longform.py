"""Long-form benchmark, one run, same recordings, same machine: CER and RTFx of the three long-form
strategies (sequential, chunked, vad) with the bundled whisper-base on the transformers engine,
and chunked / vad on ctranslate2 int8 too; then the peak RSS of scoring one ≥ 1 h recording.

    .venv/bin/python bench/bench_longform.py [--ids long_002,long_003,...|all] [--threads 0]
        [--rss-hours 1.0] [--rss-strategy sequential] [--rss-engine transformers] [--rss-limit-s 0] [--json out.json]

Part 1 scores a subset of the long-form demo set (``datasets_local/demo_zh/make_longform.py``;
``--ids all`` for the whole 53 min) through ``score_models`` — the real path: ingest
``--long-form``, one run per engine × strategy, recording-level CER (zh-v1) and RTFx from the
store (RTFx = audio seconds / processing seconds: features + VAD + generate + decode; audio decoding
excluded), plus the long-form flags raised per run.

Part 2 concatenates the demo recordings (cycling) into one recording of ``--rss-hours`` hours,
ingests it with ``--long-form`` and scores it in a child process with ``--rss-strategy`` on
``--rss-engine``; this process samples the child's RSS every 0.2 s. With ``--rss-limit-s`` > 0
the child is stopped after that many seconds and the peak is over that prefix (the JSON says
how far it got: the memory-heavy steps — decoding the FLAC, the whole recording's features for
``sequential``, VAD over the whole signal for ``vad`` — all happen before the first window is
decoded, and every window after that is the same batch-of-one decode).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "datasets_local" / "demo_zh"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_IDS = "long_002,long_003,long_008,long_009"  # 6.6 min: every noise, both pause profiles, a silent stretch
CONFIGS = [("transformers", "float32", "sequential"), ("transformers", "float32", "chunked"),
           ("transformers", "float32", "vad"), ("ctranslate2", "int8", "chunked"), ("ctranslate2", "int8", "vad")]


def ingest_long(manifest_dir: Path, corpus: Path) -> None:
    from asr_eval.corpus import open_source
    from asr_eval.shards import IngestOptions, ingest

    s = ingest(open_source(str(manifest_dir / "manifest.jsonl")), corpus, IngestOptions(long_form=True, workers=1),
               progress=False)
    if s.n_quarantined:
        raise SystemExit(f"ingest quarantined {s.n_quarantined}: {s.quarantine_by_reason}")


def strategies_table(corpus: Path, db: Path, threads: int, configs=CONFIGS) -> dict:
    from asr_eval.scoring import RunSpec, score_models
    from asr_eval.store import connect

    out = {}
    for engine, ct, strategy in configs:
        spec = RunSpec.make("bundled:whisper-base", engine=engine, compute_type=ct, device="cpu", threads=threads,
                            strategy=strategy)
        t0 = time.perf_counter()
        (run_id,) = score_models(corpus, [spec], db, split="all", n_boot=200, progress=False)
        con = connect(db, read_only=True)
        try:
            cer, lo, hi, n = con.execute("""SELECT cer, cer_lo, cer_hi, n FROM slice_metrics WHERE run_id = ?
                                            AND slice_attr = '_all' AND normalizer = 'zh-v1'""", [run_id]).fetchone()
            audio_s, proc_s, rtfx = con.execute("SELECT audio_s, proc_s, rtfx FROM eval_runs WHERE run_id = ?",
                                                [run_id]).fetchone()
            flags = dict(con.execute("""SELECT f, count(*) FROM (SELECT unnest(flags) AS f FROM utterance_scores
                                        WHERE run_id = ? AND normalizer = 'zh-v1') GROUP BY f ORDER BY f""",
                                     [run_id]).fetchall())
            per_rec = dict(con.execute("""SELECT utt_id, round(100.0 * (cer_s + cer_d + cer_i) / cer_n, 2) FROM utterance_scores
                                          WHERE run_id = ? AND normalizer = 'zh-v1' ORDER BY utt_id""",
                                       [run_id]).fetchall())
        finally:
            con.close()
        out[f"{engine} {ct} / {strategy}"] = {
            "recordings": n, "audio_s": round(audio_s, 1), "proc_s": round(proc_s, 1), "rtfx": round(rtfx, 2),
            "cer_pct": round(100 * cer, 2), "cer_ci_pct": [round(100 * lo, 2), round(100 * hi, 2)],
            "per_recording_cer_pct": per_rec, "flags": flags, "wall_s": round(time.perf_counter() - t0, 1),
            "load_avg_1m_after": round(os.getloadavg()[0], 2)}
        print(f"  {engine} {ct} / {strategy}: CER {100 * cer:.2f} %  RTFx {rtfx:.2f}  flags {flags}", flush=True)
    return out


def long_recording(src: Path, hours: float, out: Path) -> float:
    """Concatenate the demo recordings (cycling) into one FLAC of ≥ ``hours``, written in pieces."""
    import soundfile as sf

    rows = [json.loads(x) for x in (src / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    out.mkdir(parents=True, exist_ok=True)
    total, texts, k = 0.0, [], 0
    with sf.SoundFile(out / "hour.flac", "w", samplerate=16000, channels=1, format="FLAC", subtype="PCM_16") as f:
        while total < hours * 3600:
            r = rows[k % len(rows)]
            x, _ = sf.read(src / r["audio_filepath"], dtype="float32")
            f.write(x)
            total += len(x) / 16000
            texts.append(r["text"])
            k += 1
    row = {"id": "hour", "audio_filepath": "hour.flac", "text": " ".join(texts),
           "duration": round(total, 3), "split": "test"}
    (out / "manifest.jsonl").write_text(json.dumps(row, ensure_ascii=False) + "\n", "utf-8")
    return total


def rss_child(corpus: str, db: str, strategy: str, engine: str, threads: int) -> None:
    from asr_eval.scoring import RunSpec, score_models

    ct = "int8" if engine == "ctranslate2" else "float32"
    spec = RunSpec.make("bundled:whisper-base", engine=engine, compute_type=ct, device="cpu", threads=threads,
                        strategy=strategy)
    score_models(corpus, [spec], db, split="all", n_boot=200, progress=False)


def measure_rss(corpus: Path, db: Path, strategy: str, engine: str, threads: int, limit_s: float) -> dict:
    import psutil

    cmd = [sys.executable, __file__, "--rss-child", str(corpus), str(db), strategy, engine, str(threads)]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd)
    proc, peak, timeline, stopped = psutil.Process(p.pid), 0, [], False
    while p.poll() is None:
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        el = time.perf_counter() - t0
        if not timeline or el - timeline[-1][0] >= 15:
            timeline.append((round(el), round(rss / 2**20)))
        if limit_s and el > limit_s:
            p.kill()
            p.wait()
            stopped = True
            break
        time.sleep(0.2)
    return {"strategy": strategy, "engine": engine, "peak_rss_mb": round(peak / 2**20),
            "wall_s": round(time.perf_counter() - t0, 1), "completed": not stopped and p.returncode == 0,
            "stopped_after_limit_s": limit_s if stopped else None, "returncode": p.returncode,
            "rss_mb_timeline_s": timeline}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ids", default=DEFAULT_IDS, help="comma-separated recording ids, or 'all'")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--rss-hours", type=float, default=1.0)
    ap.add_argument("--rss-strategy", default="sequential")
    ap.add_argument("--rss-engine", default="transformers")
    ap.add_argument("--rss-limit-s", type=float, default=0.0, help="stop the ≥ 1 h scoring after this (0: never)")
    ap.add_argument("--skip-strategies", action="store_true")
    ap.add_argument("--configs", help="only these engine/strategy pairs, e.g. ctranslate2/chunked,transformers/vad")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--workdir", type=Path, help="reuse this folder (finished transcription parts are kept: "
                                                 "a rerun resumes instead of transcribing again)")
    ap.add_argument("--rss-child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        c, d, s, e, t = args.rss_child
        rss_child(c, d, s, e, int(t))
        return

    import torch
    from make_longform import build, subset

    src = build()
    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="bench_longform_"))
    tmp.mkdir(parents=True, exist_ok=True)
    from machine import cpu_info

    out: dict = {"machine": {**cpu_info(), "torch_threads": args.threads or torch.get_num_threads()}}
    if not args.skip_strategies:
        ids = None if args.ids == "all" else [x.strip() for x in args.ids.split(",") if x.strip()]
        all_ids = [json.loads(x)["id"] for x in (src / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
        subset(ids or all_ids, tmp / "subset", src)
        rows = [json.loads(x) for x in (tmp / "subset" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
        out["recordings"] = [r["id"] for r in rows]
        out["audio_min"] = round(sum(r["duration"] for r in rows) / 60, 2)
        if not (tmp / "corpus").is_dir():
            ingest_long(tmp / "subset", tmp / "corpus")
        print(f"strategies on {len(rows)} recordings ({out['audio_min']} min)", flush=True)
        want = {tuple(c.strip().split("/")) for c in args.configs.split(",")} if args.configs else None
        configs = [c for c in CONFIGS if want is None or (c[0], c[2]) in want]
        out["strategies"] = strategies_table(tmp / "corpus", tmp / "s.duckdb", args.threads, configs)
    if args.rss_hours > 0:
        total = long_recording(src, args.rss_hours, tmp / "hour_src")
        ingest_long(tmp / "hour_src", tmp / "hour_corpus")
        print(f"peak RSS: {args.rss_strategy} on {args.rss_engine}, one {total / 3600:.2f} h recording", flush=True)
        r = measure_rss(tmp / "hour_corpus", tmp / "hour.duckdb", args.rss_strategy, args.rss_engine, args.threads,
                        args.rss_limit_s)
        out["peak_rss_long_recording"] = {"hours": round(total / 3600, 3), **r}
    out["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
