"""Protocol matrix (issue 12): the same stored hypotheses under several scoring protocols."""

from __future__ import annotations

import pytest
from stat_fixtures import make_store
from typer.testing import CliRunner

from asr_eval.protocols import compute_protocols, read_protocol_matrices
from asr_eval.text import get_profile

REF = "你好，世界。"


def test_protocol_profiles_by_hand():
    text = "你好，世界！今天是2024年(笑)[noise] Hello 這個"
    assert get_profile("punct-t2s").normalize(text).split() == ["你好", "世界", "今天是2024年", "笑", "noise", "Hello", "这个"]
    assert get_profile("whisper-basic").normalize(text) == "你好 世界 今天是2024年 hello 這個"
    assert get_profile("none").normalize(text) == text
    assert get_profile("zh-v1-keepnum").normalize(text) == "你好世界今天是2024年hello这个"
    # adding protocols never changed the existing profiles' hashes (stored scores stay comparable)
    assert get_profile("zh-v1").rules_hash == "b6470487c298" and get_profile("none").rules_hash == "2d4c34c5a4e4"


def test_ranking_and_verdict_flip_between_zh_v1_and_none(tmp_path):
    # A drops the punctuation but gets every word right; B keeps the punctuation and misreads one word.
    # zh-v1 (punctuation removed): A 0/4 = 0 %, B 1/4 = 25 %.  none: A 2/6 = 33.3 %, B 1/6 = 16.7 %.
    utts = [{"utt_id": f"u{i:02d}", "text": REF} for i in range(60)]  # 240 characters under zh-v1
    con = make_store(tmp_path / "p.duckdb", utts, {"A": {}, "B": {}}, scored=False)
    con.executemany("INSERT OR REPLACE INTO hypotheses (run_id, utt_id, hyp_raw) VALUES (?, ?, ?)",
                    [[r, u["utt_id"], h] for u in utts for r, h in (("A", "你好世界"), ("B", "你好，世介。"))])
    mats = compute_protocols(con, protocols=["zh-v1", "none", "punct-t2s"], n_boot=200)
    (mx,) = mats
    assert mx.cells[("A", "zh-v1")].cer == 0.0 and mx.cells[("B", "zh-v1")].cer == pytest.approx(0.25)
    assert mx.cells[("A", "none")].cer == pytest.approx(2 / 6) and mx.cells[("B", "none")].cer == pytest.approx(1 / 6)
    assert mx.rankings == {"zh-v1": ["A", "B"], "none": ["B", "A"], "punct-t2s": ["A", "B"]}
    assert mx.ranking_flips == ["none"]
    assert mx.verdicts[("A", "B", "zh-v1")] == "model-A better" and mx.verdicts[("A", "B", "none")] == "model-B better"
    assert mx.verdict_flips == [("A", "B", "none", "model-A better", "model-B better")]
    # read back without computing (what the report does), and a second run computes nothing new
    assert read_protocol_matrices(con, ["A", "B"], ["zh-v1", "none"])[0].ranking_flips == ["none"]
    n = con.execute("SELECT count(*) FROM utterance_scores").fetchall()[0][0]
    compute_protocols(con, protocols=["zh-v1", "none", "punct-t2s"], n_boot=200)
    assert con.execute("SELECT count(*) FROM utterance_scores").fetchall()[0][0] == n == 3 * 2 * 60
    con.close()
    from asr_eval.cli import _register_commands, app

    _register_commands()
    r = CliRunner().invoke(app, ["protocols", "--db", str(tmp_path / "p.duckdb"), "--protocol", "zh-v1",
                                 "--protocol", "none"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "ranking flips against zh-v1 under: none" in r.output
    assert "verdict flips: model-A vs model-B — zh-v1: model-A better; none: model-B better" in r.output


def test_existing_slices_are_kept(tmp_path):
    from asr_eval.scoring import analyse

    utts = [{"utt_id": f"u{i:02d}", "attrs": {"g": "x" if i % 2 else "y"}} for i in range(30)]
    con = make_store(tmp_path / "k.duckdb", utts, {"A": {u["utt_id"]: 1 for u in utts}, "B": {u["utt_id"]: 0 for u in utts}})
    analyse(con, ["A", "B"], slices=["g"], n_boot=100)
    before = con.execute("SELECT count(*) FROM slice_metrics WHERE normalizer = 'zh-v1'").fetchall()[0][0]
    compute_protocols(con, protocols=["zh-v1", "none"], n_boot=100)
    assert con.execute("SELECT count(*) FROM slice_metrics WHERE normalizer = 'zh-v1'").fetchall()[0][0] == before == 6
    assert con.execute("SELECT count(*) FROM slice_metrics WHERE normalizer = 'none'").fetchall()[0][0] == 2


def test_report_has_the_protocol_section(tmp_path):
    from asr_eval.report.build import ReportOptions, render

    utts = [{"utt_id": f"u{i:02d}", "text": REF} for i in range(60)]
    con = make_store(tmp_path / "p.duckdb", utts, {"A": {}, "B": {}}, scored=False)
    con.executemany("INSERT OR REPLACE INTO hypotheses (run_id, utt_id, hyp_raw) VALUES (?, ?, ?)",
                    [[r, u["utt_id"], h] for u in utts for r, h in (("A", "你好世界"), ("B", "你好，世介。"))])
    compute_protocols(con, protocols=["zh-v1", "none"], n_boot=100)
    html, ctx = render(con, ReportOptions(normalizer="zh-v1"))
    (p,) = ctx["protocols"]
    assert p["flips"] == ["none"] and 'id="protocols"' in html and "The ranking flips" in html
    assert "Verdict flips: model-A vs model-B" in html
