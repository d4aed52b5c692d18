"""Streaming policies and the simulation loop on scripted hypotheses (a stub ShortTranscriber, no
model): hand-computed commits, prompts, buffers and emission times on both clocks."""

from __future__ import annotations

import numpy as np
import pytest

from asr_eval.errors import AsrEvalError
from asr_eval.longform import ShortBatch
from asr_eval.streaming import make_policy, simulate
from asr_eval.streaming.base import common_prefix, safe_cut
from asr_eval.streaming.policies import overlap, strip_committed

SR = 16_000


def clock_audio(seconds: float) -> np.ndarray:
    """Every sample's value is its own time in seconds, so the stub sees which audio it decodes."""
    return (np.arange(int(round(seconds * SR))) / SR).astype(np.float32)


class Script:
    """A stub engine: the i-th decode returns ``hyps[i]`` (or ``hyps(start_s, dur_s)``) and is
    logged as (buffer start s, buffer length s, prompt)."""

    def __init__(self, hyps):
        self.hyps = hyps
        self.calls: list[tuple[float, float, str | None]] = []

    def __call__(self, prompt):
        def run(audios):
            a = audios[0]
            start, dur = round(float(a[0]), 2) if len(a) else 0.0, round(len(a) / SR, 2)
            self.calls.append((start, dur, prompt))
            text = self.hyps(start, dur) if callable(self.hyps) else self.hyps[len(self.calls) - 1]
            return ShortBatch([text], [len(text)], 0.0)
        return run


def unguarded(name: str, **params):
    """A policy with the guards that need real audio or a real engine off (the VAD gate, the prompt
    age, repeat dropping; the stub reports no no-speech probability): its own rules alone."""
    from dataclasses import fields

    from asr_eval.streaming.base import POLICIES

    make_policy(name)
    off = {"vad_gate": False, "drop_repeats": False, "prompt_max_age_s": None}
    own = {f.name for f in fields(POLICIES[name])}
    return make_policy(name, **{**{k: v for k, v in off.items() if k in own}, **params})


def fixed(cost_s: float):
    return lambda m: cost_s


def log(res, clock="unaware"):
    return [(e.at(clock), e.text, e.tentative) for e in res.emissions]


def test_local_agreement_2_commits_what_two_hypotheses_agree_on_even_when_one_changes_its_mind():
    # 气 → 汽 → 气: the third hypothesis changes its mind about a character the second showed
    script = Script(["今天", "今天天气", "今天天汽很", "今天天气很好", "今天天气很好"])
    res = simulate(unguarded("local-agreement"), clock_audio(5), script, 1.0, cost=fixed(0.25))
    assert log(res) == [(1.0, "", "今天"), (2.0, "今天", "天气"), (3.0, "天", "汽很"), (4.0, "", "气很好"),
                        (5.0, "气很好", ""), (5.0, "", "")]
    assert res.text == "今天天气很好" and res.emissions[-1].final
    assert [e.emit_aware_s for e in res.emissions] == [1.25, 2.25, 3.25, 4.25, 5.25, 5.5]
    # the buffer is never trimmed (5 s < 15 s), nothing is before it, so no prompt
    assert script.calls == [(0.0, float(t), None) for t in (1, 2, 3, 4, 5)]
    assert (res.decode_calls, res.n_chunks, res.audio_s, res.compute_s) == (5, 5, 5.0, 1.5)


def test_local_agreement_trims_the_buffer_at_a_committed_segment_end_and_prompts_with_what_it_cut():
    script = Script(["你好", "你好", "你好我们", "你好我们走", "我们走吧", "我们走吧", ""])
    res = simulate(unguarded("local-agreement", buffer_trim_s=3.0, trim_margin_s=0.0), clock_audio(7), script, 1.0)
    assert [(t, c) for t, c, _ in log(res) if c] == [(2.0, "你好"), (4.0, "我们"), (5.0, "走"), (6.0, "吧")]
    # 2 s: 你好 fully committed (a segment end). 4 s: buffer 4 s > 3 s → cut at 2 s; 我们 stays in
    # the buffer (re-transcribed, stripped), 你好 becomes the prompt. 6 s: 吧 completes → cut at 6 s.
    assert script.calls == [(0.0, 1.0, None), (0.0, 2.0, None), (0.0, 3.0, None), (0.0, 4.0, None),
                            (2.0, 3.0, "你好"), (2.0, 4.0, "你好"), (6.0, 1.0, "你好我们走吧")]
    assert res.text == "你好我们走吧"


@pytest.mark.parametrize("prompt_chars, prompt", [(100, "一二三四五六"), (3, "四五六"), (0, None)])
def test_local_agreement_30s_cap_forces_a_commit_when_no_segment_end_exists(prompt_chars, prompt):
    script = Script(["一二", "一二三四", "一二三四五六", "七八"])
    res = simulate(unguarded("local-agreement", prompt_chars=prompt_chars), clock_audio(40), script, 10.0)
    # 40 s: the 40 s buffer would exceed 30 s: the newest tail 五六 is committed, the buffer restarts
    # at 30 s (what the last hypothesis had not heard); the flush commits the tentative 七八
    assert [(t, c) for t, c, _ in log(res) if c] == [(20.0, "一二"), (30.0, "三四"), (40.0, "五六"), (40.0, "七八")]
    assert script.calls == [(0.0, 10.0, None), (0.0, 20.0, None), (0.0, 30.0, None), (30.0, 10.0, prompt)]
    assert res.text == "一二三四五六七八"


def test_local_agreement_n3_needs_three_agreeing_hypotheses():
    script = Script(["我们", "我们走", "我们走吧", "我们走吧"])
    res = simulate(unguarded("local-agreement", n=3), clock_audio(4), script, 1.0)
    assert [(t, c) for t, c, _ in log(res) if c] == [(3.0, "我们"), (4.0, "走"), (4.0, "吧")]


def test_a_latin_word_is_never_committed_in_pieces():
    script = Script(["我用Pyth", "我用Python写", "我用Python写代码"])
    res = simulate(unguarded("local-agreement"), clock_audio(3), script, 1.0)
    assert [(t, c) for t, c, _ in log(res) if c] == [(2.0, "我用"), (3.0, "Python写"), (3.0, "代码")]


@pytest.mark.parametrize("text, pos, other, expected", [
    ("我用Python", 5, None, 2), ("我用Python", 8, None, 8), ("今天天气", 3, None, 3),
    ("版本3.10发布", 4, None, 2), ("我用Py", 4, "我用PyTorch", 2), ("ab cd", 3, None, 3),
])
def test_safe_cut(text, pos, other, expected):
    assert safe_cut(text, pos, other) == expected


@pytest.mark.parametrize("hyp, committed, j", [
    ("今天天气很好", "今天", 2), ("今天天汽很好", "今天天气", 4), ("很好", "今天", 0), ("天气很好", "", 0),
    ("今天天气", "今天天气很", 4),
])
def test_strip_committed(hyp, committed, j):
    assert strip_committed(hyp, committed) == j


@pytest.mark.parametrize("committed, hyp, j", [
    ("我们出去走走", "们出去走走吧然后", 5), ("你好", "谢谢", 0), ("今天天气", "天天气很好我们", 3),
    ("", "你好", 0), ("今天天气很好", "天气很好我们走", 4),
])
def test_overlap(committed, hyp, j):
    assert overlap(committed, hyp) == j


def test_common_prefix():
    assert common_prefix(["今天天气", "今天天汽", "今天"]) == "今天" and common_prefix([]) == ""


def test_hold_k_commits_all_but_the_last_k_characters_beyond_the_stable_part():
    script = Script(["今天", "今天天气", "今天天气很好", "天天气很好我们", "天气很好我们走"])
    res = simulate(unguarded("hold-k", k=2, window_s=3.0), clock_audio(5), script, 1.0)
    # window [max(0, T-3), T); stable part = overlap with the committed text; last 2 held back
    assert script.calls == [(0.0, 1.0, None), (0.0, 2.0, None), (0.0, 3.0, None), (1.0, 3.0, None), (2.0, 3.0, None)]
    assert log(res) == [(1.0, "", "今天"), (2.0, "今天", "天气"), (3.0, "天气", "很好"), (4.0, "很好", "我们"),
                        (5.0, "我", "们走"), (5.0, "们走", "")]
    assert res.text == "今天天气很好我们走"


def _regions_stub(regions_s):
    """A VAD that knows the speech (seconds) and reports it up to the audio received so far."""
    def regions(audio, start, policy):
        n = len(audio)
        out = []
        for a, e in regions_s:
            a, e = int(a * SR), min(int(e * SR), n)
            if a < n and e > start:
                out.append((max(a, start), e))
        return out
    return regions


def test_vad_segment_commits_a_segment_when_the_vad_closes_it(monkeypatch):
    from asr_eval.streaming import policies

    monkeypatch.setattr(policies, "vad_regions", _regions_stub([(0.5, 2.2), (3.0, 4.6)]))
    script = Script(lambda start, dur: {0.5: "你好", 3.0: "再见"}[start])
    res = simulate(unguarded("vad-segment"), clock_audio(5.5), script, 0.5, cost=fixed(0.1))
    # closed once its end is ≤ T − 0.3 s: 2.2 s → at 2.5 s, 4.6 s → at 5.0 s
    assert [(t, round(ta, 2), c) for t, ta, c in ((e.emit_s, e.emit_aware_s, e.text) for e in res.emissions)] == [
        (2.5, 2.6, "你好"), (5.0, 5.1, " 再见"), (5.5, 5.7, "")]
    assert script.calls == [(0.5, 1.7, None), (3.0, 1.6, "你好")]
    assert all(e.tentative == "" for e in res.emissions)


def test_vad_segment_decodes_an_open_segment_at_30s_and_the_rest_at_the_end(monkeypatch):
    from asr_eval.streaming import policies

    monkeypatch.setattr(policies, "vad_regions", _regions_stub([(0.0, 40.0)]))
    script = Script(lambda start, dur: {0.0: "甲", 30.0: "乙"}[start])
    res = simulate(unguarded("vad-segment", prompt_chars=0), clock_audio(40), script, 5.0)
    assert [(e.emit_s, e.text) for e in res.emissions if e.text] == [(30.0, "甲"), (40.0, " 乙")]
    assert script.calls == [(0.0, 30.0, None), (30.0, 10.0, None)]


def test_vad_segment_with_real_silero_on_two_spoken_sentences():
    """Two demo utterances with 1.5 s of silence between: Silero closes each soon after it ends."""
    import soundfile as sf
    from conftest import DEMO_CORPUS

    a, _ = sf.read(DEMO_CORPUS / "audio/test/demo_test_0001.flac", dtype="float32")
    b, _ = sf.read(DEMO_CORPUS / "audio/test/demo_test_0002.flac", dtype="float32")
    gap = np.zeros(int(1.5 * SR), np.float32)
    x = np.concatenate([gap[:SR // 2], a, gap, b, gap])
    loud = np.flatnonzero(np.abs(x) > 0.01) / SR  # speech: 0.81-2.23 s and 4.38-5.72 s
    mid = 3.0
    speech = [(loud[loud < mid][0], loud[loud < mid][-1]), (loud[loud > mid][0], loud[loud > mid][-1])]
    calls = []

    def transcribers(prompt):
        def run(audios):  # where the decoded view starts inside x
            start = (audios[0].__array_interface__["data"][0] - x.__array_interface__["data"][0]) // 4 / SR
            calls.append((start, start + len(audios[0]) / SR, prompt))
            return ShortBatch([f"<{len(calls)}>"], [1], 0.0)
        return run

    res = simulate(unguarded("vad-segment"), x, transcribers, 0.5)
    assert [c[2] for c in calls] == [None, "<1>"] and res.text == "<1> <2>"
    for (s, e, _), (on, off) in zip(calls, speech):  # the speech, with Silero's 400 ms pad
        assert on - 0.5 < s < on and off < e < off + 0.5
    commits = [e.emit_s for e in res.emissions if e.text]
    assert all(off < t <= off + 1.5 for t, (_, off) in zip(commits, speech)) and len(commits) == 2


@pytest.mark.parametrize("cost_s, lags, slope, real_time", [
    (0.5, [0.5] * 6, 0.0, True),  # cheaper than a chunk: every step starts at its arrival
    (1.0, [1.0] * 6, 0.0, True),  # exactly real time
    (1.5, [1.5, 2.0, 2.5, 3.0, 3.5, 4.0], 0.5, False),  # each chunk waits 0.5 s more: lag grows
])
def test_computation_aware_clock_with_a_fixed_step_cost(cost_s, lags, slope, real_time):
    script = Script(lambda start, dur: "一二三四五六"[:int(dur)])
    res = simulate(unguarded("local-agreement"), clock_audio(6), script, 1.0, cost=fixed(cost_s))
    assert res.lag_s == pytest.approx(lags)
    assert res.backlog_s == pytest.approx([lag - cost_s for lag in lags])
    assert res.lag_slope == pytest.approx(slope, abs=1e-9)
    assert res.real_time is real_time and res.final_lag_s == pytest.approx(lags[-1])
    # the unaware clock does not move
    assert [e.emit_s for e in res.emissions] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 6.0]
    assert res.emissions[-1].emit_aware_s == pytest.approx(max(6.0 + cost_s, 1.0 + 6 * cost_s) + cost_s)


def test_a_short_last_chunk_arrives_at_the_end_of_the_audio():
    script = Script(lambda start, dur: "")
    res = simulate(unguarded("local-agreement"), clock_audio(2.5), script, 1.0)
    assert [c[1] for c in script.calls] == [1.0, 2.0, 2.5] and res.emissions[-1].emit_s == 2.5


@pytest.mark.parametrize("name, params, message", [
    ("wait-k", {}, "unknown streaming policy 'wait-k'"),
    ("local-agreement", {"chunk": 1}, "has no parameter(s) ['chunk']"),
    ("local-agreement", {"n": 0}, "n 0 must be ≥ 1"),
    ("local-agreement", {"buffer_trim_s": 40.0}, "buffer_trim_s 40.0 must be in (0, max_buffer_s=30.0]"),
    ("hold-k", {"window_s": 31}, "window_s 31 must be in (0, 30]"),
    ("vad-segment", {"max_segment_s": 0.5}, "max_segment_s 0.5 must be in [1, 30]"),
])
def test_bad_policy_names_and_parameters_are_clear_errors(name, params, message):
    with pytest.raises(AsrEvalError) as e:
        make_policy(name, **params)
    assert message in str(e.value)


@pytest.mark.parametrize("chunk_s", [0.0, -1.0, 31.0])
def test_a_bad_chunk_size_is_a_clear_error(chunk_s):
    with pytest.raises(AsrEvalError, match="chunk_s"):
        simulate(unguarded("hold-k"), clock_audio(1), Script([]), chunk_s)


def test_params_are_the_dataclass_fields():
    assert make_policy("hold-k", k=3).params() == {"loop_guard": True, "no_speech_threshold": 0.6,
                                                   "logprob_threshold": -1.0, "k": 3, "window_s": 10.0,
                                                   "vad_gate": True, "drop_repeats": True}
    assert set(make_policy("vad-segment").params()) >= {"threshold", "close_s", "max_segment_s", "prompt_chars"}


def test_engine_transcribers_append_the_streaming_prompt_to_the_recipes_own():
    """The seam to real engines: each decode is ``engine.transcribe`` on one array, under the recipe
    with the committed text appended to its initial prompt and the piece decode cap."""
    from types import SimpleNamespace

    from asr_eval.engines import get_recipe
    from asr_eval.streaming import engine_transcribers

    seen = []

    class Engine:
        def max_new_tokens_cap(self, recipe):
            return 300

        def transcribe(self, audios, recipe, preprocessing, batch_size):
            seen.append((len(audios), recipe.initial_prompt, recipe.max_new_tokens, preprocessing, batch_size))
            return SimpleNamespace(texts=["好"] * len(audios), n_tokens=[1] * len(audios), proc_s=0.5)

    make = engine_transcribers(Engine(), get_recipe("prompt-simplified"))
    res = simulate(unguarded("local-agreement", buffer_trim_s=1.0, trim_margin_s=0.0), clock_audio(3), make, 1.0)
    # 1 s: 好 · 2 s: 好 agreed, a segment end → the buffer is cut at 2 s · 3 s: prompted with 好.
    # Each decode's cap is 12 tokens per second of its audio + 16 (28 for 1 s, 40 for 2 s), ≤ the engine's 300.
    assert seen == [(1, "以下是普通话的句子。", 28, "pad-audio", 1), (1, "以下是普通话的句子。", 40, "pad-audio", 1),
                    (1, "以下是普通话的句子。好", 28, "pad-audio", 1)]
    assert res.text == "好好"


def test_the_loop_guard_cuts_a_repetition_loop_before_the_agreement():
    """whisper-base on 0.5 s chunks of long_009 (bench/README.md): two hypotheses that loop alike
    agreed on the loop and committed 我比较小 twenty times. With the guard (default) each hypothesis
    is cut after the loop's first copy; without it the loop is committed."""
    from asr_eval.streaming.simulate import cut_loop

    loop = "他喝了一杯冷水我比较小我比较小我比较小我比较小我比较小"
    assert cut_loop(loop) == "他喝了一杯冷水我比较小"
    assert cut_loop("今天天气很好") == "今天天气很好" and cut_loop("好好好") == "好好好"  # 3 copies: not a loop
    hyps = ["他喝了", loop, loop, loop]
    guarded = simulate(unguarded("local-agreement"), clock_audio(4), Script(list(hyps)), 1.0)
    assert guarded.text == "他喝了一杯冷水我比较小"
    raw = simulate(unguarded("local-agreement", loop_guard=False), clock_audio(4), Script(list(hyps)), 1.0)
    assert raw.text == loop


def test_local_agreement_compares_across_script_and_punctuation_flips():
    """whisper-base on long_009 (2 s chunks): the same speech decoded as 趴晚上常常學習,別哭 and then
    他晚上常常学习别哭 — the hypotheses agree once folded (t2s, no punctuation); the commit is the
    newest hypothesis's own text, and the next step strips it whatever script it comes back in."""
    from asr_eval.streaming.policies import fold

    assert fold("學習, 別哭。OK") == ("学习别哭ok", [0, 1, 4, 5, 7, 8])
    script = Script(["趴晚上", "他晚上常常學習,別哭", "他晚上常常学习别哭去", "他晚上常常學習,別哭去洗澡"])
    res = simulate(unguarded("local-agreement"), clock_audio(4), script, 1.0)
    assert [e.text for e in res.emissions] == ["", "", "他晚上常常学习别哭", "去", "洗澡"]  # the last: the flush
    assert res.text == "他晚上常常学习别哭去洗澡"


def test_a_hypothesis_that_stops_early_is_no_segment_end():
    """A decode that re-transcribes the committed text and drops the rest (whisper-base did, at 8 s
    of long_009) must not let the buffer be cut there: the skipped speech would be lost."""
    hyps = ["今天", "今天天气", "今天", "今天天气很好", "今天天气很好啊", "今天天气很好啊"]
    script = Script(hyps)
    res = simulate(unguarded("local-agreement", buffer_trim_s=2.0), clock_audio(6), script, 1.0)
    assert res.text == "今天天气很好啊"
    assert all(start == 0.0 for start, _, _ in script.calls)  # no committed segment end: never trimmed


def test_a_cut_with_a_margin_starts_inside_committed_speech_and_strips_it_by_overlap():
    """Default trim_margin_s = 1: the buffer is cut 1 s before the committed segment end (2 s), so
    the next hypotheses re-transcribe the end of the committed text (好) — in another script here —
    and that overlap is stripped, not committed twice."""
    script = Script(["你好", "你好", "你好我们", "你好我们走", "好我們走吧", "好我们走吧", "吧"])
    res = simulate(unguarded("local-agreement", buffer_trim_s=3.0), clock_audio(7), script, 1.0)
    # 4 s: cut at 2 s − 1 s; 6 s: 吧 completes a segment end → cut at 6 s − 1 s
    assert [c[:2] for c in script.calls] == [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, 4.0), (1.0, 4.0), (1.0, 5.0),
                                              (5.0, 2.0)]
    assert res.text == "你好我们走吧"
