"""Pooled rates, bootstrap confidence intervals, paired bootstrap and sign test, plus the
rules that decide what a number may claim: minimum evidence, resampling units (speaker
blocks), paired-test p-values, multiplicity adjustment (Holm / Benjamini–Hochberg) and the
verdict in words.

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

MAX_DRAW_CELLS = 20_000_000  # replicates x distinct units drawn at once (bounds memory to ~160 MB)

# ── Minimum evidence (see docs/score.md "Minimum evidence"). ──
# A percentile bootstrap interval needs enough resampling units to mean anything: with n = 1
# every replicate is the point estimate (a zero-width "interval"), with n = 2 there are three
# possible values, and below ~20 units the percentile interval under-covers badly.
MIN_UTTS = 20
# With fewer than ~200 reference characters one error moves CER by 0.5 points or more, and the
# error count is a handful of events: the rate's granularity is coarser than the differences
# anybody ships on, and the bootstrap distribution is lumpy.
MIN_REF_CHARS = 200

# ── Speaker-aware resampling (see docs/score.md "Speaker-aware intervals"). ──
# Utterances of one speaker are not independent (voice, microphone, accent), so intervals
# resample whole speakers when speakers are known for at least MIN_SPEAKER_SHARE of a slice's
# utterances; utterances without a speaker are each their own block.
MIN_SPEAKER_SHARE = 0.5
# A cluster bootstrap with very few clusters is itself unreliable (a single speaker would give
# a zero-width interval); below this many blocks a slice falls back to utterance resampling
# and says so in its ci_method.
MIN_SPEAKER_BLOCKS = 10

CI_METHODS = ("utterance", "speaker-block")

K = TypeVar("K")


@dataclass
class RateCI:
    """A pooled rate with its bootstrap percentile interval."""

    rate: float
    lo: float
    hi: float
    n_boot: int
    method: str  # 'utterance' | 'speaker-block'
    n_nonfinite: int = 0  # replicates with no reference tokens (0/0): counted, left out of the interval
    n_blocks: int = 0  # resampling units (utterances, or speaker blocks)


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
    p_value: float = 1.0  # two-sided paired-bootstrap p of "no difference" (see ``bootstrap_p``)
    n_nonfinite: int = 0  # replicates with no reference tokens (0/0): counted, left out
    n_blocks: int = 0  # resampling units

    @property
    def mde(self) -> float:
        """Minimum detectable effect: the half-width of the paired interval. A difference
        smaller than this cannot be told from zero on this data (it is the smallest observed
        difference that would reach significance at this precision)."""
        return (self.hi - self.lo) / 2 if math.isfinite(self.hi - self.lo) else float("nan")


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


def _nonfinite(values: np.ndarray) -> int:
    return int((~np.isfinite(values)).sum())


def bootstrap_p(replicates, null: float = 0.0) -> float:
    """Two-sided bootstrap p-value of "the difference is ``null``", by inverting the percentile
    interval: the smallest level at which the interval excludes ``null`` is twice the share of
    replicates on the far side of it. Monte-Carlo corrected, p = min(1, 2 (k + 1) / (B + 1)) with
    k = min(#{d* <= null}, #{d* >= null}) over the B finite replicates, so p is never 0 and a
    test at level alpha is valid (Davison & Hinkley 1997, §4.2). Its smallest value is
    2 / (B + 1): a family of m tests adjusted by Holm needs B >= 2m / alpha (``n_boot_for``)."""
    d = np.asarray(replicates, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not d.size:
        return float("nan")
    k = min(int((d <= null).sum()), int((d >= null).sum()))
    return float(min(1.0, 2 * (k + 1) / (d.size + 1)))


def bootstrap_p_greater(replicates, bound: float) -> float:
    """One-sided bootstrap p-value of H0 "difference <= bound" against "difference > bound":
    (1 + #{d* <= bound}) / (B + 1) over the finite replicates."""
    d = np.asarray(replicates, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not d.size:
        return float("nan")
    return float(min(1.0, (int((d <= bound).sum()) + 1) / (d.size + 1)))


def n_boot_for(n_boot: int, family_size: int, alpha: float = 0.05, sides: int = 2) -> int:
    """Replicates needed so the smallest attainable bootstrap p (sides / (B + 1)) is at most half
    of Holm's strictest threshold alpha / m: B = max(n_boot, ceil(2 sides m / alpha)). With the
    default 1000 replicates this only grows for families of more than 12 slices."""
    need = math.ceil(2 * sides * max(1, family_size) / alpha)
    return max(int(n_boot), need)


def bootstrap_ci(errors, n, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, groups=None) -> RateCI:
    """Percentile bootstrap CI of the pooled rate Σerrors/Σn, resampling utterances (or whole
    blocks when ``groups`` holds a block id per utterance — see ``speaker_blocks``). Replicates
    whose resample has no reference tokens (0/0) are left out of the interval and counted in
    ``n_nonfinite``."""
    e, m = _checked((errors, "errors"), (n, "n"))
    method = "utterance" if groups is None else "speaker-block"
    rate = pooled_rate(e, m)
    if groups is not None:
        e, m = _group_totals(groups, e, m)
    if not len(e) or not m.sum():
        return RateCI(rate, float("nan"), float("nan"), n_boot, method, 0, len(e))
    (ue, um), counts = _distinct(e, m)
    se, sm = _replicate_sums([ue, um], counts, n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = se / sm
    lo, hi = _interval(r, alpha)
    return RateCI(rate, lo, hi, n_boot, method, _nonfinite(r), len(e))


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


def paired_replicates(err_a, err_b, n, n_boot: int = 1000, seed: int = 0, groups=None) -> tuple[float, np.ndarray, int]:
    """(delta, replicates of delta, resampling units) for rate_b - rate_a, both systems resampled
    together. Replicates are drawn in a canonical orientation, so swapping A and B gives exactly
    the negated replicates. Non-finite replicates (0/0) are kept as NaN for the caller to count."""
    delta, d, units, flip = _paired(err_a, err_b, n, n_boot, seed, groups)
    return delta, (-d if flip else d), units


def _paired(err_a, err_b, n, n_boot: int, seed: int, groups) -> tuple[float, np.ndarray, int, bool]:
    """Replicates in the canonical orientation and whether that is (B, A) — quantiles are taken
    there and negated, so (A, B) and (B, A) give bit-identical, negated intervals."""
    a, b, m = _checked((err_a, "err_a"), (err_b, "err_b"), (n, "n"))
    if not len(m) or not m.sum():
        return float("nan"), np.full(0, np.nan), 0, False
    flip = (int(a.sum()), a.tobytes()) > (int(b.sum()), b.tobytes())
    x, y = (b, a) if flip else (a, b)
    ux, uy, um_ = _group_totals(groups, x, y, m) if groups is not None else (x, y, m)
    (dx, dy, dm), counts = _distinct(ux, uy, um_)
    sx, sy, sm = _replicate_sums([dx, dy, dm], counts, n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (sy - sx) / sm
    delta = float((int(b.sum()) - int(a.sum())) / int(m.sum()))  # rounded like the replicates
    return delta, d, len(um_), flip


def paired_bootstrap(err_a, err_b, n, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, groups=None,
                     metric: str = "CER") -> PairedResult:
    """Paired bootstrap of rate_b - rate_a on the same utterances (Bisani & Ney 2004): both
    systems are resampled together, so utterance difficulty cancels out. Swapping A and B
    gives exactly the negated difference and interval. ``p_value`` is the two-sided bootstrap
    p (``bootstrap_p``) that multiplicity adjustment works on; the verdict here is for a
    single test (a family of one) — ``verdict`` re-derives it from an adjusted p."""
    a, b, m = _checked((err_a, "err_a"), (err_b, "err_b"), (n, "n"))
    method = "utterance" if groups is None else "speaker-block"
    rate_a, rate_b = pooled_rate(a, m), pooled_rate(b, m)
    level = f"{100 * (1 - alpha):g}%"
    if not len(m) or not m.sum():
        return PairedResult(rate_a, rate_b, float("nan"), float("nan"), float("nan"), float("nan"), 1.0, len(m),
                            "no reference tokens to compare on", n_boot, method, float("nan"), 0, 0)
    delta, d, units, flip = _paired(a, b, m, n_boot, seed, groups)
    lo, hi = _interval(d, alpha)
    ok = d[np.isfinite(d)]
    better = float(np.mean(ok > 0 if flip else ok < 0)) if ok.size else float("nan")
    if flip:
        lo, hi = -hi, -lo
    return PairedResult(rate_a, rate_b, delta, lo, hi, better, sign_test(a, b), len(m),
                        verdict(delta, lo, hi, level, metric), n_boot, method, bootstrap_p(d), _nonfinite(d), units)


# ───────────────────────── resampling units ─────────────────────────


def speaker_blocks(speakers) -> np.ndarray:
    """Block codes for a block bootstrap: one block per known speaker, and every utterance
    without a speaker (None or '') its own block — never one shared "(none)" block, which would
    glue unrelated utterances together (and, with no speakers known, collapse the interval)."""
    spk = list(speakers)
    known = sorted({s for s in spk if s not in (None, "")})
    lut = {s: i for i, s in enumerate(known)}
    nxt = len(known)
    out = np.empty(len(spk), dtype=np.int64)
    for i, s in enumerate(spk):
        if s in (None, ""):
            out[i] = nxt
            nxt += 1
        else:
            out[i] = lut[s]
    return out


@dataclass(frozen=True)
class Resampling:
    """How a slice's interval resamples: ``groups`` (block code per utterance) or None for
    utterances; ``method`` as stored in ci_method; ``n_blocks`` resampling units."""

    groups: np.ndarray | None
    method: str
    n_blocks: int
    speaker_share: float


def resampling_for(speakers, mode: str = "auto", min_share: float = MIN_SPEAKER_SHARE,
                   min_blocks: int = MIN_SPEAKER_BLOCKS) -> Resampling:
    """Choose the resampling units of one slice. ``mode`` 'utterance' always resamples
    utterances; 'auto' (the default everywhere) and 'speaker-block' resample speaker blocks
    (``speaker_blocks``) when speakers are known for at least ``min_share`` of the utterances
    and that gives at least ``min_blocks`` blocks, and fall back to utterances otherwise."""
    if mode not in ("auto", *CI_METHODS):
        raise ValueError(f"unknown resampling mode {mode!r}; use auto, utterance or speaker-block")
    spk = list(speakers)
    n = len(spk)
    share = sum(s not in (None, "") for s in spk) / n if n else 0.0
    if mode != "utterance" and n and share >= min_share:
        g = speaker_blocks(spk)
        k = int(g.max()) + 1
        if k >= min_blocks:
            return Resampling(g, "speaker-block", k, share)
    return Resampling(None, "utterance", n, share)


# ───────────────────────── minimum evidence ─────────────────────────


@dataclass(frozen=True)
class Evidence:
    """Whether a number carries enough data for an interval, a ★ and a verdict — THE rule of
    "insufficient data", decided here and carried in every row as ``reliable`` (slice rows,
    comparisons, streaming and taxonomy rows); every table, chart, CLI and the web app renders
    that flag and nothing else. A thin number shows its point estimate with †, no interval, no ★
    and no verdict (the verdict text is ``describe()``).

    ``n`` counts what the number was computed over (utterances or recordings, missing hypotheses
    scored as full deletions included), ``ref_chars`` its reference characters. A paired
    comparison carries each run's own evidence on the slice in ``sides`` (``Evidence.paired``):
    it is thin when the paired items are too few or either side is thin."""

    n: int
    ref_chars: int
    min_utts: int = MIN_UTTS
    min_ref_chars: int = MIN_REF_CHARS
    sides: tuple[Evidence, ...] = ()

    @classmethod
    def paired(cls, n: int, ref_chars: int, *sides: Evidence | None, min_utts: int = MIN_UTTS,
               min_ref_chars: int = MIN_REF_CHARS) -> Evidence:
        """Evidence of a paired difference over ``n`` paired items (``ref_chars`` reference
        characters) between two numbers with evidence ``sides`` (None: not known, not judged)."""
        return cls(n, ref_chars, min_utts, min_ref_chars, tuple(s for s in sides if s is not None))

    @property
    def enough(self) -> bool:
        """This number's own items suffice (its sides not considered)."""
        return self.n >= self.min_utts and self.ref_chars >= self.min_ref_chars

    @property
    def reliable(self) -> bool:
        return self.enough and all(s.reliable for s in self.sides)

    def describe(self) -> str:
        """'insufficient data (n = 2, 11 reference characters; …)' — the verdict of a thin number
        (of a paired one whose own items suffice: its thin side's numbers)."""
        if self.enough:
            thin = next((s for s in self.sides if not s.reliable), None)
            if thin is not None:
                return thin.describe().replace(" reference characters;", " reference characters on one side;", 1)
        return (f"insufficient data (n = {self.n}, {self.ref_chars} reference characters; a verdict needs "
                f"≥ {self.min_utts} utterances and ≥ {self.min_ref_chars} characters)")


def stored_reliable(reliable: bool | None, n: int | None, ref_chars: int | None) -> bool:
    """A stored row's ``reliable``. Rows written before the rule existed (NULL) are judged now by
    ``Evidence`` with the default minimums — on their items alone when the row does not know its
    reference characters either."""
    if reliable is not None:
        return bool(reliable)
    ev = Evidence(int(n or 0), int(ref_chars or 0))
    return ev.reliable if ref_chars is not None else ev.n >= ev.min_utts


def insufficient(n: int | None) -> str:
    """The short words of a thin number in a table cell: 'insufficient data (n = 4)'."""
    return "insufficient data" if n is None else f"insufficient data (n = {n:,})"


def star_keys(cells: Mapping[K, tuple[float | None, bool]]) -> set[K]:
    """Which cells get ★ (lowest): only cells with enough evidence compete, and only when at least
    two of them have a finite value — a thin number never gets ★, and a single number with
    evidence is not "best" of anything. ``cells``: key → (value, reliable)."""
    ok = {k: v for k, (v, rel) in cells.items() if rel and v is not None and math.isfinite(v)}
    if len(ok) < 2:
        return set()
    best = min(ok.values())
    return {k for k, v in ok.items() if v == best}


# ───────────────────────── multiplicity ─────────────────────────


def holm(p) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values (controls the family-wise error rate):
    sorted ascending, p_adj(i) = max_{j <= i} min(1, (m - j + 1) p(j))."""
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    if not m:
        return p.copy()
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini–Hochberg step-up adjusted p-values (controls the false discovery rate):
    sorted ascending, p_adj(i) = min_{j >= i} min(1, m p(j) / j)."""
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    if not m:
        return p.copy()
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    out = np.empty(m)
    out[order] = adj
    return out


# Registry of adjustments: name -> (function, words for the verdict).
ADJUSTMENTS: dict[str, tuple] = {
    "holm": (holm, "Holm"),
    "bh": (benjamini_hochberg, "Benjamini–Hochberg"),
}
DEFAULT_ADJUSTMENT = "holm"


def adjust_pvalues(p, method: str = DEFAULT_ADJUSTMENT) -> np.ndarray:
    """Adjust one family's p-values; NaN entries (untested) stay NaN and do not count in m."""
    if method not in ADJUSTMENTS:
        raise ValueError(f"unknown multiplicity adjustment {method!r}; choose one of {sorted(ADJUSTMENTS)}")
    p = np.asarray(p, dtype=np.float64)
    out = np.full(len(p), np.nan)
    ok = np.isfinite(p)
    out[ok] = ADJUSTMENTS[method][0](p[ok])
    return out


# ───────────────────────── words ─────────────────────────


def verdict(delta: float, lo: float, hi: float, level: str = "95%", metric: str = "CER", *,
            p_adj: float | None = None, adj_method: str | None = None, family_size: int | None = None,
            alpha: float = 0.05, evidence: Evidence | None = None) -> str:
    """The comparison in words; differences in points (percentage points of ``metric``).

    A slice without enough evidence says "insufficient data (n = …)" whatever its numbers. With
    an adjusted p (``p_adj``), a difference is claimed only when p_adj < alpha *and* the interval
    excludes 0; otherwise the interval alone decides (a family of one)."""
    if evidence is not None and not evidence.reliable:
        return evidence.describe()
    adj = ""
    if p_adj is not None and math.isfinite(p_adj):
        words = ADJUSTMENTS.get(adj_method or DEFAULT_ADJUSTMENT, (None, adj_method))[1]
        over = f" over {family_size} slices" if family_size and family_size > 1 else ""
        adj = f"; {words}-adjusted p = {_fmt_p(p_adj)}{over}" if family_size and family_size > 1 else \
            f"; p = {_fmt_p(p_adj)}"
    significant = (lo > 0 or hi < 0) and (p_adj is None or not math.isfinite(p_adj) or p_adj < alpha)
    if not significant:
        why = (f"{level} CI of the difference includes 0" if not (lo > 0 or hi < 0)
               else f"not significant after correcting for {family_size} slices")
        return (f"no significant difference on this data ({why}: "
                f"B - A = {100 * delta:+.2f} points {metric}, {level} CI {100 * lo:+.2f} to {100 * hi:+.2f}{adj})")
    who, gain, g_lo, g_hi = ("B", -delta, -hi, -lo) if hi < 0 else ("A", delta, lo, hi)
    return f"{who} is better by {100 * gain:.2f} points {metric} ({level} CI {100 * g_lo:.2f}–{100 * g_hi:.2f}{adj})"


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def mde_text(mde: float, metric: str = "CER") -> str:
    """'differences under 1.23 points CER are not detectable here'."""
    if mde is None or not math.isfinite(mde):
        return "no interval: detectable difference unknown"
    return f"differences under {100 * mde:.2f} points {metric} are not detectable here"
