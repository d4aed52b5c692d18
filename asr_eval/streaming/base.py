"""Streaming policies: how a recording is transcribed while its audio is still arriving.

A streaming policy is to time what a long-form strategy (``asr_eval.longform``) is to a whole
recording. The recording arrives in chunks of ``chunk_s``; after each chunk the simulation loop
(``asr_eval.streaming.simulate``, one function for every policy) calls the policy session's
``step`` with the audio received so far and a ``Decoder``; the policy decides what to decode
and returns what it *commits* (text that will never change) and the *tentative* tail it would
display at that moment. At the end of the stream ``finish`` commits what is left.

Policies are a registry (``POLICIES``); each is a dataclass whose fields are its parameters,
recorded with the run (and part of its run id, ``params()``). A policy object holds only
parameters; ``session()`` returns the per-recording state, so one policy object serves many
recordings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from asr_eval.errors import AsrEvalError
from asr_eval.registry import make_registered

SR = 16_000
WINDOW_S = 30.0  # Whisper reads at most 30 s; no decode may be longer


@dataclass(frozen=True)
class Step:
    """What a policy step decided: the committed increment and the tentative tail shown after it."""

    commit: str = ""
    tentative: str = ""


# decode(audio, prompt) -> text: one ≤ 30 s 16 kHz array through the engine's ShortTranscriber,
# ``prompt`` (committed text, or None) conditioning it as Whisper's previous-text prompt
Decoder = Callable[[np.ndarray, "str | None"], str]


class Session(Protocol):
    """One recording's policy state."""

    def step(self, audio: np.ndarray, decode: Decoder) -> Step:
        """Called after each chunk arrives; ``audio`` is everything received so far."""
        ...

    def finish(self, audio: np.ndarray, decode: Decoder) -> Step:
        """End of stream: commit what is still uncommitted (the tentative text becomes empty)."""
        ...


class Policy(Protocol):
    name: ClassVar[str]

    def params(self) -> dict[str, Any]: ...

    def session(self) -> Session: ...


POLICIES: dict[str, type] = {}


def register(cls: type) -> type:
    POLICIES[cls.name] = cls
    return cls


@dataclass
class PolicyBase:
    """The guards every policy has (parameters, so part of every run id): ``loop_guard`` cuts every
    hypothesis at its first repetition loop before the policy sees it (``simulate.cut_loop``);
    ``no_speech_threshold`` / ``logprob_threshold`` drop a decode that Whisper's silence rule calls
    silence (``guards.silent``; None switches it off)."""

    name: ClassVar[str] = ""
    loop_guard: bool = True
    no_speech_threshold: float | None = 0.6
    logprob_threshold: float | None = -1.0

    def params(self) -> dict[str, Any]:
        """The parameters as recorded with the run (and hashed into its id)."""
        return asdict(self)

    def check_guards(self) -> None:
        """Validate the guard parameters every policy has (subclasses call it from __post_init__)."""
        nst, lpt = self.no_speech_threshold, self.logprob_threshold
        if nst is not None and not 0.0 <= nst <= 1.0:
            raise AsrEvalError(f"{self.name}: no_speech_threshold {nst} must be in [0, 1] (or none to switch it off)")
        if lpt is not None and lpt > 0:
            raise AsrEvalError(f"{self.name}: logprob_threshold {lpt} must be ≤ 0 (an average log-probability), "
                               "or none")
        age = getattr(self, "prompt_max_age_s", None)
        if age is not None and age <= 0:
            raise AsrEvalError(f"{self.name}: prompt_max_age_s {age} must be > 0 seconds (or none: no age limit)")


def make_policy(name: str, **params: Any) -> Policy:
    """A streaming policy by name; ``params`` override its defaults (unknown keys are an error)."""
    from asr_eval.streaming import policies  # noqa: F401  (registration)

    return make_registered(POLICIES, "streaming policy", name, params)


@dataclass(frozen=True)
class Emission:
    """One update of what a live viewer sees: emitted after a step that committed text or changed
    the tentative tail (and always for the end-of-stream flush).

    ``emit_s``: the computation-unaware clock — the arrival time of the chunk whose step made it
    (the end of the audio for the flush). ``emit_aware_s``: the computation-aware clock — when
    that step finished computing (``simulate`` defines it). ``text``: the committed increment
    (appended to everything committed before; never retracted). ``tentative``: the uncommitted
    tail displayed after the committed text at that moment (replaces the previous one).
    ``chunk``: 0-based index of the step's chunk (``n_chunks`` for the flush)."""

    emit_s: float
    emit_aware_s: float
    text: str
    tentative: str
    chunk: int
    final: bool = False

    def at(self, clock: str) -> float:
        """Emission time on ``clock`` (``"unaware"`` or ``"aware"``)."""
        if clock == "unaware":
            return self.emit_s
        if clock == "aware":
            return self.emit_aware_s
        raise AsrEvalError(f"unknown clock {clock!r}; use 'unaware' or 'aware'")


CLOCKS = ("unaware", "aware")


@dataclass
class StreamResult:
    """One recording streamed under one policy (``simulate`` fills it; its docstring defines the
    lag fields)."""

    text: str  # everything committed, in order: the run's hypothesis
    emissions: list[Emission]
    decode_calls: int
    compute_s: float  # Σ step costs (the computation-aware clock's durations)
    audio_s: float
    chunk_s: float
    n_chunks: int
    lag_s: list[float] = field(default_factory=list)  # per chunk step: aware finish − arrival
    backlog_s: list[float] = field(default_factory=list)  # per chunk step: aware start − arrival
    final_lag_s: float = 0.0
    max_lag_s: float = 0.0
    lag_slope: float = 0.0  # least-squares slope of lag_s over arrival time (s per s of audio)
    real_time: bool = True  # the aware lag stayed bounded (simulate's docstring)

    @property
    def compute_per_audio_s(self) -> float:
        return self.compute_s / self.audio_s if self.audio_s > 0 else 0.0


def check_chunk_s(chunk_s: float) -> float:
    if not 0.0 < chunk_s <= WINDOW_S:
        raise AsrEvalError(f"chunk_s {chunk_s}: must be in (0, 30] seconds (e.g. --chunk-s 1)")
    return float(chunk_s)


def common_prefix(texts: Sequence[str]) -> str:
    """The longest common prefix of ``texts`` in characters ("" for none)."""
    if not texts:
        return ""
    first = texts[0]
    n = len(first)
    for t in texts[1:]:
        n = min(n, len(t))
        for i in range(n):
            if t[i] != first[i]:
                n = i
                break
    return first[:n]


def _wordy(c: str) -> bool:
    """A character of a Latin word or a number (ASCII letters/digits and full-width forms)."""
    return c.isascii() and (c.isalnum() or c in "'.%") or "\uff10" <= c <= "\uff5a"


def safe_cut(text: str, pos: int, other: str | None = None) -> int:
    """``pos`` moved left so that ``text[:pos]`` does not end inside a Latin word or number:
    Mandarin is committed character by character, but "Pyth" of "Python" is not a unit. A cut
    is inside a run when the characters on both sides of it are word characters, in ``text`` or
    in ``other`` (the hypothesis it was compared with)."""
    def inside(s: str, p: int) -> bool:
        return 0 < p < len(s) and _wordy(s[p - 1]) and _wordy(s[p])

    while pos > 0 and (inside(text, pos) or (other is not None and inside(other, pos))):
        pos -= 1
    return pos
