"""Batched Whisper transcription of in-memory 16 kHz audio, with processing-time accounting.

Utterances are sorted by length so each batch holds similar durations: Whisper pads every
input to 30 s, but decoding runs until the longest transcript in the batch ends, so mixing a
2 s and a 25 s utterance makes the short one wait. Results come back in input order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from asr_eval.errors import AsrEvalError
from asr_eval.models.processor import SAMPLING_RATE

# On CPU throughput is flat in batch size (whisper-base, measured: batch 1, 4, 8 within noise,
# 16 slower): the fixed 30 s encoder pass is ~2/3 of each utterance's compute and batching does
# not shrink it. A small batch keeps memory low and still amortises the decoder's per-step cost.
CPU_BATCH_SIZE = 4
MAX_AUTO_BATCH = 256


# transformers 5 warns on every Whisper batch about things that do not apply here: its own
# generate passes suppress tokens next to a generation config; a max_length default it fills in
# itself; and a missing attention mask, which Whisper does not need (every input is padded to
# 30 s and every decoder prompt is the same length). Only these exact messages are dropped.
_BENIGN = ("Passing `generation_config` together with generation-related arguments",
           "Both `max_new_tokens`", "The attention mask is not set")


class _DropBenign(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_BENIGN)


logging.getLogger("transformers.generation.utils").addFilter(_DropBenign())


@dataclass
class DecodeParams:
    """Decoding settings; stored with every run, part of its id."""

    language: str = "zh"
    task: str = "transcribe"
    num_beams: int = 1
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy / beam search; > 0 samples (results then vary run to run)

    def __post_init__(self) -> None:
        if self.num_beams < 1 or self.max_new_tokens < 1 or self.temperature < 0:
            raise AsrEvalError(f"invalid decode parameters {self.to_dict()}: need num_beams ≥ 1, "
                               "max_new_tokens ≥ 1, temperature ≥ 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"language": self.language, "task": self.task, "num_beams": self.num_beams,
                              "max_new_tokens": self.max_new_tokens, "return_timestamps": False}
        kw.update({"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {"do_sample": False})
        return kw


@dataclass
class BatchResult:
    texts: list[str]  # decoded text, special tokens dropped, surrounding whitespace stripped
    n_tokens: list[int]  # text tokens generated (== max_new_tokens: the output was cut off)
    proc_s: float  # log-mel + generate + decode seconds (audio decoding excluded)


def _check_audio(a: np.ndarray, i: int) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise AsrEvalError(f"audio #{i} has shape {a.shape}; transcription takes mono 1-D 16 kHz arrays "
                           "(decode with asr_eval.audio, which downmixes and resamples)")
    if len(a) > 30 * SAMPLING_RATE:
        raise AsrEvalError(f"audio #{i} is {len(a) / SAMPLING_RATE:.1f} s; Whisper reads 30 s windows and "
                           "would silently drop the rest — segment it (ingest rejects > 30 s utterances)")
    return a.astype(np.float32, copy=False)


def transcribe_arrays(lm: Any, audios: Sequence[np.ndarray], params: DecodeParams | None = None, batch_size: int = 16,
                      sort_by_length: bool = True) -> BatchResult:
    """Transcribe 16 kHz float32 mono arrays with a loaded model (``asr_eval.models.load``)."""
    import torch

    params = params or DecodeParams()
    if batch_size < 1:
        raise AsrEvalError(f"batch size {batch_size}: must be ≥ 1")
    prompt_len = 4  # <|startoftranscript|><|lang|><|task|><|notimestamps|>
    if params.max_new_tokens + prompt_len > lm.model.config.max_target_positions:
        raise AsrEvalError(f"max_new_tokens {params.max_new_tokens} + {prompt_len} prompt tokens exceeds the model's "
                           f"{lm.model.config.max_target_positions} decoder positions; lower --max-new-tokens")
    arrays = [_check_audio(a, i) for i, a in enumerate(audios)]
    order = sorted(range(len(arrays)), key=lambda i: -len(arrays[i])) if sort_by_length else list(range(len(arrays)))
    fe, tok = lm.processor.feature_extractor, lm.processor.tokenizer
    eot = lm.model.generation_config.eos_token_id  # every Whisper text token id is below <|endoftext|>
    dtype = getattr(torch, lm.dtype)
    fe_device = "cuda" if lm.device.startswith("cuda") else "cpu"
    texts: list[str] = [""] * len(arrays)
    n_tokens: list[int] = [0] * len(arrays)
    proc_s = 0.0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            t0 = time.perf_counter()
            feats = fe([arrays[i] for i in idx], sampling_rate=SAMPLING_RATE, return_tensors="pt",
                       device=fe_device).input_features.to(lm.device, dtype)
            out = lm.model.generate(input_features=feats, **params.generate_kwargs())
            seqs = (out.sequences if hasattr(out, "sequences") else out).cpu()  # .cpu() also waits for the GPU
            for j, (text, seq) in enumerate(zip(tok.batch_decode(seqs, skip_special_tokens=True), seqs)):
                texts[idx[j]] = text.strip()
                n_tokens[idx[j]] = int((seq < eot).sum())
            proc_s += time.perf_counter() - t0
    return BatchResult(texts, n_tokens, proc_s)


def per_sample_bytes(config: Any, dtype_bytes: int, num_beams: int = 1, max_new_tokens: int = 128) -> int:
    """Upper estimate of the GPU memory one utterance needs during ``generate``: cross- and
    self-attention KV caches, the encoder's live activations, and fp32 logits/scores."""
    s, d, layers = config.max_source_positions, config.d_model, config.decoder_layers
    t = max_new_tokens + 4
    kv = 2 * layers * (s + t) * d
    encoder = s * (4 * d + 2 * config.encoder_ffn_dim) + 2 * s * d + 2 * s * 2 * config.num_mel_bins
    logits_fp32 = 3 * config.vocab_size * 2  # logits, processed scores, softmax — fp32, counted in dtype units
    return int(1.5 * dtype_bytes * (num_beams * (kv + logits_fp32) + encoder))


def auto_batch_size(lm: Any, device: str | None = None, num_beams: int = 1, max_new_tokens: int = 128) -> int:
    """On a GPU: as many utterances as 80 % of the free memory holds (the weights are already
    loaded), capped at 256. On CPU: ``CPU_BATCH_SIZE`` (throughput does not grow with it)."""
    import torch

    device = device or lm.device
    if not device.startswith("cuda"):
        return CPU_BATCH_SIZE
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    per = per_sample_bytes(lm.model.config, getattr(torch, lm.dtype).itemsize, num_beams, max_new_tokens)
    return max(1, min(MAX_AUTO_BATCH, int(0.8 * free) // per))


def peak_gpu_memory_bytes() -> int | None:
    """Peak CUDA memory allocated by this process since the last model load; None without a GPU."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.max_memory_allocated())
