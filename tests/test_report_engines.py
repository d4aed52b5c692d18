"""The engine axis in the report and the CLI: parity between runs of the same weights, decoding
statistics (fallbacks, cut-offs) per run and per slice, the preprocessing-mismatch note, labels."""

from __future__ import annotations

import re

import pyarrow as pa
from test_scoring import _corpus

from asr_eval.report import build_report
from asr_eval.scoring import analyse
from asr_eval.scoring.parity import ParityPair, parity_pairs, preprocessing_mismatches
from asr_eval.store import connect
from asr_eval.store.labels import run_labels
from asr_eval.store.load import load_corpus, load_hypotheses, register_model, upsert_eval_run

# test split of _corpus: u00 今天天气很好, u02 我们去北京, u04 你好世界, u06 这是一个测试, u08 今天天气很好, u10 我们去北京
REFS = {"u00": "今天天气很好", "u02": "我们去北京", "u04": "你好世界", "u06": "这是一个测试", "u08": "今天天气很好",
        "u10": "我们去北京"}


def _run(con, cid, run_id, engine, compute, preprocessing, recipe, hyps, fallbacks=None, cut=None, model="m@1"):
    upsert_eval_run(con, {"run_id": run_id, "corpus_id": cid, "split": "test", "model_id": model, "status": "done",
                          "engine": engine, "compute_type": compute, "preprocessing": preprocessing, "recipe": recipe,
                          "provenance": {"engine": {"engine": engine, "threads": 2}}})
    ids = sorted(hyps)
    load_hypotheses(con, run_id, pa.table({
        "utt_id": ids, "hyp_raw": [hyps[u] for u in ids], "n_tokens": [3] * len(ids),
        "n_fallbacks": [(fallbacks or {}).get(u, 0) for u in ids], "cut_off": [u in (cut or ()) for u in ids]}))


def _store(tmp_path):
    corpus = _corpus(tmp_path)
    db = tmp_path / "s.duckdb"
    con = connect(db)
    cid = load_corpus(con, corpus)
    register_model(con, {"model_id": "m@1", "name": "/x/runs/ft/best", "source": "local", "step": 7,
                         "training_run_id": "tr1", "train_preprocessing": "pad-audio"})
    a = dict(REFS)
    b = {**REFS, "u02": "我们去背景", "u04": "你好"}  # 2 of 6 differ: 2 substitutions + 2 deletions
    _run(con, cid, "ra", "transformers", "float32", "pad-audio", "greedy", a)
    _run(con, cid, "rb", "ctranslate2", "int8", "pad-features", "fallback", b, fallbacks={"u04": 2, "u06": 1}, cut={"u04"})
    analyse(con, ["ra", "rb"], n_boot=200)
    return con, db


def test_parity_pairs_count_identical_transcripts_and_take_the_paired_delta(tmp_path):
    con, _ = _store(tmp_path)
    (p,) = parity_pairs(con, ["ra", "rb"])
    assert (p.run_a, p.run_b, p.n, p.n_identical) == ("ra", "rb", 6, 4)
    assert p.differs_in == ["engine", "compute_type", "preprocessing", "recipe"]
    assert abs(p.delta - 4 / 32) < 1e-9  # 4 character errors over 32 reference characters
    assert p.delta_lo <= p.delta <= p.delta_hi
    assert [d.utt_id for d in p.divergent] == ["u04", "u02"]  # most divergent first (CER 0.5 vs 0.4)
    (q,) = parity_pairs(con, ["rb", "ra"])  # shown flipped: the sign and the bounds flip with it
    assert abs(q.delta + p.delta) < 1e-12 and abs(q.delta_lo + p.delta_hi) < 1e-12
    assert preprocessing_mismatches(con, ["ra", "rb"]) == [("rb", "pad-audio", "pad-features")]
    labels = run_labels(con, ["ra", "rb"])
    assert labels["ra"].endswith("transformers float32 · pad-audio · greedy")
    assert labels["rb"].endswith("ctranslate2 int8 · pad-features · fallback")
    assert labels["ra"].startswith("ft/best")
    con.close()


def test_runs_on_other_engines_are_checked_against_the_reference_with_a_fidelity_verdict(tmp_path):
    from asr_eval.scoring.parts import RunSpec, with_reference

    con, db = _store(tmp_path)
    cid = con.execute("SELECT corpus_id FROM eval_runs WHERE run_id = 'ra'").fetchone()[0]
    _run(con, cid, "rc", "ctranslate2", "float32", "pad-audio", "greedy", dict(REFS))
    _run(con, cid, "rd", "openvino", "int8", "pad-audio", "greedy", {**REFS, "u02": "我们去背景", "u04": "你好"})
    analyse(con, ["rd", "ra", "rc"], n_boot=200)
    pairs = {(p.run_a, p.run_b): p for p in parity_pairs(con, ["rd", "ra", "rc"])}
    assert set(pairs) == {("ra", "rd"), ("ra", "rc"), ("rd", "rc")}  # the reference is A whatever the order
    assert pairs["ra", "rc"].fidelity == ("faithful", "transcripts identical on 6/6")
    assert pairs["ra", "rd"].fidelity == ("undecided", "2/6 transcripts differ; too little data for a CER interval")
    assert pairs["rd", "rc"].fidelity is None  # neither is the reference
    con.close()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", build_report(db, tmp_path / "r.html").path.read_text("utf-8")))
    assert "✔ faithful to the reference" in text and "? undecided to the reference" in text
    # the interval decides once there is enough data: Δ and bounds in CER points
    base = dict(run_a="a", run_b="b", model_id="m", n=100, n_identical=90, delta=0.012, reference_check=True)
    for lo, hi, status in [(-0.004, 0.03, "no measurable loss"), (0.002, 0.03, "worse"), (-0.03, -0.001, "better")]:
        got = ParityPair(**base, delta_lo=lo, delta_hi=hi).fidelity
        assert got[0] == status and got[1].startswith("10/100 transcripts differ; Δ CER +1.20 pts [")
    # --parity adds transformers float32 before each run that needs it, once
    specs = [RunSpec.make("m", engine="openvino", compute_type="int8"), RunSpec.make("m", engine="openvino"),
             RunSpec.make("m"), RunSpec.make("m", engine="transformers", compute_type="float16")]
    got = [(s.engine, s.compute_type) for s in with_reference(specs)]
    assert got == [("transformers", "float32"), ("openvino", "int8"), ("openvino", "auto"), ("transformers", "auto"),
                   ("transformers", "float16")]


def test_report_has_engine_parity_and_decoding_sections(tmp_path):
    con, db = _store(tmp_path)
    con.close()
    html = build_report(db, tmp_path / "r.html").path.read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", " ", html)
    text = re.sub(r"\s+", " ", text)
    assert "Engine parity" in text and "4 (66.7%)" in text  # identical transcripts
    assert "engine, compute_type, preprocessing, recipe" in text
    assert "Decoding" in text and "was fine-tuned with pad-audio preprocessing and scored with pad-features" in text
    # decoding table: rb has 6 utterances, 2 with fallback, 3 re-decodes, 1 cut off
    assert re.search(r"fallback 6 2 3 1", text)
    assert "ctranslate2 int8 · fallback · pad-features" in text  # headline engine · recipe column
    assert "engine identity" in text
