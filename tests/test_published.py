"""Published CERs on the standard Mandarin test sets (issue 29): the packaged data file, its
validation, model names and protocol comparisons."""

from __future__ import annotations

import copy
import json
import re

import pytest

from asr_eval.errors import AsrEvalError
from asr_eval.published import (
    KNOWN_TEST_SETS,
    Protocol,
    known_test_sets,
    load_published,
    model_key,
    parse_published,
    profile_protocol,
    protocol_differences,
    published_for,
)
from asr_eval.text import list_profiles

KEYS = frozenset(KNOWN_TEST_SETS)


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", text)]


# ------------------------------------------------------------------ the packaged file

def test_packaged_file_loads_and_validates():
    results = load_published()
    assert len(results) >= 60
    assert {r.test_set for r in results} <= KEYS  # only the standard keys of the common brief
    assert all(r.source.url.startswith("https://") for r in results)
    assert all(r.protocol.asr_eval_profile in (None, *list_profiles()) for r in results)
    # every Whisper size we care about has at least one published number, the bundled base included
    whisper = {r.model for r in results if r.model.startswith("openai/whisper-")}
    assert {f"openai/whisper-{s}" for s in ("tiny", "base", "small", "medium", "large-v2", "large-v3",
                                            "large-v3-turbo")} <= whisper


def test_every_entry_quotes_its_cer():
    # the evidence is the table row as read: it shows the CER in percent, or as a fraction when the
    # source published fractions (then the notes say so)
    for r in load_published():
        nums = _numbers(r.evidence)
        as_percent = any(abs(n - r.cer) < 1e-9 for n in nums)
        as_fraction = any(abs(n * 100 - r.cer) < 1e-6 for n in nums)
        assert as_percent or as_fraction, (r.model, r.test_set, r.cer, r.evidence)
        if not as_percent:
            assert "fraction" in r.notes


def test_file_is_sorted_out_per_source_and_values_pinned():
    by = {(r.model, r.test_set, r.source.id): r for r in load_published()}
    base = by[("openai/whisper-base", "aishell-1/test", "yeyupiaoling-whisper-finetune")]
    assert base.cer == 22.196 and "0.22196" in base.evidence
    assert base.protocol.asr_eval_profile == "punct-t2s" and base.protocol.spaces == "counted"
    v3 = by[("openai/whisper-large-v3", "aishell-1/test", "fireredasr-2025")]
    assert v3.cer == 5.14 and v3.protocol.normalization == "unknown" and v3.protocol.asr_eval_profile is None
    assert by[("openai/whisper-large-v3", "aishell-1/test", "belle-whisper-finetune")].cer == 8.085
    assert by[("openai/whisper-large-v3", "kespeech/test", "qwen3-asr-2026")].cer == 28.79
    # a channel the source does not name is said so in the notes
    assert "channel" in by[("openai/whisper-large-v3", "aishell-2/test_ios", "fireredasr-2025")].notes


def test_published_for_filters_by_test_set_and_model_alias():
    rows = published_for("aishell-1/test", "bundled:whisper-base")
    assert [(r.model, r.cer) for r in rows] == [("openai/whisper-base", 22.196)]
    large = published_for("aishell-1/test", "large-v3")
    assert sorted(r.cer for r in large) == [5.14, 5.14, 8.085, 8.086]
    assert {r.model for r in published_for("wenetspeech/test_net")} >= {"openai/whisper-tiny", "Qwen/Qwen3-ASR-1.7B"}
    assert published_for("thchs-30/test") == []
    assert published_for("aishell-1/test", "some-org/whisper-base-zh-ft") == []


def test_known_test_sets_prefers_the_registry_per_family(monkeypatch):
    from asr_eval.corpus import registry
    from asr_eval.corpus.registry import TestSet

    fake = {"aishell-1/test": TestSet("aishell-1/test", "AISHELL-1 test", "aishell1", "test")}
    monkeypatch.setattr(registry, "_TEST_SETS", fake)
    keys = known_test_sets()
    assert "aishell-1/test" in keys and "aishell-1/dev" not in keys  # the registry speaks for aishell-1
    assert "kespeech/test" in keys and "common-voice/zh-HK/test" in keys  # unregistered families: the constant
    monkeypatch.setattr(registry, "_TEST_SETS", {})
    assert known_test_sets() == KEYS


# ------------------------------------------------------------------ validation errors name their entry

def _valid() -> dict:
    proto = {"normalization": "unknown", "punctuation": "unknown", "t2s": "unknown", "numbers": "unknown",
             "spaces": "unknown", "case": "unknown", "decoding": "unknown", "asr_eval_profile": None}
    row = {"model": "openai/whisper-base", "test_set": "aishell-1/test", "cer": 22.2, "source": "s1",
           "evidence": "| whisper-base | 22.2 |", "protocol": proto, "notes": ""}
    return {"version": 1, "sources": {"s1": {"title": "T", "url": "https://example.org", "year": 2024,
                                             "where": "Table 1"}},
            "results": [row, dict(copy.deepcopy(row), model="openai/whisper-small", test_set="wenetspeech/test_net",
                                  cer=18.4, evidence="| whisper-small | 18.4 |")]}


def _break(field: str, value):
    data = _valid()
    row = data["results"][1]
    if field.startswith("protocol."):
        row["protocol"][field.split(".", 1)[1]] = value
    elif value is KeyError:
        del row[field]
    else:
        row[field] = value
    return data


@pytest.mark.parametrize("field, value, problem", [
    ("source", "nope", "unknown source id 'nope'"),
    ("test_set", "aishell-3/test", "unknown test set key"),
    ("cer", 100.5, "must be a percentage in [0, 100]"),
    ("cer", -0.1, "must be a percentage in [0, 100]"),
    ("cer", "18.4", "must be a percentage in [0, 100]"),
    ("cer", True, "must be a percentage in [0, 100]"),
    ("evidence", "", "missing or empty"),
    ("evidence", KeyError, "missing or empty"),
    ("protocol.asr_eval_profile", "zh-v9", "unknown profile 'zh-v9'"),
    ("protocol.punctuation", "stripped", "'stripped' is not one of removed, kept, unknown"),
    ("protocol.numbers", "digits", "is not one of as-written, to-chinese, to-digits, unknown"),
    ("protocol.decoding", "", "must be text or 'unknown'"),
    ("protocol.beam", 5, "not a protocol field"),
])
def test_validation_error_names_entry_model_test_set_and_field(field, value, problem):
    data = _break(field, value)
    with pytest.raises(AsrEvalError) as e:
        parse_published(data, "pub.json", KEYS)
    msg = str(e.value)
    ts = data["results"][1].get("test_set")
    assert msg.startswith("pub.json: entry 1 (model 'openai/whisper-small', test set ")
    assert repr(ts) in msg and f"field {field!r}" in msg and problem in msg


def test_valid_file_parses_and_file_level_errors(tmp_path):
    rows = parse_published(_valid(), "pub.json", KEYS)
    assert [(r.model, r.test_set, r.cer, r.source.title) for r in rows] == [
        ("openai/whisper-base", "aishell-1/test", 22.2, "T"), ("openai/whisper-small", "wenetspeech/test_net", 18.4, "T")]
    with pytest.raises(AsrEvalError, match=r"version 2 is not supported"):
        parse_published(dict(_valid(), version=2), "pub.json", KEYS)
    bad = copy.deepcopy(_valid())
    bad["sources"]["s1"]["year"] = "2024"
    with pytest.raises(AsrEvalError, match=r"source 's1', field 'year'"):
        parse_published(bad, "pub.json", KEYS)
    path = tmp_path / "pub.json"
    path.write_text(json.dumps(_valid())[:-5], encoding="utf-8")
    with pytest.raises(AsrEvalError, match=r"pub.json: not valid JSON"):
        load_published(path)
    with pytest.raises(AsrEvalError, match=r"does not exist"):
        load_published(tmp_path / "missing.json")
    path.write_text(json.dumps(_valid()), encoding="utf-8")
    assert len(load_published(path)) == 2


# ------------------------------------------------------------------ model names

@pytest.mark.parametrize("name, key", [
    ("openai/whisper-large-v3", "openai/whisper-large-v3"),
    ("whisper-large-v3", "openai/whisper-large-v3"),
    ("large-v3", "openai/whisper-large-v3"),
    ("Large-V2", "openai/whisper-large-v2"),
    ("whisper_large_v2", "openai/whisper-large-v2"),
    ("turbo", "openai/whisper-large-v3-turbo"),
    ("openai/whisper-large-v3-turbo", "openai/whisper-large-v3-turbo"),
    ("base", "openai/whisper-base"),
    ("bundled:whisper-base", "openai/whisper-base"),  # our CTranslate2 conversion of openai/whisper-base
    ("Systran/faster-whisper-medium", "openai/whisper-medium"),
    ("ct2:Systran/faster-whisper-small", "openai/whisper-small"),
    ("ct2:/models/whisper-small-ct2", "openai/whisper-small"),
    ("/cache/hub/models--openai--whisper-tiny/snapshots/0123abc", "openai/whisper-tiny"),
    ("bundled:whisper-tiny", None),  # not a bundled model
    ("ct2:/work/runs/demo-ft/best", None),
    ("demo-ft/best (step 24)", None),
    ("/models/base", None),  # a bare size as a folder name says nothing
    ("/models/whisper-base-zh-finetuned", None),
    ("BELLE-2/Belle-whisper-large-v3-zh", None),
    ("someone/whisper-base", None),
    ("distil-whisper/distil-large-v3", None),
    ("", None),
])
def test_model_key(name, key):
    assert model_key(name) == key


# ------------------------------------------------------------------ protocol differences

NUMS_OURS = "numbers: they score numbers as written; we read digits as Chinese numerals"


@pytest.mark.parametrize("theirs, ours, expected", [
    (Protocol(), "zh-v1", [
        "normalization not stated by the source (ours, zh-v1: punctuation removed, T→S, digits read as Chinese "
        "numerals, spaces ignored, Latin lower-cased)",
        "decoding not stated by the source (we score what you ran)"]),
    (Protocol(punctuation="kept", t2s="no", numbers="as-written", spaces="counted", case="as written",
              decoding="beam 5"), "zh-v1", [
        "they keep punctuation; we remove it", "they do not convert Traditional to Simplified; we do", NUMS_OURS,
        "they count spaces as characters; we ignore spaces", "case: they keep Latin case; we lower-case Latin letters",
        "decoding: beam 5 (we score what you ran)"]),
    (Protocol(punctuation="removed", t2s="yes", numbers="to-chinese", spaces="ignored", case="lowercased",
              decoding="greedy"), "zh-v1", ["decoding: greedy (we score what you ran)"]),
    (Protocol(punctuation="removed", t2s="yes", numbers="as-written", spaces="ignored", case="as-written",
              decoding="greedy"), "punct-t2s", ["decoding: greedy (we score what you ran)"]),
    (Protocol(punctuation="removed", t2s="yes", numbers="as-written", spaces="ignored", case="as-written",
              decoding="greedy"), "whisper-basic", [
        "they convert Traditional to Simplified; we do not",
        "case: they keep Latin case; we lower-case Latin letters", "decoding: greedy (we score what you ran)"]),
    (Protocol(punctuation="removed", t2s="yes"), "zh-v1", [
        "number handling not stated by the source",
        "whether spaces count as characters is not stated by the source",
        "case handling not stated by the source", "decoding not stated by the source (we score what you ran)"]),
    (Protocol(punctuation="removed", numbers="to-digits", spaces="ignored", case="lowercase", tags="kept"),
     "none", [
         "they remove punctuation; we keep it", "Traditional→Simplified conversion not stated by the source",
         "numbers: they turn Chinese numerals into digits; we score numbers as written",
         "case: they lower-case Latin letters; we keep case",
         "decoding not stated by the source (we score what you ran)"]),
    (Protocol(punctuation="removed", t2s="yes", numbers="to-chinese", spaces="ignored", case="lowercased",
              tags="kept"), "zh-v1", [
        "tags such as [noise] or (笑): they keep them; we remove them",
        "decoding not stated by the source (we score what you ran)"]),
])
def test_protocol_differences(theirs, ours, expected):
    assert protocol_differences(theirs, ours) == expected


def test_profile_protocol_reads_profiles_json():
    assert (profile_protocol("zh-v1").punctuation, profile_protocol("zh-v1").numbers) == ("removed", "to-chinese")
    assert profile_protocol("zh-v1-keepnum").numbers == "as-written"
    assert profile_protocol("zh-v1-digits").numbers == "to-digits"
    assert (profile_protocol("none").punctuation, profile_protocol("none").t2s) == ("kept", "no")
    basic = profile_protocol("whisper-basic")
    assert (basic.punctuation, basic.t2s, basic.case) == ("removed", "no", "lowercased")
    with pytest.raises(AsrEvalError, match="unknown normalizer profile"):
        profile_protocol("zh-v9")


def test_packaged_protocols_compare_against_their_own_profile():
    # a source whose stated protocol picked punct-t2s differs from it at most in spaces and decoding
    for r in load_published():
        if r.protocol.asr_eval_profile == "punct-t2s":
            diffs = protocol_differences(r.protocol, "punct-t2s")
            assert all(d.startswith(("decoding", "they count spaces", "number handling", "whether spaces",
                                     "case handling")) for d in diffs), (r.source.id, diffs)
