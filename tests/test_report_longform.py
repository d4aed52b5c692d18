"""The report's worst-items view for long recordings: the diff windowed around the densest error
regions (not drawn whole), audio excerpts located through the reference segment times (else
proportionally), excerpt sizes bounded."""

from __future__ import annotations

import base64
import io
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from asr_eval.report import ReportOptions, render  # noqa: E402
from asr_eval.report.windows import (  # noqa: E402
    MAX_EXCERPT_S, Window, error_windows, excerpt_flac, excerpt_span, window_times, windowed_view,
)
from asr_eval.store import connect  # noqa: E402
from report_fixtures import build_store, plant_long_recording  # noqa: E402


def test_error_windows_pick_the_densest_regions_in_order():
    toks = [("=", "好", "好")] * 1000
    toks = list(toks)
    for k in range(500, 520):  # 20 errors
        toks[k] = ("S", "好", "坏")
    for k in range(100, 108):  # 8 errors
        toks[k] = ("D", "好", "")
    for k in (300, 700, 900):  # scattered singles
        toks[k] = ("I", "", "啊")
    ws = error_windows(toks, width=60, k=3)
    assert [w.n_errors for w in ws] == [8, 1, 20]  # in alignment order; the third pick is the first single
    assert (ws[1].start, ws[1].end) == ((241 + 300) // 2, (241 + 300) // 2 + 60)
    assert ws[0].start <= 100 and ws[0].end >= 108 and ws[2].start <= 500 and ws[2].end >= 520
    assert ws[0].start == (48 + 100) // 2  # of the windows holding all 8 (starts 48-100), the centred one
    # windows never overlap, and a window without an error is never chosen
    assert len(error_windows(toks, width=60, k=10)) == 5
    assert error_windows([("=", "a", "a")] * 100, 60, 3) == []
    # the omitted stretches between windows are counted with their errors
    view = windowed_view(toks, ws)
    assert [p["omitted"] for p in view] == [74, ws[1].start - ws[0].end,
                                           ws[2].start - ws[1].end, 1000 - ws[2].end]
    assert sum(p["omitted_errors"] for p in view) + sum(w.n_errors for w in ws) == 20 + 8 + 3
    assert sum(p["omitted"] + len(p["tokens"]) for p in view) == 1000


def test_window_times_through_segments_else_proportional():
    segs = [[10.0, 13.0, "一二三四五六七八九十"], [20.0, 25.0, "甲乙丙丁戊己庚辛壬癸"]]
    w = Window(0, 5, 5, ref_start=12, ref_end=17)  # chars 12..16: inside the second segment
    t0, t1, how = window_times(w, 20, 60.0, segs, normalize=lambda s: s)
    assert how == "segments" and (t0, t1) == pytest.approx((21.0, 23.5))
    t0, t1, how = window_times(Window(0, 5, 5, 8, 12), 20, 60.0, segs, normalize=lambda s: s)
    assert how == "segments" and (t0, t1) == pytest.approx((12.4, 21.0))  # spans the pause between segments
    # segments that do not spell the reference (another normalizer) or none: proportional
    assert window_times(w, 21, 60.0, segs, normalize=lambda s: s)[2] == "proportional"
    assert window_times(w, 20, 60.0, None) == pytest.approx((36.0, 51.0, "proportional"))
    # excerpts: margin, clamped to the recording, never longer than the cap (the middle is kept)
    assert excerpt_span(21.0, 23.5, 60.0) == (19.5, 25.0)
    assert excerpt_span(0.5, 2.0, 3.0) == (0.0, 3.0)
    a, b = excerpt_span(100.0, 160.0, 300.0)
    assert b - a == pytest.approx(MAX_EXCERPT_S) and (a + b) / 2 == pytest.approx(130.0)


def test_excerpt_flac_cuts_only_those_seconds():
    import numpy as np

    x = np.linspace(-0.5, 0.5, 16000 * 10, dtype=np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="FLAC", subtype="PCM_16")
    y, sr = sf.read(io.BytesIO(excerpt_flac(buf.getvalue(), 2.0, 3.5)), dtype="float32")
    assert sr == 16000 and len(y) == 24000
    assert y[0] == pytest.approx(x[32000], abs=1e-4) and y[-1] == pytest.approx(x[55999], abs=1e-4)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    fx = build_store(tmp_path_factory.mktemp("long"), n_utts=30, training=False)
    return fx, plant_long_recording(fx)


def _long_item(ctx, utt_id):
    return next(x for pr in ctx["worst"]["per_run"] for x in pr["utts"] if x["u"].utt_id == utt_id)


def test_long_recording_is_windowed_with_excerpts(planted):
    fx, p = planted
    con = connect(fx.db, read_only=True)
    try:
        html, ctx = render(con, ReportOptions(worst_n=40))
    finally:
        con.close()
    x = _long_item(ctx, p.utt_id)
    wins = [q for q in x["windows"] if q["window"] is not None]
    assert x["tokens"] == [] and len(wins) == 3
    # one window over each planted dense region, in recording order: insertions, substitutions, deletions
    for q, name, n_err in zip(wins, ("ins", "sub", "del"), (5, 25, 12), strict=True):
        a, b = p.regions[name]
        w = q["window"]
        assert w.start <= a and b <= w.end and w.end - w.start == 60
        assert w.n_errors in (n_err, n_err + 1)  # + at most one scattered single
        # located through the segment times: inside the segment(s) around the region
        s0, s1 = p.region_times[name]
        assert q["located"] == "segments"
        assert s0 - 7 <= q["t0"] <= s1 and s0 <= q["t1"] <= s1 + 7  # ± 60 characters: ± 2 segments
        e0, e1 = q["excerpt"]
        assert e0 <= q["t0"] and e1 >= q["t1"] and e1 - e0 <= MAX_EXCERPT_S
        # the excerpt embedded is that many seconds of FLAC, not the 365 s file
        uri = ctx["worst"]["audio"].uris[q["audio"]]
        y, sr = sf.read(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert len(y) / sr == pytest.approx(e1 - e0, abs=1 / 16000 + 1e-3)
    # the omitted stretches add up to the rest of the alignment
    assert sum(q["omitted"] + len(q["tokens"]) for q in x["windows"]) == p.n_ref + 5
    # the HTML draws 180 aligned tokens of the recording, not 3,005
    item = html[html.index(p.utt_id):]
    item = item[:item.index('<div class="utt">')] if '<div class="utt">' in item else item
    assert item.count('<span class="tok ') == 180
    assert "characters omitted" in item and "located by reference segment times" in item
    # its long-form flag is counted per slice like any other (the whole run and its speaker slice)
    con = connect(fx.db, read_only=True)
    try:
        from asr_eval.report import queries
        from asr_eval.report.select import select

        fc = queries.flag_counts(con, select(con))
    finally:
        con.close()
    assert [(r["attr"], r["value"], r["n"]) for r in fc
            if r["flag"] == "dropped_window" and r["run_id"] == fx.run_ids["large-v3"]] == [("_all", "all", 1),
                                                                                     ("speaker", "spk00", 1)]
    # a short item is still drawn whole with its whole audio
    short = next(u for pr in ctx["worst"]["per_run"] for u in pr["utts"] if u["windows"] is None)
    assert short["tokens"] and short["audio"] in ctx["worst"]["audio"].uris


def test_long_recording_without_segments_is_located_proportionally(tmp_path):
    fx = build_store(tmp_path, n_utts=20, training=False)
    p = plant_long_recording(fx, with_segments=False)
    con = connect(fx.db, read_only=True)
    try:
        _, ctx = render(con, ReportOptions(worst_n=30))
    finally:
        con.close()
    wins = [q for q in _long_item(ctx, p.utt_id)["windows"] if q["window"] is not None]
    assert {q["located"] for q in wins} == {"proportional"}
    w = wins[1]["window"]  # the substitution region: reference characters ~1180-1240 of 3000
    assert wins[1]["t0"] == pytest.approx(w.ref_start / 3000 * 365.0)
    assert 1150 / 3000 * 365 <= wins[1]["t0"] <= 1200 / 3000 * 365
