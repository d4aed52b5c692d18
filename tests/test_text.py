"""Normalizer: golden cases, profile registry, number policies, property tests."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from asr_eval.errors import AsrEvalError  # noqa: E402
from asr_eval.text import (  # noqa: E402
    DEFAULT_PROFILE, NormalizerProfile, get_profile, list_profiles, normalize, normalize_many,
)
from asr_eval.text.normalizer import _nfkc  # noqa: E402
from asr_eval.text.numbers import chinese_to_digits, int_to_chinese, parse_chinese_int  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "text" / "normalize_golden.jsonl"
CASES = [json.loads(line) for line in GOLDEN.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_golden_file_is_big_and_covers_the_traps():
    assert len(CASES) >= 100
    inputs = {c["input"] for c in CASES}
    for trap in ["一起去吃饭吧", "万一下雨怎么办", "2024年5月1日", "12.5元", "50%", "3:2", "GPU 很快", "們", "這",
                 "臺灣", "滑鼠", "（你好）", "ＡＢＣ１２３", "今天天气真好😀", "👍👍👍"]:
        assert trap in inputs, trap
    assert any(c["expected"] == "" and c["input"] for c in CASES)  # text that normalizes to empty
    assert {c["profile"] for c in CASES} >= set(list_profiles())


@pytest.mark.parametrize("case", CASES, ids=[f"{c['profile']}:{c['input']!r}" for c in CASES])
def test_golden(case):
    assert normalize(case["input"], case["profile"]) == case["expected"], case["why"]


def test_golden_batch_equals_one_by_one():
    for prof in list_profiles():
        inputs = [c["input"] for c in CASES]
        assert normalize_many(inputs, prof) == [normalize(t, prof) for t in inputs]


def test_missing_text_and_bad_types():
    assert normalize_many(["好", None, float("nan")]) == ["好", "", ""]  # NaN: a missing value from pandas
    with pytest.raises(TypeError, match="int"):
        normalize_many([3])


def test_profiles_registry():
    assert DEFAULT_PROFILE == "zh-v1"
    assert set(list_profiles()) >= {"zh-v1", "zh-v1-fillers", "none", "zh-train-v1"}
    p = get_profile()
    assert p.name == "zh-v1" and p.version == "1"
    assert len(p.rules_hash) == 12 and int(p.rules_hash, 16) >= 0
    assert get_profile(p) is p
    hashes = {get_profile(n).rules_hash for n in list_profiles()}
    assert len(hashes) == len(list_profiles())  # different rules, different hashes


def test_rules_hash_is_stable_and_tracks_rules():
    p = get_profile("zh-v1")
    same = NormalizerProfile("my-copy", "9", dict(p.rules))
    assert same.rules_hash == p.rules_hash  # the hash is of the rules, not the name
    changed = NormalizerProfile("zh-v1", "1", {**p.rules, "lowercase": False})
    assert changed.rules_hash != p.rules_hash
    assert changed.normalize("GPU") == "GPU"


def test_unknown_profile_lists_known_ones():
    with pytest.raises(AsrEvalError, match="zh-v2.*zh-v1-fillers"):
        get_profile("zh-v2")


def test_bad_rules_name_the_key():
    rules = dict(get_profile().rules)
    with pytest.raises(AsrEvalError, match="numbers"):
        NormalizerProfile("x", "1", {**rules, "numbers": "roman"})
    with pytest.raises(AsrEvalError, match="unknown rules.*colour"):
        NormalizerProfile("x", "1", {**rules, "colour": True})


def test_profile_pickles():
    import pickle

    p = get_profile("zh-v1")
    p.normalize("x")  # compile the steps first: they must not be pickled
    q = pickle.loads(pickle.dumps(p))
    assert q == p and q.rules_hash == p.rules_hash and q.normalize("臺灣2024年") == "台湾二零二四年"


@pytest.mark.parametrize("n, expected", [
    (0, "零"), (7, "七"), (10, "十"), (11, "十一"), (20, "二十"), (101, "一百零一"), (110, "一百一十"),
    (1000, "一千"), (1010, "一千零一十"), (2000, "两千"), (10000, "一万"), (10001, "一万零一"),
    (100000, "十万"), (120000, "十二万"), (1000000, "一百万"), (100000000, "一亿"), (200000000, "两亿"),
    (100010000, "一亿零一万"),
])
def test_int_to_chinese(n, expected):
    assert int_to_chinese(n) == expected


@pytest.mark.parametrize("text, value", [
    ("十", 10), ("十五", 15), ("二十", 20), ("一百零五", 105), ("三百五", 350), ("两千三", 2300),
    ("一万五", 15000), ("十万", 100000), ("一亿零五万", 100050000), ("三千万", 30000000),
    ("万一", None), ("千万", None), ("二三十", None), ("九九八十一", None), ("一万十", None), ("一万一万一", None),
])
def test_parse_chinese_int(text, value):
    assert parse_chinese_int(text) == value


@pytest.mark.parametrize("n", [0, 1, 9, 10, 15, 20, 99, 100, 101, 110, 999, 1000, 1001, 1010, 1100, 9999,
                               10000, 10001, 10010, 10100, 11000, 99999, 100000, 1000000, 12345678, 100000001])
def test_number_round_trip(n):
    """digits -> Chinese -> digits is the identity (the two policies are consistent)."""
    text = int_to_chinese(n)
    assert parse_chinese_int(text) == n or (n < 10 and text in "零一二三四五六七八九")


def test_to_digits_idioms_are_protected():
    assert chinese_to_digits("七七八八", ("七七八八",)) == "七七八八"
    assert chinese_to_digits("七七八八", ()) == "7788"


# ───────────────────────── properties ─────────────────────────

_PIECES = list("一二三四五六七八九十百千万亿零两点年月日的了是在我们這們臺灣儿女子嗯呃啊"
               "abcXYZ0123456789.,:%-/'_ 　，。！？「」（）()[]<>…—ＡＢ１２％😀\u200b\t") + [
    "一起", "万一", "百分之", "noise", "um", "2024年", "12.5", "3:2", "50%", "GPU", "[noise]", "(笑)"]
texts = st.one_of(
    st.lists(st.sampled_from(_PIECES), max_size=12).map("".join),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, profile=st.sampled_from(sorted(set(list_profiles()))))
def test_normalizer_is_idempotent(text, profile):
    once = normalize(text, profile)
    assert normalize(once, profile) == once


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(texts | st.none(), max_size=6), profile=st.sampled_from(list_profiles()))
def test_batch_equals_one_by_one(batch, profile):
    assert normalize_many(batch, profile) == [normalize(t, profile) for t in batch]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_fast_nfkc_is_nfkc(text):
    assert _nfkc(text) == unicodedata.normalize("NFKC", text)


@settings(max_examples=200, deadline=None)
@given(text=texts)
def test_scoring_output_has_no_punctuation_or_digits(text):
    out = normalize(text, "zh-v1")
    assert not any(c in out for c in "0123456789，。！？,!?()[]<>") and out == out.strip() and "  " not in out
