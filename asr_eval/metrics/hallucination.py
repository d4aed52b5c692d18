"""Hallucination over silence: characters a recognizer produced where the reference has no speech,
and insertions that repeat what was already said — per recording, from the reference's segment
times. Pure functions; the store side is ``asr_eval.scoring.hallucination``.

Definitions (times in seconds from the recording's start):

- **Reference units.** The reference segments ``[[start_s, end_s, text], ...]`` (in time order),
  each normalized on its own with the run's normalizer profile and reduced to CER units
  (``align.chars``: whitespace dropped), concatenated: every reference unit knows its segment.
- **Hypothesis units** and each one's *time bound* — where in the audio it can come from:
  streaming runs and imported streaming logs (``HypothesisUnits.committed``): the committed
  increments normalized one by one (``streaming.metrics.committed_units``), each unit bounded by the
  emission time of the commit that carried it on the computation-unaware clock (text emitted at t
  can only be about audio before t); offline long-form runs (``HypothesisUnits.segmented``): the
  whole hypothesis normalized as the scorer does, each unit bounded by the hypothesis segment
  ``[start, end]`` it belongs to (units are matched to the segments' own normalized units by the
  character alignment; a unit that matches none takes the segment of the unit before it, else the
  one after it); otherwise (``HypothesisUnits.plain``) no bound.
- **Alignment.** ``align.align(ref_units, hyp_units)`` — the project's character alignment;
  ``inserted`` = the hypothesis units in its ``insert`` blocks (the CER insertions).
- **Silent gaps.** Before the first segment with reference units (``[0, start]``), between two
  consecutive ones (``[end_k, start_k+1]``; segments whose text normalizes to nothing lie inside
  the gap) and after the last (``[end, duration]``); a recording without any reference unit is one
  gap ``[0, duration]``. Only gaps at least ``MIN_SILENCE_S`` (1 s) long count: a shorter pause
  between sentences is ordinary, and an insertion there is a boundary error, not a hallucination.
  ``silence_s`` = the total length of the counted gaps.
- An insert block placed by the alignment between reference units i−1 and i **lies in a gap**
  when those two units belong to different segments (or i = 0, or i = the number of reference
  units): the gap from the end of unit i−1's segment (0 for i = 0) to the start of unit i's segment
  (the duration for the last).
- **inserted_in_silence**: inserted units in a counted gap, in insert blocks of at least
  ``MIN_BLOCK_UNITS`` (2) units, whose time bound is consistent with the gap —
  streaming: emitted after the gap began (emit > gap start); offline: its hypothesis segment
  overlaps the gap (shares a positive length with it; a segment without extent: its start lies in
  the gap); no bound: every one. A single inserted character next to speech is the sentence ended
  otherwise (whisper-base's 我也回去了 for 我也回去 before a 5 s pause, emitted after the pause began),
  an ordinary insertion; a reference without units (the whole recording silent) has no speech next
  to it, so there every inserted unit counts.
- **repeated_insertions**: inserted units in insert blocks of at least 2 units whose text occurs
  earlier in the hypothesis (``hyp[:j1]``) or in the reference before the insertion point
  (``ref[:i]``): invented repeats of what was said (a single repeated character is not counted).
- **Examples**: up to ``MAX_EXAMPLES`` insert blocks with units in silence, the most such units
  first (ties: earlier first): their text in silence, the gap, and (streaming) the first emission
  time of that text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asr_eval.errors import AsrEvalError
from asr_eval.metrics.align import align, chars
from asr_eval.text import DEFAULT_PROFILE, NormalizerProfile, get_profile

MIN_SILENCE_S = 1.0
MIN_BLOCK_UNITS = 2  # an insert block this short next to speech is a boundary error (了, 吗), not invented text
MAX_EXAMPLES = 3
BOUNDS = ("emission", "segment", "none")  # how hypothesis units are bounded in time (``HypothesisUnits.bound``)
_EPS = 1e-9

Profile = str | NormalizerProfile
Span = tuple[float, float]


@dataclass(frozen=True)
class ReferenceUnits:
    """A recording's normalized reference units, each one's segment, the segment spans and the duration."""

    chars: str
    segment: tuple[int, ...]
    spans: tuple[Span, ...]
    duration_s: float

    @classmethod
    def from_segments(cls, segments: Sequence[Sequence[Any]], duration_s: float,
                      profile: Profile = DEFAULT_PROFILE) -> ReferenceUnits:
        """Units of ``[[start_s, end_s, text], ...]``, each segment normalized on its own."""
        prof = get_profile(profile)
        spans: list[Span] = []
        for k, s in enumerate(segments):
            a, b = float(s[0]), float(s[1])
            if b < a:
                raise AsrEvalError(f"reference segment {k} ends ({b}) before it starts ({a}); "
                                   "fix the manifest's segments")
            spans.append((a, b))
        units = [chars(t) for t in prof.normalize_many([str(s[2]) for s in segments])]
        return cls("".join(units), tuple(k for k, u in enumerate(units) for _ in u), tuple(spans), float(duration_s))


@dataclass(frozen=True)
class HypothesisUnits:
    """A hypothesis's normalized units with, per unit, an emission time (streaming) or the span of
    its hypothesis segment (offline; ``None`` for a unit no segment holds), or neither."""

    chars: str
    emit_s: tuple[float, ...] | None = None
    spans: tuple[Span | None, ...] | None = None

    def __post_init__(self) -> None:
        for name, v in (("emission times", self.emit_s), ("segment spans", self.spans)):
            if v is not None and len(v) != len(self.chars):
                raise AsrEvalError(f"hypothesis units: {len(self.chars)} units but {len(v)} {name}; give one per unit")

    @property
    def bound(self) -> str:
        """``emission`` | ``segment`` | ``none`` (``BOUNDS``)."""
        return "emission" if self.emit_s is not None else "segment" if self.spans is not None else "none"

    @classmethod
    def plain(cls, text: str | None, profile: Profile = DEFAULT_PROFILE) -> HypothesisUnits:
        """The whole hypothesis, no time bound."""
        return cls(chars(get_profile(profile).normalize(text)))

    @classmethod
    def committed(cls, emissions: Sequence[Any], profile: Profile = DEFAULT_PROFILE,
                  clock: str = "unaware") -> HypothesisUnits:
        """A streaming log's committed units, each bounded by its emission time on ``clock``."""
        from asr_eval.streaming.metrics import committed_units

        units, times = committed_units(emissions, clock, get_profile(profile).name)
        return cls(units, tuple(times))

    @classmethod
    def segmented(cls, text: str | None, segments: Sequence[Sequence[Any]] | None,
                  profile: Profile = DEFAULT_PROFILE) -> HypothesisUnits:
        """The whole hypothesis (normalized as the scorer does), each unit bounded by the hypothesis
        segment it belongs to; without segments, no bound."""
        prof = get_profile(profile)
        whole = chars(prof.normalize(text))
        if not segments:
            return cls(whole)
        seg_units = [chars(t) for t in prof.normalize_many([str(s[2]) for s in segments])]
        spans = [(float(s[0]), float(s[1])) for s in segments]
        joined = "".join(seg_units)
        owner = [k for k, u in enumerate(seg_units) for _ in u]
        if joined == whole:
            return cls(whole, spans=tuple(spans[k] for k in owner))
        got: list[int | None] = [None] * len(whole)
        for tag, i1, i2, j1, j2 in align(joined, whole):
            if tag in ("equal", "replace"):
                for d in range(j2 - j1):
                    got[j1 + d] = owner[i1 + d]
        last: int | None = None
        for j, k in enumerate(got):  # unmatched units: the segment of the unit before, else after
            if k is None:
                got[j] = last
            last = got[j]
        nxt: int | None = None
        for j in range(len(got) - 1, -1, -1):
            if got[j] is None:
                got[j] = nxt
            nxt = got[j]
        return cls(whole, spans=tuple(None if k is None else spans[k] for k in got))


@dataclass(frozen=True)
class SilentGap:
    start_s: float
    end_s: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Example:
    """One insert block's text in silence (``text``), the gap it lies in, and (streaming) when the
    first of it was emitted; ``repeated`` when the block repeats earlier text."""

    text: str
    gap_start_s: float
    gap_end_s: float
    emit_s: float | None
    repeated: bool


@dataclass(frozen=True)
class Hallucination:
    """The measures of one recording (module docstring)."""

    ref_units: int
    hyp_units: int
    inserted: int
    inserted_in_silence: int
    repeated_insertions: int
    silence_s: float
    gaps: tuple[SilentGap, ...]
    examples: tuple[Example, ...]
    bound: str


def silent_gaps(ref: ReferenceUnits, min_silence_s: float = MIN_SILENCE_S) -> list[SilentGap]:
    """The counted gaps of a reference (module docstring), in time order."""
    speech = list(dict.fromkeys(ref.segment))  # segments with units, in order
    edges = [0.0] + [x for k in speech for x in ref.spans[k]] + [ref.duration_s]
    gaps = [SilentGap(edges[i], edges[i + 1]) for i in range(0, len(edges), 2)]
    return [g for g in gaps if g.length_s >= min_silence_s - _EPS]


def _gap_at(ref: ReferenceUnits, i: int, min_silence_s: float) -> SilentGap | None:
    """The counted gap an insertion before reference unit ``i`` lies in, if any."""
    n = len(ref.chars)
    prev = ref.segment[i - 1] if i > 0 else None
    nxt = ref.segment[i] if i < n else None
    if prev is not None and prev == nxt:
        return None
    gap = SilentGap(ref.spans[prev][1] if prev is not None else 0.0,
                    ref.spans[nxt][0] if nxt is not None else ref.duration_s)
    return gap if gap.length_s >= min_silence_s - _EPS else None


def _overlaps(span: Span, gap: SilentGap) -> bool:
    a, b = span
    if b <= a:
        return gap.start_s <= a <= gap.end_s
    return min(b, gap.end_s) > max(a, gap.start_s)


def _in_silence(hyp: HypothesisUnits, j: int, gap: SilentGap) -> bool:
    if hyp.emit_s is not None:
        return hyp.emit_s[j] > gap.start_s
    if hyp.spans is not None and hyp.spans[j] is not None:
        return _overlaps(hyp.spans[j], gap)  # type: ignore[arg-type]
    return True


def measure(ref: ReferenceUnits, hyp: HypothesisUnits, min_silence_s: float = MIN_SILENCE_S,
            max_examples: int = MAX_EXAMPLES) -> Hallucination:
    """``inserted``, ``inserted_in_silence``, ``repeated_insertions``, ``silence_s`` and examples of
    one recording (module docstring)."""
    inserted = in_silence = repeated = 0
    found: list[tuple[int, int, Example]] = []
    for tag, i1, _i2, j1, j2 in align(ref.chars, hyp.chars):
        if tag != "insert":
            continue
        inserted += j2 - j1
        block = hyp.chars[j1:j2]
        rep = j2 - j1 >= 2 and (block in hyp.chars[:j1] or block in ref.chars[:i1])
        if rep:
            repeated += j2 - j1
        gap = _gap_at(ref, i1, min_silence_s)
        if gap is None or (j2 - j1 < MIN_BLOCK_UNITS and ref.chars):  # one character next to speech: a boundary error
            continue
        quiet = [j for j in range(j1, j2) if _in_silence(hyp, j, gap)]
        in_silence += len(quiet)
        if quiet:
            emit = hyp.emit_s[quiet[0]] if hyp.emit_s is not None else None
            found.append((len(quiet), j1, Example("".join(hyp.chars[j] for j in quiet), gap.start_s, gap.end_s,
                                                  emit, rep)))
    gaps = silent_gaps(ref, min_silence_s)
    examples = tuple(e for _, _, e in sorted(found, key=lambda x: (-x[0], x[1]))[:max_examples])
    return Hallucination(len(ref.chars), len(hyp.chars), inserted, in_silence, repeated,
                         sum(g.length_s for g in gaps), tuple(gaps), examples, hyp.bound)


__all__ = ["BOUNDS", "MAX_EXAMPLES", "MIN_BLOCK_UNITS", "MIN_SILENCE_S", "Example", "Hallucination", "HypothesisUnits",
           "ReferenceUnits", "SilentGap", "measure", "silent_gaps"]
