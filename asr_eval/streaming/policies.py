"""The streaming policies: ``local-agreement``, ``hold-k``, ``vad-segment``.

Hypotheses come from a ``ShortTranscriber`` as plain text (no word timestamps), so every rule
below is stated on characters and on chunk arrival times. Units are characters (Mandarin has no
spaces); a cut is never placed inside a Latin word or number (``base.safe_cut``).

**local-agreement** (LocalAgreement-n, Polák et al. 2022; whisper_streaming's
``OnlineASRProcessor`` with ``buffer_trimming=("segment", 15)``). The *buffer* is the audio from
``b`` (initially 0) to the newest arrival ``T``. Each step decodes the buffer, prompted with the
last ``prompt_chars`` characters of the committed text whose audio lies before ``b`` (text
committed from audio still in the buffer is re-transcribed, not prompted). The hypothesis's
beginning that re-transcribes the text committed since ``b`` is removed (``strip_committed``);
the rest is its *tail*. The commit is the longest common prefix (in characters) of the tails
of the last ``n`` hypotheses; what is left of the newest tail is the tentative text. No commit
before ``n`` hypotheses since the start (or since a forced cut).

Comparisons (stripping the committed text, the common prefix) are made on the *folded* text
(``fold``): punctuation and whitespace dropped, each character converted to Simplified Chinese
(OpenCC t2s, the normalizer's table), NFKC, lower case — whisper-base switches script and
punctuation between two decodes of the same audio (趴晚上常常學習,別哭 / 他晚上常常学习别哭), and
two hypotheses that say the same thing must agree. The commit is then cut from the newest
hypothesis's own text after as many folded characters as were agreed (never inside a Latin word
or number of it).

Buffer trimming without timestamps. A step whose commit is not empty and after which every
agreed tail is used up (the last ``n`` hypotheses of audio ``[b, T)`` agree to their end and all
of it is committed: a *committed segment end*) records the point ``T``. (A hypothesis that
merely stops early — it re-transcribes the committed text and drops the rest — commits nothing
and records no point: cutting the buffer there would lose the speech it skipped.) After a step,
if the buffer is longer than ``buffer_trim_s`` and such a point ``P`` lies after ``b``, ``b``
moves to ``max(b, P − trim_margin_s)`` (the text committed after ``P`` stays "in the buffer").
The margin is there because ``P`` is a chunk arrival, not a word boundary: the last chunk may
hold the beginning of a word no hypothesis has written yet, and a buffer starting at ``P``
would cut it (whisper-base then garbles or drops what follows — measured on long_009). With a
margin the buffer starts inside committed speech whose extent in characters is unknown, so
until the next cut each hypothesis's re-transcription of committed text is found by ``overlap``
(on folded text) instead of ``strip_committed``. Because Whisper's segment end times are unknown here (whisper_streaming cuts at the
end of the last Whisper segment inside the committed text), the cut can only be made where the
hypothesis of everything before it was committed in full; in speech that happens at pauses,
when two consecutive hypotheses agree to their end. **30 s cap**: a buffer that would exceed
``max_buffer_s`` (≤ 30 s: Whisper's window) before a decode forces a cut: the newest tail is
committed whole and ``b`` moves to the previous chunk's arrival (the audio that hypothesis had
not heard), a fresh start for the agreement.

**hold-k** (Liu et al. 2020's hold-n, on a sliding window). Each step decodes the window
``[max(0, T − window_s), T)`` with no prompt. The hypothesis ``H`` is split as ``H = O + N + K``:
``O = H[:j]`` is the window's *stable part* — the prefix that re-transcribes text already
committed, found by ``overlap`` (the best local match of a suffix of the committed text with a
prefix of ``H``); ``K`` is the last ``k`` characters of ``H`` (the window's unstable end,
held back); ``N = H[j : len(H) − k]`` is committed (nothing when ``len(H) − k ≤ j``). The
tentative text is ``H[max(j, len(H) − k):]``; the flush commits the last tentative text. The
issue's "all but the last k tokens of the hypothesis that lie before the window's stable part"
is read as: of the characters the window *adds* to the committed text (those after its stable
prefix ``O``), all but the last ``k``. Cost: ``overlap`` is a pure-Python O(len(H)²) alignment
per step, cheap for the default 10 s window (~50 characters).

**vad-segment**. Silero VAD (``asr_eval.longform.vad.speech_regions``, its onset fix and padding)
runs on the audio from the end of the last decoded segment to ``T``. A region ``[a, e)`` is
*closed* when ``e ≤ T − close_s``: the VAD's end (speech end plus its pad) lies that far before
the newest audio, so more audio cannot extend it. A closed region is decoded (prompted with the
last ``prompt_chars`` committed characters) and its text committed at once; an open region
that has grown to ``max_segment_s`` is decoded as its first ``max_segment_s`` and committed.
Nothing is tentative. The flush decodes every region left.

**Guards** (``asr_eval.streaming.guards``, parameters like the others): the silence rule (every
policy, applied by the decoder), the VAD gate (local-agreement, hold-k: a decode stops after the
last speech in it plus a pad, and a buffer or window without speech is not decoded; under it,
hold-k commits the held characters once the speech has ended, since more audio cannot change the
hypothesis), the prompt age (local-agreement, vad-segment) and repeat-only hypotheses
(local-agreement: the tail is dropped; hold-k: what the window adds is dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import functools
import unicodedata

import numpy as np
from rapidfuzz.distance import Levenshtein

from asr_eval.errors import AsrEvalError
from asr_eval.longform.vad import speech_regions
from asr_eval.text.normalizer import opencc_t2s
from asr_eval.streaming.base import SR, WINDOW_S, Decoder, PolicyBase, Step, common_prefix, register, safe_cut
from asr_eval.streaming.guards import PromptClock, SpeechGate, repeats_committed


@functools.cache
def _fold_char(c: str) -> str:
    """One character's comparison key ("" for punctuation and whitespace)."""
    if c.isspace() or unicodedata.category(c)[0] in "PSZC":
        return ""
    k = unicodedata.normalize("NFKC", c)
    if len(k) != 1:
        k = c
    t = opencc_t2s().convert(k)
    return (t if len(t) == 1 else k).lower()


def fold(text: str) -> tuple[str, list[int]]:
    """The comparison key of ``text`` (module docstring) and, per key character, the index of its
    character in ``text``."""
    key, where = [], []
    for i, c in enumerate(text):
        if f := _fold_char(c):
            key.append(f)
            where.append(i)
    return "".join(key), where


def after_folded(text: str, k: int) -> int:
    """The index in ``text`` just after its first ``k`` folded characters (0 for k = 0)."""
    if k <= 0:
        return 0
    _, where = fold(text)
    return where[k - 1] + 1 if k <= len(where) else len(text)


def strip_committed(hyp: str, committed: str) -> int:
    """Where in ``hyp`` the re-transcription of ``committed`` ends: the ``j`` minimizing the
    character edit distance between ``committed`` and ``hyp[:j]``, ties to the ``j`` nearest
    ``len(committed)``; 0 when even that distance is ``len(committed)`` (``hyp`` shows no trace
    of the committed text)."""
    if not committed:
        return 0
    if hyp.startswith(committed):
        return len(committed)
    c, _ = fold(committed)
    h, where = fold(hyp)
    n = len(c)
    if not n:
        return 0
    best = min(range(len(h) + 1), key=lambda j: (Levenshtein.distance(c, h[:j]), abs(j - n)))
    if Levenshtein.distance(c, h[:best]) >= n:
        return 0
    return where[best - 1] + 1 if best else 0


def overlap(committed: str, hyp: str) -> int:
    """The end ``j`` of the prefix of ``hyp`` that re-transcribes the end of ``committed``: ``j``
    maximizes the best score of aligning some suffix of ``committed`` with ``hyp[:j]`` (match +1,
    substitution, insertion, deletion −1); ties to the largest ``j``; 0 when no score beats 0."""
    c = committed[-(len(hyp) + 8):]
    m = len(c)
    # prev[jj]: best score of (some suffix of c[:a]) vs hyp[:jj], over rows a = 0..m
    prev = [-jj for jj in range(len(hyp) + 1)]
    for a in range(1, m + 1):
        cur = [0] * (len(hyp) + 1)  # the empty suffix of c[:a] aligns with hyp[:0] for free
        ca = c[a - 1]
        for jj in range(1, len(hyp) + 1):
            cur[jj] = max(prev[jj] - 1, cur[jj - 1] - 1, prev[jj - 1] + (1 if ca == hyp[jj - 1] else -1))
        prev = cur
    best_j, best = 0, 0
    for jj, s in enumerate(prev):
        if s >= best and s > 0:
            best_j, best = jj, s
    return best_j


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise AsrEvalError(msg)


@register
@dataclass
class LocalAgreement(PolicyBase):
    name: ClassVar[str] = "local-agreement"
    n: int = 2  # hypotheses that must agree
    buffer_trim_s: float = 15.0
    max_buffer_s: float = WINDOW_S
    prompt_chars: int = 100  # ≈ 100-150 Whisper tokens of Mandarin; whisper_streaming: 200 (Latin)
    trim_margin_s: float = 1.0  # the buffer is cut this far before a committed segment end
    vad_gate: bool = True  # guards (asr_eval.streaming.guards)
    prompt_max_age_s: float | None = None  # off: measured to cost accuracy (guards docstring)
    drop_repeats: bool = True

    def __post_init__(self) -> None:
        self.check_guards()
        _check(self.n >= 1, f"local-agreement: n {self.n} must be ≥ 1 (2 is LocalAgreement-2)")
        _check(0 < self.max_buffer_s <= WINDOW_S, f"local-agreement: max_buffer_s {self.max_buffer_s} must be in (0, 30]")
        _check(0 < self.buffer_trim_s <= self.max_buffer_s,
               f"local-agreement: buffer_trim_s {self.buffer_trim_s} must be in (0, max_buffer_s={self.max_buffer_s}]")
        _check(self.prompt_chars >= 0, f"local-agreement: prompt_chars {self.prompt_chars} must be ≥ 0")
        _check(0 <= self.trim_margin_s < self.buffer_trim_s,
               f"local-agreement: trim_margin_s {self.trim_margin_s} must be in [0, buffer_trim_s={self.buffer_trim_s})")

    def session(self) -> _LocalAgreementSession:
        return _LocalAgreementSession(self)


class _LocalAgreementSession:
    def __init__(self, p: LocalAgreement) -> None:
        self.p = p
        self.b = 0  # buffer start (samples)
        self.committed = ""  # everything committed
        self.in_buffer = 0  # how many trailing committed characters were committed since b
        self.tails: list[str] = []  # uncommitted tails of the last n-1 hypotheses
        self.points: list[tuple[int, int]] = []  # committed segment ends: (sample, len(committed))
        self.prev_t = 0
        self.overlapping = False  # strip re-transcribed committed text by overlap (after a cut with a margin)
        self.gate = SpeechGate() if p.vad_gate else None
        self.clock = PromptClock()

    def prompt(self, t: int) -> str | None:
        upto = len(self.committed) - self.in_buffer
        before = self.committed[self.clock.recent(upto, t, self.p.prompt_max_age_s):upto]
        return before[-self.p.prompt_chars:] if self.p.prompt_chars and before else None

    def _commit(self, text: str, t: int) -> None:
        self.committed += text
        self.clock.add(text, t)

    def step(self, audio: np.ndarray, decode: Decoder) -> Step:
        t, forced = len(audio), ""
        if t - self.b > self.p.max_buffer_s * SR:  # the 30 s cap: commit the newest tail, restart
            if self.prev_t <= self.b:
                raise AsrEvalError(f"local-agreement: a chunk longer than max_buffer_s {self.p.max_buffer_s} s; "
                                   "use a smaller --chunk-s")
            forced = self.tails[-1] if self.tails else ""
            self._commit(forced, t)
            self.b, self.in_buffer, self.tails, self.points = self.prev_t, 0, [], []
            self.overlapping = False
        self.prev_t = t
        hyp = gated_decode(audio, self.b, t, self.gate, decode, self.prompt(t))
        if self.overlapping:  # the buffer starts inside committed speech (a cut with a margin)
            c, (h, where) = fold(self.committed)[0], fold(hyp)
            jf = overlap(c, h)
            tail = hyp[where[jf - 1] + 1 if jf else 0:]
        else:
            mine = self.committed[len(self.committed) - self.in_buffer:]
            tail = hyp[strip_committed(hyp, mine):]
        if self.p.drop_repeats and repeats_committed(fold(tail)[0], fold(self.committed[-120:])[0]):
            tail = ""  # only repeats what was just committed
        commit, agreed = "", []
        if len(self.tails) >= self.p.n - 1:
            agreed = self.tails[len(self.tails) - (self.p.n - 1):] + [tail]
            kf = len(common_prefix([fold(a)[0] for a in agreed]))
            commit = tail[:safe_cut(tail, after_folded(tail, kf))]
        kf = len(fold(commit)[0])
        self.tails = [x[after_folded(x, kf):] for x in self.tails + [tail]][
            max(0, len(self.tails) + 1 - (self.p.n - 1)):]
        tail = tail[len(commit):]
        self._commit(commit, t)
        self.in_buffer += len(commit)
        if commit and all(not fold(a[after_folded(a, kf):])[0] for a in agreed):
            self.points.append((t, len(self.committed)))
        if t - self.b > self.p.buffer_trim_s * SR:
            later = [pt for pt in self.points if pt[0] > self.b]
            if later:
                point, length = later[-1]
                self.b = max(self.b, point - round(self.p.trim_margin_s * SR))
                self.overlapping = self.b < point
                self.in_buffer = len(self.committed) - length
                self.points = []
        return Step(forced + commit, tail)

    def finish(self, audio: np.ndarray, decode: Decoder) -> Step:
        rest = self.tails[-1] if self.tails else ""
        self._commit(rest, len(audio))
        self.tails = []
        return Step(rest, "")


@register
@dataclass
class HoldK(PolicyBase):
    name: ClassVar[str] = "hold-k"
    k: int = 5  # characters held back
    window_s: float = 10.0
    vad_gate: bool = True  # guards (asr_eval.streaming.guards)
    drop_repeats: bool = True

    def __post_init__(self) -> None:
        self.check_guards()
        _check(self.k >= 0, f"hold-k: k {self.k} must be ≥ 0")
        _check(0 < self.window_s <= WINDOW_S, f"hold-k: window_s {self.window_s} must be in (0, 30]")

    def session(self) -> _HoldKSession:
        return _HoldKSession(self)


class _HoldKSession:
    def __init__(self, p: HoldK) -> None:
        self.p = p
        self.committed = ""
        self.tentative = ""
        self.gate = SpeechGate() if p.vad_gate else None

    def step(self, audio: np.ndarray, decode: Decoder) -> Step:
        t = len(audio)
        start = max(0, t - int(round(self.p.window_s * SR)))
        end = t if self.gate is None else speech_end(audio, start, t, self.gate)
        if end is None:  # no speech in the window: nothing to decode, the held text stays
            return Step("", self.tentative)
        hyp = decode(audio[start:end], None)
        j = overlap(self.committed, hyp)
        if self.p.drop_repeats and repeats_committed(fold(hyp[j:])[0], fold(self.committed[-120:])[0]):
            hyp = hyp[:j]  # what the window adds only repeats what was just committed
        # The gate cut the decode before the newest audio: the speech has ended and more audio cannot
        # change this hypothesis, so nothing needs holding back.
        cut = len(hyp) if end < t else safe_cut(hyp, max(0, len(hyp) - self.p.k))
        commit = hyp[j:cut] if cut > j else ""
        self.committed += commit
        self.tentative = hyp[max(j, cut):]
        return Step(commit, self.tentative)

    def finish(self, audio: np.ndarray, decode: Decoder) -> Step:
        rest, self.tentative = self.tentative, ""
        self.committed += rest
        return Step(rest, "")


def vad_regions(audio: np.ndarray, start: int, policy: VadSegment) -> list[tuple[int, int]]:
    """Silero speech regions of ``audio[start:]``, in samples of ``audio`` (tests replace this)."""
    if len(audio) - start < SR // 10:  # under 100 ms: nothing Silero can call speech yet
        return []
    return [(start + a, start + b) for a, b in speech_regions(
        audio[start:], policy.threshold, policy.min_silence_ms, policy.speech_pad_ms, policy.max_segment_s)]


@register
@dataclass
class VadSegment(PolicyBase):
    name: ClassVar[str] = "vad-segment"
    threshold: float = 0.5
    min_silence_ms: int = 300
    speech_pad_ms: int = 400
    close_s: float = 0.3  # a region ending this long before the newest audio is closed
    max_segment_s: float = WINDOW_S
    prompt_chars: int = 100
    lookback_s: float = 1.0  # audio kept for the VAD when it finds no speech
    prompt_max_age_s: float | None = None  # guard (asr_eval.streaming.guards), off by default

    def __post_init__(self) -> None:
        self.check_guards()
        _check(1.0 <= self.max_segment_s <= WINDOW_S, f"vad-segment: max_segment_s {self.max_segment_s} must be in [1, 30]")
        _check(self.close_s >= 0, f"vad-segment: close_s {self.close_s} must be ≥ 0")
        _check(self.prompt_chars >= 0, f"vad-segment: prompt_chars {self.prompt_chars} must be ≥ 0")

    def session(self) -> _VadSession:
        return _VadSession(self)


class _VadSession:
    def __init__(self, p: VadSegment) -> None:
        self.p = p
        self.scan = 0  # VAD runs on audio[scan:]
        self.committed = ""
        self.clock = PromptClock()

    def _decode(self, audio: np.ndarray, a: int, b: int, decode: Decoder) -> str:
        recent = self.committed[self.clock.recent(len(self.committed), len(audio), self.p.prompt_max_age_s):]
        prompt = recent[-self.p.prompt_chars:] if self.p.prompt_chars and recent.strip() else None
        text = decode(audio[a:b], prompt).strip()
        if not text:
            return ""
        text = (" " if self.committed else "") + text
        self.committed += text
        self.clock.add(text, len(audio))
        return text

    def step(self, audio: np.ndarray, decode: Decoder, final: bool = False) -> Step:
        t = len(audio)
        regions = vad_regions(audio, self.scan, self.p)
        longest = int(round(self.p.max_segment_s * SR))
        out = []
        for a, e in regions:
            if final or e <= t - self.p.close_s * SR:
                out.append(self._decode(audio, a, min(e, a + longest), decode))
                self.scan = max(self.scan, min(e, a + longest))
            elif t - a >= longest:  # open, but as long as a decode may be
                out.append(self._decode(audio, a, min(e, a + longest), decode))
                self.scan = min(e, a + longest)
                break
            else:
                break
        if not regions:
            self.scan = max(self.scan, t - int(round(self.p.lookback_s * SR)))
        return Step("".join(out), "")

    def finish(self, audio: np.ndarray, decode: Decoder) -> Step:
        return self.step(audio, decode, final=True)


def speech_end(audio: np.ndarray, start: int, t: int, gate: SpeechGate) -> int | None:
    """The VAD gate: where a decode of ``audio[start:t]`` should stop (None: no speech in it)."""
    gate.update(audio[:t])
    return gate.decode_end(start, t)


def gated_decode(audio: np.ndarray, start: int, t: int, gate: SpeechGate | None, decode: Decoder,
                 prompt: str | None) -> str:
    """``decode(audio[start:t], prompt)``, under the VAD gate when there is one ("" without speech)."""
    end = t if gate is None else speech_end(audio, start, t, gate)
    return "" if end is None else decode(audio[start:end], prompt)


def describe(policy: Any) -> str:
    """``name(k=v, …)`` for tables and logs."""
    return f"{policy.name}(" + ", ".join(f"{k}={v}" for k, v in policy.params().items()) + ")"
