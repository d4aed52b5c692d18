"""Scoring benchmark: our batched scorer vs the seed's way (one transformers ASR pipeline
call per file), same model (bundled whisper-base), same utterances, same machine, one run.

    .venv/bin/python bench/bench_score.py [--n 48] [--batch-size 8] [--device cpu]

RTFx = audio seconds / processing seconds, where processing covers log-mel + generate +
decode for both sides (audio decoding excluded for both). Also records the peak RSS of a
full `score_models` run over the same utterances (streams shards window by window).
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

DEMO = Path(__file__).resolve().parent.parent / "datasets_local" / "demo_zh"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48, help="test utterances (clean neural voice first)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch
    from transformers import pipeline

    from asr_eval.corpus import open_source
    from asr_eval.inference import DecodeParams, transcribe_arrays
    from asr_eval.models import load
    from asr_eval.scoring import score_models
    from asr_eval.shards import IngestOptions, ingest, iter_batches

    tmp = Path(tempfile.mkdtemp(prefix="bench_score_"))
    corpus = tmp / "corpus"
    ingest(open_source(str(DEMO)), corpus, IngestOptions(workers=1), progress=False)
    rows = [r for b in iter_batches(corpus, split="test", batch_size=64) for r in b][: args.n]
    audios = [r["audio"] for r in rows]
    audio_s = sum(len(a) for a in audios) / 16000
    lm = load("bundled:whisper-base", device=args.device)
    params = DecodeParams(max_new_tokens=128)

    # warm-up both paths once (first-call allocations are not what we measure)
    transcribe_arrays(lm, audios[:2], params, batch_size=2)
    pipe = pipeline("automatic-speech-recognition", model=lm.spec.path, device=args.device,
                    dtype=torch.float32)
    gen = {"language": "zh", "task": "transcribe", "max_new_tokens": 128}
    pipe({"raw": audios[0], "sampling_rate": 16000}, generate_kwargs=gen)

    t0 = time.perf_counter()
    base_texts = [pipe({"raw": a, "sampling_rate": 16000}, generate_kwargs=gen)["text"] for a in audios]
    base_s = time.perf_counter() - t0
    res = transcribe_arrays(lm, audios, params, batch_size=args.batch_size)
    ours_s = res.proc_s
    same = sum(a.strip() == b.strip() for a, b in zip(base_texts, res.texts, strict=True))

    with PeakRSS() as rss:
        t0 = time.perf_counter()
        score_models(corpus, ["bundled:whisper-base"], tmp / "s.duckdb", split="test", batch_size=args.batch_size,
                     device=args.device, params=params, n_boot=200, progress=False)
        full_s = time.perf_counter() - t0
    out = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": args.device},
        "utterances": len(audios), "audio_s": round(audio_s, 2),
        "pipeline_per_file": {"proc_s": round(base_s, 2), "rtfx": round(audio_s / base_s, 2)},
        "ours_batched": {"proc_s": round(ours_s, 2), "rtfx": round(audio_s / ours_s, 2), "batch_size": args.batch_size},
        "ratio_rtfx_ours_over_pipeline": round(base_s / ours_s, 2),
        "identical_transcripts": f"{same}/{len(audios)}",
        "full_score_models": {"wall_s": round(full_s, 1), "peak_rss_mb": round(rss.peak / 2**20)},
    }
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
