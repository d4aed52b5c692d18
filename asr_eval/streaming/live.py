"""A stream fed as audio really arrives (a microphone, a socket): the same policy sessions and
decoder as ``simulate``, stepped whenever a chunk boundary has been crossed.

``simulate`` knows the whole recording and replays its arrival; ``LiveStream`` does not: the caller
``feed``s samples at any rate and in any block size (resampled to 16 kHz on the fly with soxr's
streaming resampler, the filter ingest uses), and every time the audio received reaches the next
multiple of ``chunk_s`` the policy's ``step`` runs on everything received so far — exactly the
calls ``simulate`` makes for the same audio, so the committed text is the same (test:
``tests/test_streaming_live.py``). Emission times are audio seconds (the unaware clock) and, for
the aware clock, the wall-clock seconds since the stream started at which the step finished.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from asr_eval.errors import AsrEvalError
from asr_eval.streaming.base import SR, Emission, Policy, check_chunk_s
from asr_eval.streaming.simulate import Transcribers, _Decoder

MAX_LIVE_S = 3600.0  # a live stream keeps its audio (the policies re-read it): one hour at most


@dataclass
class LiveState:
    """What a viewer sees now."""

    committed: str = ""
    tentative: str = ""
    audio_s: float = 0.0
    emissions: list[Emission] = field(default_factory=list)
    last_lag_s: float = 0.0  # aware clock: when the last step finished − when its chunk arrived
    done: bool = False


class LiveStream:
    """``feed(samples, sr)`` → new emissions; ``finish()`` → the final flush."""

    def __init__(self, policy: Policy, transcribers: Transcribers, chunk_s: float) -> None:
        self.chunk = max(1, round(check_chunk_s(chunk_s) * SR))
        self.session = policy.session()
        self.decoder = _Decoder(transcribers, policy)
        self.state = LiveState()
        self._blocks: list[np.ndarray] = []
        self._n = 0
        self._next = self.chunk
        self._k = 0
        self._resampler = None
        self._rate: int | None = None
        self._t0: float | None = None
        self._audio_cache: np.ndarray | None = None

    @property
    def audio(self) -> np.ndarray:
        if self._audio_cache is None or len(self._audio_cache) != self._n:
            self._audio_cache = np.concatenate(self._blocks) if self._blocks else np.zeros(0, np.float32)
            self._blocks = [self._audio_cache]
        return self._audio_cache

    def _to_16k(self, samples: np.ndarray, sr: int, last: bool = False) -> np.ndarray:
        import soxr

        x = np.asarray(samples)
        if x.dtype.kind == "i":  # browsers hand int16 PCM
            x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
        x = x.astype(np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1)
        if self._rate is None:
            self._rate = int(sr)
        elif int(sr) != self._rate:
            raise AsrEvalError(f"the stream's sample rate changed from {self._rate} to {sr} Hz; restart the stream")
        if self._rate == SR:
            return x
        if self._resampler is None:
            self._resampler = soxr.ResampleStream(self._rate, SR, 1, dtype="float32", quality="HQ")
        return self._resampler.resample_chunk(x, last=last)

    def _emit(self, step, arrival: float, final: bool = False) -> Emission | None:
        s = self.state
        end = time.perf_counter() - (self._t0 or time.perf_counter())
        s.last_lag_s = max(0.0, end - arrival)
        if not (step.commit or step.tentative != s.tentative or final):
            return None
        e = Emission(arrival, max(arrival, end), step.commit, "" if final else step.tentative, self._k, final)
        s.committed += step.commit
        s.tentative = e.tentative
        s.emissions.append(e)
        return e

    def feed(self, samples: np.ndarray, sr: int = SR) -> list[Emission]:
        """Append audio; run a policy step for each chunk boundary reached. Returns new emissions."""
        if self.state.done:
            raise AsrEvalError("this stream has finished; start a new one")
        if self._t0 is None:
            self._t0 = time.perf_counter()
        x = self._to_16k(samples, sr)
        if self._n + len(x) > MAX_LIVE_S * SR:
            raise AsrEvalError(f"a live stream holds at most {MAX_LIVE_S / 3600:g} h of audio; start a new one")
        if len(x):
            self._blocks.append(x)
            self._n += len(x)
        self.state.audio_s = self._n / SR
        out = []
        while self._n >= self._next:
            step = self.session.step(self.audio[:self._next], self.decoder)
            if (e := self._emit(step, self._next / SR)) is not None:
                out.append(e)
            self._k += 1
            self._next += self.chunk
        return out

    def finish(self) -> Emission:
        """End of stream: the last partial chunk is stepped, then the policy commits what is left."""
        if self._resampler is not None:
            tail = self._to_16k(np.zeros(0, np.float32), self._rate or SR, last=True)
            if len(tail):
                self._blocks.append(tail)
                self._n += len(tail)
        if self._n > self._next - self.chunk:  # audio after the last boundary: its (short) chunk step
            step = self.session.step(self.audio, self.decoder)
            self._emit(step, self._n / SR)
            self._k += 1
        step = self.session.finish(self.audio, self.decoder)
        e = self._emit(step, self._n / SR, final=True)
        self.state.done = True
        self.state.audio_s = self._n / SR
        assert e is not None
        return e
