"""The Mandarin error taxonomy on MER units (asr_eval.metrics.taxonomy), the pinyin error rate, the
stored per-run/per-slice rows (asr_eval.scoring.errors, the v6 migration), `asr-eval errors` and the
report section — hand-built pairs with known answers, table-driven like jiwer's tests; no model."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from asr_eval.metrics import score_pair  # noqa: E402
from asr_eval.metrics.taxonomy import (  # noqa: E402
    ALL_BUCKETS, CLASSES, classify_pair, classify_substitution, near_homophones, pinyin_counts,
    pinyin_error_rate, readings, split_syllable, unit_edits,
)

# (reference, hypothesis, the class of its one substitution) — every class, polyphones from context
SUBSTITUTIONS = [
    ("去银行取钱", "去银航取钱", "homophone"),       # 行 is háng in 银行: 航 háng is a homophone
    ("行走很累", "航走很累", "other"),               # 行 is xíng in 行走: 航 háng is not
    ("我在家", "我再家", "homophone"),               # 在/再 zài
    ("他想买东西", "他想卖东西", "tone"),             # 买 mǎi / 卖 mài
    ("四个人", "十个人", "near_homophone"),           # 四 sì / 十 shí: s/sh (tones differ too)
    ("很难过", "很兰过", "near_homophone"),           # n/l
    ("如果", "路果", "near_homophone"),               # r/l
    ("平安", "平昂", "near_homophone"),               # an/ang
    ("天气", "地气", "other"),
    ("我有abc", "我有abd", "latin"),                  # one Latin word, one unit
]


@pytest.mark.parametrize("ref,hyp,cls", SUBSTITUTIONS, ids=[f"{r}->{h}" for r, h, _ in SUBSTITUTIONS])
def test_each_substitution_class(ref, hyp, cls):
    e = classify_pair(ref, hyp)
    assert {k: v for k, v in e.counts.items() if v} == {cls: 1}
    assert [c.cls for c in e.confusions] == [cls]


def test_polyphone_is_read_from_the_sentence():
    assert readings("银行")[1] == "hang2" and readings("行走")[0] == "xing2"
    (a,) = classify_pair("去银行", "去银航").confusions
    (b,) = classify_pair("行走", "航走").confusions
    assert (a.ref, a.ref_pinyin, a.hyp_pinyin) == ("行", "hang2", "hang2")
    assert (b.ref, b.ref_pinyin, b.hyp_pinyin) == ("行", "xing2", "hang2")
    assert readings("ab 我") == (None, None, None, "wo3")  # one reading per character, None off Han


@pytest.mark.parametrize("ref,hyp,cls", [
    ("个", "個", "variant"), ("说", "說", "variant"), ("A", "ａ", "variant"),       # t2s, width + case
    ("2", "二", "number_format"), ("二", "两", "number_format"), ("0", "十", "number_format"),
    ("零", "〇", "number_format"),
    ("四", "十", "near_homophone"),  # both numerals of one system: a different number, not a format
    ("二", "三", "other"), ("7", "8", "other"),
    ("a", "的", "latin"), ("在", "再", "homophone"),
])
def test_classifier_directly(ref, hyp, cls):
    assert classify_substitution(ref, hyp, readings(ref)[0], readings(hyp)[0]) == cls


def test_variant_through_a_profile_without_script_conversion():
    """zh-v1 converts 個 → 个 (no error); the `none` profile lets it through: a variant."""
    assert score_pair("一个苹果", "一個苹果", "zh-v1").cer_s == 0
    s = score_pair("一个苹果", "一個苹果", "none")
    assert s.cer_s == 1
    assert classify_pair(s.ref_norm, s.hyp_norm).counts["variant"] == 1


def test_number_format_through_a_profile_that_keeps_numbers():
    s = score_pair("2个苹果", "二个苹果", "zh-v1-keepnum")
    assert (s.ref_norm, s.hyp_norm, s.cer_s) == ("2个苹果", "二个苹果", 1)
    assert classify_pair(s.ref_norm, s.hyp_norm).counts["number_format"] == 1
    assert score_pair("2个苹果", "二个苹果", "zh-v1").cer_s == 0  # the default reads digits as numerals


# Code-switched sentences (normalized with zh-v1-keepnum): (ref, hyp, [(ref unit, hyp unit, class)], buckets).
# A Latin word or a number is one MER unit and takes the units that replaced it; Han↔Han keeps its pinyin class.
CODE_SWITCHED = [
    ("我说hello", "我说哈喽", [("hello", "哈喽", "latin")], {"latin": 2}),  # 喽 is part of it, not a particle
    ("哈喽你好", "hello你好", [("哈喽", "hello", "latin")], {"latin": 2}),
    ("请上Google查询", "请上谷歌查询", [("google", "谷歌", "latin")], {"latin": 2}),
    ("我用iPhone", "我用爱疯了", [("iphone", "爱疯了", "latin")], {"latin": 3}),
    ("发email给我", "发一妹儿给我", [("email", "一妹儿", "latin")], {"latin": 3}),
    ("用hello打招呼", "要哈喽打招呼", [("用", "要", "other"), ("hello", "哈喽", "latin")], {"latin": 2, "other": 1}),
    ("hello打", "哈喽大", [("hello", "哈喽", "latin"), ("打", "大", "tone")], {"latin": 2, "tone": 1}),
    ("hello world", "哈喽沃德", [("hello world", "哈喽沃德", "latin")], {"latin": 4}),
    ("New York很大", "NewYork很大", [("new york", "newyork", "latin")], {"latin": 2}),
    ("我有abc", "我有abd", [("abc", "abd", "latin")], {"latin": 1}),
    ("2024年", "二零二四年", [("2024", "二零二四", "number_format")], {"number_format": 4}),
    ("买了3个", "买了三个", [("3", "三", "number_format")], {"number_format": 1}),
    ("在银行说hello", "再银行说hello", [("在", "再", "homophone")], {"homophone": 1}),
    ("他买了iPad", "他卖了iPad", [("买", "卖", "tone")], {"tone": 1}),
    ("我说CD好", "我说咯咯咯咯咯好", [("cd", "咯咯", "latin")], {"latin": 2, "insertion": 3}),  # a loop after a word:
    # the word takes at most one unit per letter (at least two); the rest stay insertions
    ("我爱Python编程", "我爱编程", [], {"deletion": 1}),  # a deleted word is one deletion
    ("OK吗", "OK", [], {"particle": 1}),
]


@pytest.mark.parametrize("ref,hyp,pairs,counts", CODE_SWITCHED, ids=[f"{r}->{h}" for r, h, _, _ in CODE_SWITCHED])
def test_code_switched_confusions_are_on_mer_units(ref, hyp, pairs, counts):
    s = score_pair(ref, hyp, "zh-v1-keepnum")
    e = classify_pair(s.ref_norm, s.hyp_norm)
    assert [(c.ref, c.hyp, c.cls) for c in e.confusions] == pairs
    assert {k: v for k, v in e.counts.items() if v} == counts
    assert e.errors == s.mer_s + s.mer_d + s.mer_i and e.py_n == s.mer_n  # the buckets sum to the MER errors
    # the report's top confusions group the same way (substitutions; deletions and insertions one unit each)
    edits = unit_edits(s.ref_norm, s.hyp_norm)
    assert [(r, h) for op, r, h in edits if op == "S"] == [(r, h) for r, h, _ in pairs]
    assert len(edits) - len(pairs) == sum(v for k, v in counts.items() if k in ("particle", "deletion", "insertion"))


def test_a_word_keeps_the_readings_of_what_replaced_it():
    (c,) = classify_pair("我说hello", "我说哈喽").confusions
    assert (c.ref_pinyin, c.hyp_pinyin) == (None, "ha1 lou2")
    (c,) = classify_pair("银行卡", "银行card").confusions
    assert (c.ref, c.hyp, c.ref_pinyin, c.hyp_pinyin, c.cls) == ("卡", "card", "ka3", None, "latin")


@pytest.mark.parametrize("syl,split", [("zhang1", ("zh", "ang")), ("yan4", ("y", "an")), ("an1", ("", "an")),
                                       ("shi2", ("sh", "i")), ("n2", ("", "n")), ("lve4", ("l", "ve"))])
def test_split_syllable(syl, split):
    assert split_syllable(syl) == split


@pytest.mark.parametrize("a,b,near", [
    ("zi4", "zhi4", True), ("ci2", "chi2", True), ("si4", "shi2", True), ("nan2", "lan2", True), ("fu2", "hu2", True),
    ("ru4", "lu4", True), ("ban1", "bang1", True), ("men2", "meng2", True), ("xin1", "xing1", True),
    ("jian4", "jiang4", True), ("guan1", "guang1", True),
    ("zhan1", "chang1", False),  # initial and final both differ
    ("ba1", "pa1", False), ("xing2", "hang2", False), ("ma1", "ma3", False),
])
def test_near_homophones(a, b, near):
    assert near_homophones(a, b) is near


@pytest.mark.parametrize("ref,hyp,counts", [
    ("你好吗", "你好", {"particle": 1}),                      # deleted particle
    ("你好", "你好呢啊", {"particle": 2}),                    # inserted particles
    ("今天天气很好", "今天天气", {"deletion": 2}),              # deleted non-particles
    ("好", "好人", {"insertion": 1}),
    ("他走了吗", "他走", {"particle": 2}),
    ("我的书", "我书", {"particle": 1}),
])
def test_particles_and_other_deletions(ref, hyp, counts):
    e = classify_pair(ref, hyp)
    got = {k: v for k, v in e.counts.items() if v}
    s = score_pair(ref, hyp, "zh-v1")
    assert sum(got.values()) == s.mer_s + s.mer_d + s.mer_i == s.cer_s + s.cer_d + s.cer_i  # Han only: MER = CER
    assert got == counts


PER_CASES = [  # (refs, hyps, toneless errors, errors with tones, reference syllables)
    (["我在家"], ["我再家"], 0, 0, 3),               # homophone: no pinyin error
    (["他想买东西"], ["他想卖东西"], 0, 1, 5),        # tone: an error only with tones
    (["四个人"], ["十个人"], 1, 1, 3),
    (["你好吗"], ["你好"], 1, 1, 3),
    (["我在家", "他想买东西", "四个人"], ["我再家", "他想卖东西", "十个人"], 1, 2, 11),
    (["去银行"], ["去银航"], 0, 0, 3),               # 行 read háng in context
    (["我有abc"], ["我有abd"], 1, 1, 3),             # a word is one token (itself), like in MER
    (["我说hello"], ["我说哈喽"], 2, 2, 3),          # hello against ha lou: a substitution and an insertion
]


@pytest.mark.parametrize("refs,hyps,e0,e1,n", PER_CASES)
def test_pinyin_error_rate_by_hand(refs, hyps, e0, e1, n):
    assert sum(pinyin_counts(r, h)[0] for r, h in zip(refs, hyps)) == n
    assert pinyin_error_rate(refs, hyps) == pytest.approx(e0 / n)
    assert pinyin_error_rate(refs, hyps, tones=True) == pytest.approx(e1 / n)
    per_utt = [classify_pair(r, h) for r, h in zip(refs, hyps)]
    assert sum(u.py_err for u in per_utt) == e0 and sum(u.pyt_err for u in per_utt) == e1


# ───────────────────────────── the store ─────────────────────────────

REFS = {"u00": "我在银行工作", "u01": "他想买东西", "u02": "四个人", "u03": "你好吗", "u04": "今天天气很好",
        "u05": "abc测试"}
HYPS = {
    "base": {"u00": "我再银航工作", "u01": "他想卖东西", "u02": "十个人", "u03": "你好", "u04": "今天天气",
             "u05": "abd测试"},
    "ft": {"u00": "我在银行工作", "u01": "他想卖东西", "u02": "四个人", "u03": "你好吗", "u04": "今天天气很好了",
           "u05": "abc测试"},
}
BASE_MODEL, FT_MODEL = "bundled:whisper-base", "local:ft@1"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from asr_eval.scoring.analysis import analyse
    from asr_eval.store import connect
    from asr_eval.store.load import register_model, upsert_eval_run

    db = tmp_path_factory.mktemp("tax") / "s.duckdb"
    con = connect(db)
    con.execute("INSERT INTO corpora (corpus_id, name, path, index_sha256, n_utts, splits, slice_columns, source) "
                "VALUES ('c@1', 'c', '/nonexistent', '1', 6, '{\"test\": 6}', '[\"grp\"]', '{}')")
    for u, t in REFS.items():
        con.execute("INSERT INTO utterances (corpus_id, utt_id, split, duration_s, text) VALUES ('c@1', ?, 'test', 2, ?)",
                    [u, t])
        con.execute("INSERT INTO utterance_attrs VALUES ('c@1', ?, 'grp', ?)", [u, "a" if u < "u03" else "b"])
    register_model(con, {"model_id": BASE_MODEL, "name": BASE_MODEL, "source": "bundled"})
    register_model(con, {"model_id": FT_MODEL, "name": "runs/ft/best", "source": "local", "base_model_id": BASE_MODEL,
                         "corpus_id": "c@1", "training_run_id": "tr-1", "step": 12})
    for i, (run, model) in enumerate((("base", BASE_MODEL), ("ft", FT_MODEL))):
        upsert_eval_run(con, {"run_id": run, "corpus_id": "c@1", "split": "test", "model_id": model, "status": "done",
                              "finished_at": f"2026-01-01 00:00:0{i}"})
        con.executemany("INSERT INTO hypotheses (run_id, utt_id, hyp_raw) VALUES (?, ?, ?)",
                        [[run, u, h] for u, h in HYPS[run].items()])
    analyse(con, ["base", "ft"], "zh-v1", n_boot=200)
    con.close()
    return db


def _con(db):
    from asr_eval.store import connect

    return connect(db, read_only=True)


def test_stored_taxonomy_of_a_run(store):
    from asr_eval.scoring.errors import run_summary, top_confusions

    con = _con(store)
    s = run_summary(con, "base", "zh-v1")
    counts = {k: v["count"] for k, v in s["classes"].items() if v["count"]}
    assert counts == {"homophone": 2, "tone": 1, "near_homophone": 1, "latin": 1, "particle": 1}
    assert {k: v["count"] for k, v in s["unclassified"].items()} == {"deletion": 2, "insertion": 0}
    # 28 reference characters, 26 MER units (abc is one); abc → abd is one Latin error
    assert (s["errors"], s["ref_chars"], s["ref_units"], s["n"]) == (8, 28, 26, 6)
    assert s["mer"] == pytest.approx(8 / 26)
    assert s["classes"]["homophone"]["share"] == pytest.approx(2 / 8)
    assert set(s["classes"]) == set(CLASSES)
    # pinyin error rate: toneless 十/四 + 吗 + 很好 + abc→abd = 5; with tones also 卖/买 = 6 (of 26 units)
    assert s["pinyin_error_rate"]["toneless"] == pytest.approx(5 / 26)
    assert s["pinyin_error_rate"]["tones"] == pytest.approx(6 / 26)
    assert {(c["ref_tok"], c["hyp_tok"], c["class"]) for c in top_confusions(con, "base", "zh-v1")} >= {
        ("abc", "abd", "latin")}
    # per utterance, the buckets sum to MER S + D + I of the stored score
    rows = con.execute(f"""SELECT e.utt_id, {' + '.join('e.' + b for b in ALL_BUCKETS)}, s.mer_s + s.mer_d + s.mer_i
                           FROM utterance_errors e JOIN utterance_scores s USING (run_id, utt_id, normalizer)
                           WHERE run_id = 'base'""").fetchall()
    assert len(rows) == 6 and all(a == b for _, a, b in rows)
    con.close()


def test_pinyin_interval_reuses_the_cer_bootstrap(store):
    """The stored interval is bootstrap_ci on the per-utterance pinyin counts, resampled like CER."""
    from asr_eval.metrics.stats import bootstrap_ci

    con = _con(store)
    e, n = map(np.array, zip(*con.execute("SELECT py_err, py_n FROM utterance_errors WHERE run_id = 'base' "
                                          "ORDER BY utt_id").fetchall()))
    ci = bootstrap_ci(e, n, n_boot=200, seed=0)
    lo, hi, method, n_boot = con.execute("SELECT per_lo, per_hi, ci_method, n_boot FROM error_slices WHERE "
                                         "run_id = 'base' AND slice_attr = '_all'").fetchone()
    assert (lo, hi, method, n_boot) == (pytest.approx(ci.lo), pytest.approx(ci.hi), "utterance", 200)
    # slices from the one membership definition: grp=a holds u00..u02
    a = con.execute("SELECT n, homophone, tone, near_homophone, errors FROM error_slices WHERE run_id = 'base' "
                    "AND slice_attr = 'grp' AND slice_value = 'a'").fetchone()
    assert a == (3, 2, 1, 1, 4)
    con.close()


def test_confusions_with_pinyin_and_what_the_fine_tune_fixed(store):
    from asr_eval.scoring.errors import confusion_changes, top_confusions

    con = _con(store)
    top = {(c["ref_tok"], c["hyp_tok"]): c for c in top_confusions(con, "base", "zh-v1")}
    assert top[("行", "航")]["ref_pinyin"] == "hang2" and top[("行", "航")]["class"] == "homophone"
    assert top[("买", "卖")]["hyp_pinyin"] == "mai4" and top[("四", "十")]["class"] == "near_homophone"
    ch = confusion_changes(con, "base", "ft", "zh-v1")
    assert {(x["ref_tok"], x["hyp_tok"], x["delta"]) for x in ch["fixed"]} == {
        ("在", "再", -1), ("行", "航", -1), ("四", "十", -1), ("abc", "abd", -1)}
    assert ch["introduced"] == []  # 买→卖 stays; the inserted 了 is no substitution
    con.close()


def test_rescore_recomputes_the_taxonomy(store, tmp_path):
    import shutil

    from asr_eval.scoring import rescore
    from asr_eval.store import connect

    db = tmp_path / "copy.duckdb"
    shutil.copy(store, db)
    con = connect(db)
    con.execute("DELETE FROM utterance_errors")
    rescore(con, "zh-v1-lenient", ["base"], n_boot=50)
    got = con.execute("SELECT count(*), sum(particle) FROM utterance_errors WHERE run_id = 'base' AND "
                      "normalizer = 'zh-v1-lenient'").fetchone()
    con.close()
    assert got[0] == 6 and got[1] == 1


def test_a_v5_store_is_classified_again_on_mer_units_when_opened(store, tmp_path):
    """Schema v6 drops the character-level taxonomy rows of an older store and classifies those runs
    again (same slices, bootstrap size and interval method), even when the store is opened read-only."""
    import shutil

    import duckdb

    from asr_eval.store import connect

    db = tmp_path / "v5.duckdb"
    shutil.copy(store, db)
    raw = duckdb.connect(str(db))  # make it what a v5 store holds: character units, no ref_units
    raw.execute("ALTER TABLE error_slices DROP COLUMN ref_units")
    raw.execute("UPDATE error_confusions SET ref_tok = 'c', hyp_tok = 'd' WHERE ref_tok = 'abc'")
    raw.execute("UPDATE utterance_errors SET py_n = 5 WHERE utt_id = 'u05'")
    raw.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    raw.close()
    con = connect(db, read_only=True)
    try:
        from asr_eval.store.schema import SCHEMA_VERSION

        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        pairs = {r[:2] for r in con.execute("SELECT ref_tok, hyp_tok, run_id FROM error_confusions").fetchall()}
        assert ("abc", "abd") in pairs and ("c", "d") not in pairs
        got = con.execute("SELECT slice_attr, slice_value, ref_units, n_boot, ci_method FROM error_slices "
                          "WHERE run_id = 'base' ORDER BY ALL").fetchall()
        assert got == [("_all", "all", 26, 200, "utterance"), ("grp", "a", 14, 200, "utterance"),
                       ("grp", "b", 12, 200, "utterance")]
        assert con.execute("SELECT py_n FROM utterance_errors WHERE run_id = 'base' AND utt_id = 'u05'").fetchone() == (3,)
    finally:
        con.close()


def test_cli_errors_json_and_tables(store):
    from typer.testing import CliRunner

    from asr_eval.cli import _register_commands, app

    _register_commands()
    r = CliRunner().invoke(app, ["errors", "--run", "base", "--run", "ft", "--json", "--db", str(store)])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    base = data["runs"][0]
    assert list(base["classes"]) == list(CLASSES)
    assert base["classes"]["tone"] == {"count": 1, "share": pytest.approx(1 / 8)}
    per = base["pinyin_error_rate"]  # a thin run (26 units): point estimates, no interval
    assert per["reliable"] is False and per["toneless_ci"] is None and per["tones_ci"] is None
    assert per["toneless"] == pytest.approx(5 / 26)
    assert {(x["ref_tok"], x["hyp_tok"]) for x in data["changes"]["fixed"]} >= {("在", "再"), ("行", "航")}
    r = CliRunner().invoke(app, ["errors", "--run", "base", "--db", str(store)], env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    assert "near-homophone" in r.output and "hang2 → hang2" in r.output and "pinyin ER" in r.output


def test_report_section(store):
    from asr_eval.report import ReportOptions, render

    con = _con(store)
    html, ctx = render(con, ReportOptions(worst_n=1, audio_cap_bytes=0))
    con.close()
    assert '<a href="#error-kinds">What kind of errors</a>' in html
    start = html.index('<section id="error-kinds">')
    sec = html[start:html.index("</section>", start)]
    tx = ctx["taxonomy"]
    assert [r["run"].run_id for r in tx.runs] == ["base", "ft"]
    # stacked bars: one rect per class per run, widths proportional to class / reference units
    rects = re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)" height="16" fill="([^"]+)"><title>([^<]*)</title>',
                       sec)
    assert len(rects) == 2 * len(ALL_BUCKETS)
    homo = [float(w) for _, w, _, t in rects if "homophone 7.69%" in t]
    assert homo and homo[0] > 0  # 2 of 26 units
    row = re.search(r'<tr data-run="base">(.*?)</tr>', sec, re.DOTALL).group(1)
    assert "30.77%" in row  # MER 8/26
    assert "19.23%" in row and "23.08%" in row  # pinyin ER toneless 5/26, with tones 6/26
    assert "hang2 → hang2" in sec and "fine-tune against its base model" in sec
    assert "<script" not in sec


def test_classify_many_over_workers_matches_one_process(monkeypatch):
    from asr_eval.metrics import taxonomy

    pairs = [(r, h) for r, h, _ in SUBSTITUTIONS] + [("你好吗", "你好"), ("好", "好人"), ("我说hello", "我说哈喽")]
    one = taxonomy.classify_many(pairs, workers=1)
    monkeypatch.setattr(taxonomy, "PARALLEL_MIN", 4)
    monkeypatch.setattr(taxonomy, "CHUNK", 5)
    assert taxonomy.classify_many(pairs, workers=2) == one
