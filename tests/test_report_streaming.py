"""The report's Streaming section: a store built through the library writers (ingest, hypotheses,
emission logs, the scorer and the streaming scorer — no model inference), then the rendered
trade-off charts, per-slice table and timeline checked against the stored numbers."""

from __future__ import annotations

import dataclasses
import html as html_lib
import json
import math
import os
import re
import sys
from datetime import datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from asr_eval.report import ReportOptions, render  # noqa: E402
from asr_eval.report.streaming import reference_times, secs, secs_ci, stream_view  # noqa: E402
from asr_eval.store import connect  # noqa: E402
from asr_eval.streaming.base import Emission  # noqa: E402
from asr_eval.streaming.metrics import uniform_reference  # noqa: E402

PHRASES = ("今天天气很好", "我们去公园", "火车站怎么走", "请早点休息", "明天有考试", "这个问题重要",
           "经济发展需要时间", "朋友喜欢喝茶")
N_RECS = 26
LONGEST = "r07"
MODEL = "local:whisper-t@0"
OFFLINE, LA, HOLD = "run-offline", "run-la-1s", "run-hold-2s"


def _segments(i: int) -> tuple[float, list[list]]:
    """(duration, segments) of recording i: two phrases (three for the longest one)."""
    if f"r{i:02d}" == LONGEST:
        return 7.0, [[0.3, 2.0, PHRASES[0]], [2.5, 4.4, PHRASES[6]], [4.9, 6.6, PHRASES[2]]]
    a, b = PHRASES[i % len(PHRASES)], PHRASES[(i + 3) % len(PHRASES)]
    return 3.5 + 0.1 * (i % 4), [[0.2, 1.6, a], [1.9, 3.3, b]]


def _log(segs: list[list], dur: float, chunk: float, delay: float, sub: bool, wrong_tail: bool,
         cost: float) -> list[Emission]:
    """A plausible emission log: after each chunk, commit the reference characters that ended at
    least ``delay`` before its arrival, show the next two as the tentative tail (a wrong one on odd
    chunks with ``wrong_tail``, so that it is retracted: flicker); ``sub`` substitutes the 4th
    committed character (a CER cost); the flush commits the rest."""
    ref = uniform_reference(segs)
    chars, ends = ref.chars, ref.end_s
    out, pos, k = [], 0, 0
    n_chunks = math.ceil(dur / chunk - 1e-9)
    for k in range(n_chunks):
        arr = min((k + 1) * chunk, dur)
        new = pos
        while new < len(chars) and ends[new] <= arr - delay:
            new += 1
        commit = "".join("错" if sub and i == 3 else chars[i] for i in range(pos, new))
        tail = "错了" if wrong_tail and k % 2 else chars[new:new + 2]
        if commit or tail:
            out.append(Emission(round(arr, 3), round(arr + cost, 3), commit, tail, k))
        pos = new
    rest = "".join("错" if sub and i == 3 else chars[i] for i in range(pos, len(chars)))
    out.append(Emission(dur, round(dur + cost, 3), rest, "", n_chunks, True))
    return out


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    from conftest import write_audio

    from asr_eval.corpus import open_source
    from asr_eval.scoring.analysis import analyse
    from asr_eval.shards import IngestOptions, ingest
    from asr_eval.store.load import (
        load_corpus,
        load_hypotheses,
        register_model,
        upsert_eval_run,
    )
    from asr_eval.streaming.store import analyse_streams, store_stream_log

    tmp = tmp_path_factory.mktemp("stream")
    src = tmp / "src"
    rows, segs, durs = [], {}, {}
    for i in range(N_RECS):
        uid = f"r{i:02d}"
        durs[uid], segs[uid] = _segments(i)
        write_audio(src / f"{uid}.wav", durs[uid], 16000, seed=i)
        rows.append({"audio_filepath": f"{uid}.wav", "text": "".join(s[2] for s in segs[uid]), "split": "test",
                     "voice": "robotic" if i % 13 == 0 else "neural", "noise": ("clean", "snr10")[i % 2],
                     "segments": segs[uid]})
    (src / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    corpus = tmp / "corpus"
    ingest(open_source(str(src / "test.jsonl")), corpus, IngestOptions(workers=1), progress=False)

    db = tmp / "store.duckdb"
    con = connect(db)
    cid = load_corpus(con, corpus)
    register_model(con, {"model_id": MODEL, "name": "whisper-t", "source": "local"})
    ids = sorted(segs)
    refs = {u: "".join(s[2] for s in segs[u]) for u in ids}
    now = datetime(2025, 5, 1, 12, 0, 0)
    base = {"corpus_id": cid, "split": "test", "model_id": MODEL, "status": "done", "started_at": now,
            "finished_at": now, "device": "cpu", "n_utts": N_RECS, "audio_s": sum(durs.values())}
    # the offline run: a few errors
    off_hyp = [refs[u][:-1] + "吗" if k % 5 == 0 else refs[u] for k, u in enumerate(ids)]
    load_hypotheses(con, OFFLINE, pa.table({"utt_id": ids, "hyp_raw": off_hyp}))
    upsert_eval_run(con, {**base, "run_id": OFFLINE, "strategy": "vad"})
    # two streaming runs: local-agreement at 1 s (real time), hold-k at 2 s (a substitution per
    # recording, a wrong tentative tail every other chunk, and compute slower than the audio)
    logs = {}
    for run, policy, params, chunk, delay, sub, wrong, cost in (
            (LA, "local-agreement", {"n": 2}, 1.0, 0.2, False, False, 0.3),
            (HOLD, "hold-k", {"k": 1}, 2.0, 0.5, True, True, 2.6)):
        logs[run] = {u: _log(segs[u], durs[u], chunk, delay, sub, wrong, cost) for u in ids}
        n_chunks = {u: math.ceil(durs[u] / chunk - 1e-9) for u in ids}
        stats = {u: {"audio_s": durs[u], "chunk_s": chunk, "n_chunks": n_chunks[u], "decode_calls": n_chunks[u],
                     "compute_s": cost * n_chunks[u], "real_time": cost < chunk, "final_lag_s": cost,
                     "max_lag_s": cost, "lag_slope": 0.0 if cost < chunk else 0.3} for u in ids}
        store_stream_log(con, run, logs[run], stats)
        load_hypotheses(con, run, pa.table({"utt_id": ids, "hyp_raw": ["".join(e.text for e in logs[run][u])
                                                                        for u in ids]}))
        upsert_eval_run(con, {**base, "run_id": run, "started_at": now.replace(minute=len(logs)), "strategy": "short",
                              "stream_policy": policy,
                              "stream_params": {"chunk_s": chunk, **params}})
    analyse(con, [OFFLINE, LA, HOLD], "zh-v1", n_boot=200)

    def timing(corpus_dir, split, profile):
        return {u: uniform_reference(segs[u], profile) for u in ids}

    analyse_streams(con, [OFFLINE, LA, HOLD], timing, "zh-v1", n_boot=200)
    con.close()
    con = connect(db, read_only=True)
    html, ctx = render(con, ReportOptions(worst_n=2, audio_cap_bytes=0))
    yield {"db": db, "con": con, "html": html, "ctx": ctx, "logs": logs, "segs": segs, "durs": durs}
    con.close()


def _section(html: str) -> str:
    start = html.index('<section id="streaming">')
    return html[start:html.index("</section>", start)]


def _attrs(tag: str) -> dict[str, str]:
    return {k: html_lib.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', tag)}


def _linear(ticks: list[tuple[float, float]]) -> tuple[float, float]:
    """(a, b) of pos = a + b·value through the first and last tick."""
    (v0, p0), (v1, p1) = ticks[0], ticks[-1]
    b = (p1 - p0) / (v1 - v0)
    return p0 - b * v0, b


def _stored_all(con, run: str) -> dict:
    cur = con.execute("SELECT * FROM stream_slices WHERE run_id = ? AND normalizer = 'zh-v1' AND slice_attr = '_all'",
                      [run])
    return dict(zip([d[0] for d in cur.description], cur.fetchone()))


def _cer(con, run: str) -> float:
    return con.execute("SELECT cer FROM slice_metrics WHERE run_id = ? AND normalizer = 'zh-v1' AND "
                       "slice_attr = '_all'", [run]).fetchone()[0]


def test_section_and_nav_present(fx):
    html = fx["html"]
    assert '<a href="#streaming">Streaming</a>' in html
    sec = _section(html)
    st = fx["ctx"]["streaming"]
    assert [r["run_id"] for r in st.runs] == [LA, HOLD]
    assert {r["run_id"]: r["offline_run"] for r in st.runs} == {LA: OFFLINE, HOLD: OFFLINE}
    assert "computation-unaware" in sec and "computation-aware" in sec and "Flicker" in sec
    # labels come from run_labels: the model plus the axis that differs (the streaming strategy)
    assert st.runs[0]["label"] == "whisper-t · streaming local-agreement 1s"
    assert st.offline[0]["label"] == "whisper-t · vad"


def test_summary_rows_match_the_store(fx):
    con, st, sec = fx["con"], fx["ctx"]["streaming"], _section(fx["html"])
    for r in st.runs:
        s = _stored_all(con, r["run_id"])
        assert r["latency_median_s"]["unaware"] == s["latency_median_s_unaware"]
        assert r["cer"] == pytest.approx(_cer(con, r["run_id"]))
        row = re.search(rf'<tr data-run="{r["run_id"]}">(.*?)</tr>', sec, re.DOTALL).group(1)
        assert secs(s["latency_median_s_unaware"]) in row and secs(s["latency_p90_s_aware"]) in row
        assert secs_ci(s["latency_median_lo_unaware"], s["latency_median_hi_unaware"]) in row
        assert f"{100 * s['flicker']:.1f}%" in row
    la, hold = st.runs
    assert la["flicker"] == 0.0 and hold["flicker"] > 0  # wrong tentative tails were retracted
    assert la["real_time"] is True and hold["real_time"] is False
    assert "real-time capable on cpu" in sec and "not real-time on cpu" in sec
    # ΔCER against the offline run, streaming − offline
    assert hold["delta_cer"] == pytest.approx(_cer(con, HOLD) - _cer(con, OFFLINE))
    assert la["cer"] == 0.0 and hold["cer"] > _cer(con, OFFLINE) > 0


def test_tradeoff_points_at_stored_latency_and_cer(fx):
    con, sec = fx["con"], _section(fx["html"])
    svgs = re.findall(r'<svg class="chart tradeoff".*?</svg>', sec, re.DOTALL)
    assert len(svgs) == 2 and 'data-clock="unaware"' in svgs[0] and 'data-clock="aware"' in svgs[1]
    for svg, clock in zip(svgs, ("unaware", "aware")):
        # axis maps, from the tick marks alone
        xt = [(float(v), float(p)) for p, v in re.findall(
            r'<text class="tick" x="([\d.]+)" y="[\d.]+" text-anchor="middle">([-\d.]+)</text>', svg)]
        yt = [(float(v) / 100, float(p) - 4) for p, v in re.findall(
            r'<text class="tick" x="[\d.]+" y="([\d.]+)" text-anchor="end">([\d.]+)%</text>', svg)]
        (ax, bx), (ay, by) = _linear(xt), _linear(yt)
        points = re.findall(r'(<g class="stream-point"[^>]*>)(.*?)</g>', svg, re.DOTALL)
        assert [_attrs(g)["data-run"] for g, _ in points] == [LA, HOLD]  # one point per streaming run
        for g, body in points:
            a = _attrs(g)
            s = _stored_all(con, a["data-run"])
            lat, cer = s[f"latency_median_s_{clock}"], _cer(con, a["data-run"])
            assert float(a["data-latency"]) == lat and float(a["data-cer"]) == pytest.approx(cer)
            c = _attrs(re.search(r"<circle[^>]*>", body).group(0))
            assert float(c["cx"]) == pytest.approx(ax + bx * lat, abs=0.2)
            assert float(c["cy"]) == pytest.approx(ay + by * cer, abs=0.2)
            # the median's interval as a horizontal bar (26 recordings resampled)
            bar = _attrs(re.search(r"<line[^>]*>", body).group(0))
            assert float(bar["y1"]) == float(bar["y2"]) == float(c["cy"])
            assert float(bar["x1"]) == pytest.approx(ax + bx * s[f"latency_median_lo_{clock}"], abs=0.2)
            assert float(bar["x2"]) == pytest.approx(ax + bx * s[f"latency_median_hi_{clock}"], abs=0.2)
        assert ">local-agreement 1s<" in svg and ">hold-k 2s<" in svg
        # the offline run's CER as a horizontal reference line, labelled
        g, body = re.search(r'(<g class="offline-line"[^>]*>)(.*?)</g>', svg, re.DOTALL).groups()
        off = _cer(con, OFFLINE)
        assert _attrs(g)["data-run"] == OFFLINE and float(_attrs(g)["data-cer"]) == pytest.approx(off)
        ln = _attrs(re.search(r"<line[^>]*>", body).group(0))
        assert float(ln["y1"]) == float(ln["y2"]) == pytest.approx(ay + by * off, abs=0.2)
        assert f"offline: whisper-t · vad {100 * off:.2f}%" in body
    # the hold-k point sits to the right (later) and above (worse) the local-agreement one
    p = fx["ctx"]["streaming"].plots[0]
    la, hold = p.points
    assert hold.x > la.x and hold.y < la.y


def test_cer_interval_only_with_enough_evidence(fx):
    st = fx["ctx"]["streaming"]
    reliable = dict(fx["con"].execute("SELECT run_id, reliable FROM slice_metrics WHERE slice_attr = '_all'").fetchall())
    for r, pt in zip(st.runs, st.plots[0].points):
        assert r["cer_reliable"] == bool(reliable[r["run_id"]])
        assert (pt.y_lo is not None) == r["cer_reliable"]


def test_per_slice_table_equals_stream_slices(fx):
    con, st, sec = fx["con"], fx["ctx"]["streaming"], _section(fx["html"])
    cur = con.execute("SELECT * FROM stream_slices WHERE normalizer = 'zh-v1' AND slice_attr <> '_all'")
    stored = [dict(zip([d[0] for d in cur.description], r)) for r in cur.fetchall()]
    assert {s["slice_attr"] for s in stored} == {tb["attr"] for tb in st.slices} >= {"voice", "noise"}
    shown = {(tb["attr"], r["value"], r["run_id"]): r for tb in st.slices for r in tb["rows"]}
    assert len(shown) == len(stored)
    for s in stored:
        r = shown[(s["slice_attr"], s["slice_value"], s["run_id"])]
        assert r["stored"] == s and r["n"] == s["n"] and r["flicker"] == s["flicker"]
        block = sec[sec.index(f'data-attr="{s["slice_attr"]}"'):]
        row = re.search(rf'<tr[^>]*data-run="{s["run_id"]}" data-value="{re.escape(s["slice_value"])}">(.*?)</tr>',
                        block, re.DOTALL).group(1)
        cells = [html_lib.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]
        assert cells[0] == s["slice_value"] and cells[2] == str(s["n"])
        for k, clock in ((3, "unaware"), (5, "aware")):
            assert cells[k].startswith(secs(s[f"latency_median_s_{clock}"]))
            assert cells[k + 1] == secs(s[f"latency_p90_s_{clock}"])
        assert cells[7] == f"{100 * s['flicker']:.1f}%"
        assert cells[8] == ("yes" if s["real_time"] else "no")
        # the interval only where the slice has enough recordings and matched characters
        ci = secs_ci(s["latency_median_lo_unaware"], s["latency_median_hi_unaware"])
        reliable = s["n"] >= 20 and s["n_matched"] >= 200
        assert r["reliable"] == reliable and ("[" in cells[3]) == reliable and ("†" in cells[3]) != reliable
        if reliable:
            assert ci and ci in cells[3]
    assert any(r["reliable"] for r in shown.values()) and any(not r["reliable"] for r in shown.values())
    assert shown[("voice", "neural", LA)]["n"] == 24 and shown[("voice", "robotic", LA)]["n"] == 2


def test_timeline_shows_committed_and_greyed_tentative_text(fx):
    st, sec = fx["ctx"]["streaming"], _section(fx["html"])
    tl = st.timeline
    assert tl.utt_id == LONGEST and tl.run_id == LA and tl.n_segments == 3 and not tl.truncated
    assert tl.timing_method == "uniform" and tl.timing_source == "uniform"
    assert "uniform fallback" in sec
    svg = re.search(r'<div class="scroll stream-tl">(.*?)</div>', sec, re.DOTALL).group(1)
    ems = fx["logs"][LA][LONGEST]
    com = [(float(_attrs(t)["x"]), txt) for t, txt in re.findall(r'(<text class="com"[^>]*>)([^<]*)</text>', svg)]
    tent = [(float(_attrs(t)["x"]), txt) for t, txt in re.findall(r'(<text class="tent"[^>]*>)([^<]*)</text>', svg)]
    assert [c for _, c in com] == [e.text for e in ems if e.text]
    assert [c for _, c in tent] == [e.tentative for e in ems if e.tentative]
    # the committed increment ends at its emission time, the tentative tail starts right after it
    px = {e.text: 12 + 60 * e.emit_s for e in ems if e.text}
    assert all(x == pytest.approx(px[c] - 1, abs=0.1) for x, c in com)
    assert "".join(c for _, c in com) == "".join(s[2] for s in fx["segs"][LONGEST])
    # reference characters at their (uniform) end times
    ref = uniform_reference(fx["segs"][LONGEST])
    refs = [(float(_attrs(t)["x"]), c) for t, c in re.findall(r'(<text class="ref[^"]*"[^>]*>)([^<]*)<title>', svg)]
    assert "".join(sorted(c for _, c in refs)) == "".join(sorted(ref.chars))
    by_char = {}
    for x, c in refs:
        by_char.setdefault(c, []).append(x)
    for c, t in zip(ref.chars, ref.end_s):
        assert min(abs(x - (12 + 60 * t)) for x in by_char[c]) < 0.1
    assert "seconds from the start of the recording" in svg


def test_timeline_recovers_aligned_times_from_stored_latencies(fx):
    con = fx["con"]
    rec = dict(zip(("utt_id", "audio_s", "segments", "text", "timing_method", "latency_unaware", "n_ref_chars"),
                   con.execute("SELECT s.utt_id, r.audio_s, u.segments::VARCHAR, u.text, s.timing_method, "
                               "s.latency_unaware::VARCHAR, s.n_ref_chars FROM stream_scores s JOIN stream_recordings r "
                               "USING (run_id, utt_id) JOIN utterances u USING (utt_id) "
                               "WHERE s.run_id = ? AND s.utt_id = ?", [HOLD, LONGEST]).fetchone()))
    ems = fx["logs"][HOLD][LONGEST]
    uni = uniform_reference(fx["segs"][LONGEST])
    # scored with forced-alignment times: the matched characters' ends come back from the store
    chars, ends, _, source, matched = reference_times({**rec, "timing_method": "aligned:test"}, ems, "zh-v1")
    assert source == "stored" and chars == uni.chars and not all(matched)
    for i, ok in enumerate(matched):
        assert ends[i] == pytest.approx(uni.end_s[i], abs=1e-3 if ok else 0.5)
    # the forced-alignment times cached beside the corpus (asr_eval.streaming.timing) come first
    cache = Path(rec_path := con.execute("SELECT path FROM corpora").fetchone()[0]) / "timing"
    cache.mkdir(exist_ok=True)
    shifted = {**dataclasses.asdict(uni), "end_s": [t + 0.05 for t in uni.end_s], "method": "aligned:fake-key"}
    (cache / "0123.json").write_text(json.dumps({"version": 1, "aligner": "fake-key", "profile": "zh-v1",
                                                 "timings": {LONGEST: shifted}}, ensure_ascii=False))
    try:
        for method in ("aligned:fake-key", "mixed:fake-key (2/3 aligned)"):
            got = reference_times({**rec, "path": rec_path, "timing_method": method}, ems, "zh-v1")
            assert got[3] == "cache" and got[0] == uni.chars and got[1] == shifted["end_s"]
        # another aligner's cache is not this run's timing
        other = reference_times({**rec, "path": rec_path, "timing_method": "aligned:other-key"}, ems, "zh-v1")
        assert other[3] == "stored"
    finally:
        (cache / "0123.json").unlink()
    # latencies that do not fit the alignment: uniform, and said so
    bad = {**rec, "timing_method": "aligned:test", "latency_unaware": "[1.0]"}
    assert reference_times(bad, ems, "zh-v1")[3] == "uniform-mismatch"
    # a timing source passed by the caller wins
    got = reference_times(rec, ems, "zh-v1", timing=lambda p, s, prof: {LONGEST: uni})
    assert got[3] == "given" and got[1] == uni.end_s


def test_section_absent_without_streaming_runs(fx, tmp_path):
    con = fx["con"]
    assert stream_view(con, [OFFLINE], "zh-v1") is None
    assert stream_view(con, [], "zh-v1") is None
    html, ctx = render(con, ReportOptions(runs=(OFFLINE,), worst_n=1, audio_cap_bytes=0))
    assert ctx["streaming"] is None and 'id="streaming"' not in html and "#streaming" not in html


def test_section_absent_on_a_store_without_stream_tables(tmp_path):
    from report_fixtures import build_scored_store

    fs = build_scored_store(tmp_path, n_utts=8)
    con = connect(fs.db)
    for t in ("stream_events", "stream_recordings", "stream_scores", "stream_slices"):
        con.execute(f"DROP TABLE {t}")
    assert stream_view(con, list(fs.run_ids.values()), "zh-v1") is None
    html, ctx = render(con, ReportOptions(worst_n=1, audio_cap_bytes=0))
    con.close()
    assert ctx["streaming"] is None and 'id="streaming"' not in html
