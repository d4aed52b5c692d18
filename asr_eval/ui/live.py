"""The microphone streamed through a streaming policy: ``asr_eval.streaming.live.LiveStream`` — the
policy sessions and decoder ``asr-eval stream`` evaluates, stepped as audio arrives — fed from the
browser, one stream per browser session.

The browser sends a block of PCM every ``stream_every`` seconds. gradio keeps only the newest block
of a streaming event while its handler is busy, so the handler must never decode: it queues the
block and returns what the stream shows now. A worker thread per session feeds the queue into the
``LiveStream`` (which decodes at each chunk boundary), so no audio is dropped however slow the
model; how far decoding lags behind is what ``LiveState.last_lag_s`` reports (the aware clock)
and ``backlog_s`` counts.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from asr_eval.errors import AsrEvalError
from asr_eval.ui.models import EngineCache
from asr_eval.ui.transcribe import Config

log = logging.getLogger(__name__)
CHUNK_SIZES = (0.5, 1.0, 2.0, 3.0)
DEFAULT_POLICY, DEFAULT_CHUNK_S = "local-agreement", 1.0
_END = object()


@dataclass(frozen=True)
class LiveConfig(Config):
    """A transcription configuration (``ui.transcribe.Config``) plus the streaming policy and chunk size."""

    policy: str = DEFAULT_POLICY
    chunk_s: float = DEFAULT_CHUNK_S

    def label(self) -> str:
        return f"{self.policy} {self.chunk_s:g}s · {self.model} · {self.engine} {self.compute_type} · {self.recipe}"


def make_stream(cache: EngineCache, cfg: LiveConfig, device: str = "auto"):
    """``LiveStream(make_policy(policy), engine_transcribers(engine, recipe, preprocessing), chunk_s)``
    — the transcribers ``asr-eval stream`` uses (``streaming.run.stream_rows``)."""
    from asr_eval.engines import get_recipe
    from asr_eval.engines.preprocessing import check_mode
    from asr_eval.streaming import engine_transcribers, make_policy
    from asr_eval.streaming.base import check_chunk_s
    from asr_eval.streaming.live import LiveStream

    policy = make_policy(cfg.policy)  # names are checked before the model loads
    recipe = get_recipe(cfg.recipe)
    check_mode(cfg.preprocessing)
    chunk_s = check_chunk_s(float(cfg.chunk_s))
    engine, _ = cache.get(cfg.model, cfg.engine, cfg.compute_type, device)
    return LiveStream(policy, engine_transcribers(engine, recipe, cfg.preprocessing), chunk_s)


@dataclass(frozen=True)
class LiveView:
    committed: str
    tentative: str
    audio_s: float  # audio the stream has taken in (16 kHz seconds)
    received_s: float  # audio the browser has sent
    last_lag_s: float
    n_emissions: int
    done: bool
    error: str | None
    loading: bool = False  # the engine is still loading (audio is queued meanwhile)

    @property
    def backlog_s(self) -> float:
        return max(0.0, self.received_s - self.audio_s)

    def stats(self) -> str:
        if self.error:
            return f"**error:** {self.error}"
        state = "finished" if self.done else ("loading the model… (audio is kept)" if self.loading else "listening")
        return (f"**{state}** · latency of the last step **{self.last_lag_s:.2f} s** · audio {self.audio_s:.1f} s"
                f" · backlog {self.backlog_s:.1f} s · {self.n_emissions} updates")


class LiveSession:
    """One browser session's stream: ``push`` queues PCM (never blocks on decoding), a worker
    thread feeds it to the ``LiveStream``; ``finish`` flushes and commits the rest."""

    def __init__(self, make: Callable[[], Any], label: str = "") -> None:
        self.label = label
        self.stream: Any = None  # the LiveStream, built by the worker (loading a model takes seconds)
        self.error: str | None = None
        self.finished = False
        self.finished_at = 0.0
        self.last_push = 0.0
        self._received = 0.0
        self._q: queue.Queue = queue.Queue()
        self._make = make
        self._worker = threading.Thread(target=self._run, name="asr-eval-live", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        try:
            self.stream = self._make()
        except AsrEvalError as exc:
            self.error = str(exc)
        except Exception as exc:
            log.exception("starting the live stream failed")
            self.error = f"unexpected {type(exc).__name__}: {exc}"
        while True:
            item = self._q.get()
            if item is _END:
                break
            if self.error:
                continue  # drain: the stream is dead, say so once
            try:
                self.stream.feed(*item)
            except AsrEvalError as exc:
                self.error = str(exc)
            except Exception as exc:
                log.exception("live stream failed")
                self.error = f"unexpected {type(exc).__name__}: {exc}"
        if not self.error and self.stream is not None and not self.stream.state.done:
            try:
                self.stream.finish()
            except Exception as exc:
                log.exception("live stream finish failed")
                self.error = f"finishing the stream failed: {type(exc).__name__}: {exc}"

    def push(self, samples: np.ndarray, sr: int) -> None:
        if self.finished:
            return
        x = np.asarray(samples)
        if x.size == 0:
            return
        self._received += x.shape[0] / float(sr)
        self.last_push = time.monotonic()
        self._q.put((x, int(sr)))

    def close(self) -> None:
        """Stop the worker without waiting (the browser session is gone)."""
        if not self.finished:
            self.finished = True
            self.finished_at = time.monotonic()
            self._q.put(_END)

    def finish(self, timeout: float | None = 120.0, settle_s: float = 0.0) -> LiveView:
        """End of stream: wait for the queued audio to be decoded, then the policy's final commit.
        ``settle_s``: first wait until no block has arrived for that long (the browser's last
        block may come just after its stop event), at most 4 × settle_s."""
        t_end = time.monotonic() + 4 * settle_s
        while settle_s and time.monotonic() < t_end and time.monotonic() - self.last_push < settle_s:
            time.sleep(settle_s / 4)
        if not self.finished:
            self.finished = True
            self.finished_at = time.monotonic()
            self._q.put(_END)
        self._worker.join(timeout)
        if self._worker.is_alive() and not self.error:
            self.error = f"decoding has not caught up after {timeout:.0f} s; the text shown is what was committed so far"
        return self.view()

    def view(self) -> LiveView:
        if self.stream is None:
            return LiveView("", "", 0.0, self._received, 0.0, 0, False, self.error, loading=self.error is None)
        s = self.stream.state
        return LiveView(s.committed, s.tentative, s.audio_s, self._received, s.last_lag_s, len(s.emissions), s.done,
                        self.error)


def pcm(data) -> tuple[np.ndarray, int] | None:
    """gradio's streaming microphone value ``(sample_rate, int16 array)`` → (samples, rate)."""
    if data is None:
        return None
    sr, x = data
    x = np.asarray(x)
    if x.size == 0:
        return None
    return x, int(sr)


def new_session(cache: EngineCache, cfg: LiveConfig, device: str = "auto") -> LiveSession:
    """A session whose worker builds the stream (loads the engine) and then decodes what arrived."""
    return LiveSession(lambda: make_stream(cache, cfg, device), cfg.label())

