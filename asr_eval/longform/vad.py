"""``vad``: Silero VAD finds speech; speech regions are packed into ≤ 30 s segments, which are
transcribed as one batch of short utterances and joined in time order.

Silero VAD (``silero-vad`` on PyPI, MIT) was chosen over WebRTC VAD: it ships its model inside
the wheel (no download, runs offline on CPU torch, which the project already has), is far more
robust to noise and music than WebRTC's GMM, and returns speech timestamps directly. On this
machine it runs at ~40× real time on one core.

Onsets are where a VAD hurts Whisper most (measured, tests/test_longform_strategies.py): after
speech and a 20 s stretch of digital silence, Silero's speech probability stayed below 0.1 for
the first 0.5 s of a clear word at −19 dBFS (its recurrent state carries across the file), the
segment started mid-word, and whisper-base then dropped 17 s of the 21 s segment that followed.
So a region whose start lies inside loud audio is moved back to where that loud stretch begins
(the same 20 ms energy activity the ``chunked`` merge uses; at most 1 s, never into the previous
region), and speech is padded by 400 ms on each side (faster-whisper's default): a cut first
syllable costs far more than extra silence in the window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import numpy as np

from asr_eval.errors import AsrEvalError
from asr_eval.longform.base import (
    FRAME, PIECE_MAX_NEW_TOKENS, SR, WINDOW_S, LongFormResult, ShortTranscriber, StrategyBase, activity, join_texts,
    kept_texts, register, short_transcriber,
)


@cache
def silero_model():
    try:
        from silero_vad import load_silero_vad
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise AsrEvalError("strategy 'vad' needs the silero-vad package: pip install silero-vad") from e
    return load_silero_vad()


ONSET_LOOKBACK_S = 1.0  # how far back an onset may move to the start of its loud stretch


def speech_regions(audio: np.ndarray, threshold: float = 0.5, min_silence_ms: int = 300,
                   speech_pad_ms: int = 400, max_speech_s: float = WINDOW_S) -> list[tuple[int, int]]:
    """[start, end) samples of speech, each at most ``max_speech_s`` long (Silero splits longer
    speech at its longest inner pause, else hard). A start that Silero put inside loud audio
    moves back to where that loud stretch begins (at most ``ONSET_LOOKBACK_S``, never into the
    previous region nor beyond ``max_speech_s`` before its end), then by the speech pad (module
    docstring)."""
    import torch
    from silero_vad import get_speech_timestamps

    with torch.inference_mode():
        ts = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(audio, np.float32)), silero_model(),
                                   sampling_rate=SR, threshold=threshold, min_silence_duration_ms=min_silence_ms,
                                   speech_pad_ms=speech_pad_ms, max_speech_duration_s=max_speech_s - 0.5)
    act = activity(audio)
    pad, longest, out = speech_pad_ms * SR // 1000, int(max_speech_s * SR), []
    for t in ts:
        a, b = int(t["start"]), int(t["end"])
        prev_end = out[-1][1] if out else 0
        onset = loud_onset(act, a, floor=prev_end)
        if onset < a:  # earlier, but never so far that the region would outgrow the window
            a = max(prev_end, onset - pad, min(a, b - longest))
        out.append((a, min(b, a + longest)))
    return out


def loud_onset(act: np.ndarray, start: int, floor: int = 0, lookback_s: float = ONSET_LOOKBACK_S) -> int:
    """The sample where the loud stretch that ``start`` lies in begins (``start`` when its frame
    is quiet), looking back at most ``lookback_s`` and never before ``floor``."""
    f = start // FRAME
    if f >= len(act) or not act[f]:
        return start
    stop = max(floor // FRAME, f - int(lookback_s * 50))
    while f > stop and act[f - 1]:
        f -= 1
    return max(floor, f * FRAME)


def pack(regions: list[tuple[int, int]], max_s: float, max_gap_s: float) -> list[tuple[int, int]]:
    """Merge neighbouring regions into segments no longer than ``max_s`` whose inner pauses are at
    most ``max_gap_s`` (Whisper transcribes whole phrases better than fragments)."""
    out: list[list[int]] = []
    for a, b in regions:
        if out and a - out[-1][1] <= max_gap_s * SR and b - out[-1][0] <= max_s * SR:
            out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


@register
@dataclass
class Vad(StrategyBase):
    name: ClassVar[str] = "vad"
    piece_max_new_tokens: int = PIECE_MAX_NEW_TOKENS  # decode cap per ≤ 30 s piece
    threshold: float = 0.5
    min_silence_ms: int = 300
    speech_pad_ms: int = 400
    max_segment_s: float = WINDOW_S
    max_gap_s: float = 2.0
    no_speech_threshold: float | None = 0.6  # Whisper's silence rule per piece (base.kept_texts)
    logprob_threshold: float | None = -1.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.max_segment_s <= WINDOW_S:
            raise AsrEvalError(f"vad: max_segment_s {self.max_segment_s} must be in [1, 30]")

    def transcribe(self, engine: Any, audio: np.ndarray, recipe: Any, short: ShortTranscriber) -> LongFormResult:
        if short is None:  # the batched utterance path, with the piece decode cap
            short = short_transcriber(engine, recipe, max_new_tokens=self.piece_max_new_tokens)
        t0 = time.perf_counter()
        regions = speech_regions(audio, self.threshold, self.min_silence_ms, self.speech_pad_ms, self.max_segment_s)
        segs = pack(regions, self.max_segment_s, self.max_gap_s)
        vad_s = time.perf_counter() - t0
        res = short([audio[a:b] for a, b in segs])
        texts = kept_texts(res, self.no_speech_threshold, self.logprob_threshold)
        segments = [[round(a / SR, 3), round(b / SR, 3), t] for (a, b), t in zip(segs, texts) if t]
        return LongFormResult(join_texts(texts), segments, vad_s + res.proc_s, sum(res.n_tokens), len(segs))
