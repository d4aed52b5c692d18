"""The HTML report: SQL aggregates against hand-computed values, chart geometry, escaping,
"no data" paths, audio embedding caps, run selection, and the CLI."""

from __future__ import annotations

import dataclasses

import base64
import json
import math
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from asr_eval.errors import AsrEvalError  # noqa: E402
from asr_eval.report import NO_DIFF, ReportOptions, build_report, render, significance  # noqa: E402
from asr_eval.report import charts, queries  # noqa: E402
from asr_eval.report.audio import embed_audio, mime_of  # noqa: E402
from asr_eval.report.queries import PairDiff  # noqa: E402
from asr_eval.report.select import select  # noqa: E402
from asr_eval.store import connect  # noqa: E402
from report_fixtures import XSS_ALERT, XSS_ATTR, XSS_SCRIPT, build_scored_store, build_store  # noqa: E402

Z = 1.959963984540054


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("full"))


@pytest.fixture(scope="module")
def rendered(store):
    con = connect(store.db, read_only=True)
    html, ctx = render(con, ReportOptions())
    con.close()
    return html, ctx


# ───────────────────────────── a tiny store with hand-computed answers ─────────────────────────────


def _tiny(path: Path, stored_all: bool = False):
    """Two runs (A, B) on four utterances; CER errors A = [1, 0, 2, 1], B = [0, 0, 1, 1], n = [10, 5, 10, 5]."""
    con = connect(path)
    con.execute("INSERT INTO corpora (corpus_id, name, path, index_sha256) VALUES ('c@1', 'c', '/nowhere', '1')")
    for i, (n, grp) in enumerate(zip((10, 5, 10, 5), ("x", "x", "y", "y"), strict=True)):
        con.execute("INSERT INTO utterances (corpus_id, utt_id, split, duration_s, speaker, text, source_path, audio_sha256) VALUES ('c@1', ?, 'test', ?, 'spk', 'ref', NULL, NULL)", [f"u{i}", 1.0 + i])
        con.execute("INSERT INTO utterance_attrs VALUES ('c@1', ?, 'grp', ?)", [f"u{i}", grp])
    for run, errs in (("A", (1, 0, 2, 1)), ("B", (0, 0, 1, 1))):
        con.execute("INSERT INTO models (model_id, name, source) VALUES (?, ?, 'hub')", [f"m{run}", f"model-{run}"])
        con.execute("INSERT INTO eval_runs (run_id, corpus_id, split, model_id, status, started_at, rtfx) "
                    "VALUES (?, 'c@1', 'test', ?, 'done', ?, 50)",
                    [run, f"m{run}", f"2025-01-01 0{ord(run) - 64}:00:00"])
        for i, (e, n) in enumerate(zip(errs, (10, 5, 10, 5), strict=True)):
            # errors split as substitutions, except u2 of run A: one S + one D; alignment agrees with counts
            s, d = (1, 1) if (run, i) == ("A", 2) else (e, 0)
            al = [["S", "天", "田"]] * s + [["D", "人", None]] * d + [["=", "好", "好"]] * (n - s - d)
            flags = ["repetition"] if (run, i) == ("A", 0) else []
            con.execute("INSERT INTO utterance_scores (run_id, utt_id, normalizer, normalizer_hash, ref_norm, hyp_norm, "
                        "cer_n, cer_s, cer_d, cer_i, mer_n, mer_s, mer_d, mer_i, wer_n, wer_s, wer_d, wer_i, "
                        "zh_n, zh_err, en_n, en_err, num_n, num_err, other_n, other_err, alignment, flags, empty_ref) "
                        "VALUES (?, ?, 'zh-v1', 'h1', ?, ?, ?, ?, ?, 0, ?, ?, ?, 0, 1, ?, 0, 0, "
                        "?, ?, 0, 0, 0, 0, 0, 0, ?, ?, false)",
                        [run, f"u{i}", "".join(r for op, r, _ in al if op != "I"),
                         "".join(h for op, _, h in al if op != "D"), n, s, d, n, s, d, int(e > 0), n, e,
                         json.dumps(al, ensure_ascii=False), flags])
    if stored_all:
        con.execute("INSERT INTO slice_metrics (run_id, normalizer, normalizer_hash, slice_attr, slice_value, n, hours, "
                    "cer, cer_lo, cer_hi, mer, mer_lo, mer_hi) VALUES ('A', 'zh-v1', 'h1', '_all', 'all', 4, 0.01, "
                    "0.1333, 0.05, 0.25, 0.1333, 0.05, 0.25)")
    return con


def _normal_ci(e: list[float], n: list[float]) -> tuple[float, float, float]:
    """Delta-method interval of Σe/Σn, written out from its definition."""
    r = sum(e) / sum(n)
    k = len(e)
    var = k / (k - 1) * sum((ei - r * ni) ** 2 for ei, ni in zip(e, n, strict=True)) / sum(n) ** 2
    return r, r - Z * math.sqrt(var), r + Z * math.sqrt(var)


def test_run_totals_match_hand_computed(tmp_path):
    con = _tiny(tmp_path / "t.duckdb")
    sel = select(con)
    tot = queries.run_totals(con, sel)
    a = tot["A"]
    r, lo, hi = _normal_ci([1, 0, 2, 1], [10, 5, 10, 5])
    assert (a.n, a.n_chars, a.subs, a.dels, a.ins) == (4, 30, 3, 1, 0)
    assert a.cer.value == pytest.approx(4 / 30) and a.cer.method == "normal"
    assert (a.cer.lo, a.cer.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert (round(a.cer.lo, 4), round(a.cer.hi, 4)) == (0.0538, 0.2129)  # the numbers themselves
    assert a.classes["zh"] == (30, 4) and a.n_flagged == 1
    assert a.wer.value == pytest.approx(3 / 4)  # three of four one-token references have an error


def test_stored_interval_wins_over_computed(tmp_path):
    con = _tiny(tmp_path / "t.duckdb", stored_all=True)
    tot = queries.run_totals(con, select(con))
    assert (tot["A"].cer.value, tot["A"].cer.lo, tot["A"].cer.hi, tot["A"].cer.method) == (0.1333, 0.05, 0.25, "bootstrap")
    assert tot["B"].cer.method == "normal"  # nothing stored for B: computed here
    assert tot["A"].hours == 0.01


def test_computed_slices_and_pairs(tmp_path):
    con = _tiny(tmp_path / "t.duckdb")
    sel = select(con)
    attrs = {"c@1": ["grp"]}
    rows = {(r.run_id, r.value): r for r in queries.slice_rows(con, sel, attrs)}
    assert rows[("A", "x")].cer.value == pytest.approx(1 / 15) and rows[("A", "y")].cer.value == pytest.approx(3 / 15)
    assert rows[("A", "x")].n == 2 and rows[("A", "y")].hours == pytest.approx((3.0 + 4.0) / 3600)
    diffs = {(d.attr, d.value): d for d in queries.pair_diffs(con, sel, attrs)}
    whole = diffs[("_all", "all")]
    dlt, lo, hi = _normal_ci([-1, 0, -1, 0], [10, 5, 10, 5])
    assert (whole.run_a, whole.run_b, whole.n, whole.method) == ("A", "B", 4, "normal")
    assert (whole.delta, whole.lo, whole.hi) == (pytest.approx(dlt), pytest.approx(lo), pytest.approx(hi))
    assert (round(whole.lo, 4), round(whole.hi, 4)) == (-0.117, -0.0164)
    # issue 12: 4 utterances / 30 characters is below the minimum evidence — never "better"
    assert not whole.reliable and whole.ref_chars == 30
    assert significance(whole, "A", "B") == ("insufficient data (n = 4)", "na")
    assert whole.verdict.startswith("insufficient data (n = 4, 30 reference characters")
    enough = dataclasses.replace(whole, reliable=True)
    assert significance(enough, "A", "B") == ("B is better (interval excludes 0)", "better-b")
    assert diffs[("grp", "y")].delta == pytest.approx(-1 / 15)


def test_speaker_only_slices_bind_no_unused_parameter(tmp_path):
    """Speaker membership reads no $attrs: binding it anyway was a DuckDB binder error."""
    con = _tiny(tmp_path / "t.duckdb")
    sel = select(con)
    rows = queries.slice_rows(con, sel, {"c@1": ["speaker"]})
    assert {r.attr for r in rows} == {"speaker"} and sum(r.n for r in rows if r.run_id == "A") == 4
    diffs = queries.pair_diffs(con, sel, {"c@1": ["speaker"]})
    assert {d.attr for d in diffs} >= {"speaker"}


def test_confusions_flags_and_worst(tmp_path):
    con = _tiny(tmp_path / "t.duckdb")
    sel = select(con)
    conf = queries.confusions(con, sel, top=5)
    assert conf["A"]["S"] == [queries.Confusion("S", "天", "田", 3)]
    assert conf["A"]["D"] == [queries.Confusion("D", "人", "", 1)] and conf["B"]["I"] == []
    flags = queries.flag_counts(con, sel)
    assert {(f["run_id"], f["attr"], f["value"], f["flag"], f["n"]) for f in flags} == {
        ("A", "_all", "all", "repetition", 1), ("A", "grp", "x", "repetition", 1), ("A", "speaker", "spk", "repetition", 1)}
    worst = queries.worst_utterances(con, sel, top=2)
    # A: u3 (1/5 = 0.2) ties u2 (2/10 = 0.2); more errors first → u2, then u3
    assert [(u.utt_id, u.rank) for u in worst["A"]] == [("u2", 1), ("u3", 2)]
    assert worst["A"][0].alignment[:2] == [("S", "天", "田"), ("D", "人", "")]


@pytest.mark.parametrize(("lo", "hi", "words", "cls"), [
    (-0.02, 0.01, NO_DIFF, "nodiff"),
    (0.0, 0.03, NO_DIFF, "nodiff"),  # touching 0 is still "includes 0"
    (-0.05, -0.01, "B is better (interval excludes 0)", "better-b"),
    (0.01, 0.04, "A is better (interval excludes 0)", "better-a"),
    (None, None, "no interval (too few utterances)", "na"),
    (math.nan, 0.1, "no interval (too few utterances)", "na"),
])
def test_significance_words(lo, hi, words, cls):
    d = PairDiff("a", "b", "_all", "all", 10, 0.1, 0.1, 0.0, lo, hi, None, None, None, "bootstrap")
    assert significance(d, "A", "B") == (words, cls)


def test_flipped_pair_negates():
    d = PairDiff("a", "b", "x", "v", 5, 0.2, 0.1, -0.1, -0.15, -0.05, 0.9, 0.03, "b better", "bootstrap")
    f = d.flipped()
    assert (f.run_a, f.run_b, f.rate_a, f.rate_b, f.delta, f.lo, f.hi) == ("b", "a", 0.1, 0.2, 0.1, 0.05, 0.15)
    assert f.p_b_better == pytest.approx(0.1)


# ───────────────────────────── charts ─────────────────────────────


@pytest.mark.parametrize(("lo", "hi", "n", "ticks"), [
    (0.0, 0.37, 5, [0.0, 0.1, 0.2, 0.3, 0.4]),
    (0.0, 1.0, 5, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (3.0, 97.0, 6, [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]),
    (5.0, 400.0, 6, [0.0, 100.0, 200.0, 300.0, 400.0]),
    (0.0, 0.0, 5, [-0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6]),
])
def test_nice_ticks(lo, hi, n, ticks):
    assert charts.nice_ticks(lo, hi, n) == pytest.approx(ticks)


@pytest.mark.parametrize(("v", "s"), [(0.5, "0.5"), (12.0, "12"), (250.0, "250"), (15000.0, "15k"),
                                      (2_000_000.0, "2M"), (0.125, "0.125")])
def test_fmt_num(v, s):
    assert charts.fmt_num(v) == s


def test_line_plot_geometry_skips_nonfinite():
    p = charts.line_plot("t", [charts.SeriesSpec("s", "#000", [0, 50, 100], [0.0, math.nan, 1.0])],
                         [charts.Marker(50, "alert", "#f00")], width=560, height=240)
    # x 0..100 → 56..546; y 0..1 → 206..26; the NaN point is dropped from the path
    assert p.lines[0].d == "M56.0,206.0 L546.0,26.0"
    assert p.markers[0].x == pytest.approx(301.0)
    assert not p.log_y and charts.line_plot("t", [], empty="nothing").empty == "nothing"


def test_log_scale_for_spiky_curves():
    assert charts.want_log([0.1, 0.2, 50.0]) and not charts.want_log([1.0, 2.0, 3.0])
    p = charts.line_plot("g", [charts.SeriesSpec("g", "#000", [1, 2, 3], [0.1, 1.0, 100.0])])
    assert p.log_y and [t.label for t in p.y_ticks] == ["0.1", "1", "10", "100"]


def test_ci_plot_and_text_fitting():
    p = charts.ci_plot("t", [charts.CiItem("g", "m", "#000", 0.1, 0.05, 0.15)], width=760)
    (row,) = p.rows
    assert [t.label for t in p.x_ticks] == ["0%", "5%", "10%", "15%"]
    span = p.right - p.left
    assert row.x == pytest.approx(round(p.left + 2 / 3 * span, 1)) and row.x_lo == pytest.approx(round(p.left + span / 3, 1))
    assert charts.text_width("ab") == pytest.approx(2 * 0.58 * 12) and charts.text_width("中文") == 24
    assert charts.clip("中文中文中文", 40) == "中文…" and charts.clip("ok", 40) == "ok"


# ───────────────────────────── rendered report (realistic store) ─────────────────────────────


def test_headline_numbers_come_from_the_store(store, rendered):
    html, ctx = rendered
    con = connect(store.db, read_only=True)
    stored = dict(con.execute("SELECT run_id, cer FROM slice_metrics WHERE slice_attr = '_all'").fetchall())
    con.close()
    for run_id, cer in stored.items():
        assert ctx["totals"][run_id].cer.value == pytest.approx(cer)
        assert f"{100 * cer:.2f}%" in html
    assert "not meaningful for Chinese" in html
    (verdict,) = ctx["verdicts"]
    best = verdict["best"]
    assert best.run_id == store.run_ids["ft"] and best.fine_tuned
    for line in verdict["lines"]:  # Δ = other − best: positive, and the words name the best model
        gap = stored[line["other"].run_id] - stored[best.run_id]
        assert line["delta"] == f"{100 * gap:+.2f}"
        assert line["words"] in (NO_DIFF, f"{best.label} is better (interval excludes 0)")
    assert "fine-tuned from" in html and store.model_ids["large-v3"] in html  # lineage


def test_every_slice_column_has_a_table_with_correct_words(rendered):
    html, ctx = rendered
    (corpus,) = ctx["slices"]
    assert [t["attr"] for t in corpus["tables"]] == ["duration_bucket", "hsk_level", "noise", "topic", "voice"]
    n_checked = 0
    n_thin = 0
    for tb in corpus["tables"]:
        for row in tb["rows"]:
            # ★: the lowest CER among the cells with enough evidence (≥ 2 of them); never a † cell
            ok = [c["row"].cer.value for c in row["cells"] if c["row"] and c["row"].reliable]
            assert [c["best"] for c in row["cells"]] == [
                len(ok) > 1 and c["row"].reliable and c["row"].cer.value == min(ok) for c in row["cells"]]
        for pair in tb["pairs"]:
            for pr in pair["rows"]:
                d = pr["d"]
                if d.reliable:
                    assert (pr["words"] == NO_DIFF) == (d.lo <= 0 <= d.hi)
                else:  # thin: the insufficient-data words whatever the interval says
                    assert pr["words"] == f"insufficient data (n = {d.n})" and pr["cls"] == "na"
                    n_thin += 1
                n_checked += 1
    assert n_thin  # the fixture has thin slices (topic=<script…>, duration buckets)
    assert n_checked == 5 * 3 * 0 + sum(len(t["rows"]) * 3 for t in corpus["tables"])
    assert NO_DIFF in html and "is better (interval excludes 0)" in html
    assert 'class="num best"' in html


def test_hostile_text_is_escaped(rendered):
    html, _ = rendered
    for payload in (XSS_SCRIPT, XSS_ATTR, XSS_ALERT):
        assert payload not in html
    assert "&lt;script&gt;window.__xss = 1; alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=&#34;window.__xss = 2" in html
    assert "onerror=" not in html.replace("onerror=&#34;", "").replace("onerror=alert(3)&gt;", "")
    # exactly our two script elements: the JSON audio block and the hashed script
    assert len(re.findall(r"<script\b", html)) == 2


def test_self_contained_no_external_resources(rendered):
    html, ctx = rendered
    for attr, val in re.findall(r'\b(src|href)="([^"]*)"', html):
        assert val.startswith(("#", "data:")), (attr, val)
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in csp and f"'sha256-{ctx['script_hash']}'" in csp


def test_error_analysis_sections(store, rendered):
    html, ctx = rendered
    err = ctx["errors"]
    assert err["flag_names"] == ["repetition", "hallucination", "traditional_script", "empty"]
    v2 = next(r for r in err["flag_rows"] if r["run"].run_id == store.run_ids["large-v2"])
    con = connect(store.db, read_only=True)
    expect = dict(con.execute("SELECT f, count(*) FROM (SELECT unnest(flags) f FROM utterance_scores WHERE run_id = ?) "
                              "GROUP BY f", [store.run_ids["large-v2"]]).fetchall())
    top_sub = con.execute("""SELECT x[2], x[3], count(*) c FROM (SELECT unnest(from_json(alignment, '[["VARCHAR"]]')) x
                             FROM utterance_scores WHERE run_id = ?) WHERE x[1] = 'S' GROUP BY ALL
                             ORDER BY c DESC, 1, 2 LIMIT 1""", [store.run_ids["ft"]]).fetchone()
    con.close()
    assert dict(zip(err["flag_names"], v2["counts"], strict=True)) == {f: expect.get(f, 0) for f in err["flag_names"]}
    first = err["confusions"][store.run_ids["ft"]]["S"][0]
    assert (first.ref, first.hyp, first.count) == top_sub
    assert "Pathologies by hsk_level" in html and "Top confusions" in html


def test_worst_utterances_with_audio(store, rendered):
    html, ctx = rendered
    w = ctx["worst"]
    assert w["n_embedded"] > 0 and w["audio"].n_capped == 0
    first = w["per_run"][0]["utts"][0]
    assert first["audio"] in w["audio"].uris
    uri = w["audio"].uris[first["audio"]]
    assert uri.startswith("data:audio/flac;base64,")
    t = pq.read_table(store.corpus_dir / "shard-00000.parquet", filters=[("utt_id", "=", first["u"].utt_id)])
    assert base64.b64decode(uri.split(",", 1)[1]) == t.column("audio")[0].as_py()
    assert 'class="tok S"' in html and 'class="tok D"' in html and 'class="tok I"' in html
    assert all(len(p["utts"]) == 10 for p in w["per_run"])


def test_audio_cap_and_missing_shards(store, tmp_path):
    small = build_report(store.db, tmp_path / "capped.html", ReportOptions(audio_cap_bytes=60_000))
    html = (tmp_path / "capped.html").read_text()
    assert small.audio_bytes <= 60_000 and small.audio_left_out > 0
    assert "not embedded because the cap was reached" in html
    emb = embed_audio([("c", "u1")], {"c": str(tmp_path / "gone")}, 10**6)
    assert emb.missing == {("c", "u1"): f"corpus shards not found at {tmp_path / 'gone'}"} and not emb.uris
    assert (mime_of(b"fLaC...."), mime_of(b"RIFF...."), mime_of(b"????")) == (
        "audio/flac", "audio/wav", "application/octet-stream")


def test_training_curves_alerts_and_downsampling(store):
    con = connect(store.db, read_only=True)
    runs = queries.training_runs(con, ["tr-ft"], max_points=20)
    alerts = queries.alerts(con, ["tr-ft"])
    con.close()
    ft, base = runs["tr-ft"], runs["tr-base"]  # the baseline comes along for the overlay
    assert ft.baseline_run_id == "tr-base" and ft.downsampled and base.downsampled
    assert (ft.n_train, ft.n_eval) == (80, 8)
    assert len(ft.series["loss"].steps) <= 21 and len(ft.series["cer"].values) == 8
    assert all(lo <= v <= hi for lo, v, hi in zip(ft.series["loss"].lo, ft.series["loss"].values,
                                                   ft.series["loss"].hi, strict=True))
    assert ft.nonfinite == [(300, "loss"), (305, "grad_norm")]
    assert [a.severity for a in alerts] == ["critical", "critical", "regression", "warning"]


def test_training_section_rendered(rendered):
    html, ctx = rendered
    tr = {t["tr"].training_run_id: t for t in ctx["training"]["runs"]}
    ft = tr["tr-ft"]
    assert ft["baseline"].training_run_id == "tr-base"
    loss, grad, cer = ft["plots"]
    assert len(loss.lines) == 3 and any(line.dashed for line in loss.lines)  # train, eval, baseline overlay
    assert sorted(m.label for m in loss.markers)[0].startswith("critical: non_finite @ 300")
    assert [f.label for f in loss.flags] == ["non-finite loss at step 300"]
    assert len(cer.lines) == 2 and ctx["training"]["n_alerts"] == 4
    assert "&lt;img src=x onerror=alert(3)&gt; loss &lt;b&gt;spiked&lt;/b&gt;" in html


# ───────────────────────────── no data, partial data, selection ─────────────────────────────


def test_empty_store_renders_no_data(tmp_path):
    connect(tmp_path / "empty.duckdb").close()
    res = build_report(tmp_path / "empty.duckdb", tmp_path / "empty.html")
    html = res.path.read_text()
    assert res.n_runs == 0 and set(res.empty_sections) == {"runs", "slices", "training", "alerts"}
    assert "No scored runs in this store yet" in html and "No training runs in this store" in html
    assert "No slice data" in html


def test_store_without_training(tmp_path):
    fs = build_store(tmp_path / "s", n_utts=30, training=False, audio=False)
    res = build_report(fs.db, tmp_path / "r.html")
    html = res.path.read_text()
    assert res.n_runs == 3 and "training" in res.empty_sections
    assert "No training runs in this store" in html and "corpus shards not found" not in html
    assert "audio not in the corpus shards" in html  # the shard dir exists but holds no audio


def test_incomplete_store_is_completed_in_sql(tmp_path):
    fs = build_store(tmp_path / "s", n_utts=40, complete=False, training=False, audio=False)
    con = connect(fs.db, read_only=True)
    html, ctx = render(con)
    con.close()
    tables = {t["attr"]: t for t in ctx["slices"][0]["tables"]}
    assert tables["noise"]["methods"] == ["normal"] and tables["hsk_level"]["methods"] == ["bootstrap"]
    v2_ft = [p for p in tables["noise"]["pairs"] if (p["a"].run_id, p["b"].run_id) == (fs.run_ids["large-v2"],
                                                                                         fs.run_ids["ft"])]
    assert v2_ft[0]["method"] == "normal" and all(r["d"] is not None for r in v2_ft[0]["rows"])
    assert "normal-approximation" in html


def test_selection_by_model_name_and_corpus(store):
    con = connect(store.db, read_only=True)
    sel = select(con, runs=["openai/whisper-large-v3,run-ft-0"], corpora=["demo_zh"])
    assert [r.run_id for r in sel.runs] == [store.run_ids["large-v3"], store.run_ids["ft"]]
    with pytest.raises(AsrEvalError, match="unknown run 'nope'"):
        select(con, runs=["nope"])
    with pytest.raises(AsrEvalError, match="unknown corpus"):
        select(con, corpora=["other"])
    with pytest.raises(AsrEvalError, match="no scores with normalizer 'zh-v9'"):
        select(con, normalizer="zh-v9")
    con.close()


def test_default_normalizer_is_the_common_one(tmp_path):
    con = _tiny(tmp_path / "t.duckdb")
    con.execute("INSERT INTO utterance_scores SELECT * REPLACE ('zh-v2' AS normalizer, 'h2' AS normalizer_hash) "
                "FROM utterance_scores WHERE run_id = 'A'")
    sel = select(con)
    assert sel.normalizer == "zh-v1" and sel.normalizers_available == ("zh-v1", "zh-v2")
    assert "several normalizers" in sel.notes[0]
    only_a = select(con, normalizer="zh-v2")
    assert [r.run_id for r in only_a.runs] == ["A"] and [r.run_id for r in only_a.unscored] == ["B"]


def test_not_a_store(tmp_path):
    import duckdb

    duckdb.connect(str(tmp_path / "foreign.duckdb")).execute("CREATE TABLE t (x INT)").close()
    with pytest.raises(AsrEvalError, match="not an asr-eval store"):
        build_report(tmp_path / "foreign.duckdb", tmp_path / "x.html")


def test_cli_report_and_export(store, tmp_path):
    from asr_eval.cli import _register_commands, app

    _register_commands()
    out, exp = tmp_path / "cli.html", tmp_path / "exp"
    res = CliRunner().invoke(app, ["report", "--db", str(store.db), "--out", str(out), "--export-dir", str(exp),
                                   "--runs", "run-large-v2-0", "--runs", "run-ft-0", "--worst", "3"])
    assert res.exit_code == 0, res.output
    assert out.is_file() and (exp / "slice_metrics.csv").is_file() and len(list((exp / "nemo").glob("*.jsonl"))) == 2
    html = out.read_text()
    assert store.run_ids["large-v2"] in html and store.run_ids["large-v3"] not in html  # not selected
    res = CliRunner().invoke(app, ["export", str(tmp_path / "e2"), "--db", str(store.db)])
    assert res.exit_code == 0 and len(list((tmp_path / "e2" / "leaderboard").glob("MODEL_*.jsonl"))) == 3


def test_confusions_on_a_sample_for_large_runs(tmp_path):
    con = _tiny(tmp_path / "t.duckdb")
    html, ctx = render(con, ReportOptions(confusion_utts=1))
    # A has 3 utterances with errors, B 2: at most 1 read each → 1-in-3 and 1-in-2 samples, said in the report
    assert ctx["errors"]["confusion_stride"] == {"A": 3, "B": 2}
    assert "1-in-k sample" in html
    full = queries.confusions(con, select(con), 5)
    sampled = ctx["errors"]["confusions"]
    assert sum(c.count for c in sampled["A"]["S"]) <= sum(c.count for c in full["A"]["S"]) == 3


def test_runs_without_scores_are_listed_not_crashed(tmp_path):
    con = _tiny(tmp_path / "t.duckdb")
    con.execute("DELETE FROM utterance_scores")
    html, ctx = render(con, ReportOptions(runs=("A",)))
    assert ctx["sel"].runs == () and [r.run_id for r in ctx["sel"].unscored] == ["A"]
    assert "Not in this report (no scores" in html and "No scored runs in this store yet" in html
    assert "No training runs behind the selected models" in html


def test_report_from_real_scoring_output(tmp_path):
    """The scorer's own rows (flags, alignments, bootstrap intervals, comparisons) render as expected."""
    fs = build_scored_store(tmp_path)
    con = connect(fs.db, read_only=True)
    html, ctx = render(con)
    stored = con.execute("SELECT slice_attr, count(*) FROM slice_metrics WHERE run_id = ? GROUP BY 1 ORDER BY 1",
                         [fs.run_ids["whisper-a"]]).fetchall()
    flags = con.execute("SELECT DISTINCT unnest(flags) FROM utterance_scores ORDER BY 1").fetchall()
    con.close()
    assert {t["attr"] for t in ctx["slices"][0]["tables"]} == {a for a, _ in stored} - {"_all"}
    assert all(t["methods"] == ["bootstrap"] for t in ctx["slices"][0]["tables"])  # nothing had to be computed
    assert all(p["method"] == "bootstrap" for t in ctx["slices"][0]["tables"] for p in t["pairs"])
    assert set(ctx["errors"]["flag_names"]) == {f for (f,) in flags} >= {"traditional_script", "hallucination", "empty"}
    assert XSS_SCRIPT not in html and "&lt;script&gt;window.__xss" in html
    worst_a = ctx["worst"]["per_run"][0]["utts"]
    assert worst_a[0]["audio"] is not None  # audio from the real shards, through index.json


@pytest.mark.parametrize(("raw", "out"), [
    (None, {}), ("null", {}), ('{"num_beams": 1}', {"num_beams": 1}), ("[1, 2]", {"value": [1, 2]}),
    ({"a": 1}, {"a": 1}),
])
def test_json_columns_as_dicts(raw, out):
    from asr_eval.report.select import as_dict

    assert as_dict(raw) == out


def test_thin_runs_show_a_point_estimate_without_interval_or_star(tmp_path):
    """Minimum evidence in the headline (as in the slice tables): six utterances are below the
    20-utterance minimum, so every run shows its CER with † and no interval, no run gets ★, the
    verdict line says it is a point estimate, and no "detectable ≥" appears."""
    fx = build_scored_store(tmp_path, n_utts=6)
    con = connect(fx.db, read_only=True)
    try:
        html, ctx = render(con, ReportOptions())
    finally:
        con.close()
    rows = [r for c in ctx["headline"] for r in c["rows"]]
    assert len(rows) == 2 and all(not r["t"].reliable and not r["best"] for r in rows)
    plot_rows = [r for c in ctx["headline"] for r in c["plot"].rows]
    assert all(r.x is not None and r.x_lo is None and r.x_hi is None and not r.best and r.text.endswith(" †")
               for r in plot_rows)
    head = html[html.index('<section id="headline">'):html.index('<section id="runs">')]
    assert "★" not in head and 'class="num best"' not in head and '<span class="ci">' not in head
    assert head.count('<span class="unreliable"') >= 4  # CER and MER of both runs
    v = ctx["verdicts"][0]
    assert not v["reliable"] and all(line["mde"] == "—" and line["ci"] == "" for line in v["lines"])
    summary = html[html.index('<section id="summary">'):html.index('<section id="headline">')]
    assert "a point estimate only: insufficient data (n = 6)" in summary
    assert summary.count("insufficient data (n = 6)") == 2  # the best line and the comparison's words
    assert not re.search(r'class="num ci">\[', summary)  # no interval on the paired difference either
