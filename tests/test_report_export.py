"""Exports: NeMo manifest JSONL, open_asr_leaderboard JSONL, slice-metric and comparison CSVs."""

from __future__ import annotations

import csv
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from asr_eval.export import export_all, leaderboard_name  # noqa: E402
from asr_eval.report.select import select  # noqa: E402
from asr_eval.store import connect  # noqa: E402
from report_fixtures import XSS_SCRIPT, build_store  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    fs = build_store(tmp / "s", n_utts=40, training=False, audio=False)
    return fs, export_all(fs.db, tmp / "out"), tmp / "out"


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_nemo_manifest(exported):
    fs, res, out = exported
    rows = _jsonl(out / "nemo" / f"{fs.run_ids['large-v2']}.jsonl")
    assert len(rows) == 40 and res.rows[f"{fs.run_ids['large-v2']}.jsonl"] == 40
    assert list(rows[0])[:4] == ["audio_filepath", "duration", "text", "pred_text"]
    con = connect(fs.db, read_only=True)
    want = con.execute("""
        SELECT u.source_path, u.duration_s, s.ref_norm, s.hyp_norm, u.text, h.hyp_raw FROM utterance_scores s
        JOIN utterances u USING (utt_id) JOIN hypotheses h USING (run_id, utt_id)
        WHERE s.run_id = ? AND s.utt_id = 'utt0005'""", [fs.run_ids["large-v2"]]).fetchone()
    con.close()
    row = next(r for r in rows if r["utt_id"] == "utt0005")
    assert (row["audio_filepath"], row["duration"], row["text"], row["pred_text"]) == want[:4]
    assert (row["text_raw"], row["pred_text_raw"], row["normalizer"]) == (want[4], want[5], "zh-v1")
    assert XSS_SCRIPT in row["text_raw"]  # data, not markup: exported verbatim
    empty = [r for r in rows if r["pred_text_raw"] is None]
    assert empty and all(r["pred_text"] == "" for r in empty)  # no output: empty prediction, still listed


def test_leaderboard_jsonl(exported):
    fs, _, out = exported
    con = connect(fs.db, read_only=True)
    sel = select(con)
    con.close()
    run = next(r for r in sel.runs if r.run_id == fs.run_ids["ft"])
    assert leaderboard_name(run) == "MODEL_runs-ft-zh-best_DATASET_demo_zh_test.jsonl"
    rows = _jsonl(out / "leaderboard" / leaderboard_name(run))
    assert len(rows) == 40 and set(rows[0]) == {"audio_filepath", "duration", "time", "text", "pred_text"}
    assert rows[0]["time"] == pytest.approx(rows[0]["duration"] / run.rtfx)
    # the leaderboard computes RTFx as Σduration / Σtime: it must equal the run's
    assert sum(r["duration"] for r in rows) / sum(r["time"] for r in rows) == pytest.approx(run.rtfx)


def test_csvs(exported):
    fs, res, out = exported
    with (out / "slice_metrics.csv").open(encoding="utf-8") as f:
        sm = list(csv.DictReader(f))
    con = connect(fs.db, read_only=True)
    n_sm = con.execute("SELECT count(*) FROM slice_metrics").fetchone()[0]
    n_cmp = con.execute("SELECT count(*) FROM comparisons").fetchone()[0]
    con.close()
    assert len(sm) == n_sm == res.rows["slice_metrics.csv"]
    whole = next(r for r in sm if r["run_id"] == fs.run_ids["ft"] and r["slice_attr"] == "_all")
    assert whole["model_name"] == "runs/ft-zh/best" and whole["n"] == "40" and float(whole["cer_lo"]) < float(whole["cer"])
    with (out / "comparisons.csv").open(encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == n_cmp == res.rows["comparisons.csv"]


def test_export_of_an_empty_store(tmp_path):
    connect(tmp_path / "e.duckdb").close()
    res = export_all(tmp_path / "e.duckdb", tmp_path / "out")
    assert res.files == () and res.rows == {}
