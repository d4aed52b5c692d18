"""Scoring benchmark, one run, same utterances, same machine: which CPU engine is the fastest
*faithful* one? The seed's way (one transformers ASR ``pipeline()`` call per file) vs our
transformers engine (length-sorted batches) vs ctranslate2 (float32, int8), OpenVINO (float32,
weight-only int8 and int4) and whisper.cpp (f16, q8_0, q5_0), all on the bundled whisper-base,
all under the same preprocessing (pad-audio, what the pipeline does), greedy.

    .venv/bin/python bench/bench_score.py [--n 60] [--threads 0] [--sides a,b,…] [--json out.json]

Each side runs in its own process (so its peak RSS is its own). Per side: RTFx = audio seconds /
processing seconds (log-mel + generate + decode; audio decoding excluded for every side), × the
pipeline, CER on the same utterances (zh-v1), transcripts identical to transformers fp32 (the
reference), the paired-bootstrap interval of its CER minus transformers fp32's, peak RSS, model
size on disk, and the cost split on the first ``--split-n`` utterances: the encoder (a decode of one
token per utterance — every utterance is one 30 s window) vs the decoder per generated token (the rest
of a full decode). The target on the 2-core CPU: ≥ 3.5× the
pipeline's RTFx with transcripts identical (or a paired ΔCER interval containing 0). Sides whose
extra is not installed are reported as skipped. Also records a full ``score_models`` run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_ingest import PeakRSS  # noqa: E402
from machine import cpu_info  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "datasets_local" / "demo_zh"
MODEL = "bundled:whisper-base"
REFERENCE = "transformers float32"
PIPELINE = "pipeline() per file"
# label -> (engine, compute type); PIPELINE is the seed's transformers pipeline
SIDES = {PIPELINE: ("pipeline", "float32"), REFERENCE: ("transformers", "float32"),
         "ctranslate2 float32": ("ctranslate2", "float32"), "ctranslate2 int8": ("ctranslate2", "int8"),
         "openvino float32": ("openvino", "float32"), "openvino int8": ("openvino", "int8"),
         "openvino int4": ("openvino", "int4"),
         "whispercpp float16": ("whispercpp", "float16"), "whispercpp q8_0": ("whispercpp", "q8_0"),
         "whispercpp q5_0": ("whispercpp", "q5_0")}
EXTRA = {"openvino": "openvino", "whispercpp": "pywhispercpp"}


def _cer(refs, hyps):
    import numpy as np

    from asr_eval.metrics import score_pair

    s = [score_pair(r, h) for r, h in zip(refs, hyps, strict=True)]
    return np.array([x.cer_errors for x in s]), np.array([x.cer_n for x in s])


def _disk_size(engine) -> int | None:
    """Bytes on disk of what the engine loaded (its converted folder or file), when it says."""
    ident = engine.identity()
    for key in ("ct2_folder", "ov_folder", "ggml_file", "export_folder", "folder", "path"):
        p = ident.get(key) or getattr(engine, key, None)
        if p and Path(str(p)).exists():
            p = Path(str(p))
            return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return None


def run_side(engine_name: str, compute_type: str, audios: list, threads: int, device: str, split_n: int) -> dict:
    """One side, in its own process: texts, processing seconds, peak RSS, size, cost split."""
    import torch

    from asr_eval.engines import create_engine, get_recipe

    if threads:
        torch.set_num_threads(threads)
    with PeakRSS() as rss:
        tr = create_engine("transformers" if engine_name == "pipeline" else engine_name, MODEL, device,
                           compute_type, threads)
        if engine_name == "pipeline":
            from transformers import pipeline

            pipe = pipeline("automatic-speech-recognition", model=tr.lm.spec.path, device=device,
                            dtype=torch.float32)
            gen = {"language": "zh", "task": "transcribe", "max_new_tokens": 128}
            pipe({"raw": audios[0], "sampling_rate": 16000}, generate_kwargs=gen)  # warm-up
            t0 = time.perf_counter()
            texts = [pipe({"raw": a, "sampling_rate": 16000}, generate_kwargs=gen)["text"].strip() for a in audios]
            out = {"texts": texts, "proc_s": time.perf_counter() - t0}
        else:
            greedy = get_recipe("greedy")
            tr.transcribe(audios[:2], greedy)  # warm-up
            res = tr.transcribe(audios, greedy)
            # the cost split on the first split_n utterances: one generated token ≈ the encoder (every
            # utterance is one 30 s window) + the prompt; the rest of a full decode = the decoder's tokens
            one = tr.transcribe(audios[:split_n], get_recipe("greedy", max_new_tokens=1))
            sub = tr.transcribe(audios[:split_n], greedy)
            dec_s = max(0.0, sub.proc_s - one.proc_s)
            out = {"texts": res.texts, "proc_s": res.proc_s, "size": _disk_size(tr),
                   "encoder_s_per_utt": one.proc_s / split_n,
                   "decoder_ms_per_token": 1000 * dec_s / max(1, sum(sub.n_tokens) - split_n),
                   "tokens": int(sum(res.n_tokens)), "cut_off": int(sum(res.cut_off)), "identity": tr.identity()}
    return {**out, "peak_rss": rss.peak}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60, help="test utterances (in shard order)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for every engine (0: all cores)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of: {', '.join(SIDES)}")
    ap.add_argument("--split-n", type=int, default=10, help="utterances for the encoder/decoder cost split")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    wanted = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SIDES]
    if unknown:
        raise SystemExit(f"unknown side(s) {unknown}; choose from {list(SIDES)}")
    for must in (REFERENCE, PIPELINE):
        if must not in wanted:
            wanted.insert(0, must)

    import importlib.util

    from asr_eval.corpus import open_source
    from asr_eval.corpus_handle import iter_batches
    from asr_eval.metrics import paired_bootstrap
    from asr_eval.scoring import RunSpec, score_models
    from asr_eval.shards import IngestOptions, ingest

    tmp = Path(tempfile.mkdtemp(prefix="bench_score_"))
    corpus = tmp / "corpus"
    ingest(open_source(str(DEMO)), corpus, IngestOptions(workers=1), progress=False)
    rows = [r for b in iter_batches(corpus, split="test", batch_size=64) for r in b][: args.n]
    audios, refs = [r["audio"] for r in rows], [r["text"] for r in rows]
    audio_s = sum(len(a) for a in audios) / 16000
    sides: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    ctx = get_context("spawn")
    for label in wanted:
        engine_name, ct = SIDES[label]
        mod = EXTRA.get(engine_name)
        if mod and importlib.util.find_spec(mod) is None:
            skipped[label] = f"{mod} not installed (pip install 'asr-eval[{engine_name}]')"
            continue
        print(f"{time.strftime('%H:%M:%S')} {label} …", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            sides[label] = pool.submit(run_side, engine_name, ct, audios, args.threads, args.device,
                                       args.split_n).result()

    base_s = sides[PIPELINE]["proc_s"]
    ref_texts = sides[REFERENCE]["texts"]
    e0, n0 = _cer(refs, ref_texts)
    out = {"machine": {**cpu_info(), "threads": args.threads or os.cpu_count(), "device": args.device},
           "utterances": len(audios), "audio_s": round(audio_s, 2), "sides": {}, "skipped": skipped}
    for label, s in sides.items():
        e, n = _cer(refs, s["texts"])
        pb = paired_bootstrap(e0, e, n0, n_boot=2000, seed=0)
        out["sides"][label] = {
            "proc_s": round(s["proc_s"], 2), "rtfx": round(audio_s / s["proc_s"], 2),
            "x_pipeline": round(base_s / s["proc_s"], 2), "cer_pct": round(100 * e.sum() / n.sum(), 2),
            "identical_to_transformers_fp32": f"{sum(a == b for a, b in zip(s['texts'], ref_texts))}/{len(audios)}",
            "delta_cer_vs_fp32_pct": [round(100 * pb.delta, 2), round(100 * pb.lo, 2), round(100 * pb.hi, 2)],
            "peak_rss_mb": None if not s.get("peak_rss") else round(s["peak_rss"] / 2**20),
            "size_mb": None if not s.get("size") else round(s["size"] / 2**20, 1),
            **{k: round(s[k], 3) for k in ("encoder_s_per_utt", "decoder_ms_per_token") if k in s},
            **{k: s[k] for k in ("tokens", "cut_off") if k in s},
        }
    faithful = [k for k, v in out["sides"].items() if k != PIPELINE and v["x_pipeline"] >= 3.5 and (
        v["identical_to_transformers_fp32"].split("/")[0] == str(len(audios))
        or v["delta_cer_vs_fp32_pct"][1] <= 0 <= v["delta_cer_vs_fp32_pct"][2])]
    out["target_met_by"] = faithful
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        score_models(corpus, [RunSpec.make(MODEL, engine="ctranslate2", compute_type="int8", device=args.device,
                                           threads=args.threads)],
                     tmp / "s.duckdb", split="test", n_boot=200, progress=False)
        out["full_score_models_ct2_int8"] = {"wall_s": round(time.perf_counter() - t0, 1),
                                             "peak_rss_mb": round(rss.peak / 2**20)}
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
