"""Streaming metrics of one recording: pure functions of an emission log and reference timing.

Definitions (every time in seconds from the recording's start; ``clock`` is ``"unaware"`` or
``"aware"``, ``asr_eval.streaming.simulate``):

- **Committed characters.** Each emission's committed increment is normalized on its own with
  the scoring profile (``zh-v1`` by default) and reduced to its CER units (``align.chars``:
  whitespace dropped); each unit carries its emission's time on the clock. (Normalizing
  increment by increment can differ from normalizing the whole text where a number is split
  across commits; the final text's CER is scored whole, by the ordinary scorer.)
- **Reference timing.** ``ref_chars``: the normalized reference's CER units; ``ref_end_s[i]``:
  when reference character i ends in the audio; ``ref_segment[i]``: its segment, whose speech
  onset is ``onsets_s[segment]``. ``uniform_reference`` spreads each segment's characters evenly
  over the segment (the declared fallback when no forced alignment is available).
- **Character latency.** The committed units are aligned to the reference units by the
  project's character alignment (``asr_eval.metrics.align.align``, Levenshtein opcodes); each
  unit in an ``equal`` block is *matched* and its latency is ``emit − ref_end_s[ref index]``.
  Substituted, inserted (and deleted reference) units do not count. Summaries (``LatencyStats``):
  count, mean, median and p90, where p90 is numpy's default (linear) percentile: the value at
  rank ``0.9·(n − 1)`` of the sorted latencies, interpolated between its neighbours.
- **First-emission latency** of a segment: the earliest emission time of a matched unit whose
  reference character lies in that segment, minus the segment's speech onset; a segment with no
  matched unit has none (``None``).
- **Flicker.** The display after emission e is ``D_e`` = all committed text so far + the
  tentative tail (whitespace dropped, raw text), ``D_0 = ""``, and the last emission (the flush)
  shows the final text. Between consecutive displays with longest common prefix ``l``, the
  viewer sees ``len(D_{e−1}) − l`` characters *retracted* and ``len(D_e) − l`` characters
  *written*. Flicker = Σ retracted ÷ Σ written (0 when nothing was written). Committed text is
  never retracted, so every retracted character was tentative; Σ written = len(final) + Σ
  retracted, so flicker is the share of all characters ever put on screen that were taken back.
- **Commit events per minute**: emissions with a non-blank committed increment ÷ (audio s / 60).
- **Compute**: decode calls, and compute seconds (Σ step costs) per audio second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from asr_eval.errors import AsrEvalError
from asr_eval.metrics.align import align, chars
from asr_eval.streaming.base import CLOCKS, Emission, StreamResult, common_prefix
from asr_eval.text import DEFAULT_PROFILE, get_profile


@dataclass(frozen=True)
class LatencyStats:
    n: int
    mean_s: float | None
    median_s: float | None
    p90_s: float | None


def latency_stats(values: Sequence[float]) -> LatencyStats:
    """Count, mean, median and p90 (numpy linear percentile) of ``values``; None when empty."""
    if not len(values):
        return LatencyStats(0, None, None, None)
    a = np.asarray(values, float)
    return LatencyStats(len(a), float(a.mean()), float(np.median(a)), float(np.percentile(a, 90)))


@dataclass(frozen=True)
class ReferenceTiming:
    """Normalized reference units with their end times, segments and segment onsets."""

    chars: str
    end_s: list[float]
    segment: list[int]
    onsets_s: list[float]
    method: str = "given"  # how the times were obtained ("uniform" for the fallback)

    def __post_init__(self) -> None:
        if not len(self.chars) == len(self.end_s) == len(self.segment):
            raise AsrEvalError(f"reference timing: {len(self.chars)} characters but {len(self.end_s)} end times "
                               f"and {len(self.segment)} segment indices; give one of each per character")
        if any(not 0 <= s < len(self.onsets_s) for s in self.segment):
            raise AsrEvalError(f"reference timing: segment indices must be in [0, {len(self.onsets_s)})")


def uniform_reference(segments: Sequence[Sequence], profile: str = DEFAULT_PROFILE) -> ReferenceTiming:
    """Fallback reference timing from ``[[start_s, end_s, text], ...]``: segment s's n normalized
    characters end at ``start + (i + 1)·(end − start)/n`` (i = 0 … n−1); onsets are the starts."""
    prof = get_profile(profile)
    texts = prof.normalize_many([str(s[2]) for s in segments])
    out_c: list[str] = []
    out_e: list[float] = []
    out_s: list[int] = []
    for k, (seg, norm) in enumerate(zip(segments, texts)):
        a, b = float(seg[0]), float(seg[1])
        if b < a:
            raise AsrEvalError(f"reference segment {k} ends ({b}) before it starts ({a}); fix the manifest's segments")
        units = chars(norm)
        n = len(units)
        out_c.append(units)
        out_e += [a + (i + 1) * (b - a) / n for i in range(n)]
        out_s += [k] * n
    return ReferenceTiming("".join(out_c), out_e, out_s, [float(s[0]) for s in segments], "uniform")


def committed_units(emissions: Sequence[Emission], clock: str, profile: str = DEFAULT_PROFILE) -> tuple[str, list[float]]:
    """The committed text's normalized CER units and each one's emission time on ``clock``."""
    if clock not in CLOCKS:
        raise AsrEvalError(f"unknown clock {clock!r}; use one of {', '.join(CLOCKS)}")
    norm = get_profile(profile).normalize_many([e.text for e in emissions])
    units, times = [], []
    for e, t in zip(emissions, norm):
        u = chars(t)
        units.append(u)
        times += [e.at(clock)] * len(u)
    return "".join(units), times


def matched(ref_chars: str, hyp_chars: str) -> list[tuple[int, int]]:
    """(reference index, hypothesis index) of every unit the alignment calls equal."""
    out: list[tuple[int, int]] = []
    for tag, i1, i2, j1, _j2 in align(ref_chars, hyp_chars):
        if tag == "equal":
            out += [(i1 + d, j1 + d) for d in range(i2 - i1)]
    return out


def char_latencies(ref_end_s: Sequence[float], pairs: Sequence[tuple[int, int]],
                   hyp_times: Sequence[float]) -> list[float]:
    """Latency of each matched unit: its emission time − its reference character's end."""
    return [hyp_times[j] - ref_end_s[i] for i, j in pairs]


def first_emission_latencies(ref: ReferenceTiming, pairs: Sequence[tuple[int, int]],
                             hyp_times: Sequence[float]) -> list[float | None]:
    """Per segment: earliest emission of a matched unit of that segment − the segment's onset."""
    first: list[float | None] = [None] * len(ref.onsets_s)
    for i, j in pairs:
        s = ref.segment[i]
        cur = first[s]
        if cur is None or hyp_times[j] < cur:
            first[s] = hyp_times[j]
    return [None if t is None else t - ref.onsets_s[s] for s, t in enumerate(first)]


def flicker(emissions: Sequence[Emission]) -> tuple[float, int, int]:
    """(flicker, characters retracted, characters written) of the display sequence."""
    committed, shown = "", ""
    retracted = written = 0
    for e in emissions:
        committed += chars(e.text)
        now = committed + chars(e.tentative)
        lcp = len(common_prefix([shown, now]))
        retracted += len(shown) - lcp
        written += len(now) - lcp
        shown = now
    return (retracted / written if written else 0.0), retracted, written


def commits_per_minute(emissions: Sequence[Emission], audio_s: float) -> float:
    n = sum(1 for e in emissions if e.text.strip())
    return n / (audio_s / 60.0) if audio_s > 0 else 0.0


@dataclass
class ClockMetrics:
    latency: LatencyStats
    first_emission: LatencyStats  # over the segments that have one
    first_emission_s: list[float | None] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)  # every matched character's, in hypothesis order


@dataclass
class StreamMetrics:
    """All streaming metrics of one recording (module docstring)."""

    clocks: dict[str, ClockMetrics]
    n_ref_chars: int
    n_matched: int
    flicker: float
    retracted_chars: int
    written_chars: int
    commits_per_minute: float
    decode_calls: int
    compute_per_audio_s: float
    real_time: bool
    final_lag_s: float
    lag_slope: float
    timing_method: str

    def flat(self) -> dict[str, float | int | bool | str | None]:
        """One flat row (``latency_median_s_unaware``, ``latency_p90_s_aware``, …) for tables/JSON."""
        row: dict[str, float | int | bool | str | None] = {
            "n_ref_chars": self.n_ref_chars, "n_matched": self.n_matched, "flicker": self.flicker,
            "commits_per_minute": self.commits_per_minute, "decode_calls": self.decode_calls,
            "compute_per_audio_s": self.compute_per_audio_s, "real_time": self.real_time,
            "final_lag_s": self.final_lag_s, "lag_slope": self.lag_slope, "timing_method": self.timing_method}
        for clock, m in self.clocks.items():
            row[f"latency_mean_s_{clock}"] = m.latency.mean_s
            row[f"latency_median_s_{clock}"] = m.latency.median_s
            row[f"latency_p90_s_{clock}"] = m.latency.p90_s
            row[f"first_emission_median_s_{clock}"] = m.first_emission.median_s
        return row


def stream_metrics(result: StreamResult, ref: ReferenceTiming, profile: str = DEFAULT_PROFILE) -> StreamMetrics:
    """Every metric of the module docstring for one streamed recording. The character matching is
    the same on both clocks (only the times differ)."""
    clocks: dict[str, ClockMetrics] = {}
    pairs: list[tuple[int, int]] = []
    for clock in CLOCKS:
        hyp, times = committed_units(result.emissions, clock, profile)
        if not pairs:
            pairs = matched(ref.chars, hyp)
        first = first_emission_latencies(ref, pairs, times)
        lats = char_latencies(ref.end_s, pairs, times)
        clocks[clock] = ClockMetrics(latency_stats(lats), latency_stats([f for f in first if f is not None]), first,
                                     lats)
    fl, retracted, written = flicker(result.emissions)
    return StreamMetrics(clocks, len(ref.chars), len(pairs), fl, retracted, written,
                         commits_per_minute(result.emissions, result.audio_s), result.decode_calls,
                         result.compute_per_audio_s, result.real_time, result.final_lag_s, result.lag_slope,
                         ref.method)
