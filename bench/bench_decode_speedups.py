"""Decode speed-ups, one run, same utterances, same machine: what the decoder's KV cache, a static
cache with ``torch.compile``, the attention kernel, speculative decoding and CTranslate2's threads,
workers and batch size buy on the bundled whisper-base — and whether the transcripts stay identical.

    .venv/bin/python bench/bench_decode_speedups.py [--n 60] [--token-n 12] [--long long_008]
        [--sides all|LABEL,...] [--json out.json]

Every side is a real engine option (``asr-eval engines``) through ``create_engine`` and the
engine-neutral driver, greedy, pad-audio, fp32; the baseline of each engine is its defaults
(transformers: dynamic cache, sdpa, batch 4; ctranslate2: batch 1, all cores in one worker). Per side:

* RTFx on the first ``--n`` demo test utterances (audio s / processing s: log-mel + generate + text)
  and × the seed's ``pipeline()`` called once per file (the same utterances, measured in this run);
* identical transcripts N/n against its engine's defaults (raw text, byte for byte);
* warm-up: the first call on one full batch minus the second (compile, allocator, kernels paid once);
* decoder ms per generated token at batch 1 on ``--token-n`` utterances: (``engine.decode`` − one
  encoder pass) / (tokens + EOT) — what streaming, which re-decodes at batch 1 every chunk, pays;
* one long-form recording (``--long``, the vad strategy): RTFx and whether its text is identical.

Then what the KV cache buys as the prefix grows: one decoder step (decoder + projection of the last
position) with the cache vs recomputing the whole prefix, at 20, 100 and 400 tokens of prefix.

The speculative side's assistant is a draft cut from whisper-base itself (``models/draft.py``:
decoder layers 0 and 5, distil-whisper's layout, *not distilled*): lossless under greedy by
construction, its speed-up depends on how often drafts are accepted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "datasets_local" / "demo_zh"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from machine import cpu_info  # noqa: E402

DEMO = ROOT / "datasets_local" / "demo_zh"
MODEL = "bundled:whisper-base"
TR_BASE, CT_BASE = "transformers defaults", "ctranslate2 defaults"
# (label, engine, options, baseline label); the assistant's folder is filled in at run time
SIDES: list[tuple[str, str, dict, str | None]] = [
    (TR_BASE, "transformers", {}, None),
    ("cache=none", "transformers", {"cache": "none"}, TR_BASE),
    ("cache=static", "transformers", {"cache": "static"}, TR_BASE),
    ("cache=static compile=true", "transformers", {"cache": "static", "compile": "true"}, TR_BASE),
    ("attn=eager", "transformers", {"attn": "eager"}, TR_BASE),
    ("batch_size=1", "transformers", {"batch_size": "1"}, TR_BASE),
    ("assistant=draft (2 layers)", "transformers", {"assistant": "DRAFT"}, TR_BASE),
    (CT_BASE, "ctranslate2", {}, None),
    ("ct2 inter_threads=2 intra_threads=1", "ctranslate2", {"inter_threads": "2", "intra_threads": "1"}, CT_BASE),
    ("ct2 batch_size=4", "ctranslate2", {"batch_size": "4"}, CT_BASE),
]


def _demo_rows(n: int, work: Path) -> tuple[list, list[str]]:
    from asr_eval.corpus import open_source
    from asr_eval.corpus_handle import iter_batches
    from asr_eval.shards import IngestOptions, ingest

    corpus = work / "corpus"
    ingest(open_source(str(DEMO)), corpus, IngestOptions(workers=1), progress=False)
    rows = [r for b in iter_batches(corpus, split="test", batch_size=64) for r in b][:n]
    return [r["audio"] for r in rows], [r["text"] for r in rows]


def _long_audio(rec: str, work: Path):
    import soundfile as sf
    from make_longform import subset

    manifest = subset([rec], work / "long")
    row = json.loads(manifest.read_text(encoding="utf-8").splitlines()[0])
    audio, sr = sf.read(manifest.parent / row["audio_filepath"], dtype="float32")
    assert sr == 16000
    return audio, row["text"]


def pipeline_baseline(engine, audios) -> float:
    """The seed's way: one transformers ASR ``pipeline()`` call per file (after one warm-up call)."""
    import torch
    from transformers import pipeline

    pipe = pipeline("automatic-speech-recognition", model=engine.lm.spec.path, device="cpu", dtype=torch.float32)
    gen = {"language": "zh", "task": "transcribe", "max_new_tokens": 128}
    pipe({"raw": audios[0], "sampling_rate": 16000}, generate_kwargs=gen)
    t0 = time.perf_counter()
    for a in audios:
        pipe({"raw": a, "sampling_rate": 16000}, generate_kwargs=gen)
    return time.perf_counter() - t0


def _encoder_s(engine, feats) -> float:
    """One encoder pass over ``feats`` (batch 1), the part of ``decode`` that is not the decoder."""
    import numpy as np
    import torch

    t0 = time.perf_counter()
    if engine.name == "transformers":
        with torch.inference_mode():
            engine.lm.model.model.encoder(input_features=torch.as_tensor(feats))
    else:
        import ctranslate2

        engine.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)))
    return time.perf_counter() - t0


def per_token_ms(engine, audios, recipe) -> float:
    """Decoder milliseconds per generated token at batch 1 (decode − encoder pass, summed)."""
    from asr_eval.engines.driver import _request, prompt_ids
    from asr_eval.engines.preprocessing import preprocess

    fe = engine.files.processor.feature_extractor
    request = _request(recipe, 0.0, prompt_ids(engine.files.processor.tokenizer, recipe))
    engine.decode(preprocess(fe, audios[:1], "pad-audio", "cpu"), request)  # batch 1 may be a new shape: compile it
    dec_s, tokens = 0.0, 0
    for a in audios:
        feats = preprocess(fe, [a], "pad-audio", "cpu")
        feats = feats.numpy() if hasattr(feats, "numpy") else feats
        enc = min(_encoder_s(engine, feats) for _ in range(2))
        t0 = time.perf_counter()
        (cands,) = engine.decode(feats, request)
        dec_s += max(0.0, time.perf_counter() - t0 - enc)
        tokens += len(cands[0].tokens) + 1  # + EOT
    return 1000 * dec_s / tokens


def long_form(engine, audio, recipe, batch_size) -> tuple[str, float]:
    from asr_eval.longform import make_strategy, short_transcriber

    strategy = make_strategy("vad")
    short = short_transcriber(engine, recipe, "pad-audio", batch_size, getattr(strategy, "piece_max_new_tokens", None))
    out = strategy.transcribe(engine, audio, recipe, short)
    return out.text, out.proc_s


def kv_growth(prefixes=(20, 100, 400), reps: int = 7) -> dict:
    """One decoder step with the KV cache vs recomputing the prefix, per prefix length (ms, median)."""
    import numpy as np
    import torch

    from asr_eval.models import load

    lm = load(MODEL, device="cpu", dtype="float32")
    model, tok = lm.model, lm.processor.tokenizer
    feats = lm.processor.feature_extractor(np.zeros(16000 * 10, np.float32), sampling_rate=16000,
                                           return_tensors="pt").input_features
    with open(DEMO / "metadata.csv", encoding="utf-8", newline="") as f:
        text = "".join(r["text"] for r in csv.DictReader(f))  # the demo's own sentences: real Mandarin tokens
    filler = tok.encode(text, add_special_tokens=False)
    assert len(filler) > max(prefixes), f"{len(filler)} tokens of filler text"
    out = {}
    with torch.inference_mode():
        enc = model.model.encoder(input_features=feats).last_hidden_state
        dec = model.model.decoder

        def step(ids, past=None):
            h = dec(input_ids=ids, encoder_hidden_states=enc, past_key_values=past, use_cache=past is not None)
            model.proj_out(h.last_hidden_state[:, -1:])
            return h

        for n in prefixes:
            ids = torch.tensor([filler[:n + 1]])
            full = []
            for _ in range(reps):
                t0 = time.perf_counter()
                step(ids)  # no cache: the whole prefix and the new token, every step
                full.append(time.perf_counter() - t0)
            from transformers import DynamicCache, EncoderDecoderCache

            past = EncoderDecoderCache(DynamicCache(), DynamicCache())
            step(ids[:, :n], past)
            cached = []
            for _ in range(reps):
                t0 = time.perf_counter()
                step(ids[:, n:], past)  # with the cache: one new token
                cached.append(time.perf_counter() - t0)
                past.crop(-1)  # drop the step just taken: the next repetition sees the same n-token prefix
            out[n] = {"no_cache_ms": round(1000 * statistics.median(full), 2),
                      "kv_cache_ms": round(1000 * statistics.median(cached), 2)}
            out[n]["x"] = round(out[n]["no_cache_ms"] / out[n]["kv_cache_ms"], 1)
    return out


def run_side(label, engine_name, opts, audios, long_audio, recipe, token_n) -> dict:
    from asr_eval.engines import create_engine

    t0 = time.perf_counter()
    eng = create_engine(engine_name, MODEL, "cpu", "float32", options=opts)
    load_s = time.perf_counter() - t0
    bs = eng.options.get("batch_size") if hasattr(eng, "options") else None
    times = []
    for _ in range(2):  # one full batch, the shape the timed run uses (compile is paid here)
        t0 = time.perf_counter()
        eng.transcribe(audios[:bs or eng.suggest_batch_size(recipe)], recipe, batch_size=bs)
        times.append(time.perf_counter() - t0)
    res = eng.transcribe(audios, recipe, batch_size=bs)
    tok_ms = per_token_ms(eng, audios[:token_n], recipe)
    long_text, long_s = long_form(eng, long_audio, recipe, bs) if long_audio is not None else (None, None)
    print(f"  {label}: RTFx {sum(map(len, audios)) / 16000 / res.proc_s:.2f}, {tok_ms:.1f} ms/token, "
          f"warm-up {times[0] - times[1]:.1f} s", flush=True)
    return {"texts": res.texts, "proc_s": res.proc_s, "load_s": load_s, "warmup_s": times[0] - times[1],
            "token_ms": tok_ms, "long_text": long_text, "long_s": long_s, "tokens": sum(res.n_tokens)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60, help="demo test utterances (shard order)")
    ap.add_argument("--token-n", type=int, default=12, help="utterances for the per-token cost at batch 1")
    ap.add_argument("--long", default="long_008", help="long-form demo recording ('none': skip)")
    ap.add_argument("--sides", default="all", help="comma-separated side labels, or all")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from asr_eval.engines import create_engine, get_recipe
    from asr_eval.models.draft import build_draft

    work = Path(tempfile.mkdtemp(prefix="bench_speedups_"))
    audios, _refs = _demo_rows(args.n, work)
    long_audio = None if args.long == "none" else _long_audio(args.long, work)[0]
    audio_s = sum(len(a) for a in audios) / 16000
    recipe = get_recipe("greedy")
    draft = build_draft(MODEL, work / "draft", layers=(0, -1))
    wanted = None if args.sides == "all" else {s.strip() for s in args.sides.split(",")}
    sides = [s for s in SIDES if wanted is None or s[0] in wanted or s[3] is None]

    print("pipeline() per file …", flush=True)
    pipe_s = pipeline_baseline(create_engine("transformers", MODEL, "cpu", "float32"), audios)
    out: dict = {"machine": {**cpu_info(), "torch_threads": torch.get_num_threads()}, "model": MODEL,
                 "utterances": len(audios), "audio_s": round(audio_s, 2), "long_form": args.long,
                 "long_audio_s": None if long_audio is None else round(len(long_audio) / 16000, 1),
                 "pipeline_proc_s": round(pipe_s, 2), "sides": {}}
    raw = {}
    for label, engine_name, opts, base in sides:
        opts = {k: (str(draft) if v == "DRAFT" else v) for k, v in opts.items()}
        raw[label] = r = run_side(label, engine_name, opts, audios, long_audio, recipe, args.token_n)
        b = raw[base] if base else r
        out["sides"][label] = {
            "engine": engine_name, "options": {k: (v if k != "assistant" else "draft: layers 0+5 of whisper-base")
                                               for k, v in opts.items()},
            "rtfx": round(audio_s / r["proc_s"], 2), "x_pipeline": round(pipe_s / r["proc_s"], 2),
            "x_engine_defaults": round(b["proc_s"] / r["proc_s"], 2),
            "identical": f"{sum(x == y for x, y in zip(r['texts'], b['texts']))}/{len(audios)}",
            "decoder_ms_per_token_b1": round(r["token_ms"], 2), "warmup_s": round(r["warmup_s"], 2),
            "load_s": round(r["load_s"], 2), "tokens": r["tokens"],
            "long_rtfx": None if r["long_s"] is None else round(len(long_audio) / 16000 / r["long_s"], 2),
            "long_identical": None if r["long_text"] is None else r["long_text"] == b["long_text"],
        }
    print("KV cache vs recomputing the prefix …", flush=True)
    out["kv_cache_per_step"] = kv_growth()
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    print(table(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False))


def table(out: dict) -> str:
    lines = ["| side | RTFx | × pipeline | × engine defaults | identical | decoder ms/token (batch 1) | warm-up s | "
             "long-form RTFx | long-form identical |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for label, s in out["sides"].items():
        lines.append(f"| {label} | {s['rtfx']} | {s['x_pipeline']} | {s['x_engine_defaults']} | {s['identical']} | "
                     f"{s['decoder_ms_per_token_b1']} | {s['warmup_s']} | {s['long_rtfx']} | "
                     f"{'—' if s['long_identical'] is None else ('yes' if s['long_identical'] else 'NO')} |")
    lines += ["", "| prefix tokens | no cache, ms/step | KV cache, ms/step | × |", "|---:|---:|---:|---:|"]
    for n, k in out["kv_cache_per_step"].items():
        lines.append(f"| {n} | {k['no_cache_ms']} | {k['kv_cache_ms']} | {k['x']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
