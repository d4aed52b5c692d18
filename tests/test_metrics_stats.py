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


# ───────────────────────── evidence, resampling units, p-values, multiplicity (issue 12) ─────────────────────────

from asr_eval.metrics import (  # noqa: E402
    Evidence, adjust_pvalues, benjamini_hochberg, bootstrap_p, bootstrap_p_greater, holm, mde_text, n_boot_for,
    paired_replicates, resampling_for, speaker_blocks,
)


@pytest.mark.parametrize("p, method, expected", [
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.06
    ([0.01, 0.04, 0.03, 0.005], "holm", [0.03, 0.06, 0.06, 0.02]),
    # sorted 0.005·4/1 = 0.02, 0.01·4/2 = 0.02, 0.03·4/3 = 0.04, 0.04·4/4 = 0.04 → running min from the top
    ([0.01, 0.04, 0.03, 0.005], "bh", [0.02, 0.04, 0.04, 0.02]),
    ([0.5, 0.9], "holm", [1.0, 1.0]),  # capped at 1
    ([0.2], "holm", [0.2]),  # a family of one is not adjusted
    ([0.02, float("nan"), 0.03], "holm", [0.04, float("nan"), 0.04]),  # untested slices stay NaN, m = 2
])
def test_adjustments_by_hand(p, method, expected):
    assert adjust_pvalues(p, method) == pytest.approx(expected, nan_ok=True)


def test_family_of_ten_one_raw_hit_does_not_survive_holm_a_large_effect_does():
    raw = [0.03, 0.21, 0.35, 0.44, 0.52, 0.61, 0.70, 0.78, 0.86, 0.95]  # one raw p < 0.05
    adj = holm(raw)
    assert adj[0] == pytest.approx(0.30) and (adj >= 0.05).all()
    raw[1] = 0.001  # a true large effect
    adj = holm(raw)
    assert adj[1] == pytest.approx(0.01) and adj[0] == pytest.approx(0.27)
    assert [i for i, q in enumerate(adj) if q < 0.05] == [1]
    assert benjamini_hochberg(raw)[1] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="unknown multiplicity adjustment"):
        adjust_pvalues(raw, "sidak-ish")


@pytest.mark.parametrize("reps, null, p", [
    ([1, 2, 3, 4, 5, 6, 7, 8, 9], 0.0, 2 * 1 / 10),       # k = 0 on the far side: 2 (0 + 1) / (9 + 1)
    ([-1, 1, 2, 3, 4, 5, 6, 7, 8], 0.0, 2 * 2 / 10),      # k = 1
    ([-1, 0, 1, 2, 3], 0.0, 1.0),                         # k = 2 → 2·3/6 = 1
    ([0, 0, 0, 0], 0.0, 1.0),                             # identical systems
    ([float("nan"), 1, 2, 3], 0.0, 2 * 1 / 4),            # NaN replicates do not count in B
])
def test_bootstrap_p_by_hand(reps, null, p):
    assert bootstrap_p(reps, null) == pytest.approx(p)
    assert bootstrap_p([-r for r in reps], -null) == pytest.approx(p)  # symmetric


def test_one_sided_p_and_replicates_needed():
    assert bootstrap_p_greater([0.1, 0.2, 0.6, 0.7], 0.5) == pytest.approx(3 / 5)
    assert bootstrap_p_greater([0.6, 0.7, 0.8], 0.5) == pytest.approx(1 / 4)
    assert n_boot_for(1000, 10) == 1000 and n_boot_for(1000, 50) == 4000 and n_boot_for(100, 1) == 100
    assert n_boot_for(1000, 100, alpha=0.025, sides=1) == 8000


def test_speaker_blocks_give_unknown_speakers_their_own_block():
    assert speaker_blocks([None, "a", "b", None, "a", ""]).tolist() == [2, 0, 1, 3, 0, 4]


def test_speaker_block_with_no_speakers_equals_utterance_resampling():
    e, m = _corpus(500, seed=4)
    none = speaker_blocks([None] * len(e))
    utt, blk = bootstrap_ci(e, m, n_boot=500, seed=2), bootstrap_ci(e, m, n_boot=500, seed=2, groups=none)
    assert (blk.rate, blk.lo, blk.hi, blk.n_blocks) == (utt.rate, utt.lo, utt.hi, 500) and utt.lo < utt.hi
    eb = np.maximum(e - (np.arange(len(e)) % 3 == 0), 0)
    pu = paired_bootstrap(e, eb, m, n_boot=500, seed=1)
    pb = paired_bootstrap(e, eb, m, n_boot=500, seed=1, groups=none)
    assert (pb.lo, pb.hi, pb.p_value) == (pu.lo, pu.hi, pu.p_value) and pb.n_blocks == 500


def test_resampling_choice_threshold_and_fallbacks():
    ten = [f"s{i % 10}" for i in range(40)]
    r = resampling_for(ten)
    assert (r.method, r.n_blocks, r.speaker_share) == ("speaker-block", 10, 1.0)
    half = ten[:20] + [None] * 20  # 50 % known: 10 speakers + 20 own blocks
    assert (resampling_for(half).method, resampling_for(half).n_blocks) == ("speaker-block", 30)
    few = ten[:19] + [None] * 21  # 47.5 % known: below the share → utterances
    assert (resampling_for(few).method, resampling_for(few).groups) == ("utterance", None)
    one = ["s1"] * 40  # a single speaker (e.g. the slice speaker=s1): a 1-block bootstrap is no interval
    assert resampling_for(one).method == "utterance" and resampling_for(one).n_blocks == 40
    assert resampling_for(ten, mode="utterance").method == "utterance"
    with pytest.raises(ValueError):
        resampling_for(ten, mode="jackknife")


@pytest.mark.parametrize("n, chars, ok", [(1, 5, False), (2, 11, False), (19, 500, False), (25, 199, False),
                                          (20, 200, True)])
def test_minimum_evidence(n, chars, ok):
    ev = Evidence(n, chars)
    assert ev.reliable is ok
    if not ok:
        assert ev.describe().startswith(f"insufficient data (n = {n}, {chars} reference characters")
        # never "better", even with an interval that excludes 0
        assert verdict(-0.05, -0.06, -0.04, evidence=ev) == ev.describe()


def test_thin_slices_n1_n2_are_insufficient_data_through_the_paired_test():
    one = paired_bootstrap([2], [0], [17], n_boot=300)
    assert one.lo == one.hi == one.delta  # the zero-width "interval" the issue complains about
    assert verdict(one.delta, one.lo, one.hi, evidence=Evidence(one.n, 17)) == (
        "insufficient data (n = 1, 17 reference characters; a verdict needs ≥ 20 utterances and ≥ 200 characters)")
    two = paired_bootstrap([2, 3], [0, 1], [11, 11], n_boot=300)
    assert verdict(two.delta, two.lo, two.hi, evidence=Evidence(2, 22)).startswith("insufficient data (n = 2, 22")


def test_verdict_uses_the_adjusted_decision_and_names_the_metric():
    assert verdict(-0.02, -0.03, -0.01, metric="MER", p_adj=0.3, adj_method="holm", family_size=10) == (
        "no significant difference on this data (not significant after correcting for 10 slices: B - A = -2.00 "
        "points MER, 95% CI -3.00 to -1.00; Holm-adjusted p = 0.300 over 10 slices)")
    assert verdict(-0.02, -0.03, -0.01, metric="MER", p_adj=0.004, adj_method="bh", family_size=10) == (
        "B is better by 2.00 points MER (95% CI 1.00–3.00; Benjamini–Hochberg-adjusted p = 0.004 over 10 slices)")
    assert verdict(0.02, 0.01, 0.03, p_adj=0.002, family_size=1) == "A is better by 2.00 points CER (95% CI 1.00–3.00; p = 0.002)"
    e, m = _corpus(300, seed=3)
    assert "points MER" in paired_bootstrap(e, e // 2, m, metric="MER").verdict


def test_nonfinite_replicates_are_counted():
    # units sorted (e, n): (0, 0) then (0, 4); a replicate drawing only the n = 0 unit is 0/0
    ci = bootstrap_ci([0, 0], [4, 0], n_boot=400, seed=5)
    draws = np.random.default_rng(5).multinomial(2, [0.5, 0.5], size=400)
    assert ci.n_nonfinite == int((draws[:, 0] == 2).sum()) > 0
    assert (ci.lo, ci.hi) == (0.0, 0.0)
    r = paired_bootstrap([0, 1], [1, 1], [0, 4], n_boot=400, seed=5)
    assert r.n_nonfinite > 0 and np.isfinite(r.lo) and r.n_blocks == 2


def test_mde_is_the_half_width_of_the_paired_interval():
    e, m = _corpus(400, seed=6)
    r = paired_bootstrap(e, np.maximum(e - 1, 0), m, n_boot=500)
    assert r.mde == pytest.approx((r.hi - r.lo) / 2) and r.mde > 0
    assert mde_text(0.0123) == "differences under 1.23 points CER are not detectable here"
    delta, reps, units = paired_replicates(e, np.maximum(e - 1, 0), m, n_boot=500)
    assert delta == r.delta and units == 400 and np.quantile(reps, 0.025) == pytest.approx(r.lo)
