"""Hallucination over silence (asr_eval.metrics.hallucination): table-driven cases with hand-computed
expectations — where an insertion lies (in a silent gap of the reference or inside speech), whether
its time bound (emission time, hypothesis segment, none) is consistent with the gap, and which
inserted blocks repeat what was already said."""

from __future__ import annotations

import pytest

from asr_eval.errors import AsrEvalError
from asr_eval.metrics.hallucination import (
    MIN_SILENCE_S,
    Example,
    HypothesisUnits,
    ReferenceUnits,
    SilentGap,
    measure,
    silent_gaps,
)
from asr_eval.streaming.base import Emission

TWO = [[0.0, 2.0, "你好"], [4.0, 6.0, "再见"]]  # a 2 s gap [2, 4] between the two segments
CUP = [[0.0, 3.0, "我买了一杯冷水。"]]


def _emitted(*commits: tuple[str, float]) -> list[Emission]:
    return [Emission(t, t + 0.5, text, "", k, k == len(commits) - 1) for k, (text, t) in enumerate(commits)]


def _hyp(kind: str, value) -> HypothesisUnits:
    if kind == "emit":
        return HypothesisUnits.committed(_emitted(*value))
    if kind == "seg":
        text, segs = value
        return HypothesisUnits.segmented(text, segs)
    return HypothesisUnits.plain(value)


# (case, reference segments, duration, hypothesis, (inserted, in silence, repeated, silence_s))
CASES = [
    # 谢谢观看 committed at 6.0, after the speech ended at 2.5: the trailing gap [2.5, 6] (3.5 s)
    ("trailing silence, emitted after the speech", [[0.5, 2.5, "今天天气"]], 6.0,
     ("emit", [("今天天气", 3.0), ("谢谢观看", 6.0)]), (4, 4, 0, 3.5)),
    # 很 inside the segment [1, 3]; the leading gap [0, 1] is exactly 1 s: counted as silence
    ("an insertion inside a segment", [[1.0, 3.0, "今天天气"]], 3.5, ("plain", "今天很天气"), (1, 0, 0, 1.0)),
    # 谢谢 between two segments 0.5 s apart: an ordinary pause, not silence
    ("a gap of 0.5 s", [[0.0, 2.0, "你好"], [2.5, 4.5, "再见"]], 4.5, ("plain", "你好谢谢再见"), (2, 0, 0, 0.0)),
    # 对 was emitted at 1.8, before the gap [2, 4] began; 是 at 3.0, inside it
    ("a streaming unit emitted before the gap", TWO, 6.0,
     ("emit", [("你好对", 1.8), ("是", 3.0), ("再见", 6.0)]), (2, 1, 0, 2.0)),
    # 对's hypothesis segment [0, 2] only touches the gap [2, 4]; 谢谢's [6.5, 8] overlaps the trailing gap [6, 8]
    ("an offline unit whose segment does not overlap the gap", TWO, 8.0,
     ("seg", ("你好对再见谢谢", [[0.0, 2.0, "你好对"], [4.0, 6.0, "再见"], [6.5, 8.0, "谢谢"]])), (3, 2, 0, 4.0)),
    # no time bound (an imported offline hypothesis without segments): every insertion in a gap counts,
    # but 对 alone at the end of 你好 is a boundary error (one character next to speech)
    ("no bound: counted", TWO, 8.0, ("plain", "你好对再见谢谢"), (3, 2, 0, 4.0)),
    ("one character next to speech", [[0.0, 2.0, "我也回去"]], 8.0, ("emit", [("我也回去了", 3.0)]), (1, 0, 0, 6.0)),
    # the last sentence's end repeated after the speech: a repeated block
    ("a repeated block 一杯冷水", CUP, 8.0, ("emit", [("我买了一杯冷水", 3.0), ("一杯冷水", 8.0)]), (4, 4, 4, 5.0)),
    # a repeated block of the reference said before the insertion point (not of the hypothesis)
    ("a block repeating the reference", CUP, 8.0, ("plain", "我买了一杯冷水冷水"), (2, 2, 2, 5.0)),
    ("a single repeated unit", CUP, 8.0, ("emit", [("我买了一杯冷水", 3.0), ("水", 8.0)]), (1, 0, 0, 5.0)),
    # a reference whose only segment normalizes to nothing: the whole recording is silence
    ("no reference units", [[1.0, 2.0, "。"]], 3.0, ("plain", "谢谢"), (2, 2, 0, 3.0)),
]


@pytest.mark.parametrize("case, segs, dur, hyp, want", CASES, ids=[c[0] for c in CASES])
def test_measure(case, segs, dur, hyp, want):
    m = measure(ReferenceUnits.from_segments(segs, dur), _hyp(*hyp))
    assert (m.inserted, m.inserted_in_silence, m.repeated_insertions) == want[:3]
    assert m.silence_s == pytest.approx(want[3])


def test_examples_and_bounds():
    m = measure(ReferenceUnits.from_segments(CUP, 8.0),
                HypothesisUnits.committed(_emitted(("我买了一杯冷水", 3.0), ("一杯冷水", 7.0), ("谢谢", 8.0))))
    assert m.bound == "emission" and m.ref_units == 7 and m.hyp_units == 13
    assert m.gaps == (SilentGap(3.0, 8.0),)
    # one insert block 一杯冷水谢谢 (not a repeat as a whole), the first emitted at 7.0
    assert m.examples == (Example("一杯冷水谢谢", 3.0, 8.0, 7.0, False),)
    assert (m.inserted_in_silence, m.repeated_insertions) == (6, 0)
    # examples: the blocks with the most characters in silence first, at most MAX_EXAMPLES
    m = measure(ReferenceUnits.from_segments([[2.0, 3.0, "你好"], [5.0, 6.0, "再见"]], 9.0),
                HypothesisUnits.plain("甲乙你好丙丁戊再见己庚辛壬癸子"))
    assert [e.text for e in m.examples] == ["己庚辛壬癸子", "丙丁戊", "甲乙"] and m.examples[0].emit_s is None
    assert [(e.gap_start_s, e.gap_end_s) for e in m.examples] == [(6.0, 9.0), (3.0, 5.0), (0.0, 2.0)]
    assert len(measure(ReferenceUnits.from_segments(TWO, 8.0), HypothesisUnits.plain("甲乙你好丙丁再见戊己"),
                       max_examples=1).examples) == 1
    # the counted gaps: before the first, between, after the last segment; only those of >= 1 s
    ref = ReferenceUnits.from_segments([[0.4, 1.0, "一"], [1.5, 2.0, "二"], [3.0, 4.0, "三"]], 6.0)
    assert silent_gaps(ref) == [SilentGap(2.0, 3.0), SilentGap(4.0, 6.0)] and MIN_SILENCE_S == 1.0


def test_segmented_hypothesis_maps_units_to_their_segments():
    h = HypothesisUnits.segmented("你好，再见。", [[0.0, 1.0, "你好，"], [2.0, 3.0, "再见。"]])
    assert h.chars == "你好再见" and h.spans == ((0.0, 1.0),) * 2 + ((2.0, 3.0),) * 2 and h.bound == "segment"
    # the segments do not spell the text: matched by the alignment, an unmatched unit takes its neighbour's
    h = HypothesisUnits.segmented("嗨你好再见谢谢", [[0.0, 1.0, "你好"], [2.0, 3.0, "再见"]])
    assert h.spans == ((0.0, 1.0),) * 3 + ((2.0, 3.0),) * 4
    assert HypothesisUnits.segmented("你好", None).bound == "none"


def test_bad_input_is_refused():
    with pytest.raises(AsrEvalError, match="segment 0 ends"):
        ReferenceUnits.from_segments([[2.0, 1.0, "你好"]], 3.0)
    with pytest.raises(AsrEvalError, match="2 units but 1 emission"):
        HypothesisUnits("你好", emit_s=(1.0,))
