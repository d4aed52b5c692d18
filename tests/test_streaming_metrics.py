"""Streaming metrics on synthetic emission logs with known reference times (hand-computed values),
and on simulated runs of a stub engine with a fixed step cost."""

from __future__ import annotations

import numpy as np
import pytest
from test_streaming_policies import unguarded

from asr_eval.errors import AsrEvalError
from asr_eval.longform import ShortBatch
from asr_eval.streaming import Emission, simulate
from asr_eval.streaming.metrics import (
    ReferenceTiming, char_latencies, commits_per_minute, committed_units, first_emission_latencies, flicker,
    latency_stats, matched, stream_metrics, uniform_reference,
)

SR = 16_000

# reference 今天天气很好: two segments (今天天 from 0.2 s, 气很好 from 1.8 s), characters ending every 0.5 s
REF = ReferenceTiming("今天天气很好", [0.5, 1.0, 1.5, 2.0, 2.5, 3.0], [0, 0, 0, 1, 1, 1], [0.2, 1.8])
# commits: 今 at 1 s, 天天 at 2 s, 汽 (wrong) at 2.5 s, 很 at 3 s, 好 at 5 s; aware clock 0.3 s later;
# punctuation and a space are normalized away
LOG = [Emission(1.0, 1.3, "今，", "天", 0), Emission(2.0, 2.3, "天天", "汽", 1), Emission(2.5, 2.8, " 汽", "很", 2),
       Emission(3.0, 3.3, "很", "好", 3), Emission(5.0, 5.3, "好。", "", 4, final=True)]


def test_committed_units_are_normalized_and_carry_their_emission_time():
    assert committed_units(LOG, "unaware") == ("今天天汽很好", [1.0, 2.0, 2.0, 2.5, 3.0, 5.0])
    assert committed_units(LOG, "aware")[1] == pytest.approx([1.3, 2.3, 2.3, 2.8, 3.3, 5.3])
    with pytest.raises(AsrEvalError, match="unknown clock 'wall'"):
        committed_units(LOG, "wall")


@pytest.mark.parametrize("clock, mean, median, p90", [
    # latencies 0.5 (今), 1.0 (天), 0.5 (天), 0.5 (很), 2.0 (好); 汽 ≠ 气 does not count.
    # p90: rank 0.9·4 = 3.6 of [0.5, 0.5, 0.5, 1.0, 2.0] → 1.0 + 0.6·(2.0 − 1.0) = 1.6
    ("unaware", 0.9, 0.5, 1.6),
    ("aware", 1.2, 0.8, 1.9),
])
def test_latency_of_matched_characters(clock, mean, median, p90):
    hyp, times = committed_units(LOG, clock)
    pairs = matched(REF.chars, hyp)
    assert pairs == [(0, 0), (1, 1), (2, 2), (4, 4), (5, 5)]  # 气/汽 substituted: excluded
    s = latency_stats(char_latencies(REF.end_s, pairs, times))
    assert (s.n, s.mean_s, s.median_s, s.p90_s) == (5, pytest.approx(mean), pytest.approx(median), pytest.approx(p90))


def test_unmatched_characters_do_not_count():
    # an inserted 啊 and a missed 好: only 今天天气很 are matched
    log = [Emission(1.0, 1.0, "今天啊", "", 0), Emission(2.0, 2.0, "天气很", "", 1), Emission(3.0, 3.0, "", "", 2, True)]
    hyp, times = committed_units(log, "unaware")
    pairs = matched(REF.chars, hyp)
    assert [i for i, _ in pairs] == [0, 1, 2, 3, 4]
    assert char_latencies(REF.end_s, pairs, times) == pytest.approx([0.5, 0.0, 0.5, 0.0, -0.5])


def test_first_emission_latency_per_segment():
    hyp, times = committed_units(LOG, "unaware")
    pairs = matched(REF.chars, hyp)
    # segment 0: 今 at 1.0 − onset 0.2; segment 1: 气 unmatched, 很 at 3.0 − onset 1.8
    assert first_emission_latencies(REF, pairs, times) == pytest.approx([0.8, 1.2])
    assert first_emission_latencies(REF, [(0, 0)], times) == [pytest.approx(0.8), None]


def test_empty_latencies():
    assert latency_stats([]) == latency_stats(()) and latency_stats([]).mean_s is None


@pytest.mark.parametrize("steps, expected, retracted, written", [
    # 我们 → 我门去 (1 retracted, 2 written) → 我们出去 (2 retracted, 3 written)
    ([("", "我们"), ("我", "门去"), ("们出去", "")], 3 / 7, 3, 7),
    ([("", "今天"), ("今天", "天气"), ("天气", "")], 0.0, 0, 4),  # tentative text that comes true
    ([("", "")], 0.0, 0, 0),
    ([("", "谢谢"), ("", "")], 1.0, 2, 2),  # shown, then withdrawn: all of it flickered
])
def test_flicker(steps, expected, retracted, written):
    log = [Emission(float(i), float(i), c, t, i) for i, (c, t) in enumerate(steps)]
    assert flicker(log) == (pytest.approx(expected), retracted, written)


def test_commits_per_minute_counts_non_blank_commits():
    assert commits_per_minute(LOG, 30.0) == pytest.approx(10.0)
    assert commits_per_minute([Emission(1.0, 1.0, " ", "x", 0)], 60.0) == 0.0


def test_uniform_reference_spreads_each_segment_evenly():
    ref = uniform_reference([[1.0, 2.0, "你好，"], [3.0, 4.5, "再见吧"], [5.0, 5.0, "。"]])
    assert ref.chars == "你好再见吧" and ref.method == "uniform"
    assert ref.end_s == pytest.approx([1.5, 2.0, 3.5, 4.0, 4.5])
    assert ref.segment == [0, 0, 1, 1, 1] and ref.onsets_s == [1.0, 3.0, 5.0]
    with pytest.raises(AsrEvalError, match="segment 0 ends"):
        uniform_reference([[2.0, 1.0, "你好"]])
    with pytest.raises(AsrEvalError, match="one of each per character"):
        ReferenceTiming("你好", [1.0], [0, 0], [0.0])


def clock_audio(seconds: float) -> np.ndarray:
    return (np.arange(int(round(seconds * SR))) / SR).astype(np.float32)


def counting_engine(text: str):
    """Stub engine: a buffer [s, e) holds the characters text[s:e] (one character per second)."""
    def make(prompt):
        def run(audios):
            a = audios[0]
            s = int(round(float(a[0]))) if len(a) else 0
            return ShortBatch([text[s:s + int(round(len(a) / SR))]], [0], 0.0)
        return run
    return make


TEN = "一二三四五六七八九十"
REF10 = ReferenceTiming(TEN, [float(i + 1) for i in range(10)], [0] * 10, [0.0])


@pytest.mark.parametrize("cost_s, aware", [
    # each character is spoken in second i and agreed on one chunk later: unaware latency 1 s (the
    # last, committed by the flush at 10 s: 0 s). Cheaper than a chunk: a constant 0.5 s more.
    (0.5, [1.5] * 9 + [1.0]),
    # dearer than a chunk: every step waits 0.5 s longer than the one before; the lag grows
    (1.5, [3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5]),
])
def test_computation_aware_latency_grows_only_when_a_step_costs_more_than_a_chunk(cost_s, aware):
    res = simulate(unguarded("local-agreement"), clock_audio(10), counting_engine(TEN), 1.0,
                   cost=lambda m: cost_s)
    assert res.text == TEN
    for clock, expected in (("unaware", [1.0] * 9 + [0.0]), ("aware", aware)):
        hyp, times = committed_units(res.emissions, clock)
        assert char_latencies(REF10.end_s, matched(REF10.chars, hyp), times) == pytest.approx(expected)
    assert res.real_time is (cost_s < 1.0)
    m = stream_metrics(res, REF10)
    row = m.flat()
    assert row["latency_median_s_unaware"] == pytest.approx(1.0)
    assert row["latency_median_s_aware"] == pytest.approx(float(np.median(aware)))
    assert row["latency_p90_s_aware"] == pytest.approx(float(np.percentile(aware, 90)))
    assert row["n_matched"] == 10 and row["flicker"] == 0.0 and row["decode_calls"] == 10
    assert row["compute_per_audio_s"] == pytest.approx(11 * cost_s / 10)  # 10 chunk steps + the flush
    assert row["commits_per_minute"] == pytest.approx(10 / (10 / 60))  # 9 chunk commits + the flush
    assert m.clocks["unaware"].first_emission_s == [pytest.approx(2.0)]  # 一 committed at 2 s


def test_stream_metrics_of_a_run_that_changes_its_mind():
    """LocalAgreement-2 over scripted hypotheses (see test_streaming_policies): 汽 is shown, then
    retracted; flicker 3/9; reference 今天天气很好 spoken uniformly over 0-6 s."""
    script = iter(["今天", "今天天气", "今天天汽很", "今天天气很好", "今天天气很好"])

    def make(prompt):
        return lambda audios: ShortBatch([next(script)], [0], 0.0)

    res = simulate(unguarded("local-agreement"), clock_audio(5), make, 1.0, cost=lambda m: 0.25)
    m = stream_metrics(res, uniform_reference([[0.0, 6.0, "今天天气很好"]]))
    assert (m.flicker, m.retracted_chars, m.written_chars) == (pytest.approx(1 / 3), 3, 9)
    # commits: 今天 at 2 s (ends 1, 2), 天 at 3 s (ends 3), 气很好 at 5 s (ends 4, 5, 6):
    # latencies 1, 0, 0, 1, 0, −1
    lat = m.clocks["unaware"].latency
    assert (lat.n, lat.mean_s, lat.median_s) == (6, pytest.approx(1 / 6), pytest.approx(0.0))
    assert m.clocks["aware"].latency.mean_s == pytest.approx(1 / 6 + 0.25)
    assert m.timing_method == "uniform" and m.real_time
