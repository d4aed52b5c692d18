"""The streaming policies' hallucination guards (``asr_eval.streaming.guards``): the silence rule, the
VAD gate on real speech and silence, the prompt age and repeat-only hypotheses — on scripted
hypotheses (a stub ShortTranscriber) with hand-checked decodes and commits."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from test_streaming_policies import Script, clock_audio, unguarded

from asr_eval.errors import AsrEvalError
from asr_eval.longform import ShortBatch
from asr_eval.streaming import make_policy, simulate
from asr_eval.streaming.guards import PromptClock, SpeechGate, repeats_committed, silent
from tests.conftest import REPO

SR = 16_000


@pytest.mark.parametrize(("nsp", "lp", "nst", "lpt", "out"), [
    (0.9, -1.5, 0.6, -1.0, True),  # Whisper's rule: both say silence
    (0.9, -0.5, 0.6, -1.0, False),  # confident text over a high no-speech probability stays
    (0.3, -2.0, 0.6, -1.0, False),  # low log-prob alone is a fallback matter, not silence
    (0.6, -2.0, 0.6, -1.0, False),  # strictly above the threshold
    (0.9, -0.5, 0.6, None, True),  # no log-prob threshold: the no-speech probability alone
    (0.9, -1.5, None, -1.0, False),  # switched off
    (None, -1.5, 0.6, -1.0, False),  # the engine reports none
])
def test_silence_rule(nsp, lp, nst, lpt, out):
    assert silent(nsp, lp, nst, lpt) is out


def test_repeat_only_tails_and_the_prompt_clock():
    assert repeats_committed("一杯冷水", "我买了一杯冷水")
    assert not repeats_committed("冷水", "我买了一杯冷水")  # two characters: too short to judge
    assert not repeats_committed("一杯热水", "我买了一杯冷水")
    assert not repeats_committed("一杯冷水", "一杯冷水" + "好" * 60)  # only the last 60 characters count
    clock = PromptClock()
    clock.add("今天", 1 * SR)
    clock.add("天气很好", 5 * SR)
    assert clock.recent(6, 12 * SR, 10.0) == 2  # 今天 was committed 11 s ago
    assert clock.recent(6, 12 * SR, None) == 0 and clock.recent(6, 16 * SR, 10.0) == 6
    assert clock.recent(2, 12 * SR, 10.0) == 2  # never past ``upto``


def _scripted(hyps, nsp=None, lp=None):
    """A stub engine whose i-th decode returns ``hyps[i]`` with a no-speech probability and log-prob."""
    script = Script(hyps)

    def make(prompt):
        run = script(prompt)

        def go(audios):
            i = len(script.calls)
            b = run(audios)
            return ShortBatch(b.texts, b.n_tokens, b.proc_s, avg_logprob=[lp[i] if lp else None],
                              no_speech_prob=[nsp[i] if nsp else None])
        return go
    return script, make


def test_a_decode_the_silence_rule_calls_silence_commits_nothing():
    hyps = ["今天", "今天天气", "今天天气", "谢谢观看", "谢谢观看"]
    script, make = _scripted(hyps, nsp=[0.1, 0.1, 0.1, 0.95, 0.95], lp=[-0.3, -0.3, -0.3, -1.6, -1.6])
    res = simulate(unguarded("local-agreement"), clock_audio(5), make, 1.0)
    assert res.text == "今天天气"  # "谢谢观看" over silence is dropped at both decodes
    raw = simulate(unguarded("local-agreement", no_speech_threshold=None), clock_audio(5), _scripted(hyps)[1], 1.0)
    assert raw.text == "今天天气谢谢观看"


def test_the_prompt_never_refeeds_text_committed_long_ago():
    # 今天 is committed at 2 s from audio still in the buffer (not prompted); the 10 s buffer cap cuts
    # at 11 s, after which it lies before the buffer and is prompted until it is 12 s old
    script = Script(["今天", "今天"] + [""] * 21)
    simulate(unguarded("local-agreement", max_buffer_s=10.0, buffer_trim_s=10.0, prompt_max_age_s=12.0),
             clock_audio(23), script, 1.0)
    prompted = {round(start + dur): p for start, dur, p in script.calls}  # by arrival time
    assert [prompted[t] for t in (10, 11, 14, 15, 20)] == [None, "今天", "今天", None, None]


def test_a_tail_that_only_repeats_committed_text_is_dropped():
    hyps = ["我买了", "我买了一杯冷水", "我买了一杯冷水", "我买了一杯冷水一杯冷水", "我买了一杯冷水一杯冷水"]
    guarded = simulate(unguarded("local-agreement", drop_repeats=True), clock_audio(5), Script(list(hyps)), 1.0)
    plain = simulate(unguarded("local-agreement"), clock_audio(5), Script(list(hyps)), 1.0)
    assert guarded.text == "我买了一杯冷水" and plain.text == "我买了一杯冷水一杯冷水"


@pytest.fixture(scope="module")
def speech_then_silence():
    """1 s of silence, a 2 s demo utterance (speech 0.30–1.74 s of it), 5 s of silence."""
    a, sr = sf.read(REPO / "datasets_local/demo_zh/audio/test/demo_test_0001.flac", dtype="float32")
    assert sr == SR
    return np.concatenate([np.zeros(SR, np.float32), a, np.zeros(5 * SR, np.float32)])


def test_vad_gate_decodes_only_up_to_the_speech_and_nothing_without_it(speech_then_silence):
    x = speech_then_silence
    gate = SpeechGate()
    gate.update(x)
    (a, b), = gate.speech(0, len(x))
    assert 1.2 < a / SR < 1.4 and 2.7 < b / SR < 2.9  # the utterance lies at 1.30–2.74 s
    assert gate.decode_end(0, len(x)) == b + SR // 2 and gate.decode_end(4 * SR, len(x)) is None
    script = Script(lambda start, dur: "他从事文艺工作" if dur > 2.5 else "他从事")
    res = simulate(make_policy("local-agreement", drop_repeats=False), x, script, 1.0)
    durations = [d for _, d, _ in script.calls]
    assert durations[0] == 2.0  # nothing decoded at 1 s (no speech yet); 2 s of the buffer at 2 s
    assert max(durations) == pytest.approx((b + SR // 2) / SR, abs=0.01)  # never the silence after it
    assert len(script.calls) == 3  # once the decoded audio stops growing, the same decode is not repeated
    assert res.text == "他从事文艺工作"
    assert res.emissions[-2].text == "文艺工作" and res.emissions[-2].emit_s == 4.0  # agreed at 4 s, before the flush
    silence = Script(["谢谢观看"] * 10)
    assert simulate(make_policy("local-agreement"), np.zeros(5 * SR, np.float32), silence, 1.0).text == ""
    assert silence.calls == []


def test_hold_k_under_the_gate_commits_everything_once_the_speech_has_ended(speech_then_silence):
    script = Script(lambda start, dur: "他从事文艺工作" if dur > 2.5 else "他从事")
    res = simulate(make_policy("hold-k", k=3), speech_then_silence, script, 1.0)
    assert res.text == "他从事文艺工作"
    final = res.emissions[-1]
    assert final.final and final.text == ""  # nothing was left for the flush


def test_guard_parameters_are_checked():
    for params, msg in [({"no_speech_threshold": 1.5}, "no_speech_threshold 1.5 must be in"),
                        ({"logprob_threshold": 0.5}, "logprob_threshold 0.5 must be ≤ 0"),
                        ({"prompt_max_age_s": 0}, "prompt_max_age_s 0 must be > 0")]:
        with pytest.raises(AsrEvalError, match=msg):
            make_policy("local-agreement", **params)
    assert make_policy("vad-segment", no_speech_threshold=None).params()["no_speech_threshold"] is None


def test_long_form_pieces_under_the_silence_rule():
    from asr_eval.longform import make_strategy
    from asr_eval.longform.base import kept_texts

    res = ShortBatch([" 今天天气很好 ", "谢谢观看", "好"], [6, 4, 1], 0.0, avg_logprob=[-0.2, -1.4, -1.2],
                     no_speech_prob=[0.05, 0.93, 0.3])
    assert kept_texts(res, 0.6, -1.0) == ["今天天气很好", "", "好"]
    assert kept_texts(res, None, -1.0) == ["今天天气很好", "谢谢观看", "好"]
    assert kept_texts(ShortBatch(["谢谢观看"], [4], 0.0), 0.6, -1.0) == ["谢谢观看"]  # an engine without the numbers
    for name in ("vad", "chunked"):
        assert {"no_speech_threshold": 0.6, "logprob_threshold": -1.0}.items() <= make_strategy(name).params().items()
