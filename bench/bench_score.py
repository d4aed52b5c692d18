"""Scoring benchmark, one run, same utterances, same machine: the seed's way (one transformers ASR
``pipeline()`` call per file) vs our transformers engine (length-sorted batches) vs the
ctranslate2 engine at float32 and int8 (and int8 + the ``fallback`` recipe), all on the bundled
whisper-base, all under the same preprocessing (pad-audio, what the pipeline does).

    .venv/bin/python bench/bench_score.py [--n 60] [--threads 2] [--json out.json]

RTFx = audio seconds / processing seconds (log-mel + generate + decode; audio decoding excluded
for every side). For each side: CER on the same utterances (zh-v1), % raw transcripts identical to
transformers fp32, and the paired-bootstrap interval of its CER minus transformers fp32's. The
target on the 2-core CPU: ctranslate2 int8 ≥ 3.5× the pipeline's RTFx with a CER whose paired
interval against fp32 includes 0. Also records the peak RSS of a full ``score_models`` run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_ingest import PeakRSS  # noqa: E402
from machine import cpu_info  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "datasets_local" / "demo_zh"


def _cer(refs, hyps):
    import numpy as np

    from asr_eval.metrics import score_pair

    s = [score_pair(r, h) for r, h in zip(refs, hyps, strict=True)]
    return np.array([x.cer_errors for x in s]), np.array([x.cer_n for x in s])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60, help="test utterances (in shard order)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for both engines (0: all cores)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch
    from transformers import pipeline

    from asr_eval.corpus import open_source
    from asr_eval.engines import create_engine, get_recipe
    from asr_eval.metrics import paired_bootstrap
    from asr_eval.scoring import RunSpec, score_models
    from asr_eval.corpus_handle import iter_batches
    from asr_eval.shards import IngestOptions, ingest

    tmp = Path(tempfile.mkdtemp(prefix="bench_score_"))
    corpus = tmp / "corpus"
    ingest(open_source(str(DEMO)), corpus, IngestOptions(workers=1), progress=False)
    rows = [r for b in iter_batches(corpus, split="test", batch_size=64) for r in b][: args.n]
    audios, refs = [r["audio"] for r in rows], [r["text"] for r in rows]
    audio_s = sum(len(a) for a in audios) / 16000
    if args.threads:
        torch.set_num_threads(args.threads)
    greedy, fallback = get_recipe("greedy"), get_recipe("fallback")

    tr = create_engine("transformers", "bundled:whisper-base", args.device, "float32", args.threads)
    pipe = pipeline("automatic-speech-recognition", model=tr.lm.spec.path, device=args.device, dtype=torch.float32)
    gen = {"language": "zh", "task": "transcribe", "max_new_tokens": 128}
    pipe({"raw": audios[0], "sampling_rate": 16000}, generate_kwargs=gen)  # warm-up
    t0 = time.perf_counter()
    pipe_texts = [pipe({"raw": a, "sampling_rate": 16000}, generate_kwargs=gen)["text"].strip() for a in audios]
    sides = {"pipeline() per file": (pipe_texts, time.perf_counter() - t0, None)}

    def run(label, eng, recipe, bs=None):
        eng.transcribe(audios[:2], recipe, batch_size=bs)  # warm-up
        res = eng.transcribe(audios, recipe, batch_size=bs)
        sides[label] = (res.texts, res.proc_s, res)

    run("transformers fp32 (batched)", tr, greedy)
    del pipe
    for ct in ("float32", "int8"):
        eng = create_engine("ctranslate2", "bundled:whisper-base", args.device, ct, args.threads)
        run(f"ctranslate2 {ct}", eng, greedy)
        if ct == "int8":
            run("ctranslate2 int8 + fallback", eng, fallback)
        del eng

    base_texts, base_s = sides["pipeline() per file"][:2]
    ref_texts = sides["transformers fp32 (batched)"][0]
    e0, n0 = _cer(refs, ref_texts)
    out = {"machine": {**cpu_info(), "torch_threads": torch.get_num_threads(), "device": args.device},
           "utterances": len(audios), "audio_s": round(audio_s, 2), "sides": {}}
    for label, (texts, proc_s, res) in sides.items():
        e, n = _cer(refs, texts)
        pb = paired_bootstrap(e0, e, n0, n_boot=2000, seed=0)
        out["sides"][label] = {
            "proc_s": round(proc_s, 2), "rtfx": round(audio_s / proc_s, 2), "x_pipeline": round(base_s / proc_s, 2),
            "cer_pct": round(100 * e.sum() / n.sum(), 2),
            "identical_to_transformers_fp32": f"{sum(a == b for a, b in zip(texts, ref_texts))}/{len(texts)}",
            "delta_cer_vs_fp32_pct": [round(100 * pb.delta, 2), round(100 * pb.lo, 2), round(100 * pb.hi, 2)],
            "fallbacks": None if res is None else int(sum(res.n_fallbacks)),
            "cut_off": None if res is None else int(sum(res.cut_off)),
        }
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        score_models(corpus, [RunSpec.make("bundled:whisper-base", engine="ctranslate2", compute_type="int8",
                                           device=args.device, threads=args.threads)],
                     tmp / "s.duckdb", split="test", n_boot=200, progress=False)
        out["full_score_models_ct2_int8"] = {"wall_s": round(time.perf_counter() - t0, 1),
                                             "peak_rss_mb": round(rss.peak / 2**20)}
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
