"""Pooled rates, bootstrap confidence intervals, paired bootstrap and sign test.

Everything works on numpy arrays of per-utterance counts (errors, reference length).

Why the bootstrap is fast: resampling N utterances with replacement only matters through
how many times each *distinct* (errors, n) pair is drawn, and those counts are exactly
Multinomial(N, share of each pair). Real corpora have a few thousand distinct pairs even at
a million utterances, so each replicate costs O(distinct pairs), not O(N) — the same
distribution as index resampling, not an approximation. Speaker-block resampling is the
same on speaker totals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_DRAW_CELLS = 20_000_000  # replicates x distinct units drawn at once (bounds memory to ~160 MB)


@dataclass
class RateCI:
    """A pooled rate with its bootstrap percentile interval."""

    rate: float
    lo: float
    hi: float
    n_boot: int
    method: str  # 'utterance' | 'speaker-block'


@dataclass
class PairedResult:
    """System B against system A on the same utterances: delta = (Σerr_b - Σerr_a) / Σn, i.e.
    rate_b - rate_a (computed in one division, exactly like each bootstrap replicate)."""

    rate_a: float
    rate_b: float
    delta: float
    lo: float
    hi: float
    p_b_better: float   # share of bootstrap replicates in which B has the lower rate
    sign_test_p: float  # two-sided exact sign test on per-utterance error counts
    n: int
    verdict: str
    n_boot: int = 0
    method: str = "utterance"


def _ints(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    a = a.astype(np.int64, copy=False)
    if a.size and a.min() < 0:
        raise ValueError(f"{name} has negative counts")
    return a


def _checked(*arrays: tuple[object, str]) -> list[np.ndarray]:
    out = [_ints(a, name) for a, name in arrays]
    if len({len(a) for a in out}) > 1:
        raise ValueError("count arrays differ in length: " + ", ".join(f"{n}={len(a)}" for a, (_, n) in zip(out, arrays)))
    return out


def pooled_rate(errors, n) -> float:
    """Σ errors / Σ n (NaN when Σ n = 0 and there are no errors, inf with errors)."""
    e, m = np.asarray(errors).sum(), np.asarray(n).sum()
    return float(e / m) if m else (float("nan") if e == 0 else float("inf"))


def macro_rate(errors, n, groups) -> float:
    """Mean over groups of each group's pooled rate (groups with Σ n = 0 are skipped)."""
    e, m = _checked((errors, "errors"), (n, "n"))
    _, inv = np.unique(np.asarray(groups), return_inverse=True)
    ge, gn = np.bincount(inv, e), np.bincount(inv, m)
    ok = gn > 0
    return float(np.mean(ge[ok] / gn[ok])) if ok.any() else float("nan")


def _group_totals(groups, *cols: np.ndarray) -> list[np.ndarray]:
    """Per-group sums of each column: the units of a block bootstrap."""
    g = np.asarray(groups)
    if len(g) != len(cols[0]):
        raise ValueError(f"groups has {len(g)} entries for {len(cols[0])} utterances")
    _, inv = np.unique(g, return_inverse=True)
    return [np.bincount(inv, c).astype(np.int64) for c in cols]


def _distinct(*cols: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows of the columns (sorted) and how often each occurs."""
    factored = [np.unique(c, return_inverse=True) for c in cols]
    if math.prod(len(u) for u, _ in factored) >= 2**62:  # mixed-radix code would overflow
        rows, counts = np.unique(np.stack(cols, axis=1), axis=0, return_counts=True)
        return [rows[:, j] for j in range(len(cols))], counts
    key = np.zeros(len(cols[0]), np.int64)
    for u, inv in factored:
        key = key * len(u) + inv
    k, counts = np.unique(key, return_counts=True)
    out = []
    for u, _ in reversed(factored):
        out.append(u[k % len(u)])
        k = k // len(u)
    return out[::-1], counts


def _replicate_sums(cols: list[np.ndarray], counts: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """Per replicate, Σ over resampled units of each column (multinomial over distinct units)."""
    total = int(counts.sum())
    rng = np.random.default_rng(seed)
    p = counts / total
    mat = np.stack(cols, axis=1).astype(np.float64)  # exact: sums stay far below 2**53
    rows = max(1, MAX_DRAW_CELLS // len(counts))
    sums = []
    for start in range(0, n_boot, rows):
        draws = rng.multinomial(total, p, size=min(rows, n_boot - start))
        sums.append(draws.astype(np.float64) @ mat)
    s = np.concatenate(sums)
    return [s[:, j] for j in range(len(cols))]


def _interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    ok = values[np.isfinite(values)]
    if not ok.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(errors, n, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, groups=None) -> RateCI:
    """Percentile bootstrap CI of the pooled rate Σerrors/Σn, resampling utterances (or whole
    speakers when ``groups`` holds a speaker id per utterance: speaker-block bootstrap)."""
    e, m = _checked((errors, "errors"), (n, "n"))
    method = "utterance" if groups is None else "speaker-block"
    rate = pooled_rate(e, m)
    if not len(e) or not m.sum():
        return RateCI(rate, float("nan"), float("nan"), n_boot, method)
    if groups is not None:
        e, m = _group_totals(groups, e, m)
    (ue, um), counts = _distinct(e, m)
    se, sm = _replicate_sums([ue, um], counts, n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = _interval(se / sm, alpha)
    return RateCI(rate, lo, hi, n_boot, method)


def bootstrap_ci_by_slice(errors, n, slice_codes, n_slices: int, n_boot: int = 1000, alpha: float = 0.05,
                          seed: int = 0, groups=None) -> list[RateCI]:
    """``bootstrap_ci`` for every slice code 0..n_slices-1 (one sort, then per-slice draws
    over distinct units; slice k gives exactly ``bootstrap_ci`` on its utterances)."""
    e, m, codes = _checked((errors, "errors"), (n, "n"), (slice_codes, "slice_codes"))
    if codes.size and codes.max() >= n_slices:
        raise ValueError(f"slice code {codes.max()} >= n_slices={n_slices}")
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_slices + 1))
    g = None if groups is None else np.asarray(groups)
    out = []
    for k in range(n_slices):
        idx = order[bounds[k]:bounds[k + 1]]
        out.append(bootstrap_ci(e[idx], m[idx], n_boot, alpha, seed, None if g is None else g[idx]))
    return out


def sign_test(err_a, err_b) -> float:
    """Two-sided exact sign test: do per-utterance error counts favour one system? Ties drop out."""
    a, b = _checked((err_a, "err_a"), (err_b, "err_b"))
    wins_b, wins_a = int((b < a).sum()), int((a < b).sum())
    m = wins_a + wins_b
    if m == 0:
        return 1.0
    k = min(wins_a, wins_b)
    logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, m + 1, dtype=np.float64)))])
    i = np.arange(k + 1)
    logpmf = logfact[m] - logfact[i] - logfact[m - i] - m * math.log(2)
    top = logpmf.max()
    tail = math.exp(top + math.log(np.exp(logpmf - top).sum()))
    return float(min(1.0, 2 * tail))


def paired_bootstrap(err_a, err_b, n, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, groups=None,
                     metric: str = "CER") -> PairedResult:
    """Paired bootstrap of rate_b - rate_a on the same utterances (Bisani & Ney 2004): both
    systems are resampled together, so utterance difficulty cancels out. Swapping A and B
    gives exactly the negated difference and interval."""
    a, b, m = _checked((err_a, "err_a"), (err_b, "err_b"), (n, "n"))
    method = "utterance" if groups is None else "speaker-block"
    rate_a, rate_b = pooled_rate(a, m), pooled_rate(b, m)
    level = f"{100 * (1 - alpha):g}%"
    if not len(m) or not m.sum():
        return PairedResult(rate_a, rate_b, float("nan"), float("nan"), float("nan"), float("nan"), 1.0, len(m),
                            "no reference tokens to compare on", n_boot, method)
    # Draw in a canonical orientation so that (A, B) and (B, A) see the same resamples.
    flip = (int(a.sum()), a.tobytes()) > (int(b.sum()), b.tobytes())
    x, y = (b, a) if flip else (a, b)
    ux, uy, um_ = _group_totals(groups, x, y, m) if groups is not None else (x, y, m)
    (dx, dy, dm), counts = _distinct(ux, uy, um_)
    sx, sy, sm = _replicate_sums([dx, dy, dm], counts, n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (sy - sx) / sm
    lo, hi = _interval(d, alpha)
    better = float(np.mean(d[np.isfinite(d)] < 0)) if np.isfinite(d).any() else float("nan")
    worse = float(np.mean(d[np.isfinite(d)] > 0)) if np.isfinite(d).any() else float("nan")
    if flip:
        lo, hi, better = -hi, -lo, worse
    delta = float((int(b.sum()) - int(a.sum())) / int(m.sum()))  # rounded like the replicates
    return PairedResult(rate_a, rate_b, delta, lo, hi, better, sign_test(a, b), len(m),
                        verdict(delta, lo, hi, level, metric), n_boot, method)


def verdict(delta: float, lo: float, hi: float, level: str = "95%", metric: str = "CER") -> str:
    """The comparison in words; differences in points (percentage points of the rate)."""
    if not (lo > 0 or hi < 0):
        return (f"no significant difference on this data ({level} CI of the difference includes 0: "
                f"B - A = {100 * delta:+.2f} points {metric}, {level} CI {100 * lo:+.2f} to {100 * hi:+.2f})")
    who, gain, g_lo, g_hi = ("B", -delta, -hi, -lo) if hi < 0 else ("A", delta, lo, hi)
    return f"{who} is better by {100 * gain:.2f} points {metric} ({level} CI {100 * g_lo:.2f}–{100 * g_hi:.2f})"
