"""Ship gate (issue 12): PASS / FAIL / INCONCLUSIVE on hand-built runs with known differences, exit codes."""

from __future__ import annotations

import json

import pytest
from stat_fixtures import make_store
from typer.testing import CliRunner

from asr_eval.errors import AsrEvalError
from asr_eval.gate import evaluate_gate, stored_gates
from asr_eval.store.runs import resolve_pair, resolve_run

# 60 utterances of 10 characters, 12 speakers; slice grp: x = u00..u29, y = u30..u59; plus two thin ones.
UTTS = [{"utt_id": f"u{i:02d}", "speaker": f"s{i % 12}", "attrs": {"grp": "x" if i < 30 else "y"}} for i in range(60)]
BASE = {f"u{i:02d}": 1 if i % 2 == 0 else 0 for i in range(60)}  # 30 errors / 600 chars = 5 %


def _store(tmp_path, cand: dict[str, int]):
    return make_store(tmp_path / "g.duckdb", UTTS, {"base": BASE, "cand": cand},
                      models={"base": "bundled:whisper-base", "cand": "runs/ft/best"})


def test_pass_when_within_the_margin_everywhere(tmp_path):
    # The candidate fixes 6 errors spread over both groups: Δ = -6/600 = -1 point overall, -1 point per group.
    cand = dict(BASE) | {f"u{i:02d}": 0 for i in (0, 2, 4, 30, 32, 34)}
    con = _store(tmp_path, cand)
    res = evaluate_gate(con, "base", "cand", margin=0.5, slices=["grp"])
    assert res.decision == "PASS" and res.exit_code == 0
    assert res.overall.delta == pytest.approx(-6 / 600) and res.overall.hi < 0.005
    assert [(s.label, s.status, round(s.delta, 4)) for s in res.slices] == [
        ("all", "within", -0.01), ("grp=x", "within", -0.01), ("grp=y", "within", -0.01)]
    assert res.overall.ci_method == "speaker-block" and res.overall.n_blocks == 12
    stored = stored_gates(con)
    assert [(g["decision"], g["baseline_run"], g["candidate_run"], g["margin"]) for g in stored] == [
        ("PASS", "base", "cand", 0.5)]
    assert stored[0]["details"]["slices"][1]["value"] == "x"


def test_fail_names_the_slice_that_is_worse_by_more_than_the_margin(tmp_path):
    # Group y gets 3 extra errors in every utterance: +90/300 = +30 points there, +15 points overall.
    cand = dict(BASE) | {f"u{i:02d}": BASE[f"u{i:02d}"] + 3 for i in range(30, 60)}
    con = _store(tmp_path, cand)
    res = evaluate_gate(con, "base", "cand", margin=0.5, slices=["grp"])
    assert res.decision == "FAIL" and res.exit_code == 1
    status = {s.label: s.status for s in res.slices}
    assert status == {"all": "worse", "grp=x": "within", "grp=y": "worse"}
    y = next(s for s in res.slices if s.label == "grp=y")
    assert y.delta == pytest.approx(0.30) and y.lo > 0.005 and y.p_worse_adj < 0.025
    assert "grp=y: +30.00 points CER" in res.summary and "all: +15.00 points CER" in res.summary


def test_inconclusive_when_the_interval_straddles_the_margin(tmp_path):
    # Three extra errors: Δ = +3/600 = +0.5 points, interval roughly [0, 1.2] — neither within nor beyond 0.5.
    cand = dict(BASE) | {f"u{i:02d}": BASE[f"u{i:02d}"] + 1 for i in (1, 31, 45)}
    con = _store(tmp_path, cand)
    res = evaluate_gate(con, "base", "cand", margin=0.5, slices=["grp"])
    assert res.decision == "INCONCLUSIVE" and res.exit_code == 3
    assert res.overall.delta == pytest.approx(0.005) and res.overall.lo <= 0.005 <= res.overall.hi
    assert res.overall.status == "undecided" and "cannot show the candidate is within +0.5 points CER" in res.summary


def test_thin_slices_neither_block_nor_fail(tmp_path):
    utts = UTTS + [{"utt_id": "z1", "speaker": "s1", "attrs": {"grp": "z"}},
                   {"utt_id": "z2", "speaker": "s2", "attrs": {"grp": "z"}}]
    cand = dict(BASE) | {"z1": 5, "z2": 5}  # awful on the two-utterance slice z
    base = dict(BASE) | {"z1": 0, "z2": 0}
    con = make_store(tmp_path / "g.duckdb", utts, {"base": base, "cand": cand})
    res = evaluate_gate(con, "base", "cand", margin=5.0, slices=["grp"])
    z = next(s for s in res.slices if s.label == "grp=z")
    assert (z.status, z.n, z.ref_chars, z.p_worse) == ("insufficient", 2, 20, None)
    assert res.decision == "PASS" and "1 slice with insufficient data not gated" in res.summary


def test_run_or_model_resolution(tmp_path):
    con = _store(tmp_path, dict(BASE))
    assert resolve_run(con, "bundled:whisper-base") == "base" and resolve_run(con, "can") == "cand"
    assert resolve_pair(con, "bundled:whisper-base", "runs/ft/best") == ("base", "cand")
    with pytest.raises(AsrEvalError, match="same run"):
        resolve_pair(con, "base", "bundled:whisper-base")
    with pytest.raises(AsrEvalError, match="unknown run 'nope'"):
        resolve_run(con, "nope")
    with pytest.raises(AsrEvalError, match="not slice columns"):
        evaluate_gate(con, "base", "cand", slices=["accent"])


@pytest.mark.parametrize("cand, code, word", [
    ({f"u{i:02d}": 0 for i in (0, 2, 4, 30, 32, 34)}, 0, "PASS"),
    ({f"u{i:02d}": BASE[f"u{i:02d}"] + 3 for i in range(30, 60)}, 1, "FAIL"),
    ({f"u{i:02d}": BASE[f"u{i:02d}"] + 1 for i in (1, 31, 45)}, 3, "INCONCLUSIVE"),
])
def test_cli_exit_codes(tmp_path, cand, code, word):
    from asr_eval.cli import _register_commands, app

    _register_commands()
    con = _store(tmp_path, dict(BASE) | cand)
    con.close()
    r = CliRunner().invoke(app, ["gate", "--baseline", "bundled:whisper-base", "--candidate", "cand", "--margin", "0.5",
                                 "--slices", "grp", "--db", str(tmp_path / "g.duckdb")])
    assert r.exit_code == code, r.output
    assert r.output.startswith(word)
    from asr_eval.store import connect

    con = connect(tmp_path / "g.duckdb", read_only=True)
    assert con.execute("SELECT decision FROM gates").fetchall() == [(word,)]
    assert json.loads(con.execute("SELECT details FROM gates").fetchall()[0][0])["adj_method"] == "holm"


def test_report_opens_with_the_ship_decision(tmp_path):
    from asr_eval.report.build import ReportOptions, render
    from asr_eval.scoring import analyse

    cand = dict(BASE) | {f"u{i:02d}": BASE[f"u{i:02d}"] + 3 for i in range(30, 60)}
    con = _store(tmp_path, cand)
    analyse(con, ["base", "cand"], slices=["grp"], n_boot=200)
    html, ctx = render(con, ReportOptions())
    assert [g["decision"] for g in ctx["gates"]] == []  # no gate run yet: no box
    assert 'id="ship"' not in html
    evaluate_gate(con, "base", "cand", margin=0.5, slices=["grp"])
    html, ctx = render(con, ReportOptions())
    (g,) = ctx["gates"]
    assert (g["decision"], g["baseline_run"], g["candidate_run"], g["n_slices"]) == ("FAIL", "base", "cand", 3)
    assert html.index('id="ship"') < html.index('id="summary"')
    assert '<span class="decision">FAIL</span>' in html and "grp=y: +30.00 points CER" in html
