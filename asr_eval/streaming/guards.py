"""Hallucination guards of the streaming policies: Whisper invents text over silence and noise
(the failure its users report most), and a live stream is mostly silence.

Each guard is a parameter of the policies that use it (``asr_eval.streaming.policies``), so it is
part of every run id and compared like any other setting; ``asr_eval.metrics.hallucination``
measures what they prevent (``inserted_in_silence``, ``repeated_insertions``).

- **Silence rule** (every policy; ``no_speech_threshold``, ``logprob_threshold``): a decode whose
  no-speech probability is above ``no_speech_threshold`` *and* whose average log-probability is
  below ``logprob_threshold`` is silence — its text is dropped (``longform.base.silent``, which the
  long-form strategies' pieces use too). This is Whisper's own
  rule (openai-whisper's ``transcribe``, faster-whisper: 0.6 and −1.0). It applies where the engine
  reports a no-speech probability (``ShortBatch.no_speech_prob``); ``None`` switches it off.
- **VAD gate** (``vad_gate``: local-agreement, hold-k): Silero VAD runs on the stream as it arrives
  (``SpeechGate``, 32 ms frames, one model state per recording). A decode of ``[a, T)`` is cut after
  the last speech in it plus ``GATE_PAD_S``; with no speech in it, nothing is decoded (the
  hypothesis is empty). So trailing silence and noise the VAD does not call speech are never shown
  to Whisper, and once the speech has ended every decode is of the same audio (the decoder's cache
  answers it without decoding) — the hypotheses agree and the policy commits.
- **Prompt age** (``prompt_max_age_s``: local-agreement, vad-segment; off by default): the
  previous-text prompt holds only committed text committed at most this many seconds ago
  (``PromptClock``) — text from before a long pause cannot leak back through the prompt and be
  re-emitted over the pause. Measured on the stress set it cost accuracy (whisper-base garbles the
  sentences after a pause without the old context; docs/streaming.md), and under the VAD gate the
  pause is not decoded at all, so it is there to be compared, not on.
- **Repeat-only hypotheses** (``drop_repeats``: local-agreement, hold-k): a new hypothesis tail that
  only repeats text committed just before (``repeats_committed``: its folded text, at least
  ``REPEAT_MIN_CHARS`` characters, occurs in the last ``REPEAT_WINDOW_CHARS`` committed folded
  characters) is dropped — Whisper re-emitting the last sentence over trailing audio.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from asr_eval.longform.base import silent
from asr_eval.streaming.base import SR

__all__ = ["PromptClock", "SpeechGate", "repeats_committed", "silent"]  # silent: the rule both use, in longform.base

FRAME = 512  # Silero's frame at 16 kHz (32 ms)
GATE_THRESHOLD = 0.5  # Silero's default speech threshold
GATE_RELEASE = 0.15  # once speech, a frame stays speech down to threshold − this (Silero's hysteresis)
GATE_MIN_SPEECH_S = 0.25  # shorter speech runs are clicks and noise bursts (Silero's min_speech_duration_ms)
GATE_PAD_S = 0.5  # decoded audio goes this far past the last speech (faster-whisper pads 0.4 s)
REPEAT_MIN_CHARS = 3
REPEAT_WINDOW_CHARS = 60


@dataclass
class SpeechGate:
    """Silero speech regions of one stream, computed incrementally as its audio arrives."""

    threshold: float = GATE_THRESHOLD
    pad_s: float = GATE_PAD_S
    min_speech_s: float = GATE_MIN_SPEECH_S
    probs: list[float] = field(default_factory=list)  # per complete 512-sample frame
    regions: list[list[int]] = field(default_factory=list)  # [first frame, end frame) of each speech run
    _open: bool = False
    _model: object = None

    def update(self, audio: np.ndarray) -> None:
        """Run the VAD over the frames of ``audio`` (everything received so far) not seen yet."""
        import torch

        n = len(audio) // FRAME
        if n <= len(self.probs):
            return
        if self._model is None:
            from silero_vad import load_silero_vad

            self._model = load_silero_vad()  # its recurrent state is this stream's
        x = torch.from_numpy(np.ascontiguousarray(audio[len(self.probs) * FRAME:n * FRAME], np.float32))
        with torch.inference_mode():
            for f in range(n - len(self.probs)):
                p = float(self._model(x[f * FRAME:(f + 1) * FRAME], SR))
                self._frame(len(self.probs), p)
                self.probs.append(p)

    def _frame(self, f: int, p: float) -> None:
        if self._open and p >= self.threshold - GATE_RELEASE:
            self.regions[-1][1] = f + 1
        elif p >= self.threshold:
            if not self._open:
                self.regions.append([f, f + 1])
            self._open = True
        else:
            self._open = False

    def speech(self, start: int, end: int) -> list[tuple[int, int]]:
        """Speech runs (samples, at least ``min_speech_s`` long) overlapping ``[start, end)``."""
        min_frames = self.min_speech_s * SR / FRAME
        return [(a * FRAME, b * FRAME) for a, b in self.regions
                if b - a >= min_frames and a * FRAME < end and b * FRAME > start]

    def decode_end(self, start: int, end: int) -> int | None:
        """Where a decode of ``[start, end)`` should stop: after its last speech plus the pad, at
        most ``end``; None when it holds no speech."""
        runs = self.speech(start, end)
        if not runs:
            return None
        return min(end, runs[-1][1] + round(self.pad_s * SR))


@dataclass
class PromptClock:
    """When each committed character was committed (sample index of the step's arrival)."""

    times: list[int] = field(default_factory=list)

    def add(self, text: str, t: int) -> None:
        self.times += [t] * len(text)

    def recent(self, upto: int, now: int, max_age_s: float | None) -> int:
        """The index of the first of the first ``upto`` committed characters that was committed at
        most ``max_age_s`` before ``now`` (0 without an age limit; ``upto`` when all are older)."""
        if max_age_s is None:
            return 0
        return min(upto, bisect.bisect_left(self.times, now - round(max_age_s * SR), 0, upto))


def repeats_committed(tail_key: str, committed_key: str) -> bool:
    """Whether a hypothesis tail (folded text) only repeats recently committed text (folded)."""
    return len(tail_key) >= REPEAT_MIN_CHARS and tail_key in committed_key[-REPEAT_WINDOW_CHARS:]
