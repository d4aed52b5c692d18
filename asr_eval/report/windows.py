"""The worst-items view for long recordings: the aligned diff windowed around the worst regions and
the audio cut to the seconds around each window.

A long-form item (over 30 s: a 1 h recording is ~15,000 aligned characters) is not drawn whole.
``error_windows`` picks the ``k`` non-overlapping windows of ``width`` aligned tokens with the most
errors (greedy: the densest first, its errors centred), in recording order; the view shows them with "… N characters
omitted …" between them. ``window_times`` places each window in the recording: through the
reference's segment times when the item has them (the window's reference characters are located
in the segment that holds them, proportionally inside it), else proportionally over the whole
duration; ``excerpt_flac`` cuts those seconds (plus a margin, at most ``max_s``) out of the stored
FLAC.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

LONG_ITEM_S = 30.0  # items longer than this get the windowed view
WINDOW_TOKENS = 60
N_WINDOWS = 3
MARGIN_S = 1.5  # audio kept before and after a window's time span
MAX_EXCERPT_S = 20.0  # an excerpt is never longer than this (its middle is kept)

Token = tuple[str, str, str]  # (op, ref, hyp); op in '=', 'S', 'D', 'I'


@dataclass(frozen=True)
class Window:
    start: int  # [start, end) aligned-token indices
    end: int
    n_errors: int
    ref_start: int  # [ref_start, ref_end) reference characters it covers
    ref_end: int


def error_windows(tokens: Sequence[Token], width: int = WINDOW_TOKENS, k: int = N_WINDOWS) -> list[Window]:
    """Up to ``k`` non-overlapping windows of ``width`` tokens holding the most errors (ties: the
    earliest region; within it, the window that centres its errors), in alignment order. Windows with no error are never chosen; an alignment of at most
    ``width`` tokens is one window."""
    n = len(tokens)
    err = np.fromiter((op != "=" for op, *_ in tokens), dtype=np.int64, count=n)
    refc = np.fromiter((len(r) for _, r, _ in tokens), dtype=np.int64, count=n)
    cum_e = np.concatenate([[0], np.cumsum(err)])
    cum_r = np.concatenate([[0], np.cumsum(refc)])
    w = min(width, n)
    if w == 0:
        return []
    starts = np.arange(n - w + 1)
    score = cum_e[starts + w] - cum_e[starts]
    free = np.ones(len(starts), dtype=bool)
    chosen: list[int] = []
    while len(chosen) < k:
        cand = np.where(free, score, -1)
        s = int(np.argmax(cand))  # argmax: the first of equal maxima
        if cand[s] <= 0:
            break
        e = s  # the run of starts holding the same errors: take its middle (errors centred)
        while e + 1 < len(cand) and cand[e + 1] == cand[s]:
            e += 1
        s = (s + e) // 2
        chosen.append(s)
        free[max(0, s - w + 1):s + w] = False  # no window overlapping this one
    return [Window(s, s + w, int(cum_e[s + w] - cum_e[s]), int(cum_r[s]), int(cum_r[s + w]))
            for s in sorted(chosen)]


def windowed_view(tokens: Sequence[Token], windows: Sequence[Window]) -> list[dict]:
    """Pieces to draw: each window's tokens with the count of aligned tokens (characters) and
    errors left out before it; a final piece ``{"tokens": [], ...}`` for what follows the last."""
    out, pos = [], 0
    for w in windows:
        gap = tokens[pos:w.start]
        out.append({"omitted": len(gap), "omitted_errors": sum(op != "=" for op, *_ in gap),
                    "tokens": list(tokens[w.start:w.end]), "window": w})
        pos = w.end
    tail = tokens[pos:]
    if tail:
        out.append({"omitted": len(tail), "omitted_errors": sum(op != "=" for op, *_ in tail), "tokens": [],
                    "window": None})
    return out


def window_times(w: Window, n_ref: int, duration_s: float, ref_segments: Sequence[Sequence] | None = None,
                 normalize: Callable[[str], str] | None = None) -> tuple[float, float, str]:
    """(start_s, end_s, how) of a window's reference characters in the recording. ``how`` is
    'segments' (located through the reference segment times; ``normalize`` must be the scoring
    normalizer, so segment lengths are counted in the same characters) or 'proportional'."""
    if ref_segments and normalize is not None:
        segs = sorted((float(s[0]), float(s[1]), normalize(str(s[2]))) for s in ref_segments)
        lens = np.array([len(t) for _, _, t in segs])
        if lens.sum() == n_ref and n_ref > 0:  # the segments spell the normalized reference
            cum = np.concatenate([[0], np.cumsum(lens)])

            def at(c: int, end: bool) -> float:
                # the segment holding character c (for an end: character c - 1, up to its end)
                j = int(np.searchsorted(cum, c, side="left" if end else "right")) - 1
                j = min(max(j, 0), len(segs) - 1)
                a, b, _ = segs[j]
                frac = (c - cum[j]) / max(1, lens[j])
                return a + min(max(frac, 0.0), 1.0) * (b - a)

            return at(w.ref_start, False), at(max(w.ref_end, w.ref_start), True), "segments"
    if n_ref <= 0 or not duration_s:
        return 0.0, float(duration_s or 0.0), "proportional"
    return (w.ref_start / n_ref * duration_s, w.ref_end / n_ref * duration_s, "proportional")


def excerpt_span(t0: float, t1: float, duration_s: float, margin_s: float = MARGIN_S,
                 max_s: float = MAX_EXCERPT_S) -> tuple[float, float]:
    """The excerpt's [start, end) seconds: the window's span plus a margin, clamped to the
    recording, and at most ``max_s`` long (around the span's middle when it is longer)."""
    a, b = max(0.0, t0 - margin_s), min(duration_s, t1 + margin_s)
    if b - a > max_s:
        mid = (t0 + t1) / 2
        a = max(0.0, min(mid - max_s / 2, duration_s - max_s))
        b = a + max_s
    return round(a, 3), round(max(a, b), 3)


def excerpt_flac(data: bytes, start_s: float, end_s: float) -> bytes:
    """The seconds [start_s, end_s) of stored audio as 16-bit FLAC (only that part is decoded)."""
    import soundfile as sf

    with sf.SoundFile(io.BytesIO(data)) as f:
        sr = f.samplerate
        a = max(0, int(start_s * sr))
        f.seek(min(a, f.frames))
        x = f.read(max(0, int(end_s * sr) - a), dtype="int16", always_2d=False)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()
