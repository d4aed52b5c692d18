"""The one simulation loop of every streaming policy, and its two clocks.

The recording (16 kHz samples, length ``n``) arrives in chunks of ``c = round(chunk_s · 16000)``
samples: chunk k (0-based, ``K = ceil(n / c)`` chunks) has arrived at ``T_k = min((k+1)·c, n) / 16000``
seconds. After each arrival the policy session's ``step`` runs on ``audio[:min((k+1)·c, n)]``; after
the last, ``finish`` commits what is left (the *flush*, arriving at ``T_K = n / 16000``).

Every decode goes through a ``ShortTranscriber`` (``asr_eval.longform.short_transcriber``: the
engine's batched utterance path under the decode recipe, with the committed text as Whisper's
previous-text prompt appended to the recipe's own ``initial_prompt``), so any engine, recipe and
preprocessing mode streams unchanged.

Clocks (both recorded for every emission):

- **computation-unaware**: a step's commits are emitted at its chunk's arrival ``T_k`` — the
  latency the policy itself causes, as if decoding took no time.
- **computation-aware**: steps run one at a time on one engine. Step k starts at
  ``S_k = max(T_k, E_{k-1})`` (``E_{-1} = 0``) and ends at ``E_k = S_k + cost_k``; its commits are
  emitted at ``E_k``. ``cost_k`` is the step's measured wall time (decoding, VAD and the policy's
  own work) unless a ``cost`` function is injected (tests: a stub engine of fixed step cost).
  The policy's decisions are those of the unaware run (the same audio is decoded in each step);
  only their times differ — a queue of chunk steps on one engine.

Lag (computation-aware, chunk steps only, not the flush): ``lag_k = E_k − T_k`` and
``backlog_k = S_k − T_k`` (how long chunk k waited for the engine). ``lag_slope`` is the
least-squares slope of ``lag_k`` over ``T_k`` (0 with fewer than two steps): about
``(cost − chunk_s) / chunk_s`` when every step costs more than a chunk, about 0 when less.
The lag is **bounded** (``real_time``, "keeps up on this engine and machine") when both
(a) the chunk steps' total cost ≤ the audio duration (compute per audio second ≤ 1: a
sustainable rate), and (b) the last chunk's backlog ≤ ``chunk_s`` (at the end the engine is
less than one chunk behind). A constant step cost ``s`` gives ``backlog_k = max(0, k·(s − chunk_s))``,
so (b) fails once ``k > chunk_s / (s − chunk_s)``; with ``s ≤ chunk_s`` every backlog is 0.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from asr_eval.errors import AsrEvalError
from asr_eval.longform.base import PIECE_MAX_NEW_TOKENS, ShortTranscriber, short_transcriber, silent
from asr_eval.streaming.base import SR, WINDOW_S, Emission, Policy, Step, StreamResult, check_chunk_s

# prompt -> the ShortTranscriber that decodes with it (None: no streaming prompt)
Transcribers = Callable[["str | None"], ShortTranscriber]


@dataclass(frozen=True)
class StepMeasure:
    """What one step did; the computation-aware clock's cost function receives it."""

    chunk: int
    decode_calls: int
    decoded_s: float  # seconds of audio decoded in this step
    decode_proc_s: float  # the engine's own processing seconds (ShortBatch.proc_s)
    measured_s: float  # the step's wall time


StepCost = Callable[[StepMeasure], float]


def measured_cost(m: StepMeasure) -> float:
    return m.measured_s


# A decode of ``d`` seconds may generate at most ``ceil(TOKENS_PER_S · d) + MIN_TOKENS`` tokens (and
# never more than the long-form piece cap): fast Mandarin is ~6 characters/s at ~1.5 byte-level
# tokens each, so 12/s leaves room, while a decoder stuck in a repetition loop — which a streaming
# policy would otherwise pay for again at every chunk — stops early.
TOKENS_PER_S = 12
MIN_TOKENS = 16


def token_cap(seconds: float, ceiling: int | None = PIECE_MAX_NEW_TOKENS) -> int:
    cap = math.ceil(TOKENS_PER_S * seconds) + MIN_TOKENS
    return cap if ceiling is None else min(cap, ceiling)


def engine_transcribers(engine, recipe, preprocessing: str = "pad-audio",
                        max_new_tokens: int | None = PIECE_MAX_NEW_TOKENS) -> Transcribers:
    """ShortTranscribers of ``engine`` under ``recipe``; a streaming prompt is appended to the
    recipe's own ``initial_prompt`` (``Recipe.with_options``). Each decode's cap is ``token_cap``
    of its audio length, at most ``max_new_tokens`` (clamped after the prompt)."""

    def make(prompt: str | None) -> ShortTranscriber:
        r = recipe
        if prompt:
            r = recipe.with_options(initial_prompt=(recipe.initial_prompt or "") + prompt)

        def run(audios):
            longest = max((len(a) for a in audios), default=0) / SR
            return short_transcriber(engine, r, preprocessing, batch_size=1,
                                     max_new_tokens=token_cap(longest, max_new_tokens))(audios)

        return run

    return make


def cut_loop(text: str) -> str:
    """``text`` up to the end of the first copy of its first repetition loop — the pathology flag's
    definition (``asr_eval.metrics.flags``: a unit of 1–15 characters repeated at least 4 times in a
    row, the run at least 8 characters) — and nothing after it; unchanged without one."""
    from asr_eval.metrics.flags import REPEAT_MIN_SPAN, REPEATED_UNIT

    for m in REPEATED_UNIT.finditer(text):
        if len(m.group()) >= REPEAT_MIN_SPAN:
            return text[:m.start() + len(m.group(1))]
    return text


class _Decoder:
    """The ``Decoder`` handed to a policy: counts calls and decoded audio, and applies the guards
    every policy has (its parameters): with ``loop_guard`` every hypothesis is cut at its first
    repetition loop (``cut_loop``) before the policy sees it — whisper-base loops on short buffers
    ("我比较小,我比较小,…"), and two hypotheses that loop alike would otherwise agree on the loop and
    commit it; with ``no_speech_threshold`` / ``logprob_threshold`` a decode that Whisper's silence
    rule calls silence (``longform.base.silent``) gives "". A call with the same audio and prompt as the
    previous one returns its text without decoding (greedy and seeded decodes are deterministic;
    under the VAD gate every step after the speech has ended decodes the same audio)."""

    def __init__(self, transcribers: Transcribers, policy: object = None) -> None:
        self.transcribers = transcribers
        self.loop_guard = bool(getattr(policy, "loop_guard", False))
        self.no_speech_threshold = getattr(policy, "no_speech_threshold", None)
        self.logprob_threshold = getattr(policy, "logprob_threshold", None)
        self.calls = 0
        self.decoded_s = 0.0
        self.proc_s = 0.0
        self.silenced = 0  # decodes dropped by the silence rule
        self._last: tuple[tuple, str] | None = None

    def __call__(self, audio: np.ndarray, prompt: str | None = None) -> str:
        if len(audio) > WINDOW_S * SR:
            raise AsrEvalError(f"streaming policy asked to decode {len(audio) / SR:.1f} s; Whisper reads ≤ 30 s "
                               "(a policy bug: its buffer must be trimmed)")
        key = (prompt or None, len(audio), hashlib.blake2b(np.ascontiguousarray(audio).tobytes(), digest_size=16).digest())
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        res = self.transcribers(prompt or None)([audio])
        self.calls += 1
        self.decoded_s += len(audio) / SR
        self.proc_s += res.proc_s
        text = res.texts[0] if res.texts else ""
        nsp, lp = getattr(res, "no_speech_prob", None), getattr(res, "avg_logprob", None)
        if text and silent(nsp[0] if nsp else None, lp[0] if lp else None, self.no_speech_threshold,
                           self.logprob_threshold):
            self.silenced += 1
            text = ""
        text = cut_loop(text) if self.loop_guard else text
        self._last = (key, text)
        return text


def chunk_ends(n_samples: int, chunk_s: float) -> list[int]:
    """Sample index at which each chunk has fully arrived."""
    c = max(1, round(check_chunk_s(chunk_s) * SR))
    return [min((k + 1) * c, n_samples) for k in range(math.ceil(n_samples / c))]


def lag_slope(arrivals: list[float], lags: list[float]) -> float:
    if len(arrivals) < 2 or max(arrivals) == min(arrivals):
        return 0.0
    return float(np.polyfit(np.asarray(arrivals), np.asarray(lags), 1)[0])


def simulate(policy: Policy, audio: np.ndarray, transcribers: Transcribers, chunk_s: float,
             cost: StepCost | None = None) -> StreamResult:
    """Stream ``audio`` (16 kHz mono) through ``policy`` in chunks of ``chunk_s`` (module
    docstring: chunks, both clocks, lag and ``real_time``)."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
        raise AsrEvalError(f"streaming takes mono 1-D 16 kHz audio; got shape {audio.shape} "
                           "(decode with asr_eval.audio, which downmixes and resamples)")
    cost = cost or measured_cost
    ends = chunk_ends(len(audio), chunk_s)
    session = policy.session()
    dec = _Decoder(transcribers, policy)
    emissions: list[Emission] = []
    committed: list[str] = []
    shown = ""
    prev_end = 0.0
    total_cost = chunk_cost = 0.0
    arrivals: list[float] = []
    lags: list[float] = []
    backlogs: list[float] = []

    def run(k: int, fn, upto: int) -> tuple[Step, float, float, float]:
        nonlocal prev_end, total_cost
        calls, dsec, dproc = dec.calls, dec.decoded_s, dec.proc_s
        t0 = time.perf_counter()
        out = fn(audio[:upto], dec)
        wall = time.perf_counter() - t0
        c = float(cost(StepMeasure(k, dec.calls - calls, dec.decoded_s - dsec, dec.proc_s - dproc, wall)))
        if c < 0:
            raise AsrEvalError(f"step cost {c} < 0 from the cost function")
        arrival = upto / SR
        start = max(arrival, prev_end)
        prev_end = start + c
        total_cost += c
        return out, arrival, start, prev_end

    for k, e in enumerate(ends):
        step, arrival, start, end = run(k, session.step, e)
        chunk_cost += end - start
        arrivals.append(arrival)
        lags.append(end - arrival)
        backlogs.append(start - arrival)
        if step.commit or step.tentative != shown:
            emissions.append(Emission(arrival, end, step.commit, step.tentative, k))
        committed.append(step.commit)
        shown = step.tentative
    step, arrival, _start, end = run(len(ends), session.finish, len(audio))
    committed.append(step.commit)
    emissions.append(Emission(arrival, end, step.commit, "", len(ends), final=True))

    audio_s = len(audio) / SR
    return StreamResult(
        text="".join(committed), emissions=emissions, decode_calls=dec.calls, compute_s=total_cost,
        audio_s=audio_s, chunk_s=float(chunk_s), n_chunks=len(ends), lag_s=lags, backlog_s=backlogs,
        final_lag_s=lags[-1] if lags else 0.0, max_lag_s=max(lags, default=0.0),
        lag_slope=lag_slope(arrivals, lags),
        real_time=chunk_cost <= audio_s + 1e-9 and (backlogs[-1] if backlogs else 0.0) <= chunk_s + 1e-9)
