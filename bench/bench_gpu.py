"""GPU throughput of a Whisper large-v3-architecture model: transformers fp16/bf16 batched
generation and, where a CUDA CTranslate2 runs, float16 / int8_float16 (issue 11, "Benchmark").

Self-contained on purpose (torch + transformers + numpy; ctranslate2 optional) so it runs on a
bare GPU machine without this package's dependencies:

    python bench/bench_gpu.py                 # large-v3 shape on CUDA, batch 16/64/128
    python bench/bench_gpu.py --tiny          # tiny shape on CPU: a smoke test of the script
    python bench/bench_gpu.py --speedups-only # decode speed-ups only: batch 1 and 16, dynamic / no cache /
                                              # static / static + compile / speculative (issue 21)

What is measured, per engine × precision × batch size: wall time of feature extraction
(WhisperFeatureExtractor, torch STFT on the model's device) + ``generate`` with the prompt
``<|startoftranscript|><|zh|><|transcribe|><|notimestamps|>`` and exactly 32 generated tokens
(``min_new_tokens = max_new_tokens = 32``; CTranslate2: EOT suppressed, ``max_length`` = 64, which
CTranslate2 4.8's Whisper turns into 32 tokens after the prompt; the token counts are reported),
greedy, after one warm-up call, ``torch.cuda.synchronize()`` around each timed call, median of
``--repeats`` calls. RTFx = audio seconds / wall seconds for ``--clip-s`` second clips (default
10 s; the demo corpus' test split has a mean of 2.17 s, so its RTFx is the printed value × 0.217:
every clip is padded to 30 s before the encoder, so wall time does not depend on the clip length).

Weights are random (the real large-v3 config values: d_model 1280, 32+32 layers, 20 heads,
FFN 5120, 128 mel bins, vocab 51866, 1500 source / 448 target positions), so transcripts are
meaningless and only the speed is. The numbers are not the Open ASR Leaderboard's (real weights
and audio, data-dependent lengths); see bench/README.md for the comparison and its caveats.
Prints a Markdown table; writes ``$OUT/bench_gpu.json`` when ``OUT`` is set (else ``--json``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SR = 16_000
LARGE_V3 = {"d_model": 1280, "encoder_layers": 32, "decoder_layers": 32, "encoder_attention_heads": 20,
            "decoder_attention_heads": 20, "encoder_ffn_dim": 5120, "decoder_ffn_dim": 5120,
            "num_mel_bins": 128, "vocab_size": 51866, "max_source_positions": 1500,
            "max_target_positions": 448}
TINY = {**LARGE_V3, "d_model": 64, "encoder_layers": 2, "decoder_layers": 2,
        "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 128,
        "decoder_ffn_dim": 128}

# The large-v3 token layout (multilingual, 100 languages incl. yue): byte-level BPE 0..50256,
# then the special tokens, then 1501 timestamps, 51866 in all.
EOT, SOT = 50257, 50258
N_BPE = 50257
TASKS = ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
         "<|notimestamps|>"]
NEW_TOKENS = 32


def language_codes() -> list[str]:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES
    codes = list(LANGUAGES)
    if len(codes) != 100:
        raise SystemExit(f"expected the 100 large-v3 languages in transformers' LANGUAGES, got {len(codes)}")
    return codes


def special_ids() -> dict[str, int]:
    """Token → id for the special tokens of the large-v3 layout."""
    ids = {"<|endoftext|>": EOT, "<|startoftranscript|>": SOT}
    nxt = SOT + 1
    for code in language_codes():
        ids[f"<|{code}|>"] = nxt
        nxt += 1
    for tok in TASKS:
        ids[tok] = nxt
        nxt += 1
    return ids   # nxt == 50365 == first timestamp


def prompt_ids() -> list[int]:
    ids = special_ids()
    return [SOT, ids["<|zh|>"], ids["<|transcribe|>"], ids["<|notimestamps|>"]]


@dataclass
class Row:
    engine: str
    precision: str
    batch: int
    wall_s: float                 # median over repeats: features + generate
    feat_s: float                 # median feature-extraction part
    walls: list[float]
    rtfx: float                   # audio seconds / wall seconds at clip_s
    rtfx_demo_mean: float         # same wall time, demo test-split mean clip length
    new_tokens: float             # generated tokens per sequence (mean), prompt excluded
    tokens_per_s: float
    peak_mem_gib: float
    mem_note: str = ""


@dataclass
class Result:
    device: str
    env: dict
    clip_s: float
    demo_mean_clip_s: float
    config: dict
    rows: list[Row] = field(default_factory=list)
    ct2_status: str = "not tried"
    speedups: list[dict] = field(default_factory=list)  # --speedups: decode options at batch 1 and 16


def synth_audio(n: int, clip_s: float, seed: int = 0) -> list[np.ndarray]:
    """``n`` fixed-length speech-band clips (harmonics with a moving pitch + noise), float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(clip_s * SR), dtype=np.float32) / SR
    out = []
    for _ in range(n):
        f0 = rng.uniform(100, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SR
        x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
        x = 0.1 * x + 0.01 * rng.standard_normal(t.size)
        out.append(x.astype(np.float32))
    return out


def build_model(cfg: dict, dtype, device: str, seed: int = 0):
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperForConditionalGeneration,
    )

    ids = special_ids()
    config = WhisperConfig(**cfg, bos_token_id=EOT, eos_token_id=EOT, pad_token_id=EOT,
                           decoder_start_token_id=SOT, suppress_tokens=[],
                           begin_suppress_tokens=[220, EOT])
    torch.manual_seed(seed)
    with torch.device(device):   # parameters are created (and initialised) on the device
        model = WhisperForConditionalGeneration._from_config(config, dtype=dtype).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=SOT, bos_token_id=EOT, eos_token_id=EOT, pad_token_id=EOT,
        is_multilingual=True, max_length=cfg["max_target_positions"],
        lang_to_id={f"<|{c}|>": ids[f"<|{c}|>"] for c in language_codes()},
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], suppress_tokens=[],
        begin_suppress_tokens=[220, EOT], return_timestamps=False)
    return model


def sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def count_new_tokens(seqs, n_prompt: int) -> float:
    """Generated tokens per row (prompt excluded, whether or not generate returned it)."""
    import torch
    seqs = seqs if isinstance(seqs, torch.Tensor) else seqs["sequences"]
    start = n_prompt if int(seqs[0, 0]) == SOT else 0
    body = seqs[:, start:]
    # trailing pad (= EOT) after an EOT is not a generated token; rows with fewer tokens are padded
    lengths = []
    for row in body.tolist():
        n = len(row)
        while n > 1 and row[n - 1] == EOT and row[n - 2] == EOT:
            n -= 1
        lengths.append(n)
    return float(np.mean(lengths))


def time_calls(fn, repeats: int, device: str) -> tuple[list[float], list[float], object]:
    fn()   # warm-up (kernels, allocator, cuBLAS handles)
    walls, feats, last = [], [], None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        last, t_feat = fn()
        sync(device)
        walls.append(time.perf_counter() - t0)
        feats.append(t_feat)
    return walls, feats, last


def bench_hf(model, fe, audio, batch: int, precision: str, args, res: Result) -> None:
    import torch

    dev = args.device
    dtype = next(model.parameters()).dtype
    clips = audio[:batch]

    def call():
        t0 = time.perf_counter()
        feats = fe(clips, sampling_rate=SR, return_tensors="pt", device=dev).input_features
        feats = feats.to(dev, dtype)
        sync(dev)
        t_feat = time.perf_counter() - t0
        with torch.inference_mode():
            out = model.generate(feats, language="zh", task="transcribe", return_timestamps=False,
                                 min_new_tokens=NEW_TOKENS, max_new_tokens=NEW_TOKENS, num_beams=1,
                                 do_sample=False)
        return out, t_feat

    if dev.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    walls, feats, out = time_calls(call, args.repeats, dev)
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.startswith("cuda") else float("nan")
    add_row(res, "transformers", precision, batch, walls, feats,
            count_new_tokens(out, len(prompt_ids())), peak, "torch max_memory_allocated")


def add_row(res: Result, engine, precision, batch, walls, feats, new_tokens, peak, note) -> None:
    wall = statistics.median(walls)
    row = Row(engine=engine, precision=precision, batch=batch, wall_s=round(wall, 4),
              feat_s=round(statistics.median(feats), 4), walls=[round(w, 4) for w in walls],
              rtfx=round(batch * res.clip_s / wall, 1),
              rtfx_demo_mean=round(batch * res.demo_mean_clip_s / wall, 1),
              new_tokens=round(new_tokens, 2), tokens_per_s=round(batch * new_tokens / wall, 1),
              peak_mem_gib=round(peak, 2), mem_note=note)
    res.rows.append(row)
    print(f"  {engine:12s} {precision:13s} b={batch:<4d} wall {row.wall_s:.3f}s (features {row.feat_s:.3f}s)"
          f"  RTFx {row.rtfx:8.1f}  tokens/seq {row.new_tokens:5.1f}  {row.tokens_per_s:9.1f} tok/s"
          f"  peak {row.peak_mem_gib:.2f} GiB", flush=True)


# ---------------------------------------------------------------------------- decode speed-ups (issue 21)

SPEEDUP_MODES = ("dynamic", "no-cache", "static", "static+compile", "assistant")


def draft_of(model, layers=(0, -1)):
    """distil-whisper's draft layout cut from ``model`` (not distilled): a decoder-only
    ``WhisperForCausalLM`` with its decoder layers ``layers``, embeddings, final norm and projection;
    it reads the main model's encoder output. Same vocabulary by construction."""
    from transformers import WhisperConfig, WhisperForCausalLM

    n = model.config.decoder_layers
    picked = sorted({i % n for i in layers})
    cfg = WhisperConfig(**{**model.config.to_dict(), "decoder_layers": len(picked), "is_encoder_decoder": False})
    dtype, dev = next(model.parameters()).dtype, next(model.parameters()).device
    draft = WhisperForCausalLM(cfg).to(dev, dtype).eval()
    src = model.state_dict()
    state = {}
    for key in draft.state_dict():
        if key.startswith("model.decoder.layers."):
            i, _, tail = key.removeprefix("model.decoder.layers.").partition(".")
            state[key] = src[f"model.decoder.layers.{picked[int(i)]}.{tail}"]
        else:
            state[key] = src[key]
    draft.load_state_dict(state)
    draft.generation_config = model.generation_config
    return draft


def bench_speedups(model, fe, audio, args, res: Result) -> None:
    """Per batch size (1 and 16 by default) and decode mode: wall time of ``generate`` on the same
    features (features excluded), tokens/s, × dynamic, first-call cost (compile), and whether the
    generated tokens are identical to the dynamic cache's. The assistant runs at batch 1 only
    (transformers' assisted generation); with random weights its acceptance rate — hence its speed —
    is not what a distilled draft gets: it measures the mechanism's overhead. Random weights also
    give nearly flat logits, so a different kernel order (the assistant's multi-token verification
    pass, a compiled graph) can flip a near-tie: "identical" here checks rounding, not a real model."""
    import torch
    from transformers import CompileConfig

    dev = args.device
    dtype = next(model.parameters()).dtype
    draft = draft_of(model) if "assistant" in args.speedup_modes else None
    for batch in args.speedup_batches:
        feats = fe(audio[:batch], sampling_rate=SR, return_tensors="pt").input_features.to(dev, dtype)
        base_tokens, base_wall = None, None
        for mode in args.speedup_modes:
            if mode == "assistant" and batch > 1:
                continue
            kw: dict = {}
            if mode == "no-cache":
                kw["use_cache"] = False
            elif mode == "static":
                kw.update(cache_implementation="static", disable_compile=True)
            elif mode == "static+compile":
                cc = CompileConfig(mode="reduce-overhead" if dev.startswith("cuda") else "default")
                if not dev.startswith("cuda"):
                    cc._compile_all_devices = True
                kw.update(cache_implementation="static", compile_config=cc)
            elif mode == "assistant":
                kw["assistant_model"] = draft

            def call(kw=kw):
                with torch.inference_mode():
                    return model.generate(feats, language="zh", task="transcribe", return_timestamps=False,
                                          min_new_tokens=NEW_TOKENS, max_new_tokens=NEW_TOKENS, num_beams=1,
                                          do_sample=False, **kw), 0.0

            sync(dev)
            t0 = time.perf_counter()
            call()
            sync(dev)
            first = time.perf_counter() - t0
            walls, _, out = time_calls(call, args.repeats, dev)
            wall = statistics.median(walls)
            seqs = out if isinstance(out, torch.Tensor) else out["sequences"]
            if mode == "dynamic":
                base_tokens, base_wall = seqs.cpu(), wall
            row = {"mode": mode, "precision": str(dtype).removeprefix("torch."), "batch": batch,
                   "wall_s": round(wall, 4), "first_call_s": round(first, 2),
                   "tokens_per_s": round(batch * count_new_tokens(seqs, len(prompt_ids())) / wall, 1),
                   "x_dynamic": None if base_wall is None else round(base_wall / wall, 2),
                   "identical_to_dynamic": None if base_tokens is None else bool(torch.equal(seqs.cpu(), base_tokens))}
            res.speedups.append(row)
            print(f"  speed-up {mode:15s} b={batch:<3d} wall {wall:.3f}s first call {first:.1f}s "
                  f"× dynamic {row['x_dynamic']}  identical {row['identical_to_dynamic']}", flush=True)
            flush(res, args)


# ---------------------------------------------------------------------------- CTranslate2

def cublas12_shim() -> str | None:
    """CTranslate2's PyPI wheels dlopen ``libcublas.so.12``. On a CUDA 13-only machine, point a
    ``libcublas.so.12`` link at the installed cuBLAS (it uses only long-stable entry points:
    cublasCreate/Destroy/SetStream/GetMathMode/GetProperty, cublasGemmEx,
    cublasGemmStridedBatchedEx, cublasSgemm, cublasSgemmStridedBatched) and re-exec with it on
    LD_LIBRARY_PATH (the loader reads that variable only at start-up). Returns a note."""
    import ctypes
    if os.environ.get("BENCH_GPU_SHIM"):
        return os.environ["BENCH_GPU_SHIM"]
    try:
        ctypes.CDLL("libcublas.so.12")
        return None
    except OSError:
        pass
    sites = [p for p in sys.path if p.endswith("site-packages")]
    patterns = [f"{s}/nvidia/**/libcublas.so.1[3-9]" for s in sites] + [f"{s}/torch/lib/libcublas.so.1[3-9]" for s in sites]
    patterns += ["/usr/local/cuda*/lib64/libcublas.so.1[3-9]", "/usr/local/cuda*/targets/*/lib/libcublas.so.1[3-9]",
                 "/usr/lib/x86_64-linux-gnu/libcublas.so.1[3-9]"]
    found = sorted({f for pat in patterns for f in glob.glob(pat, recursive=True)})
    if not found:
        return "no libcublas.so.12 and no newer libcublas found"
    real = os.path.realpath(found[0])
    shim = Path(tempfile.mkdtemp(prefix="cublas12-"))
    (shim / "libcublas.so.12").symlink_to(real)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join([str(shim), os.path.dirname(real), env.get("LD_LIBRARY_PATH", "")])
    env["BENCH_GPU_SHIM"] = f"libcublas.so.12 -> {real}"
    print(f"re-exec with {env['BENCH_GPU_SHIM']}", flush=True)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
    return None  # not reached


class _VocabOnlyTokenizer:
    """What TransformersConverter's Whisper loader reads from a tokenizer: the large-v3 token
    layout (placeholder names for the 50257 BPE tokens; no tokenizer files exist offline)."""

    def __init__(self) -> None:
        self._ids = special_ids()
        self.additional_special_tokens = list(self._ids)[1:]   # after <|endoftext|>

    def get_vocab(self) -> dict[str, int]:
        vocab = {f"bpe{i}": i for i in range(N_BPE)}
        vocab.update(self._ids)
        return vocab

    def convert_tokens_to_ids(self, token: str) -> int:
        return self._ids[token]


def convert_ct2(model, out_dir: Path) -> Path:
    """Convert the in-memory random model with ctranslate2's TransformersConverter (float16
    weights); config.json is saved so the converter can read it, the weights come from memory."""
    import ctranslate2
    import torch

    src = out_dir / "hf"
    model.config.save_pretrained(src)
    cpu_model = model.to("cpu", torch.float16)

    class _Converter(ctranslate2.converters.TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            return cpu_model

        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return _VocabOnlyTokenizer()

    dst = out_dir / "ct2"
    _Converter(str(src)).convert(str(dst), quantization="float16", force=True)
    return dst


def bench_ct2(ct2_dir: Path, fe, audio, args, res: Result) -> None:
    import ctranslate2
    import torch

    dev = args.device
    ct2_dev = "cuda" if dev.startswith("cuda") else "cpu"
    prompt = prompt_ids()
    for ctype in args.ct2_types:
        base = torch.cuda.mem_get_info()[1] - torch.cuda.mem_get_info()[0] if ct2_dev == "cuda" else 0
        t0 = time.perf_counter()
        model = ctranslate2.models.Whisper(str(ct2_dir), device=ct2_dev, compute_type=ctype)
        print(f"  ctranslate2 {ctype}: loaded in {time.perf_counter() - t0:.1f}s", flush=True)
        for batch in args.batches:
            clips = audio[:batch]

            def call(model=model, clips=clips, batch=batch):
                t_a = time.perf_counter()
                feats = fe(clips, sampling_rate=SR, return_tensors="pt", device=dev).input_features
                feats = feats.to(dev, torch.float32).contiguous()
                sync(dev)
                t_feat = time.perf_counter() - t_a
                sv = ctranslate2.StorageView.from_array(feats if ct2_dev == "cuda" else feats.numpy())
                # CTranslate2 4.8's Whisper generates max_length // 2 tokens after the prompt
                # (measured: 20→10, 36→18, 64→32, 100→50); the table reports the count it made.
                out = model.generate(sv, [prompt] * batch, beam_size=1, max_length=2 * NEW_TOKENS,
                                     suppress_blank=False, suppress_tokens=[EOT])
                return out, t_feat

            walls, feats, out = time_calls(call, args.repeats, dev)
            used = (torch.cuda.mem_get_info()[1] - torch.cuda.mem_get_info()[0]) if ct2_dev == "cuda" else float("nan")
            new_tokens = float(np.mean([len(r.sequences_ids[0]) for r in out]))
            add_row(res, "ctranslate2", ctype, batch, walls, feats, new_tokens, (used - base) / 2**30,
                    "device memory in use after the run minus before loading the model (mem_get_info; "
                    "CTranslate2's caching allocator keeps its peak)")
            flush(res, args)
        del model, call
        if ct2_dev == "cuda":
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- main

def markdown(res: Result) -> str:
    lines = [f"Device: {res.device} — " + ", ".join(f"{k} {v}" for k, v in res.env.items()),
             (f"Clip {res.clip_s:g} s (RTFx also at the demo test-split mean {res.demo_mean_clip_s:g} s), "
              f"{NEW_TOKENS} generated tokens, greedy, median of the timed calls. CTranslate2: {res.ct2_status}"),
             "",
             (f"| engine | precision | batch | wall s (features s) | RTFx @ {res.clip_s:g} s "
              f"| RTFx @ {res.demo_mean_clip_s:g} s | tokens/seq | tokens/s | peak GiB |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res.rows:
        lines.append(f"| {r.engine} | {r.precision} | {r.batch} | {r.wall_s:.3f} ({r.feat_s:.3f}) | {r.rtfx:.1f} | "
                     f"{r.rtfx_demo_mean:.1f} | {r.new_tokens:g} | {r.tokens_per_s:.0f} | {r.peak_mem_gib:.2f} |")
    if res.speedups:
        lines += ["", "Decode speed-ups (transformers `generate` on the same features, features excluded):", "",
                  "| mode | precision | batch | wall s | first call s | tokens/s | × dynamic | identical tokens |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for r in res.speedups:
            lines.append(f"| {r['mode']} | {r['precision']} | {r['batch']} | {r['wall_s']:.3f} | {r['first_call_s']} | "
                         f"{r['tokens_per_s']} | {r['x_dynamic']} | {r['identical_to_dynamic']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny config on CPU (smoke test of this script)")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="default 16 64 128 (2 4 with --tiny)")
    ap.add_argument("--dtypes", nargs="+", default=None, help="default float16 bfloat16 (float32 with --tiny)")
    ap.add_argument("--ct2-types", nargs="+", default=None,
                    help="default float16 int8_float16 (float32 int8 with --tiny); 'none' skips CTranslate2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clip-s", type=float, default=10.0)
    ap.add_argument("--demo-mean-clip-s", type=float, default=2.17,
                    help="mean duration of datasets_local/demo_zh's test split (150 clips)")
    ap.add_argument("--json", default=None, help="default $OUT/bench_gpu.json when OUT is set")
    ap.add_argument("--speedups", action="store_true", help="also the decode speed-ups (KV cache, static cache, "
                    "static + compile, speculative decoding) on the first precision")
    ap.add_argument("--speedups-only", action="store_true", help="only the decode speed-ups (no batch sweep, no CT2)")
    ap.add_argument("--speedup-batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--speedup-modes", nargs="+", default=list(SPEEDUP_MODES), choices=SPEEDUP_MODES)
    args = ap.parse_args(argv)
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    args.batches = args.batches or ([2, 4] if args.tiny else [16, 64, 128])
    args.dtypes = args.dtypes or (["float32"] if args.tiny else ["float16", "bfloat16"])
    args.ct2_types = args.ct2_types or (["float32", "int8"] if args.tiny else ["float16", "int8_float16"])
    if args.ct2_types == ["none"]:
        args.ct2_types = []

    shim = None
    if args.ct2_types and args.device.startswith("cuda"):
        try:
            import ctranslate2
            shim = cublas12_shim()
        except ImportError:
            pass

    import torch
    import transformers
    from transformers import WhisperFeatureExtractor

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run it on a GPU machine, or use --tiny for the CPU smoke test")
    torch.backends.cuda.matmul.allow_tf32 = True
    transformers.logging.set_verbosity_error()   # the max_length/max_new_tokens notice, per call
    cfg = TINY if args.tiny else LARGE_V3
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__}
    if args.device.startswith("cuda"):
        env["cuda"] = torch.version.cuda
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    res = Result(device=name, env=env, clip_s=args.clip_s, demo_mean_clip_s=args.demo_mean_clip_s, config=cfg)
    print(f"device {name}; {env}", flush=True)

    fe = WhisperFeatureExtractor(feature_size=cfg["num_mel_bins"])
    audio = synth_audio(max(args.batches), args.clip_s)
    model = None
    if args.speedups or args.speedups_only:
        model = build_model(cfg, getattr(torch, args.dtypes[0]), args.device)
        audio_s = audio if len(audio) >= max(args.speedup_batches) else synth_audio(max(args.speedup_batches),
                                                                                     args.clip_s)
        bench_speedups(model, fe, audio_s, args, res)
        if args.speedups_only:
            print(markdown(res))
            return 0
    for i, precision in enumerate(args.dtypes):
        dtype = getattr(torch, precision)
        t0 = time.perf_counter()
        model = build_model(cfg, dtype, args.device) if model is None else model.to(dtype)
        n = sum(p.numel() for p in model.parameters())
        print(f"transformers {precision}: {n / 1e6:.0f} M parameters ready in {time.perf_counter() - t0:.1f}s, "
              f"attention {model.config._attn_implementation}", flush=True)
        for batch in args.batches:
            bench_hf(model, fe, audio, batch, precision, args, res)
            flush(res, args)

    if args.ct2_types:
        try:
            import ctranslate2
            env["ctranslate2"] = ctranslate2.__version__
            if args.device.startswith("cuda") and ctranslate2.get_cuda_device_count() < 1:
                raise RuntimeError("ctranslate2.get_cuda_device_count() == 0")
            res.ct2_status = "ran" + (f" ({shim})" if shim else "")
            with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
                t0 = time.perf_counter()
                ct2_dir = convert_ct2(model, Path(tmp))
                del model
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                print(f"ctranslate2 conversion: {time.perf_counter() - t0:.1f}s", flush=True)
                bench_ct2(ct2_dir, fe, audio, args, res)
        except Exception as exc:  # noqa: BLE001 — the transformers rows stand; say why CT2 did not
            traceback.print_exc()
            res.ct2_status = f"did not run: {type(exc).__name__}: {exc}" + (f" ({shim})" if shim else "")
    else:
        res.ct2_status = "skipped"
    flush(res, args)
    print(markdown(res))
    return 0


def flush(res: Result, args) -> None:
    path = args.json or (os.path.join(os.environ["OUT"], "bench_gpu.json") if os.environ.get("OUT") else None)
    if path:
        Path(path).write_text(json.dumps({**asdict(res), "markdown": markdown(res)}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
