"""``chunked``: fixed 30 s chunks with overlap, transcribed as one batch, merged on the overlap.

As transformers' ASR pipeline with ``chunk_length_s=30`` (its default stride is a sixth of the
chunk on each side, 5 s): chunks start every ``chunk_s - 2 * stride_s`` seconds, so neighbours
share ``2 * stride_s`` seconds of audio. The pipeline merges the token sequences on their
longest common run; this strategy merges the decoded texts the same way (longest common
substring in the shared part, cut in its middle), which needs nothing but text from the short
transcriber, so any engine can run it.

Where the text sits in a chunk is estimated from the audio's energy (``activity``: 20 ms
frames above a level set from the whole recording), not from time: when the two texts share
nothing in the overlap, each keeps the share of its text whose *speech* lies before / after the
overlap's middle. A time-proportional cut assumed text spread evenly over the chunk and, next to
a 20 s silent stretch, cut ~20 characters of speech out of both neighbours (measured,
tests/test_longform_strategies.py); an overlap without speech now keeps both texts whole, as
the transformers pipeline does when the token sequences share nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any, ClassVar

import numpy as np

from asr_eval.errors import AsrEvalError
from asr_eval.longform.base import (
    FRAME, PIECE_MAX_NEW_TOKENS, SR, WINDOW_S, LongFormResult, ShortTranscriber, StrategyBase, activity, join_texts,
    kept_texts, register, short_transcriber,
)

MIN_MATCH = 2  # characters; a shorter common run is no evidence of the same words


def chunk_bounds(n_samples: int, chunk_s: float, stride_s: float) -> list[tuple[int, int]]:
    """[start, end) samples of each chunk; the last one ends at the audio's end."""
    chunk, step = int(chunk_s * SR), int((chunk_s - 2 * stride_s) * SR)
    out, a = [], 0
    while True:
        b = min(n_samples, a + chunk)
        out.append((a, b))
        if b >= n_samples:
            return out
        a += step


def speech_share(act: np.ndarray, a: int, b: int, lo: int, hi: int) -> float:
    """Share of the speech frames of samples [a, b) that lie in [lo, hi) (0 without speech)."""
    total = act[a // FRAME:b // FRAME].sum()
    part = act[max(a, lo) // FRAME:min(b, hi) // FRAME].sum()
    return float(part / total) if total else 0.0


def merge_pair(left: str, right: str, left_tail: float, right_head: float, left_past_mid: float,
               right_before_mid: float) -> tuple[str, str]:
    """Cut two neighbouring chunk texts where they overlap: (left's kept text, right's kept
    text). Shares of each chunk's speech: ``left_tail`` / ``right_head`` in the overlap (where
    to look for the common run), ``left_past_mid`` / ``right_before_mid`` beyond the overlap's
    middle (what each drops when the texts share nothing there)."""
    if not left or not right:
        return left, right
    # look for the common run in the overlapping parts, with slack for uneven speaking rate
    la = max(0, int(len(left) * (1 - min(1.0, 1.5 * left_tail))))
    rb = min(len(right), int(len(right) * min(1.0, 1.5 * right_head)) + 1)
    m = SequenceMatcher(None, left[la:], right[:rb], autojunk=False).find_longest_match()
    if m.size >= MIN_MATCH:
        mid = m.size // 2
        return left[:la + m.a + mid], right[m.b + mid:]
    cut_l = int(round(len(left) * (1 - left_past_mid)))
    cut_r = int(round(len(right) * right_before_mid))
    return left[:cut_l], right[cut_r:]


@register
@dataclass
class Chunked(StrategyBase):
    name: ClassVar[str] = "chunked"
    piece_max_new_tokens: int = PIECE_MAX_NEW_TOKENS  # decode cap per ≤ 30 s piece
    chunk_s: float = WINDOW_S
    stride_s: float = 5.0
    no_speech_threshold: float | None = 0.6  # Whisper's silence rule per chunk (base.kept_texts)
    logprob_threshold: float | None = -1.0

    def __post_init__(self) -> None:
        if not 0 < self.chunk_s <= WINDOW_S or not 0 <= self.stride_s < self.chunk_s / 2:
            raise AsrEvalError(f"chunked: chunk_s {self.chunk_s} must be in (0, 30] and stride_s {self.stride_s} "
                               "in [0, chunk_s / 2)")

    def transcribe(self, engine: Any, audio: np.ndarray, recipe: Any, short: ShortTranscriber) -> LongFormResult:
        if short is None:  # the batched utterance path, with the piece decode cap
            short = short_transcriber(engine, recipe, max_new_tokens=self.piece_max_new_tokens)
        t0 = time.perf_counter()
        bounds = chunk_bounds(len(audio), self.chunk_s, self.stride_s)
        res = short([audio[a:b] for a, b in bounds])
        texts = kept_texts(res, self.no_speech_threshold, self.logprob_threshold)
        kept = list(texts)
        act = activity(audio)
        for k in range(len(bounds) - 1):
            (a0, b0), (a1, b1) = bounds[k], bounds[k + 1]
            mid = (a1 + b0) // 2
            left, right = merge_pair(kept[k], texts[k + 1], speech_share(act, a0, b0, a1, b0),
                                     speech_share(act, a1, b1, a1, b0), speech_share(act, a0, b0, mid, b0),
                                     speech_share(act, a1, b1, a1, mid))
            kept[k], kept[k + 1] = left, right
        segments = []
        for k, (a, b) in enumerate(bounds):
            lo = a if k == 0 else (a + bounds[k - 1][1]) // 2
            hi = b if k == len(bounds) - 1 else (b + bounds[k + 1][0]) // 2
            if kept[k].strip():
                segments.append([round(lo / SR, 3), round(hi / SR, 3), kept[k].strip()])
        text = join_texts(kept)
        return LongFormResult(text, segments, time.perf_counter() - t0, sum(res.n_tokens), len(bounds))
