"""Long-form strategies: how a recording longer than Whisper's 30 s window is transcribed.

A strategy turns one 16 kHz recording into text plus time segments. Short-segment strategies
(``chunked``, ``vad``) cut the audio and hand the pieces, as a batch of ≤ 30 s utterances, to a
``ShortTranscriber`` — the same batched path that scores utterances, so whatever runs short
items runs them. ``sequential`` needs a model's own long-form decoding loop.

Strategies are a registry (``STRATEGIES``); each is a dataclass whose fields are its
parameters, recorded with the run (and part of its run id).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from asr_eval.errors import AsrEvalError
from asr_eval.registry import make_registered

SR = 16_000
WINDOW_S = 30.0


@dataclass
class LongFormResult:
    """One recording's transcription."""

    text: str
    segments: list[list]  # [[start_s, end_s, text], ...] in time order
    proc_s: float  # everything the strategy did (VAD, features, decoding), audio decoding excluded
    n_tokens: int = 0
    n_pieces: int = 0  # windows / chunks / speech segments decoded


@dataclass
class ShortBatch:
    texts: list[str]
    n_tokens: list[int]
    proc_s: float
    # per piece, when the transcriber knows them (else empty): the kept decode's average log-prob and
    # the no-speech probability (``engines.driver.BatchResult``) — what Whisper's silence rule reads
    avg_logprob: list[float | None] = field(default_factory=list)
    no_speech_prob: list[float | None] = field(default_factory=list)


# transcribe ≤ 30 s arrays in a batch: (audios) -> ShortBatch
ShortTranscriber = Callable[[Sequence[np.ndarray]], ShortBatch]


class Strategy(Protocol):
    name: ClassVar[str]

    def params(self) -> dict[str, Any]: ...

    def transcribe(self, engine: Any, audio: np.ndarray, recipe: Any, short: ShortTranscriber) -> LongFormResult: ...


STRATEGIES: dict[str, type] = {}


def register(cls: type) -> type:
    STRATEGIES[cls.name] = cls
    return cls


@dataclass
class StrategyBase:
    name: ClassVar[str] = ""

    def params(self) -> dict[str, Any]:
        return asdict(self)


def make_strategy(name: str, **params: Any) -> Strategy:
    """A strategy by name; ``params`` override its defaults (unknown keys are an error)."""
    from asr_eval.longform import chunked, sequential, vad  # noqa: F401  (registration)

    return make_registered(STRATEGIES, "long-form strategy", name, params)


def parse_params(specs: Sequence[str]) -> dict[str, Any]:
    """['stride_s=4', 'condition_on_prev=false', 'no_speech_threshold=none'] → {'stride_s': 4.0,
    'condition_on_prev': False, 'no_speech_threshold': None}."""
    out: dict[str, Any] = {}
    for spec in specs:
        if "=" not in spec:
            raise AsrEvalError(f"strategy parameter {spec!r} must look like name=value")
        k, v = (x.strip() for x in spec.split("=", 1))
        low = v.lower()
        if low in ("true", "false", "yes", "no", "on", "off"):
            out[k] = low in ("true", "yes", "on")
        elif low in ("none", "null"):  # a threshold switched off
            out[k] = None
        else:
            try:
                out[k] = int(v) if v.lstrip("-").isdigit() else float(v)
            except ValueError:
                out[k] = v
    return out


PIECE_MAX_NEW_TOKENS = 440  # a full 30 s piece of dense Mandarin needs ~150-300 tokens; 448 positions - prompt


def short_transcriber(engine: Any, recipe: Any, preprocessing: str = "pad-audio", batch_size: int | None = None,
                      max_new_tokens: int | None = None) -> ShortTranscriber:
    """The engine's batched utterance path (``engine.transcribe``, the engine-neutral driver) as a
    ShortTranscriber. ``max_new_tokens`` overrides the recipe's cap for the pieces (30 s pieces
    hold far more text than a typical utterance, and the 128-token utterance cap would cut them
    off); it is clamped to what the engine can generate after the prompt."""
    if max_new_tokens is not None:
        recipe = recipe.with_options(max_new_tokens=min(max_new_tokens, engine.max_new_tokens_cap(recipe)))

    def run(audios: Sequence[np.ndarray]) -> ShortBatch:
        if not audios:
            return ShortBatch([], [], 0.0)
        r = engine.transcribe(list(audios), recipe, preprocessing, batch_size)
        none = [None] * len(r.texts)  # (an engine's own transcribe may not report them)
        return ShortBatch(list(r.texts), list(r.n_tokens), r.proc_s, list(getattr(r, "avg_logprob", None) or none),
                          list(getattr(r, "no_speech_prob", None) or none))

    return run


FRAME = SR // 50  # 20 ms
ACTIVE_FLOOR_DB = -60.0  # a frame quieter than this is never speech
ACTIVE_BELOW_PEAK_DB = 40.0  # ... nor one this far below the recording's loud frames (95th percentile)


def activity(audio: np.ndarray) -> np.ndarray:
    """Per 20 ms frame: 1.0 where the frame is loud enough to be speech, else 0.0. Computed in
    60 s blocks: an hour costs its 180,000 frame levels, not a float64 copy of the signal."""
    n = len(audio) // FRAME
    db = np.empty(n)
    block = 3000  # frames (60 s)
    for i in range(0, n, block):
        k = min(block, n - i)
        frames = np.asarray(audio[i * FRAME:(i + k) * FRAME], np.float32).reshape(k, FRAME)
        db[i:i + k] = 10 * np.log10(np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / FRAME + 1e-12)
    if n == 0:
        return db
    level = max(ACTIVE_FLOOR_DB, float(np.percentile(db, 95)) - ACTIVE_BELOW_PEAK_DB)
    return (db > level).astype(np.float64)


def silent(no_speech_prob: float | None, avg_logprob: float | None, no_speech_threshold: float | None,
           logprob_threshold: float | None) -> bool:
    """Whisper's silence rule, for long-form pieces and streaming decodes alike: no-speech probability
    above its threshold and average log-prob below its threshold (a missing log-prob threshold: the
    no-speech probability alone)."""
    if no_speech_threshold is None or no_speech_prob is None or no_speech_prob <= no_speech_threshold:
        return False
    return logprob_threshold is None or (avg_logprob is not None and avg_logprob < logprob_threshold)


def kept_texts(res: ShortBatch, no_speech_threshold: float | None, logprob_threshold: float | None) -> list[str]:
    """The pieces' texts with those Whisper's silence rule calls silence emptied (no-speech
    probability above ``no_speech_threshold`` and average log-prob below ``logprob_threshold``:
    ``silent``; engines that report no probability keep every text)."""
    nsp = list(getattr(res, "no_speech_prob", None) or []) + [None] * len(res.texts)
    lp = list(getattr(res, "avg_logprob", None) or []) + [None] * len(res.texts)
    return ["" if silent(nsp[i], lp[i], no_speech_threshold, logprob_threshold) else t.strip()
            for i, t in enumerate(res.texts)]


def join_texts(texts: Sequence[str]) -> str:
    """Join pieces with a space (the normalizer drops it between Han characters; it keeps
    Latin words apart)."""
    return " ".join(t.strip() for t in texts if t and t.strip())


