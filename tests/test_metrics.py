"""Per-utterance scoring: hand-computed cases, flags, score_many, jiwer agreement, properties,
and the evaluate-compatible metric module."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import jiwer  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from asr_eval.metrics import (  # noqa: E402
    COLUMNS, evaluate_metric_path, hallucination_phrases, mer_tokens, pathology_flags, pooled_rate, score_many, score_pair,
)
from asr_eval.metrics import score as score_mod  # noqa: E402
from asr_eval.metrics.align import chars  # noqa: E402
from asr_eval.text import list_profiles  # noqa: E402

# (ref, hyp, profile, cer (n,S,D,I), mer (n,S,D,I), wer (n,S,D,I),
#  per class (zh_n, zh_err, en_n, en_err, num_n, num_err, other_n, other_err), flags) — by hand.
HAND = [
    ("今天天气很好", "今天天氣真好", "zh-v1", (6, 1, 0, 0), (6, 1, 0, 0), (1, 1, 0, 0),
     (6, 1, 0, 0, 0, 0, 0, 0), ["traditional_script"]),
    ("我用GPU训练模型", "我用 gpu 训练模行", "zh-v1", (9, 1, 0, 0), (7, 1, 0, 0), (1, 1, 0, 0),
     (6, 1, 1, 0, 0, 0, 0, 0), []),
    # python -> 派森: 2 S + 4 D on characters; one word substituted + one inserted on MER tokens;
    # the inserted 森 goes to Mandarin (a Mandarin neighbour has its class).
    ("我喜欢Python编程", "我喜欢派森编程", "zh-v1", (11, 2, 4, 0), (6, 1, 0, 1), (1, 1, 0, 0),
     (5, 1, 1, 1, 0, 0, 0, 0), []),
    ("我买了三十五个苹果", "我买了35个苹果", "zh-v1", (9, 0, 0, 0), (9, 0, 0, 0), (1, 0, 0, 0),
     (6, 0, 0, 0, 3, 0, 0, 0), []),
    ("二零二四年", "2023年", "zh-v1", (5, 1, 0, 0), (5, 1, 0, 0), (1, 1, 0, 0),
     (1, 0, 0, 0, 4, 1, 0, 0), []),
    ("价格是12.5元", "价格是12.6元", "zh-v1-keepnum", (8, 1, 0, 0), (5, 1, 0, 0), (1, 1, 0, 0),
     (4, 0, 0, 0, 1, 1, 0, 0), []),
    ("你好世界", None, "zh-v1", (4, 0, 4, 0), (4, 0, 4, 0), (1, 0, 1, 0), (4, 4, 0, 0, 0, 0, 0, 0), ["empty"]),
    ("你好世界", "。。", "zh-v1", (4, 0, 4, 0), (4, 0, 4, 0), (1, 0, 1, 0), (4, 4, 0, 0, 0, 0, 0, 0), ["empty"]),
    ("", "嗯", "zh-v1", (0, 0, 0, 1), (0, 0, 0, 1), (0, 0, 0, 1), (0, 1, 0, 0, 0, 0, 0, 0), ["insertion_heavy"]),
    ("", "hello", "zh-v1", (0, 0, 0, 5), (0, 0, 0, 1), (0, 0, 0, 1), (0, 0, 0, 1, 0, 0, 0, 0), ["insertion_heavy"]),
    ("", "", "zh-v1", (0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0, 0, 0, 0, 0), []),
    ("hello world", "hello big world", "zh-v1", (10, 0, 0, 3), (2, 0, 0, 1), (2, 0, 0, 1),
     (0, 0, 2, 1, 0, 0, 0, 0), []),
    ("OK好的", "好的", "zh-v1", (4, 0, 2, 0), (3, 0, 1, 0), (1, 1, 0, 0), (2, 0, 1, 1, 0, 0, 0, 0), []),
    # 个 and meeting inserted between 开 and 会: both neighbours are Mandarin, so both errors are Mandarin.
    ("我们开会", "我们开个meeting会", "zh-v1", (4, 0, 0, 8), (4, 0, 0, 2), (1, 1, 0, 0),
     (4, 2, 0, 0, 0, 0, 0, 0), []),
    ("ありがとう", "ありがとう", "zh-v1", (5, 0, 0, 0), (5, 0, 0, 0), (1, 0, 0, 0), (0, 0, 0, 0, 0, 0, 5, 0), []),
    ("今天 天气 很 好", "今天 天气 不 好", "none", (6, 1, 0, 0), (6, 1, 0, 0), (4, 1, 0, 0),
     (6, 1, 0, 0, 0, 0, 0, 0), []),
    ("谢谢大家", "谢谢谢谢谢谢谢谢谢谢", "zh-v1", (4, 2, 0, 6), (4, 2, 0, 6), (1, 1, 0, 0),
     (4, 8, 0, 0, 0, 0, 0, 0), ["repetition"]),
    ("好", "好的好的好的好", "zh-v1", (1, 0, 0, 6), (1, 0, 0, 6), (1, 1, 0, 0), (1, 6, 0, 0, 0, 0, 0, 0),
     ["insertion_heavy"]),
    ("我爱北京天安门", "I love Beijing Tiananmen", "zh-v1", (7, 7, 0, 14), (7, 4, 3, 0), (1, 1, 0, 3),
     (7, 7, 0, 0, 0, 0, 0, 0), ["wrong_language"]),
    ("乾隆皇帝", "乾隆皇帝", "zh-v1", (4, 0, 0, 0), (4, 0, 0, 0), (1, 0, 0, 0), (4, 0, 0, 0, 0, 0, 0, 0), []),
]


@pytest.mark.parametrize("ref, hyp, profile, cer, mer, wer, cls, flags", HAND, ids=[f"{h[0]}|{h[1]}" for h in HAND])
def test_hand_computed(ref, hyp, profile, cer, mer, wer, cls, flags):
    s = score_pair(ref, hyp, profile)
    assert (s.cer_n, s.cer_s, s.cer_d, s.cer_i) == cer
    assert (s.mer_n, s.mer_s, s.mer_d, s.mer_i) == mer
    assert (s.wer_n, s.wer_s, s.wer_d, s.wer_i) == wer
    assert (s.zh_n, s.zh_err, s.en_n, s.en_err, s.num_n, s.num_err, s.other_n, s.other_err) == cls
    assert s.flags == flags
    assert s.empty_ref == (cer[0] == 0)


def test_alignment_and_rates():
    s = score_pair("今天天气很好", "今天天气真好啊")
    assert s.alignment == [("=", "今", "今"), ("=", "天", "天"), ("=", "天", "天"), ("=", "气", "气"),
                           ("S", "很", "真"), ("=", "好", "好"), ("I", "", "啊")]
    assert s.cer_hits == 5 and s.cer == pytest.approx(2 / 6)
    assert score_pair("", "啊").cer == float("inf") and score_pair("", "").cer == 0.0
    assert score_pair("你好", None, with_alignment=False).alignment == []


def test_hallucination_flag_needs_a_reference_without_the_phrase():
    phrase = "请不吝点赞 订阅 转发 打赏支持明镜与点点栏目"
    assert phrase in hallucination_phrases()
    assert score_pair("", phrase).flags == ["insertion_heavy", "hallucination"]
    assert "hallucination" in score_pair("今天", "今天字幕由Amara.org社群提供").flags
    assert "hallucination" not in score_pair("字幕由Amara.org社群提供", "字幕由Amara.org社群提供").flags
    # Traditional variant under a profile without t2s is still recognized
    assert "hallucination" in score_pair("", "請不吝點贊 訂閱 轉發 打賞支持明鏡與點點欄目", "none").flags


def test_pathology_flags_direct():
    assert pathology_flags("我們在這裡", "我们在这里", "我们在这里") == ["traditional_script"]
    assert pathology_flags(None, "你好", "") == ["empty"]
    assert pathology_flags("我们我们我们我们", "我们", "我们我们我们我们") == ["repetition", "insertion_heavy"]
    assert pathology_flags("我们我们我们我们", "我们我们我们我们", "我们我们我们我们") == []  # the reference says so
    assert pathology_flags("我用 GPU", "我用gpu", "我用gpu") == []


def test_score_many_table_matches_score_pair():
    refs = [h[0] for h in HAND if h[2] == "zh-v1"] + ["a\"b\\c", None]
    hyps = [h[1] for h in HAND if h[2] == "zh-v1"] + ["a\"bc", "x"]
    t = score_many(refs, hyps)
    assert t.column_names == COLUMNS and t.num_rows == len(refs)
    assert t.schema.field("cer_n").type == pa.int32() and t.schema.field("flags").type == pa.list_(pa.string())
    for row, r, h in zip(t.to_pylist(), refs, hyps):
        s = score_pair(r, h).to_dict()
        s["alignment"] = [list(x) for x in s["alignment"]]
        row["alignment"] = json.loads(row["alignment"])
        assert row == s
    assert score_many([], []).num_rows == 0
    assert score_many(["你好"], ["你好"], with_alignment=False).column("alignment").to_pylist() == [None]
    with pytest.raises(ValueError):
        score_many(["a"], [])


def test_score_many_parallel_equals_sequential(monkeypatch):
    monkeypatch.setattr(score_mod, "CHUNK", 40)
    monkeypatch.setattr(score_mod, "PARALLEL_MIN", 100)
    refs = [f"第{i}句话是{i * 7}元" for i in range(150)]
    hyps = [None if i % 17 == 0 else f"第{i}句是{i * 7 + i % 3}元。" for i in range(150)]
    seq = score_many(refs, hyps, workers=1)
    par = score_many(refs, hyps, workers=2, progress=True)
    assert par.equals(seq)


def test_pooled_rate_over_score_table():
    t = score_many(["你好世界", "今天", ""], ["你好", "今天", "嗯"])
    err = [s + d + i for s, d, i in zip(*(t.column(c).to_pylist() for c in ("cer_s", "cer_d", "cer_i")))]
    assert pooled_rate(err, t.column("cer_n").to_pylist()) == pytest.approx(3 / 6)


# ───────────────────────── properties ─────────────────────────

_ALPHA = list("今天好的我们他是在一二三十abcXY0125 .,，。嗯們") + ["GPU", "2024年", "hello "]
pieces = st.lists(st.sampled_from(_ALPHA), max_size=12).map("".join)
any_text = pieces | st.text(max_size=15)
profiles = st.sampled_from(list_profiles())


@settings(max_examples=200, deadline=None)
@given(x=any_text | st.none(), profile=profiles)
def test_identical_texts_score_zero(x, profile):
    s = score_pair(x, x, profile)
    assert s.cer_s + s.cer_d + s.cer_i == 0 and s.mer_s + s.mer_d + s.mer_i == 0
    assert s.wer_s + s.wer_d + s.wer_i == 0


@settings(max_examples=300, deadline=None)
@given(ref=any_text, hyp=any_text | st.none(), profile=profiles)
def test_count_identities(ref, hyp, profile):
    s = score_pair(ref, hyp, profile)
    ref_c, hyp_c = chars(s.ref_norm), chars(s.hyp_norm)
    assert s.cer_hits + s.cer_s + s.cer_d == s.cer_n == len(ref_c)
    assert s.cer_hits + s.cer_s + s.cer_i == len(hyp_c)
    assert s.mer_hits >= 0 and s.mer_hits + s.mer_s + s.mer_d == s.mer_n
    assert s.zh_n + s.en_n + s.num_n + s.other_n == s.mer_n
    assert s.zh_err + s.en_err + s.num_err + s.other_err == s.mer_s + s.mer_d + s.mer_i
    assert "".join(r for _, r, _ in s.alignment) == ref_c and "".join(h for _, _, h in s.alignment) == hyp_c
    ops = [op for op, _, _ in s.alignment]
    assert (ops.count("S"), ops.count("D"), ops.count("I")) == (s.cer_s, s.cer_d, s.cer_i)
    assert s.empty_ref == (s.cer_n == 0)


@settings(max_examples=300, deadline=None)
@given(ref=st.text(alphabet="abc今天好的x", min_size=1, max_size=20), hyp=st.text(alphabet="abc今天好的y", max_size=20))
def test_agrees_with_jiwer_cer(ref, hyp):
    """Where the definitions coincide (no whitespace, no normalization), counts equal jiwer's."""
    s = score_pair(ref, hyp, "none")
    out = jiwer.process_characters(ref, hyp)
    assert (s.cer_s, s.cer_d, s.cer_i) == (out.substitutions, out.deletions, out.insertions)
    assert s.cer == pytest.approx(jiwer.cer(ref, hyp))


@settings(max_examples=100, deadline=None)
@given(ref=pieces, hyp=pieces)
def test_agrees_with_jiwer_on_normalized_text(ref, hyp):
    s = score_pair(ref, hyp)
    if chars(s.ref_norm):
        assert s.cer == pytest.approx(jiwer.cer(chars(s.ref_norm), chars(s.hyp_norm)))
        assert s.mer == pytest.approx(jiwer.wer(" ".join(mer_tokens(s.ref_norm)), " ".join(mer_tokens(s.hyp_norm))))


# ───────────────────────── evaluate module ─────────────────────────


def test_evaluate_module_loads_offline():
    import evaluate

    metric = evaluate.load(evaluate_metric_path())
    out = metric.compute(predictions=["今天天气很好", None, "再见"], references=["今天天氣真好", "你好", "再见"])
    # 1 substitution + 2 deletions over 6 + 2 + 2 reference characters
    assert out["cer"] == pytest.approx(3 / 10)
    assert (out["substitutions"], out["deletions"], out["insertions"], out["ref_chars"]) == (1, 2, 0, 10)
    assert out["normalizer"] == "zh-v1"
    raw = metric.compute(predictions=["今天天气很好"], references=["今天天氣真好"], normalizer="none")
    assert raw["cer"] == pytest.approx(2 / 6)  # 氣 and 很/真 both count without t2s


def test_table_loads_into_the_duckdb_utterance_scores_table(tmp_path):
    """Column names and types fit THE store schema (asr_eval/store/schema.py) as they are."""
    from asr_eval.store import connect

    t = score_many(["我们在这里", "你好", ""], ["我們在這裡", None, "嗯"])
    n = t.num_rows
    t = t.add_column(0, "run_id", pa.array(["r1"] * n)).add_column(1, "utt_id", pa.array(["a", "b", "c"]))
    t = t.add_column(2, "normalizer", pa.array(["zh-v1"] * n)).add_column(3, "normalizer_hash", pa.array(["h"] * n))
    con = connect(tmp_path / "s.duckdb")
    cols = [r[0] for r in con.execute("DESCRIBE utterance_scores").fetchall()]
    assert sorted(cols) == sorted(t.column_names)
    con.register("_t", t)
    con.execute(f"INSERT INTO utterance_scores ({', '.join(cols)}) SELECT {', '.join(cols)} FROM _t")
    rows = con.execute("SELECT utt_id, cer_s, cer_d, cer_i, flags, empty_ref, alignment->0->>0 FROM utterance_scores "
                       "ORDER BY utt_id").fetchall()
    assert rows == [("a", 0, 0, 0, ["traditional_script"], False, "="), ("b", 0, 2, 0, ["empty"], False, "D"),
                    ("c", 0, 0, 1, ["insertion_heavy"], True, "I")]
    con.close()
