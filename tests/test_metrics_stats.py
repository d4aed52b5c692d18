"""Pooled/macro rates, bootstrap CIs (utterance and speaker-block), paired bootstrap, sign test."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr_eval.metrics import (
    bootstrap_ci, bootstrap_ci_by_slice, macro_rate, paired_bootstrap, pooled_rate, sign_test, verdict,
)


def test_pooled_and_macro_rates_by_hand():
    e, n = np.array([1, 2, 3, 0]), np.array([10, 10, 10, 5])
    assert pooled_rate(e, n) == pytest.approx(6 / 35)
    # groups: {0,1} -> 3/20, {2} -> 3/10, {3} -> 0/5 ; macro = mean(0.15, 0.3, 0)
    assert macro_rate(e, n, ["a", "a", "b", "c"]) == pytest.approx((0.15 + 0.3 + 0.0) / 3)
    assert np.isnan(pooled_rate([0], [0])) and pooled_rate([2], [0]) == float("inf")


@pytest.mark.parametrize("wins_a, wins_b, ties, p", [
    (2, 8, 5, 2 * (1 + 10 + 45) / 1024),   # two-sided binomial tail, m = 10, k = 2
    (0, 10, 0, 2 / 1024),
    (5, 5, 3, 1.0),
    (0, 0, 7, 1.0),
    (1, 0, 0, 1.0),
])
def test_sign_test_by_hand(wins_a, wins_b, ties, p):
    a = [0] * wins_a + [3] * wins_b + [1] * ties
    b = [1] * wins_a + [0] * wins_b + [1] * ties
    assert sign_test(a, b) == pytest.approx(p)
    assert sign_test(b, a) == pytest.approx(p)


def test_sign_test_large_counts_stay_finite():
    rng = np.random.default_rng(0)
    a = rng.poisson(2.0, 200_000)
    assert sign_test(a, a + (rng.random(200_000) < 0.01)) < 1e-100 or sign_test(a, a + 1) == 0.0
    assert 0.0 <= sign_test(a, rng.permutation(a)) <= 1.0


def _corpus(n=2000, seed=0, rate=0.1):
    rng = np.random.default_rng(seed)
    m = rng.integers(5, 30, n)
    e = rng.binomial(m, rate)
    return e, m


def test_bootstrap_is_deterministic_and_sane():
    e, m = _corpus()
    a = bootstrap_ci(e, m, n_boot=500, seed=3)
    b = bootstrap_ci(e, m, n_boot=500, seed=3)
    assert a == b and a.method == "utterance" and a.n_boot == 500
    assert a.lo < a.rate < a.hi and a.hi - a.lo < 0.03
    assert a.rate == pytest.approx(e.sum() / m.sum())


def test_bootstrap_matches_index_resampling_in_distribution():
    """Multinomial draws over distinct (errors, n) pairs = resampling utterance indices."""
    e, m = _corpus(800, seed=1)
    ci = bootstrap_ci(e, m, n_boot=4000, seed=0)
    rng = np.random.default_rng(123)
    idx = rng.integers(0, len(e), size=(4000, len(e)))
    naive = e[idx].sum(1) / m[idx].sum(1)
    lo, hi = np.quantile(naive, [0.025, 0.975])
    width = hi - lo
    assert abs(ci.lo - lo) < 0.08 * width and abs(ci.hi - hi) < 0.08 * width


def test_bootstrap_coverage_is_about_nominal():
    """Across simulated corpora with a known true rate, the 95% interval covers it ~95% of the time."""
    hits = 0
    for k in range(300):
        e, m = _corpus(400, seed=1000 + k, rate=0.12)
        ci = bootstrap_ci(e, m, n_boot=400, seed=k)
        hits += ci.lo <= 0.12 <= ci.hi
    assert 0.90 <= hits / 300 <= 0.99


def test_speaker_block_bootstrap_is_wider_when_speakers_differ():
    rng = np.random.default_rng(5)
    spk = np.repeat(np.arange(40), 50)
    spk_rate = rng.uniform(0.02, 0.4, 40)[spk]  # strong speaker effect
    m = rng.integers(5, 30, len(spk))
    e = rng.binomial(m, spk_rate)
    utt = bootstrap_ci(e, m, seed=0)
    blk = bootstrap_ci(e, m, seed=0, groups=spk)
    assert blk.method == "speaker-block" and blk.rate == utt.rate
    assert (blk.hi - blk.lo) > 2 * (utt.hi - utt.lo)


def test_by_slice_equals_per_slice_bootstrap():
    e, m = _corpus(3000, seed=2)
    codes = np.random.default_rng(0).integers(0, 4, len(e))
    codes[codes == 2] = 1  # slice 2 is empty
    spk = np.arange(len(e)) // 7
    for groups in (None, spk):
        out = bootstrap_ci_by_slice(e, m, codes, 4, n_boot=300, seed=9, groups=groups)
        assert len(out) == 4 and np.isnan(out[2].rate)
        for k in (0, 1, 3):
            sel = codes == k
            assert out[k] == bootstrap_ci(e[sel], m[sel], n_boot=300, seed=9,
                                          groups=None if groups is None else groups[sel])
    with pytest.raises(ValueError):
        bootstrap_ci_by_slice(e, m, codes, 3)


def test_constant_rate_has_a_zero_width_interval():
    ci = bootstrap_ci([1, 2, 3], [10, 20, 30], n_boot=200)
    assert ci.lo == ci.rate == ci.hi == pytest.approx(0.1)
    zero = bootstrap_ci([0, 0], [5, 7])
    assert (zero.rate, zero.lo, zero.hi) == (0.0, 0.0, 0.0)
    empty = bootstrap_ci([], [])
    assert np.isnan(empty.rate) and np.isnan(empty.lo)


def test_paired_bootstrap_detects_a_real_improvement():
    rng = np.random.default_rng(7)
    m = rng.integers(5, 30, 3000)
    ea = rng.binomial(m, 0.12)
    eb = np.maximum(ea - rng.binomial(1, 0.3, len(m)), 0)  # B fixes an error in ~30% of utterances
    r = paired_bootstrap(ea, eb, m, seed=1)
    assert r.delta == pytest.approx(r.rate_b - r.rate_a) and r.delta < 0
    assert r.hi < 0 and r.p_b_better == 1.0 and r.sign_test_p < 1e-10 and r.n == 3000
    assert r.verdict.startswith(f"B is better by {-100 * r.delta:.2f} points CER (95% CI")


def test_paired_bootstrap_no_difference():
    rng = np.random.default_rng(8)
    m = rng.integers(5, 30, 300)
    ea = rng.binomial(m, 0.1)
    eb = rng.permutation(ea)  # same error distribution, shuffled: no systematic difference
    r = paired_bootstrap(ea, eb, m, seed=0)
    assert r.lo < 0 < r.hi
    assert r.verdict.startswith("no significant difference on this data (95% CI of the difference includes 0")
    same = paired_bootstrap(ea, ea, m)
    assert (same.delta, same.lo, same.hi, same.p_b_better, same.sign_test_p) == (0.0, 0.0, 0.0, 0.0, 1.0)


def test_verdict_wording():
    assert verdict(0.012, 0.004, 0.020) == "A is better by 1.20 points CER (95% CI 0.40–2.00)"
    assert verdict(-0.012, -0.020, -0.004, metric="MER") == "B is better by 1.20 points MER (95% CI 0.40–2.00)"
    assert verdict(0.001, -0.002, 0.004).startswith("no significant difference on this data")


# ───────────────────────── properties ─────────────────────────

count_arrays = st.integers(1, 40).flatmap(lambda k: st.tuples(
    st.lists(st.integers(0, 30), min_size=k, max_size=k),
    st.lists(st.integers(0, 30), min_size=k, max_size=k),
    st.lists(st.integers(0, 40), min_size=k, max_size=k),
))


@settings(max_examples=150, deadline=None)
@given(arrays=count_arrays, seed=st.integers(0, 2**16), speakers=st.booleans())
def test_ci_contains_point_estimate(arrays, seed, speakers):
    e, _, m = (np.array(a) for a in arrays)
    groups = np.arange(len(e)) % 3 if speakers else None
    ci = bootstrap_ci(e, m, n_boot=200, seed=seed, groups=groups)
    if m.sum() > 0:
        assert ci.lo <= ci.rate <= ci.hi


@settings(max_examples=150, deadline=None)
@given(arrays=count_arrays, seed=st.integers(0, 2**16), speakers=st.booleans())
def test_swapping_systems_negates_the_difference(arrays, seed, speakers):
    ea, eb, m = (np.array(a) for a in arrays)
    groups = np.arange(len(m)) % 4 if speakers else None
    ab = paired_bootstrap(ea, eb, m, n_boot=200, seed=seed, groups=groups)
    ba = paired_bootstrap(eb, ea, m, n_boot=200, seed=seed, groups=groups)
    if m.sum() == 0:
        return
    assert ba.delta == -ab.delta and (ba.lo, ba.hi) == (-ab.hi, -ab.lo)
    assert (ba.rate_a, ba.rate_b) == (ab.rate_b, ab.rate_a) and ba.sign_test_p == ab.sign_test_p
    assert ab.lo <= ab.delta <= ab.hi
