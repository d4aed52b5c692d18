"""Train/test contamination (asr_eval.contamination, asr_eval.metrics.overlap): a crafted corpus whose
test split repeats, overlaps and avoids its train split by known amounts; the stored flags, the
slice `contaminated` in `score` output (a stub engine, no real model), in re-sliced stored runs, in
a gate and in the report, and a fine-tune's lineage check with its gain on the clean slice."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from asr_eval.metrics.overlap import TextIndex, overlap, suffix_array  # noqa: E402

TRAIN = ["今天天气很好我们去公园散步", "我们去北京看看长城", "火车站怎么走请告诉我", "这个问题非常重要需要讨论"]
# test utterance -> (raw reference, exact, longest shared n-gram, 8-gram share, flag at 0.5, flag at 0.2)
TEST = {
    "t0": ("我們去北京看看長城。", True, 9, 1.0, "exact", "exact"),          # Traditional + punctuation: normalized equal
    "t1": ("今天天气很好我们去公园跑步", False, 11, 4 / 6, "overlap", "overlap"),  # 散→跑: 4 of its 6 8-grams
    "t2": ("经济发展需要时间和耐心啊", False, 2, 0.0, "clean", "clean"),         # only 需要 is shared
    "t3": ("火车站在哪", False, 3, None, "clean", "clean"),                    # shorter than 8: no share
    "t4": ("这个问题非常重要需要讨论", True, 12, 1.0, "exact", "exact"),
    "t5": ("明天这个问题非常重要吗", False, 8, 1 / 4, "clean", "overlap"),       # 1 of 4 8-grams
}


def test_suffix_array_and_matching_lengths_against_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        texts = ["".join(rng.choice("abc") for _ in range(rng.randint(1, 10))) for _ in range(rng.randint(1, 5))]
        ix = TextIndex(texts)
        assert [ix.text[p:] for p in ix.sa] == sorted(ix.text[p:] for p in range(len(ix.text)))
        q = "".join(rng.choice("abcd") for _ in range(rng.randint(1, 9)))
        brute = [max((k for k in range(len(q) - i + 1) if any(q[i:i + k] in t for t in texts)), default=0)
                 for i in range(len(q))]
        assert ix.matching_lengths(q) == brute
    assert suffix_array("").size == 0


@pytest.mark.parametrize("utt", sorted(TEST))
def test_overlap_by_hand(utt):
    from asr_eval.metrics.align import chars
    from asr_eval.text import normalize

    raw, exact, longest, share, flag, flag_low = TEST[utt]
    ix = TextIndex(TRAIN)
    o = overlap(ix, chars(normalize(raw)))
    assert (o.exact, o.longest_ngram, o.flag) == (exact, longest, flag)
    assert o.ngram_share == (None if share is None else pytest.approx(share))
    assert overlap(ix, chars(normalize(raw)), threshold=0.2).flag == flag_low
    assert overlap(TextIndex([]), "今天天气很好我们去").flag == "clean"
    assert overlap(ix, "").flag == "clean"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from conftest import write_audio

    from asr_eval.corpus import open_source
    from asr_eval.shards import IngestOptions, ingest

    src = tmp_path_factory.mktemp("cont") / "src"
    lines = ["file_name,text,split,accent"]
    for i, t in enumerate(TRAIN):
        write_audio(src / f"r{i}.wav", 0.5, 16000, seed=i)
        lines.append(f"r{i}.wav,{t},train,north")
    for i, (u, (raw, *_)) in enumerate(sorted(TEST.items())):
        write_audio(src / f"{u}.wav", 0.5, 16000, seed=10 + i)
        lines.append(f"{u}.wav,{raw},test,{'north' if i % 2 else 'south'}")
    (src / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = src.parent / "corpus"
    ingest(open_source(str(src)), out, IngestOptions(workers=1), progress=False)
    (src.parent / "train.txt").write_text("\n".join(reversed(TRAIN)) + "\n\n", encoding="utf-8")
    return out


def _short(utt_id: str) -> str:
    return next(k for k in TEST if utt_id.endswith(k))


def test_check_stores_flags_and_the_slice(corpus, tmp_path):
    from asr_eval.contamination import check, training_source
    from asr_eval.slices import available_slices, membership_sql
    from asr_eval.store import connect

    con = connect(tmp_path / "s.duckdb")
    src = training_source(corpus, "train")
    assert len(src.texts) == 4
    rep = check(con, corpus, src, "auto")
    assert rep.split == "test" and rep.counts == {"exact": 2, "overlap": 1, "clean": 3}
    got = {_short(u): (e, lg, sh, f) for u, e, lg, sh, f in con.execute(
        "SELECT utt_id, exact, longest_ngram, ngram_share, flag FROM contamination").fetchall()}
    for k, (_, exact, longest, share, flag, _) in TEST.items():
        assert got[k][:2] == (exact, longest) and got[k][3] == flag
        assert got[k][2] == (None if share is None else pytest.approx(share))
    assert "contaminated" in available_slices(con, rep.corpus_id)
    members = dict(con.execute(f"SELECT utt_id, value FROM {membership_sql(['contaminated'])} m WHERE corpus_id = $c",
                               {"c": rep.corpus_id, "attrs": ["contaminated"]}).fetchall())
    assert sorted(members.values()) == ["(none)"] * 4 + ["clean"] * 3 + ["exact"] * 2 + ["overlap"]  # train: unchecked
    # the same texts from a file (any order, blank lines): the same source, the same flags
    fsrc = training_source(corpus.parent / "train.txt")
    assert fsrc.kind == "file" and fsrc.source_hash == src.source_hash
    # a lower threshold, the worst flag over sources wins in the slice
    check(con, corpus, training_source(corpus.parent / "train.txt", ngram=6), "test", 0.2)
    n_sources = con.execute("SELECT count(DISTINCT source_hash) FROM contamination").fetchall()[0][0]
    members = dict(con.execute(f"SELECT utt_id, value FROM {membership_sql(['contaminated'])} m WHERE corpus_id = $c",
                               {"c": rep.corpus_id, "attrs": ["contaminated"]}).fetchall())
    assert n_sources == 2 and members[next(u for u in members if u.endswith("t5"))] == "overlap"
    con.close()


def test_cli_contamination_json(corpus, tmp_path):
    from typer.testing import CliRunner

    from asr_eval.cli import _register_commands, app

    _register_commands()
    db = tmp_path / "s.duckdb"
    r = CliRunner().invoke(app, ["contamination", "--corpus", str(corpus), "--against", str(corpus), "--json",
                                 "--db", str(db)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["counts"] == {"exact": 2, "overlap": 1, "clean": 3} and out["split"] == "test" and out["n"] == 6
    assert [_short(x["utt_id"]) for x in out["flagged"]] == ["t4", "t0", "t1"]  # share, then longest n-gram
    r = CliRunner().invoke(app, ["contamination", "--corpus", str(corpus), "--against", str(corpus.parent / "train.txt"),
                                 "--threshold", "0.2", "--db", str(db)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "overlap" in r.output and "contaminated" in r.output
    r = CliRunner().invoke(app, ["contamination", "--corpus", str(corpus), "--against", str(tmp_path / "nope"),
                                 "--db", str(db)])
    assert r.exit_code != 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from asr_eval.models import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny") / "tiny80", num_mel_bins=80, seed=0)


def test_contaminated_slice_in_score_output(corpus, tiny, tmp_path):
    """Check first, then `asr-eval score` with the stub engine: the slice has a table of its own."""
    import fake_engine  # noqa: F401  (registers the stub engine)
    from typer.testing import CliRunner

    from asr_eval.cli import _register_commands, app

    _register_commands()
    db = tmp_path / "s.duckdb"
    r = CliRunner().invoke(app, ["contamination", "--corpus", str(corpus), "--against", str(corpus), "--db", str(db)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["score", "--corpus", str(corpus), "--model", str(tiny), "--engine", "fake",
                                 "--device", "cpu", "--n-boot", "50", "--db", str(db)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "by contaminated" in r.output
    from asr_eval.store import connect

    con = connect(db, read_only=True)
    rows = dict(con.execute("SELECT slice_value, n FROM slice_metrics WHERE slice_attr = 'contaminated'").fetchall())
    err = con.execute("SELECT count(*) FROM error_slices WHERE slice_attr = 'contaminated'").fetchall()[0][0]
    con.close()
    assert rows == {"clean": 3, "exact": 2, "overlap": 1} and err == 3


# ───────────────────────────── stored runs, the gate, a fine-tune's lineage, the report ─────────────────────────────

BASE_MODEL, FT_MODEL = "bundled:whisper-base", "local:ft@1"


def _hyp(ref: str, wrong: bool) -> str:
    return ("错" + ref[1:]) if wrong else ref


@pytest.fixture
def runs_store(corpus, tmp_path):
    """base: one substitution per test utterance; ft (fine-tuned from base): right on the contaminated
    utterances, the same as base on the clean ones — its whole gain comes from what it trained on."""
    import pyarrow as pa

    from asr_eval.scoring.analysis import analyse
    from asr_eval.store import connect
    from asr_eval.store.load import load_corpus, load_hypotheses, register_model, upsert_eval_run

    con = connect(tmp_path / "s.duckdb")
    cid = load_corpus(con, corpus)
    register_model(con, {"model_id": BASE_MODEL, "name": BASE_MODEL, "source": "bundled"})
    register_model(con, {"model_id": FT_MODEL, "name": "runs/ft/best", "source": "local", "base_model_id": BASE_MODEL,
                         "corpus_id": cid, "training_run_id": "tr-1", "step": 12})
    utts = con.execute("SELECT utt_id, text FROM utterances WHERE split = 'test' ORDER BY utt_id").fetchall()
    bad = {"t0", "t1", "t4"}
    for i, (run, model) in enumerate((("base", BASE_MODEL), ("ft", FT_MODEL))):
        hyps = [_hyp(t, run == "base" or _short(u) not in bad) for u, t in utts]
        load_hypotheses(con, run, pa.table({"utt_id": [u for u, _ in utts], "hyp_raw": hyps}))
        upsert_eval_run(con, {"run_id": run, "corpus_id": cid, "split": "test", "model_id": model, "status": "done",
                              "finished_at": f"2026-01-01 00:00:0{i}"})
    analyse(con, ["base", "ft"], "zh-v1", n_boot=200)
    return con, cid


def test_reslice_adds_the_slice_to_stored_runs_and_the_gate(runs_store, corpus):
    from asr_eval.contamination import check, reslice, training_source
    from asr_eval.gate import evaluate_gate

    con, cid = runs_store
    assert not con.execute("SELECT 1 FROM slice_metrics WHERE slice_attr = 'contaminated'").fetchall()
    check(con, corpus, training_source(corpus, "train"))
    assert sorted(reslice(con, cid)) == ["base", "ft"]
    sm = dict(con.execute("SELECT slice_value, cer FROM slice_metrics WHERE run_id = 'ft' AND "
                          "slice_attr = 'contaminated'").fetchall())
    assert sm["exact"] == 0 and sm["clean"] > 0
    cmp = dict(con.execute("SELECT slice_value, delta FROM comparisons WHERE metric = 'cer' AND "
                           "slice_attr = 'contaminated'").fetchall())
    assert cmp["clean"] == 0 and cmp["exact"] < 0
    assert con.execute("SELECT count(*) FROM error_slices WHERE slice_attr = 'contaminated'").fetchall()[0][0] == 6
    assert con.execute("SELECT count(*) FROM slice_metrics WHERE slice_attr = 'accent'").fetchall()[0][0] == 4  # kept
    g = evaluate_gate(con, "base", "ft", margin=0.5, slices=["contaminated"], n_boot=200)
    assert {s.value for s in g.slices if s.attr == "contaminated"} == {"clean", "exact", "overlap"}
    con.close()


def test_finetune_lineage_warns_in_the_report_with_the_clean_gain(runs_store, corpus, tmp_path):
    from asr_eval.contamination import check_finetune, lineage
    from asr_eval.report import ReportOptions, render
    from asr_eval.train.selection import SELECTION_FILE

    con, _ = runs_store
    out = tmp_path / "ft-run"
    out.mkdir()
    train_ids = [u for (u,) in con.execute("SELECT utt_id FROM utterances WHERE split = 'train' ORDER BY utt_id"
                                           ).fetchall()]
    # a carved dev utterance never trained: 火车站… is held out, so t3 (火车站在哪) shares nothing any more
    held = next(u for u, t in con.execute("SELECT utt_id, text FROM utterances WHERE split = 'train'").fetchall()
                if t == TRAIN[2])
    (out / SELECTION_FILE).write_text(json.dumps({"utt_ids": [held]}), encoding="utf-8")
    run = {"corpus_dir": str(corpus), "train_split": "train", "training_run_id": "tr-1",
           "models": [{"model_id": FT_MODEL}]}
    rep = check_finetune(con, run, out)
    assert rep is not None and rep.split == "test" and len(train_ids) == 4 and len(rep.source.texts) == 3
    assert rep.counts == {"exact": 2, "overlap": 1, "clean": 3}
    assert {_short(r["utt_id"]): r["longest_ngram"] for r in rep.rows}["t3"] == 0
    (row,) = lineage(con, [FT_MODEL])
    assert (row["eval_split"], row["n_utts"], row["n_exact"], row["n_overlap"], row["n_clean"]) == ("test", 6, 2, 1, 3)
    assert check_finetune(con, {"corpus_dir": str(tmp_path / "gone")}) is None
    con.close()
    from asr_eval.store import connect

    con = connect(tmp_path / "s.duckdb", read_only=True)
    html, ctx = render(con, ReportOptions(worst_n=1, audio_cap_bytes=0))
    con.close()
    (w,) = ctx["taxonomy"].warnings
    assert w["run"].run_id == "ft" and w["n_exact"] == 2 and w["n_overlap"] == 1
    assert w["gain_all"]["delta"] < 0 and w["gain_clean"]["delta"] == pytest.approx(0.0)
    assert w["gain_clean"]["n"] == 3
    assert "Scored on a contaminated split." in html and 'class="gain-clean">+0.00<' in html
    slices = html[html.index('<section id="slices">'):html.index('<section id="error-kinds">')]
    assert "contaminated" in slices  # the slice table of the per-slice section
