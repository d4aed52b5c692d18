"""Recording-level scoring: whole-recording alignment counts and the long-form pathology flags
on planted cases."""

from __future__ import annotations

import numpy as np

from asr_eval.metrics import LONG_FORM_FLAGS, LongForm, long_form_flags, score_many, score_pair
from asr_eval.metrics.align import align, chars
from asr_eval.text.normalizer import opencc_t2s

_T2S = opencc_t2s()
_SIMPLE = [c for c in map(chr, range(0x4E00, 0x9FA5)) if _T2S.convert(c) == c]
HAN = _SIMPLE[:3000]  # Simplified-script characters only (no traditional_script flag)
FOREIGN = _SIMPLE[-200:]  # never in the reference alphabet


def _text(n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return "".join(HAN[i] for i in rng.integers(0, len(HAN), n))


def _flags(ref: str, hyp: str, ref_segments=None, hyp_segments=None) -> list[str]:
    rc, hc = chars(ref), chars(hyp)
    return long_form_flags(ref, hyp, rc, hc, align(rc, hc), ref_segments, hyp_segments)


def test_a_15000_character_recording_scores_with_exact_counts():
    """A 1 h recording's reference: 15,000 characters. Planted: 100 substitutions by characters
    the reference never uses (spaced apart) and one 500-character deletion. Any other edit
    script costs more than 600, so the counts are forced: S=100, D=500, I=0."""
    ref = _text(15_000)
    hyp = list(ref)
    for k in range(100):
        hyp[100 + 120 * k] = FOREIGN[k % len(FOREIGN)]
    del hyp[13_000:13_500]
    s = score_pair(ref, "".join(hyp), long_form=LongForm())
    assert (s.cer_n, s.cer_s, s.cer_d, s.cer_i) == (15_000, 100, 500, 0)
    assert s.cer == (100 + 500) / 15_000
    assert "dropped_window" in s.flags
    assert sum(1 for op, _, _ in s.alignment if op == "D") == 500


def test_long_form_flags_only_for_recordings():
    ref = _text(300)
    hyp = ref[:100] + ref[200:]  # 100 characters dropped
    assert "dropped_window" in score_pair(ref, hyp, long_form=LongForm()).flags
    assert not set(LONG_FORM_FLAGS) & set(score_pair(ref, hyp).flags)  # an utterance: not judged
    t = score_many([ref, ref], [hyp, hyp], long_form=[LongForm(), None])
    assert t.column("flags").to_pylist() == [["dropped_window"], []]


def test_dropped_window_bridges_stray_matches_but_not_real_text():
    ref = _text(200, seed=1)
    # 60 deleted characters with two stray single-character matches inside the gap
    hyp = ref[:50] + ref[80] + ref[95] + ref[110:]
    assert _flags(ref, hyp) == ["dropped_window"]
    # two 30-character gaps separated by 20 correct characters: each under the threshold
    hyp2 = ref[:50] + ref[80:100] + ref[130:]
    assert _flags(ref, hyp2) == []


def test_repeated_block_across_windows():
    ref = _text(400, seed=2)
    block = ref[100:130]
    hyp = ref[:200] + block + ref[200:]  # a 30-character block transcribed twice
    assert _flags(ref, hyp) == ["repeated_block"]
    ref_twice = ref[:200] + block + ref[200:]  # the speaker really said it twice
    assert "repeated_block" not in _flags(ref_twice, hyp)
    assert _flags(ref, ref) == []


def test_text_over_silence_with_a_silent_minute():
    """Speech 0-40 s and 100-140 s, a silent minute between them."""
    ref_segments = [[0.5, 20.0, "甲"], [21.0, 40.0, "乙"], [100.0, 120.0, "丙"], [121.0, 140.0, "丁"]]
    ref = "".join(_text(60, seed=k) for k in range(4))
    good = [[0.0, 30.0, ref[:100]], [30.0, 41.0, ref[100:120]], [99.0, 140.0, ref[120:]]]
    assert "text_over_silence" not in _flags(ref, ref, ref_segments, good)
    bad = good[:2] + [[55.0, 80.0, "请不吝点赞订阅转发打赏支持明镜与点点栏目"]] + good[2:]
    assert "text_over_silence" in _flags(ref, ref + "请不吝点赞", ref_segments, bad)
    # punctuation-only output over silence is not text
    assert "text_over_silence" not in _flags(ref, ref, ref_segments, good + [[60.0, 70.0, "……"]])
    # without the reference's segment times the flag is not judged
    assert "text_over_silence" not in _flags(ref, ref, None, bad)


def test_wrong_language_window():
    ref = _text(300, seed=3)
    english = " ".join(["we", "are", "going", "out", "today", "because", "the", "weather", "is", "good"] * 3)
    hyp = ref[:150] + " " + english + " " + ref[180:]
    assert "wrong_language_window" in _flags(ref, hyp)
    hyp_few = ref[:150] + " ok yes " + ref[150:]  # two English words in a Mandarin window
    assert "wrong_language_window" not in _flags(ref, hyp_few)
