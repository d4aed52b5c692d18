"""One rule for "insufficient data" everywhere (issue 28, item 5): a number with too little evidence
(``metrics.stats.Evidence``, carried in every row as ``reliable``) shows its point estimate with †,
no interval, no ★ and no verdict — in the report's per-slice and paired tables and charts, the
CLI tables, the gate table and the web app's browse tab — and a number with enough evidence keeps
them. A paired difference is thin when its paired items are too few or either side is thin."""

from __future__ import annotations

import re

import pytest
from stat_fixtures import make_store

from asr_eval.metrics.stats import Evidence, insufficient, star_keys, stored_reliable

# 43 utterances of 10 characters; slice dur: long = 40 utterances (400 characters: enough evidence),
# n1 = 1 utterance, n2 = 2 utterances (thin). A makes 2 errors everywhere; B none on n1, one on every
# other long utterance, and the same 2 as A on n2 — so Δ(n1) = −20.00 and Δ(n2) = +0.00 with the
# zero-width "intervals" [−20.00, −20.00] and [+0.00, +0.00] a bootstrap gives on one or two items.
UTTS = [{"utt_id": f"u{i:02d}", "attrs": {"dur": "long" if i < 40 else ("n1" if i == 40 else "n2")}}
        for i in range(43)]
A = {u["utt_id"]: 2 for u in UTTS}
B = {f"u{i:02d}": (i % 2 if i < 40 else 0 if i == 40 else 2) for i in range(43)}


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    from asr_eval.scoring import analyse

    path = tmp_path_factory.mktemp("thin") / "s.duckdb"
    con = make_store(path, UTTS, {"A": A, "B": B})
    analyse(con, ["A", "B"], slices=["dur"], n_boot=200)
    con.close()
    return path


@pytest.fixture(scope="module")
def rendered(db):
    from asr_eval.report import ReportOptions, render
    from asr_eval.store import connect

    con = connect(db, read_only=True)
    try:
        return render(con, ReportOptions(worst_n=0, audio_cap_bytes=0))
    finally:
        con.close()


# ───────────────────────────── the rule itself ─────────────────────────────


@pytest.mark.parametrize("n, chars, sides, reliable", [
    (20, 200, (), True),
    (19, 400, (), False),                                   # too few items
    (40, 199, (), False),                                   # too few reference characters
    (40, 400, (Evidence(40, 400), Evidence(40, 400)), True),
    (40, 400, (Evidence(40, 400), Evidence(3, 30)), False),  # one side thin: the difference is thin
    (2, 20, (Evidence(40, 400), Evidence(40, 400)), False),  # too few paired items
])
def test_evidence_of_a_number_and_of_a_paired_difference(n, chars, sides, reliable):
    ev = Evidence.paired(n, chars, *sides)
    assert ev.reliable is reliable
    if not reliable:
        assert ev.describe().startswith("insufficient data (n = ")
    if n == 40 and chars == 400 and not reliable:
        assert ev.describe().startswith("insufficient data (n = 3, 30 reference characters on one side;")


@pytest.mark.parametrize("cells, stars", [
    ({"a": (0.10, True), "b": (0.20, True)}, {"a"}),
    ({"a": (0.05, False), "b": (0.20, True), "c": (0.10, True)}, {"c"}),  # the thin lowest never gets ★
    ({"a": (0.05, False), "b": (0.20, True)}, set()),                      # one reliable number is not "best"
    ({"a": (0.10, True), "b": (0.10, True), "c": (None, True)}, {"a", "b"}),
    ({"a": (0.10, False), "b": (0.20, False)}, set()),
])
def test_star_only_among_numbers_with_evidence(cells, stars):
    assert star_keys(cells) == stars


@pytest.mark.parametrize("stored, n, chars, out", [
    (True, 2, 20, True), (False, 500, 9000, False),  # the scorer's decision wins
    (None, 25, 300, True), (None, 25, 150, False),   # rows from before the rule: judged now
    (None, 25, None, True), (None, 5, None, False),  # and on their items alone when chars are unknown
])
def test_stored_rows_are_judged_by_the_same_rule(stored, n, chars, out):
    assert stored_reliable(stored, n, chars) is out


def test_stored_slices_and_comparisons_carry_it(db):
    from asr_eval.store import connect

    con = connect(db, read_only=True)
    try:
        sm = {(r[0], r[1]): r[2] for r in con.execute(
            "SELECT run_id, slice_value, reliable FROM slice_metrics WHERE slice_attr = 'dur'").fetchall()}
        cmp = dict(con.execute("SELECT slice_value, reliable FROM comparisons WHERE metric = 'cer' "
                               "AND slice_attr = 'dur'").fetchall())
    finally:
        con.close()
    assert sm == {(r, v): v == "long" for r in "AB" for v in ("long", "n1", "n2")}
    assert cmp == {"long": True, "n1": False, "n2": False}


# ───────────────────────────── the report ─────────────────────────────


def _rows(table_html: str) -> dict[str, list[str]]:
    """First cell → the row's cells, tags stripped."""
    out = {}
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table_html, re.DOTALL):
        cells = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", c)).strip()
                 for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.DOTALL)]
        out[cells[0]] = cells
    return out


def test_report_slice_and_paired_tables(rendered):
    html, ctx = rendered
    sec = html[html.index('id="slice-1-dur"'):]
    sec = sec[:sec.index("</details>")]
    tables = re.findall(r"<table>(.*?)</table>", sec, re.DOTALL)
    per_slice, paired = _rows(tables[0]), _rows(tables[1])
    # per-slice: thin cells are the CER with †, no interval, no ★ (B's 0.00% on n1 is the lowest, but thin)
    assert per_slice["n1"][3:] == ["20.00% †", "0.00% †"] and per_slice["n2"][3:] == ["20.00% †", "20.00% †"]
    long_a, long_b = per_slice["long"][3:]
    assert re.fullmatch(r"20\.00% \[[\d.]+, [\d.]+\]", long_a) and re.fullmatch(r"5\.00% \[[\d.]+, [\d.]+\]", long_b)
    cells = re.findall(r'<td class="num( best)?">', tables[0])
    assert cells.count(" best") == 1  # ★ on B's long cell only
    (tb,) = ctx["slices"][0]["tables"]
    assert [[c["best"] for c in row["cells"]] for row in tb["rows"]] == [[False, True], [False, False], [False, False]]
    assert tb["thin"] == ["n1", "n2"]
    # paired: Δ with † and nothing else for the thin slices; the interval, p and verdict for the long one
    assert paired["n1"][1:] == ["1", "-20.00 †", "—", "—", "—", "—", "insufficient data (n = 1)"]
    assert paired["n2"][1:] == ["2", "+0.00 †", "—", "—", "—", "—", "insufficient data (n = 2)"]
    assert re.fullmatch(r"-15\.00 \[-[\d.]+, -[\d.]+\]", paired["long"][2])
    assert paired["long"][-1].endswith("is better (interval excludes 0)")
    assert "[+0.00, +0.00]" not in html and "[-20.00, -20.00]" not in html  # the zero-width "intervals" of the issue
    tips = re.findall(r'<td class="words na" title="([^"]*)">insufficient data', tables[1])
    assert tips == [Evidence(1, 10).describe(), Evidence(2, 20).describe()]
    # the interval plot: thin rows are a point with †, no bar, no ★
    plot = tb["plot"].rows
    thin = [r for r in plot if r.text.endswith(" †")]
    assert len(thin) == 4 and all(r.x_lo is None and r.x_hi is None and not r.best for r in thin)
    assert [r.best for r in plot if not r.text.endswith(" †")] == [False, True]


def test_report_headline_and_summary_with_enough_evidence(rendered):
    html, ctx = rendered
    rows = ctx["headline"][0]["rows"]
    assert [(r["t"].reliable, r["best"]) for r in rows] == [(True, False), (True, True)]
    head = html[html.index('<section id="headline">'):html.index('<section id="runs">')]
    assert head.count('class="num best"') == 1 and "†</span>" not in head.split("</table>")[0]
    (v,) = ctx["verdicts"]
    (line,) = v["lines"]
    assert line["reliable"] and line["ci"].startswith("[+") and line["words"].endswith("is better (interval excludes 0)")
    # the headline as Markdown (Prefect artifact): intervals with evidence, † without
    import dataclasses

    from asr_eval.report.build import headline_markdown

    body = headline_markdown(ctx["sel"], ctx["totals"]).splitlines()[2:4]
    assert all(re.search(r"\| 20\.00% \[20\.00, 20\.00\] \|", ln) or "| 5.58% [" in ln for ln in body)
    thin = {k: dataclasses.replace(t, reliable=False) for k, t in ctx["totals"].items()}
    md = headline_markdown(ctx["sel"], thin)
    assert "| 43 | 20.00% † | 20.00% † |" in md and "[" not in "".join(md.splitlines()[2:4])
    assert "† insufficient data" in md


def test_report_pair_is_thin_when_a_side_is(db):
    """The paired difference on `long` has 40 paired items, but if one run's own number there were
    thin the difference is thin too (``queries.side_evidence``)."""
    from asr_eval.report import queries
    from asr_eval.report.build import significance
    from asr_eval.report.select import select
    from asr_eval.store import connect

    con = connect(db, read_only=True)
    try:
        sel = select(con)
        attrs = {sel.corpora[0][0]: ["dur"]}
        sides = {("A", "dur", "long"): False}
        plain = {(d.attr, d.value): d for d in queries.pair_diffs(con, sel, attrs)}
        judged = {(d.attr, d.value): d for d in queries.pair_diffs(con, sel, attrs, sides)}
    finally:
        con.close()
    assert plain[("dur", "long")].reliable and not judged[("dur", "long")].reliable
    assert judged[("_all", "all")].reliable  # the other slices keep their own decision
    assert significance(judged[("dur", "long")], "A", "B") == (insufficient(40), "na")
    assert judged[("dur", "long")].verdict == "insufficient data (n = 40): a run compared has too little data on this slice"


# ───────────────────────────── the CLI, the gate, the web app ─────────────────────────────


def _captured(fn, *args, **kw) -> str:
    from asr_eval.cli import console

    width = console.width
    console.width = 240
    try:
        with console.capture() as cap:
            fn(*args, **kw)
    finally:
        console.width = width
    return cap.get()


def _cli_rows(out: str, title: str, key: int = 0) -> dict[str, list[str]]:
    """The rows of the rich table titled ``title``: cell ``key`` → the row's cells."""
    block = out[out.index(title):]
    block = block[:block.index("└")]
    rows = {}
    for ln in block.splitlines():
        if ln.startswith("│"):
            cells = [c.strip() for c in ln.strip("│").split("│")]
            rows.setdefault(cells[key], cells)
    return rows


def test_cli_score_tables(db):
    from asr_eval.cli.score import print_results

    out = _captured(print_results, db, ["A", "B"], "zh-v1", all_slices=True)
    by = _cli_rows(out, "by dur")
    assert by["n1"][3:] == ["20.00 †", "0.00 †"] and by["n2"][3:] == ["20.00 †", "20.00 †"]
    assert re.fullmatch(r"5\.00 \[[\d.]+–[\d.]+\]", by["long"][4])  # B's cell, with its interval (and ★: green)
    pairs = _cli_rows(out, "paired A/B", key=2)
    n1, n2, long_ = pairs["dur=n1"], pairs["dur=n2"], pairs["dur=long"]
    assert n1[3:8] == ["1", "-20.00 †", "", "—", "—"] and n1[8].startswith("insufficient data (n = 1, 10 reference")
    assert n2[3:8] == ["2", "+0.00 †", "", "—", "—"]
    assert re.fullmatch(r"-[\d.]+ … -[\d.]+", long_[5]) and long_[8].startswith("B is better by 15.00 points CER")
    assert "2 with insufficient data not tested" in out


def test_cli_gate_table(db, tmp_path):
    import shutil

    from asr_eval.cli.gate import print_gate
    from asr_eval.gate import evaluate_gate
    from asr_eval.store import connect

    from asr_eval.report import ReportOptions, render

    shutil.copy(db, tmp_path / "g.duckdb")
    con = connect(tmp_path / "g.duckdb")
    try:
        res = evaluate_gate(con, "A", "B", margin=0.5, slices=["dur"], n_boot=200)
        html, _ = render(con, ReportOptions(worst_n=0, audio_cap_bytes=0))
    finally:
        con.close()
    rows = _cli_rows(_captured(print_gate, res), "candidate − baseline")
    assert rows["dur=n1"][3:8] == ["20.00 †", "0.00 †", "-20.00 †", "—", "—"]
    assert rows["dur=n1"][9] == "insufficient data"
    assert re.fullmatch(r"-[\d.]+ … -[\d.]+", rows["dur=long"][6]) and rows["dur=long"][9] == "within margin"
    # the report's Ship decision table: the same rule
    ship = _rows(html[html.index('<section id="ship">'):html.index('<section id="summary">')])
    assert ship["dur=n1"][1:5] == ["1", "-20.00 †", "", "—"] and ship["dur=n2"][1:5] == ["2", "+0.00 †", "", "—"]
    assert re.fullmatch(r"\[-[\d.]+, -[\d.]+\]", ship["dur=long"][3])


def test_browse_tab_rows():
    from asr_eval.ui.browse import slice_table

    base = {"slice_attr": "dur", "n": 2, "hours": 0.0, "cer": 0.2, "cer_lo": 0.2, "cer_hi": 0.2, "mer": 0.2,
            "cer_s": 4, "cer_d": 0, "cer_i": 0, "ref_chars": 20}
    thin, ok = slice_table([{**base, "slice_value": "n2", "reliable": False},
                            {**base, "slice_value": "long", "n": 40, "cer_lo": 0.1, "cer_hi": 0.3, "reliable": True}])
    assert thin[4:7] == ["20.00 †", "—", "20.00 †"] and thin[-1] == "no †"
    assert ok[4:7] == ["20.00", "10.00–30.00", "20.00"] and ok[-1] == "yes"


def test_stream_flow_line_the_demo_prints():
    """The demo streams one recording: its ΔCER against offline is n = 1 — the point estimate with †,
    not "+9.57 pts [+9.57, +9.57]"; with enough recordings the interval is back."""
    import sys

    from conftest import REPO

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from flows.stream import stream_line

    row = {"n": 1, "cer": 0.1234, "cer_reliable": False, "delta_cer": 0.0957, "delta_cer_lo": 0.0957,
           "delta_cer_hi": 0.0957, "delta_reliable": False, "latency_median_s": {"unaware": 1.0, "aware": 1.2},
           "latency_p90_s": {"unaware": 2.0, "aware": 2.5}, "real_time": True, "flicker": 0.1}
    assert stream_line(row, "la 1s").startswith(
        "la 1s: CER 12.34 % † (Δ vs offline +9.57 pts † (insufficient data: no interval), n = 1) latency")
    ok = {**row, "n": 40, "cer_reliable": True, "delta_reliable": True, "delta_cer_lo": 0.01, "delta_cer_hi": 0.2}
    assert stream_line(ok, "la 1s").startswith("la 1s: CER 12.34 % (Δ vs offline +9.57 pts [+1.00, +20.00]) latency")


def test_protocol_matrix_cells(db, tmp_path):
    from asr_eval.cli.protocols import print_matrices
    from asr_eval.protocols import read_protocol_matrices
    from asr_eval.scoring import analyse
    from asr_eval.store import connect

    con = connect(db, read_only=True)
    try:
        (mx,) = read_protocol_matrices(con, ["A", "B"], ["zh-v1"])
    finally:
        con.close()
    a, b = mx.cells[("A", "zh-v1")], mx.cells[("B", "zh-v1")]
    assert (a.reliable, a.best, a.rank, b.reliable, b.best, b.rank) == (True, False, 2, True, True, 1)
    out = _captured(print_matrices, [mx])
    assert "[test]" in out and re.search(r"5\.58 \[[\d.]+–[\d.]+\] \(#1\)", out) and "†" not in out
    # six utterances: both runs thin — the CER and its rank, no interval, no ★
    small = make_store(tmp_path / "p.duckdb", UTTS[:6], {"A": {u: 2 for u in list(A)[:6]}, "B": {u: 0 for u in list(B)[:6]}})
    analyse(small, ["A", "B"], slices=[], n_boot=50)
    (mx,) = read_protocol_matrices(small, ["A", "B"], ["zh-v1"])
    small.close()
    assert [(c.reliable, c.best, c.rank, c.n) for c in (mx.cells[("A", "zh-v1")], mx.cells[("B", "zh-v1")])] == [
        (False, False, 2, 6), (False, False, 1, 6)]
    out = _captured(print_matrices, [mx])
    assert "20.00 † (#2)" in out and "0.00 † (#1)" in out and "–" not in out.split("zh-v1:")[0]
    assert mx.verdicts[("A", "B", "zh-v1")] == "insufficient data"
