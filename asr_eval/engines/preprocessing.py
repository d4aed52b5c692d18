"""Audio → the encoder's 30 s log-mel input, in the two ways Whisper deployments do it.

Every clip shorter than 30 s must be padded to 3000 frames, and *where* the padding happens changes
the encoder input (and, measured on the bundled whisper-base, 18 of 40 demo transcripts):

``pad-audio``
    Pad the waveform with zeros to 30 s, then compute the log-mel of the whole window: the padding
    becomes log-mel *silence*. This is transformers' ``WhisperFeatureExtractor`` — its ``pipeline``,
    and every Seq2SeqTrainer fine-tune (ours included) — so it is what fine-tuned models were
    trained on. The default.
``pad-features``
    Compute the normalized log-mel of the clip, then zero-pad the *features* to 3000 frames. This is
    openai-whisper's ``transcribe()`` (it slices the clip's frames, then ``pad_or_trim``s the mel)
    and faster-whisper (same, after a 160-sample pad) — what teams deploying with those get.

Both keep the clip's own frames identical (same STFT, same normalization maximum); only the frames
after the clip differ. Engines receive the features and never compute their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from asr_eval.errors import AsrEvalError

SAMPLING_RATE = 16000
HOP = 160  # samples per log-mel frame
N_FRAMES = 3000  # 30 s


@dataclass(frozen=True)
class Preprocessing:
    name: str
    summary: str
    used_by: str
    pad: Callable[[Any, Sequence[int]], Any]  # (features [B, n_mels, 3000], clip lengths) -> features


def _keep(feats, lengths: Sequence[int]):
    return feats


def _zero_after_clip(feats, lengths: Sequence[int]):
    for i, n in enumerate(lengths):
        feats[i, :, min(N_FRAMES, n // HOP):] = 0.0
    return feats


PREPROCESSING: dict[str, Preprocessing] = {p.name: p for p in (
    Preprocessing("pad-audio", "pad the audio to 30 s with zeros, then log-mel (padding = log-mel silence)",
                  "transformers WhisperFeatureExtractor / pipeline / Seq2SeqTrainer fine-tuning", _keep),
    Preprocessing("pad-features", "log-mel of the clip, normalized features zero-padded to 3000 frames",
                  "openai-whisper transcribe(), faster-whisper", _zero_after_clip),
)}


def check_mode(name: str) -> Preprocessing:
    if name not in PREPROCESSING:
        raise AsrEvalError(f"unknown preprocessing {name!r}; one of: "
                           + "; ".join(f"{p.name} ({p.summary}; used by {p.used_by})" for p in PREPROCESSING.values()))
    return PREPROCESSING[name]


def preprocess(feature_extractor: Any, arrays: Sequence[np.ndarray], mode: str = "pad-audio", device: str = "cpu"):
    """Log-mel features [B, n_mels, 3000] (a float32 torch tensor on ``device``) under ``mode``."""
    p = check_mode(mode)
    feats = feature_extractor(list(arrays), sampling_rate=SAMPLING_RATE, return_tensors="pt",
                              device="cuda" if device.startswith("cuda") else "cpu").input_features
    return p.pad(feats, [len(a) for a in arrays])
