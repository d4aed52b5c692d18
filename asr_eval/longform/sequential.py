"""``sequential``: OpenAI's long-form algorithm, through transformers' long-form ``generate``.

The loop (transformers ``WhisperGenerationMixin.generate`` for inputs over 3000 frames) was
checked against openai-whisper's ``transcribe.py``: a 30 s window starts at ``seek``; the
window's tokens are split into segments at consecutive timestamp tokens; if the output ends in
a single timestamp (no speech after it) or has no consecutive pair, ``seek`` advances by the
whole window, otherwise to the last complete segment's end timestamp (the unfinished segment is
decoded again in the next window). A window is skipped as silence when its no-speech
probability exceeds ``no_speech_threshold`` and its average log-probability is below
``logprob_threshold``; a window whose compression ratio or log-probability fails the thresholds
is decoded again at the next temperature of ``temperatures``; the previous window's text
conditions the next unless ``condition_on_prev`` is off or the kept temperature was ≥ 0.5.
transformers computes the compression ratio on token ids (its recommended threshold 1.35
corresponds to OpenAI's 2.4 on text bytes).

The whole recording's log-mel features go to ``generate`` (its loop slices them window by
window). ``WhisperFeatureExtractor`` computes them with one STFT over the whole signal, a
transient ~1.6 GB for 1 h of audio (complex spectrum + magnitudes); ``log_mel`` computes the same
features block by block (the result is ~115 MB per hour), with the same global clamp.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from asr_eval.errors import AsrEvalError
from asr_eval.longform.base import SR, WINDOW_S, LongFormResult, ShortTranscriber, StrategyBase, register


FEATURE_BLOCK_FRAMES = 6000  # 60 s of 10 ms frames per STFT block


def log_mel(fe: Any, audio: np.ndarray, block_frames: int = FEATURE_BLOCK_FRAMES):
    """Whisper log-mel features of a whole recording, (n_mels, len(audio) // hop) float32 torch
    tensor, equal to ``WhisperFeatureExtractor(..., truncation=False, padding="longest")`` (its
    torch path: centred reflect-padded STFT, last frame dropped, log10 clamped at 1e-10, then at
    the recording's max − 8, scaled (x + 4) / 4), computed in blocks of ``block_frames`` frames so
    the peak memory is the output plus one block."""
    import torch

    n_fft, hop = fe.n_fft, fe.hop_length
    x = torch.from_numpy(np.ascontiguousarray(audio, np.float32))
    n_frames = len(x) // hop  # torch.stft gives 1 + L // hop centred frames; the last is dropped
    pad = n_fft // 2
    window = torch.hann_window(n_fft)
    mel = torch.from_numpy(np.asarray(fe.mel_filters, np.float32)).T.contiguous()
    out = torch.empty((mel.shape[0], n_frames), dtype=torch.float32)
    with torch.inference_mode():
        for f0 in range(0, n_frames, block_frames):
            f1 = min(n_frames, f0 + block_frames)
            # frame k covers padded[k*hop : k*hop + n_fft], padded = reflect-pad(x, n_fft // 2)
            a, b = f0 * hop - pad, (f1 - 1) * hop - pad + n_fft
            seg = x[max(0, a):min(len(x), b)]
            left, right = max(0, -a), max(0, b - len(x))
            if left or right:
                seg = torch.nn.functional.pad(seg[None, None], (left, right), mode="reflect")[0, 0]
            spec = torch.stft(seg, n_fft, hop, window=window, center=False, return_complex=True)
            out[:, f0:f1] = torch.clamp(mel @ (spec.abs() ** 2), min=1e-10).log10()
        torch.maximum(out, out.max() - 8.0, out=out)
        out.add_(4.0).div_(4.0)
    return out


@register
@dataclass
class Sequential(StrategyBase):
    name: ClassVar[str] = "sequential"
    condition_on_prev: bool = True
    fallback: bool = True  # temperatures 0.0, 0.2, …, 1.0 (else 0 only)
    compression_ratio_threshold: float = 1.35
    logprob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    seed: int = 0  # sampling at fallback temperatures is seeded, so a run is reproducible

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"return_timestamps": True, "return_segments": True,
                              "condition_on_prev_tokens": self.condition_on_prev}
        if self.fallback:
            kw.update(temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), do_sample=False,
                      compression_ratio_threshold=self.compression_ratio_threshold,
                      logprob_threshold=self.logprob_threshold, no_speech_threshold=self.no_speech_threshold)
        return kw

    def transcribe(self, engine: Any, audio: np.ndarray, recipe: Any, short: ShortTranscriber) -> LongFormResult:
        import torch

        lm = getattr(engine, "lm", None)  # a loaded transformers model: only its generate has the long-form loop
        if lm is None or not hasattr(lm.model, "generate"):
            raise AsrEvalError(f"strategy 'sequential' needs transformers' long-form generate; engine "
                               f"{getattr(engine, 'name', engine)!r} has none — use --engine transformers, or "
                               "--strategy chunked or vad with this engine")
        fe, tok = lm.processor.feature_extractor, lm.processor.tokenizer
        t0 = time.perf_counter()
        long = len(audio) > WINDOW_S * SR
        if long:
            feats = log_mel(fe, audio)[None]
            mask = torch.ones(feats.shape[:1] + feats.shape[2:], dtype=torch.long)
        else:
            feats = fe(audio, sampling_rate=SR, return_tensors="pt").input_features
        x = feats.to(lm.device, getattr(torch, lm.dtype))
        kw = {"language": recipe.language, "task": recipe.task, "num_beams": recipe.beam_size,
              "max_new_tokens": recipe.max_new_tokens, **self.generate_kwargs()}
        if long:
            kw["attention_mask"] = mask.to(lm.device)
        torch.manual_seed(self.seed)
        with torch.inference_mode():
            out = lm.model.generate(input_features=x, **kw)
        seqs = out["sequences"] if isinstance(out, dict) else out
        segs_raw = out["segments"][0] if isinstance(out, dict) and "segments" in out else []
        eot = lm.model.generation_config.eos_token_id
        segments = []
        for s in segs_raw:
            text = tok.decode(s["tokens"], skip_special_tokens=True).strip()
            if text:
                segments.append([round(float(s["start"]), 3), round(float(s["end"]), 3), text])
        text = tok.batch_decode(seqs.cpu(), skip_special_tokens=True)[0].strip()
        n_tok = int((seqs.cpu()[0] < eot).sum())
        if not segments and text:  # a ≤ 30 s input decoded in one window
            segments = [[0.0, round(len(audio) / SR, 3), text]]
        return LongFormResult(text, segments, time.perf_counter() - t0, n_tok, max(1, len(segs_raw)))
