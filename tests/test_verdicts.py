"""Verdicts a statistician would sign (issue 12), through the store: minimum evidence, Holm over a
family of slices, metric names, speaker-aware intervals kept by rescore, flipped pairs re-derived."""

from __future__ import annotations

import pytest
from stat_fixtures import make_store

from asr_eval.metrics import bootstrap_ci
from asr_eval.report.queries import PairDiff
from asr_eval.scoring import analyse, compare_runs, rescore, slice_metrics


def _rows(con, sql, *params):
    cur = con.execute(sql, list(params))
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def test_n1_and_n2_slices_are_insufficient_data(tmp_path):
    utts = [{"utt_id": f"u{i:02d}", "attrs": {"dur": "long" if i < 40 else ("5-10s" if i == 40 else "tiny")}}
            for i in range(43)]
    base = {u["utt_id"]: 2 for u in utts}
    cand = {u["utt_id"]: 0 for u in utts}  # the candidate is better everywhere, also on the thin slices
    con = make_store(tmp_path / "s.duckdb", utts, {"A": base, "B": cand})
    analyse(con, ["A", "B"], slices=["dur"], n_boot=300)
    sm = {r["slice_value"]: r for r in _rows(con, "SELECT * FROM slice_metrics WHERE run_id = 'B' AND slice_attr = 'dur'")}
    assert (sm["5-10s"]["n"], sm["5-10s"]["ref_chars"], sm["5-10s"]["reliable"]) == (1, 10, False)
    assert (sm["tiny"]["n"], sm["tiny"]["reliable"]) == (2, False) and sm["long"]["reliable"] is True
    cmp = {r["slice_value"]: r for r in _rows(
        con, "SELECT * FROM comparisons WHERE metric = 'cer' AND slice_attr = 'dur'")}
    one, two = cmp["5-10s"], cmp["tiny"]
    assert one["delta"] == pytest.approx(-0.2) and one["delta_lo"] == one["delta_hi"]  # the zero-width "interval"
    assert one["verdict"] == ("insufficient data (n = 1, 10 reference characters; a verdict needs ≥ 20 utterances "
                              "and ≥ 200 characters)")
    assert two["verdict"].startswith("insufficient data (n = 2, 20 reference characters")
    assert (one["reliable"], one["p_adj"], one["family_size"]) == (False, None, None)
    assert cmp["long"]["family_size"] == 1 and cmp["long"]["verdict"].startswith("B is better by 20.00 points CER")


def _family_store(tmp_path, speakers: bool = False):
    # Ten slices g0..g9 of 30 utterances × 10 characters; the baseline makes one error per utterance.
    utts = [{"utt_id": f"g{k}u{i:02d}", "attrs": {"grp": f"g{k}"}, "speaker": f"s{i % 12}" if speakers else None}
            for k in range(10) for i in range(30)]
    base = {u["utt_id"]: 1 for u in utts}
    cand = dict(base)
    cand |= {f"g0u{i:02d}": 0 for i in range(30)}  # g0: a true large effect (10 points)
    cand |= {f"g1u{i:02d}": 0 for i in range(4)}  # g1: 4 of 30 fixed — raw p < 0.05, but one of ten tests
    return make_store(tmp_path / "f.duckdb", utts, {"A": base, "B": cand})


def test_family_of_ten_holm_keeps_the_large_effect_and_drops_the_raw_hit(tmp_path):
    con = _family_store(tmp_path)
    compare_runs(con, "A", "B", slices=["grp"], n_boot=1000)
    cmp = {r["slice_value"]: r for r in _rows(
        con, "SELECT * FROM comparisons WHERE metric = 'cer' AND slice_attr = 'grp'")}
    g0, g1, g5 = cmp["g0"], cmp["g1"], cmp["g5"]
    assert {r["family_size"] for r in cmp.values()} == {10} and {r["adj_method"] for r in cmp.values()} == {"holm"}
    assert g0["p_raw"] == pytest.approx(2 / 1001) and g0["p_adj"] == pytest.approx(10 * 2 / 1001)
    assert g0["verdict"].startswith("B is better by 10.00 points CER (95% CI 10.00–10.00; Holm-adjusted p = 0.02")
    # g1: Δ = -4/300; (26/30)^30 ≈ 1.4 % of resamples contain none of the four fixes → two-sided p ≈ 0.03
    assert g1["delta"] == pytest.approx(-4 / 300) and g1["delta_hi"] < 0 and 0.01 < g1["p_raw"] < 0.05
    assert g1["p_adj"] == pytest.approx(9 * g1["p_raw"]) and g1["p_adj"] > 0.05
    assert g1["verdict"].startswith("no significant difference on this data (not significant after correcting for "
                                    "10 slices: B - A = -1.33 points CER")
    assert g5["p_raw"] == 1.0 and g5["verdict"].startswith("no significant difference")
    assert g0["mde"] == 0.0 and g1["mde"] == pytest.approx((g1["delta_hi"] - g1["delta_lo"]) / 2)
    mer = _rows(con, "SELECT verdict FROM comparisons WHERE metric = 'mer' AND slice_value = 'g0'")[0]["verdict"]
    assert "points MER" in mer and "CER" not in mer  # the metric is named (it used to say CER for MER)
    compare_runs(con, "A", "B", slices=["grp"], n_boot=1000, adjust="bh")
    g1_bh = _rows(con, "SELECT p_adj, adj_method FROM comparisons WHERE metric = 'cer' AND slice_value = 'g1'")[0]
    assert g1_bh["adj_method"] == "bh" and g1_bh["p_adj"] == pytest.approx(min(1.0, 10 * g1["p_raw"] / 2))


def test_speaker_aware_by_default_and_rescore_keeps_the_method(tmp_path):
    con = _family_store(tmp_path, speakers=True)
    analyse(con, ["A", "B"], slices=["grp"], n_boot=200)
    sm = _rows(con, "SELECT slice_attr, ci_method, n_blocks FROM slice_metrics WHERE run_id = 'B' ORDER BY slice_attr")
    assert {(r["slice_attr"], r["ci_method"], r["n_blocks"]) for r in sm} == {
        ("_all", "speaker-block", 12), ("grp", "speaker-block", 12)}
    rescore(con, "zh-v1")
    assert {r[0] for r in con.execute("SELECT DISTINCT ci_method FROM slice_metrics").fetchall()} == {"speaker-block"}
    analyse(con, ["A", "B"], slices=["grp"], n_boot=200, ci_method="utterance")
    rescore(con, "zh-v1")  # an utterance-resampled store stays utterance-resampled
    assert {r[0] for r in con.execute("SELECT DISTINCT ci_method FROM slice_metrics").fetchall()} == {"utterance"}
    assert {r[0] for r in con.execute("SELECT DISTINCT ci_method FROM comparisons").fetchall()} == {"utterance"}


def test_no_speakers_means_utterance_resampling(tmp_path):
    con = _family_store(tmp_path, speakers=False)
    slice_metrics(con, "B", slices=["grp"], n_boot=300, ci_method="auto")
    auto = _rows(con, "SELECT cer_lo, cer_hi, ci_method, n_blocks FROM slice_metrics WHERE run_id='B' AND slice_attr='_all'")[0]
    errs = [r[0] for r in con.execute("SELECT cer_s + cer_d + cer_i FROM utterance_scores WHERE run_id = 'B' "
                                      "ORDER BY utt_id").fetchall()]
    ci = bootstrap_ci(errs, [10] * len(errs), n_boot=300, seed=0)
    assert (auto["cer_lo"], auto["cer_hi"], auto["ci_method"], auto["n_blocks"]) == (ci.lo, ci.hi, "utterance", 300)


def test_flipped_pair_rederives_its_verdict():
    d = PairDiff("A", "B", "_all", "all", 40, 0.2, 0.1, -0.1, -0.15, -0.05, 1.0, 0.001,
                 "B is better by 10.00 points CER (95% CI 5.00–15.00)", "bootstrap", ref_chars=400, reliable=True,
                 p_raw=0.002, p_adj=0.002, adj_method="holm", family_size=1)
    f = d.flipped()
    assert (f.run_a, f.run_b, f.delta, f.lo, f.hi) == ("B", "A", 0.1, 0.05, 0.15)
    assert d.verdict == "B is better by 10.00 points CER (95% CI 5.00–15.00; p = 0.002)"
    assert f.verdict == "A is better by 10.00 points CER (95% CI 5.00–15.00; p = 0.002)" and f.stored_verdict is None


def test_scoring_on_the_selection_split_is_flagged(tmp_path):
    from typer.testing import CliRunner  # noqa: F401

    from asr_eval.cli.score import selection_flags
    from asr_eval.report.build import ReportOptions, render

    utts = [{"utt_id": f"u{i:02d}"} for i in range(30)]
    con = make_store(tmp_path / "s.duckdb", utts, {"base": {u["utt_id"]: 1 for u in utts},
                                                   "ft": {u["utt_id"]: 0 for u in utts}})
    con.execute("UPDATE models SET selection_split = 'test', base_model_id = 'model-base' WHERE model_id = 'model-ft'")
    analyse(con, ["base", "ft"], n_boot=100)
    assert selection_flags(con, ["base", "ft"]) == {"ft": "selected on this split (test): optimistic"}
    html, ctx = render(con, ReportOptions())
    assert [r.run_id for r in ctx["sel"].runs if r.selected_here] == ["ft"]
    assert "selected on this split: optimistic" in html and "Selected on this split: optimistic." in html
    con.execute("UPDATE models SET selection_split = 'train:dev-carve' WHERE model_id = 'model-ft'")
    assert selection_flags(con, ["base", "ft"]) == {}
    assert "selected on this split: optimistic" not in render(con, ReportOptions())[0]
