"""Engine ``whispercpp``: whisper.cpp (ggml) through ``pywhispercpp``'s bindings of its C API.

The model is our own conversion of the transformers checkpoint into a ggml file
(``models/ggml.py``), once per (weights hash, quantization) and cached: ``float16`` (whisper.cpp's
default file), ``q8_0`` and ``q5_0`` (ggml's block formats, written by our quantizer since
pywhispercpp does not bind whisper.cpp's quantizer). ``float32`` is refused: the whisper.cpp 1.8.5
in pywhispercpp 1.5.1 aborts the process on an all-f32 file (its im2col asserts f16 conv kernels).

Features, not PCM: whisper.cpp computes its own log-mel when given PCM, but the engine hands it ours
(``whisper_set_mel``, then ``whisper_full`` with no samples), so both preprocessing modes run and the
parity against transformers is on the same features, as for the other engines.

Decoding is ``whisper_full`` per utterance, set up to do one pass of what the driver asks and no
more: forced language and task, ``<|notimestamps|>``, one segment, no internal temperature
fallback, no entropy/log-prob failure rule, no silence rule (the driver and the scorer apply
those); openai's non-speech suppression (``suppress_nst``) and blank suppression at the first step.
Greedy, beam search (whisper.cpp's, size ≤ 8), sampling at a temperature with best-of (whisper.cpp
keeps the best of its decoders: one candidate comes back) and the initial prompt are honoured; the
rest (patience, no_repeat_ngram_size, repetition_penalty) is refused before loading (``check``)."""

from __future__ import annotations

import functools
import os
import re
from typing import Any

import numpy as np

from asr_eval.engines.base import Candidate, DecodeRequest, EngineBase, register_engine
from asr_eval.engines.options import EngineOption, OptionSet, _bool
from asr_eval.errors import AsrEvalError

COMPUTE_TYPES = ("float16", "q8_0", "q5_0")
MAX_DECODERS = 8  # WHISPER_MAX_DECODERS: beams, or candidates sampled at a temperature
# whisper.cpp samples at most n_text_ctx / 2 - 4 tokens per window (220 for Whisper's 448 positions)
MAX_TOKENS = 448 // 2 - 4
INSTALL = "pip install 'asr-eval[whispercpp]' (pywhispercpp, a wheel with whisper.cpp built in)"


def _check(opts: dict[str, Any], recipe: Any) -> None:
    """Recipes whisper.cpp cannot honour, refused before any model loads."""
    if recipe is None:
        return
    bad = []
    if recipe.patience != 1.0:
        bad.append(f"patience {recipe.patience} (whisper.cpp's beam search has no patience)")
    if recipe.no_repeat_ngram_size:
        bad.append(f"no_repeat_ngram_size {recipe.no_repeat_ngram_size} (whisper.cpp has no such rule)")
    if recipe.repetition_penalty != 1.0:
        bad.append(f"repetition_penalty {recipe.repetition_penalty} (whisper.cpp has no such rule)")
    if recipe.beam_size > MAX_DECODERS:
        bad.append(f"beam_size {recipe.beam_size} (whisper.cpp runs at most {MAX_DECODERS} decoders)")
    if any(t > 0 for t in recipe.temperatures) and recipe.best_of > MAX_DECODERS:
        bad.append(f"best_of {recipe.best_of} (whisper.cpp runs at most {MAX_DECODERS} decoders)")
    if recipe.max_new_tokens > MAX_TOKENS:
        bad.append(f"max_new_tokens {recipe.max_new_tokens} (whisper.cpp samples at most {MAX_TOKENS})")
    if bad:
        raise AsrEvalError(f"engine whispercpp cannot run recipe {recipe.name!r}: " + "; ".join(bad)
                           + " — pick another recipe or option, or another engine")


WHISPERCPP = OptionSet({
    # Off by default, unlike whisper.cpp's own default: on the bundled whisper-base (16 clean demo utterances,
    # f16, greedy) it changed 2/16 transcripts against transformers fp32 (16/16 identical without it) and was not
    # faster on the 2-core AVX2 VM. A run with flash_attn=true is verified against the same run without it.
    "flash_attn": EngineOption("flash_attn", "whisper.cpp's flash attention kernels (whisper.cpp's default is on; "
                               "off here: it changes transcripts)", False, _bool),
}, _check)


@functools.cache
def library_versions() -> dict[str, str]:
    """pywhispercpp's version and those of the whisper.cpp and ggml libraries its wheel bundles."""
    from importlib import metadata

    import _pywhispercpp

    out = {"pywhispercpp": metadata.version("pywhispercpp")}
    here = os.path.dirname(_pywhispercpp.__file__)
    for d in (here, os.path.join(here, "pywhispercpp.libs")):
        for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            m = re.match(r"lib(whisper|ggml-base)[-\w]*\.so\.(\d+\.\d+\.\d+)$", f)
            if m:
                out.setdefault({"whisper": "whisper.cpp", "ggml-base": "ggml"}[m.group(1)], m.group(2))
    return out


def _isa() -> str:
    """The CPU features whisper.cpp's ggml build uses here (``whisper_print_system_info``)."""
    import _pywhispercpp as pw

    info = pw.whisper_print_system_info()
    return " ".join(k.strip() for k, v in re.findall(r"([A-Z0-9_ ]+?) = (\d)", info.split("CPU :")[-1]) if v == "1")


@functools.cache
def _quiet_logs() -> None:
    """Silence whisper.cpp's log (it prints per load and per call) with a Python callback, and hand the default
    logger back at exit: a callback still held when the interpreter finalizes is released by a C++ static
    destructor without the GIL, which aborts CPython (``PyThreadState_Get … GIL is released``)."""
    import atexit

    import _pywhispercpp as pw

    pw.whisper_log_set(lambda level, text: None)
    atexit.register(pw.whisper_log_set, None)


@register_engine("whispercpp", options=WHISPERCPP)
class WhisperCppEngine(EngineBase):
    """whisper.cpp (ggml; f16 / q8_0 / q5_0) via pywhispercpp, on our features."""

    name = "whispercpp"

    def __init__(self, files, device: str = "cpu", compute_type: str = "float16", threads: int = 0,
                 options: dict[str, Any] | None = None):
        from asr_eval.engines.options import resolve

        if not device.startswith("cpu"):
            raise AsrEvalError(f"engine whispercpp runs on the CPU (pywhispercpp's wheel is a CPU build); not {device}")
        if compute_type not in COMPUTE_TYPES:
            why = (" (pywhispercpp 1.5.1's whisper.cpp aborts on all-f32 ggml files)" if compute_type == "float32"
                   else "")
            raise AsrEvalError(f"engine whispercpp runs compute types {', '.join(COMPUTE_TYPES)}; not "
                               f"{compute_type!r}{why}")
        try:
            import _pywhispercpp as pw
        except ImportError as e:
            raise AsrEvalError(f"engine whispercpp needs pywhispercpp: {INSTALL}") from e
        from asr_eval.models.bundled import conversion_meta
        from asr_eval.models.ggml import ggml_file

        self.files, self.device, self.compute_type = files, "cpu", compute_type
        self.options = resolve(self.name, options)
        self.version = library_versions().get("whisper.cpp", "?")
        self.threads = threads or len(os.sched_getaffinity(0))
        self.path = ggml_file(files, compute_type)  # converted (and checked) before whisper.cpp reads it
        self.sha256 = conversion_meta(self.path.parent).get("sha256")
        self._pw = pw
        _quiet_logs()
        cp = pw.whisper_context_default_params()
        cp.use_gpu = False
        cp.flash_attn = bool(self.options["flash_attn"])
        self.ctx = pw.whisper_init_from_file_with_params(str(self.path), cp)
        if self.ctx is None:
            raise AsrEvalError(f"whisper.cpp could not load {self.path} (delete {self.path.parent} to convert again)")
        self._eot = files.processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def identity(self) -> dict[str, Any]:
        return {"engine": self.name, **library_versions(), "device": "cpu", "compute_type": self.compute_type,
                "quantization": self.compute_type, "ggml_file": str(self.path), "ggml_sha256": self.sha256,
                "threads": self.threads, "flash_attn": self.options["flash_attn"], "cpu_isa": _isa()}

    def suggest_batch_size(self, recipe) -> int:
        return 1  # whisper_full decodes one utterance at a time

    def peak_memory_bytes(self) -> int | None:
        from asr_eval.engines.transformers_engine import peak_process_memory

        return peak_process_memory("cpu")

    def max_new_tokens_cap(self, recipe) -> int:
        return min(super().max_new_tokens_cap(recipe), self.files.config.max_target_positions // 2 - 4)

    def _params(self, request: DecodeRequest) -> Any:
        pw = self._pw
        if request.max_new_tokens > self.files.config.max_target_positions // 2 - 4:
            raise AsrEvalError(f"engine whispercpp samples at most {self.files.config.max_target_positions // 2 - 4} "
                               f"tokens; lower --max-new-tokens (asked {request.max_new_tokens})")
        beam = request.beam_size > 1 and request.temperature == 0
        s = pw.whisper_sampling_strategy
        p = pw.whisper_full_default_params(s.WHISPER_SAMPLING_BEAM_SEARCH if beam else s.WHISPER_SAMPLING_GREEDY)
        p.n_threads = self.threads
        p.language = request.language
        p.translate = request.task == "translate"
        p.no_timestamps, p.single_segment, p.no_context = True, True, True
        p.print_progress = p.print_realtime = p.print_timestamps = p.print_special = False
        p.temperature, p.temperature_inc = float(request.temperature), 0.0  # one pass: the driver falls back
        p.entropy_thold, p.logprob_thold, p.no_speech_thold = 0.0, -1e9, 2.0  # never fail, never drop as silence
        p.suppress_blank, p.suppress_nst = True, True
        # stop once token index max_tokens is sampled: max_new_tokens tokens at most (extra ones are cut below)
        p.max_tokens = max(1, request.max_new_tokens - 1)
        if beam:
            p.beam_search = {"beam_size": request.beam_size, "patience": -1.0}
        p.greedy = {"best_of": max(1, request.num_candidates) if request.temperature > 0 else 1}
        if request.prompt_ids:
            p.set_prompt_tokens(list(request.prompt_ids))
        return p

    def decode(self, features, request: DecodeRequest) -> list[list[Candidate]]:
        pw = self._pw
        if hasattr(features, "detach"):
            features = features.detach().float().cpu().numpy()
        params = self._params(request)
        m, out = request.max_new_tokens, []
        empty = np.zeros(0, np.float32)
        for f in np.asarray(features, dtype=np.float32):
            mel = np.ascontiguousarray(f)
            if pw.whisper_set_mel(self.ctx, mel.ravel(), mel.shape[1], mel.shape[0]) != 0:
                raise AsrEvalError(f"whisper.cpp refused a log-mel of shape {mel.shape}")
            rc = pw.whisper_full(self.ctx, params, empty, 0)
            if rc != 0:
                raise AsrEvalError(f"whisper.cpp's whisper_full failed (code {rc})")
            data = [pw.whisper_full_get_token_data(self.ctx, s, i)
                    for s in range(pw.whisper_full_n_segments(self.ctx))
                    for i in range(pw.whisper_full_n_tokens(self.ctx, s))]
            ids = [d.id for d in data]
            end = ids.index(self._eot) if self._eot in ids else len(ids)
            text = [d for d in data[:end] if d.id < self._eot][:m]
            cut = self._eot not in ids[:m]  # m tokens without EOT, as generate's max_new_tokens
            # openai's avg_logprob: the kept tokens' log-probs plus EOT's, over len + 1 (at the pass's temperature)
            logps = [d.plog for d in text] + ([data[end].plog] if end < len(data) and not cut else [])
            avg = float(sum(logps) / (len(text) + 1)) if logps else None
            # the no-speech probability is not exposed by pywhispercpp 1.5.1 (whisper.cpp computes it internally)
            out.append([Candidate([d.id for d in text], avg, cut, None)])
        return out

    def __del__(self):
        ctx = getattr(self, "ctx", None)
        if ctx is not None:
            try:
                self._pw.whisper_free(ctx)
            except Exception:  # pragma: no cover - interpreter shutdown
                pass
            self.ctx = None
