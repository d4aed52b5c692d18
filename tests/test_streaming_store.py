"""Streaming runs in the store without a model: hand-made emission logs imported (JSONL and
whisper_streaming), scored against uniform reference timing, pooled per slice, exported and
re-imported — every number hand-computed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from asr_eval.errors import AsrEvalError
from asr_eval.store import connect
from asr_eval.streaming.evaluate import import_stream, stream_summary
from asr_eval.streaming.store import aggregate, stored_stream_slices

SR = 16_000


RECORDINGS = [("r0", 4.0, [[0.5, 2.5, "今天天气"]], "clean"),
              ("r1", 6.0, [[1.0, 2.0, "你好"], [3.0, 5.0, "再见朋友"]], "noisy")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two 'recordings' (quiet noise; the audio is never decoded here) with exact segments:
    r0 4 s, one segment [0.5, 2.5] 今天天气; r1 6 s, segments [1, 2] 你好 and [3, 5] 再见朋友."""
    return _ingest(tmp_path_factory.mktemp("stream_corpus"), RECORDINGS)


@pytest.fixture(scope="module")
def corpus3(tmp_path_factory):
    """The two recordings and a third: r2 3 s, one segment [0.5, 2.0] 谢谢你."""
    return _ingest(tmp_path_factory.mktemp("stream_corpus3"), [*RECORDINGS, ("r2", 3.0, [[0.5, 2.0, "谢谢你"]], "clean")])


def _ingest(root, rows):
    from asr_eval.corpus import open_source
    from asr_eval.shards import IngestOptions, ingest

    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for uid, dur, segs, noise in rows:
        sf.write(src / f"{uid}.flac", (0.01 * rng.standard_normal(int(dur * SR))).astype(np.float32), SR)
        lines.append({"id": uid, "audio_filepath": f"{uid}.flac", "text": " ".join(s[2] for s in segs),
                      "segments": segs, "split": "test", "noise": noise})
    (src / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
    out = root / "corpus"
    s = ingest(open_source(str(src / "manifest.jsonl")), out, IngestOptions(workers=1, long_form=True), progress=False)
    assert s.n_ingested == len(rows)
    return out


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


LOG = [  # r0: commits 今天 at 1.2 s, shows 天汽 at 2.0, commits 天气 at 3.0; r1: 你好 at 2.5, 再见朋友 at 5.5
    {"utt_id": "r0", "emit_s": 1.2, "text": "今天"},
    {"utt_id": "r0", "emit_s": 2.0, "text": "天汽", "final": False},
    {"utt_id": "r0", "emit_s": 3.0, "text": "天气"},
    {"utt_id": "r1", "emit_s": 2.5, "text": "你好"},
    {"utt_id": "r1", "emit_s": 5.5, "text": "再见朋友"},
]


def test_imported_jsonl_log_scored_by_hand(corpus, tmp_path):
    db = tmp_path / "s.duckdb"
    r = import_stream(corpus, _jsonl(tmp_path / "log.jsonl", LOG), "sys-a", db, n_boot=200, align_model="none")
    assert (r.format, r.n_matched, r.n_missing) == ("jsonl", 2, 0)
    con = connect(db, read_only=True)
    try:
        hyps = dict(con.execute("SELECT utt_id, hyp_raw FROM hypotheses WHERE run_id = ?", [r.run_id]).fetchall())
        assert hyps == {"r0": "今天天气", "r1": "你好再见朋友"}
        lat = dict(con.execute("SELECT utt_id, latency_unaware FROM stream_scores WHERE run_id = ?", [r.run_id]).fetchall())
        # r0 uniform ends 1.0 1.5 2.0 2.5 → 1.2−1.0, 1.2−1.5, 3.0−2.0, 3.0−2.5
        assert json.loads(lat["r0"]) == pytest.approx([0.2, -0.3, 1.0, 0.5])
        # r1: 你好 ends 1.5, 2.0 (emitted 2.5); 再见朋友 ends 3.5 4.0 4.5 5.0 (emitted 5.5)
        assert json.loads(lat["r1"]) == pytest.approx([1.0, 0.5, 2.0, 1.5, 1.0, 0.5])
        rows = {(x["slice_attr"], x["slice_value"]): x for x in stored_stream_slices(con, [r.run_id], "zh-v1")}
        whole = rows[("_all", "all")]
        pooled = np.array([0.2, -0.3, 1.0, 0.5, 1.0, 0.5, 2.0, 1.5, 1.0, 0.5])
        assert whole["n"] == 2 and whole["n_matched"] == 10
        assert whole["latency_median_s_unaware"] == pytest.approx(np.median(pooled))  # 0.75
        assert whole["latency_p90_s_unaware"] == pytest.approx(np.percentile(pooled, 90))
        assert whole["latency_median_s_aware"] == whole["latency_median_s_unaware"]  # a log has one clock
        assert whole["latency_median_lo_unaware"] <= 0.75 <= whole["latency_median_hi_unaware"]
        # displays r0: 今天 (+2), 今天天汽 (+2), 今天天气 (−1 +1); r1: +2, +4 → 1 retracted of 11 written
        assert whole["flicker"] == pytest.approx(1 / 11)
        assert whole["commits_per_minute"] == pytest.approx(4 / (10 / 60))
        assert whole["real_time"] is None and whole["compute_per_audio_s"] is None  # unknown for a log
        assert whole["timing_method"] == "uniform"
        # first emission after each segment's onset: r0 1.2 − 0.5; r1 2.5 − 1.0, 5.5 − 3.0 → median 1.5
        assert whole["first_emission_median_s_unaware"] == pytest.approx(1.5)
        clean = rows[("noise", "clean")]
        assert clean["n"] == 1 and clean["latency_median_s_unaware"] == pytest.approx(0.35)
        assert clean["latency_median_lo_unaware"] is None  # one recording: no interval
        (summ,) = stream_summary(con, [r.run_id], "zh-v1")
        assert summ["cer"] == 0.0 and summ["latency_median_s"] == {"unaware": pytest.approx(0.75),
                                                                     "aware": pytest.approx(0.75)}
        assert summ["policy"] == "import" and summ["delta_cer"] is None
    finally:
        con.close()
    again = import_stream(corpus, tmp_path / "log.jsonl", "sys-a", db, n_boot=200, align_model="none")
    assert again.run_id == r.run_id
    con = connect(db, read_only=True)
    assert con.execute("SELECT count(*) FROM eval_runs").fetchall() == [(1,)]
    assert con.execute("SELECT count(*) FROM stream_events").fetchall() == [(5,)]
    con.close()


def test_whisper_streaming_folder_and_export_round_trip(corpus, tmp_path):
    from asr_eval.export import export_all

    db = tmp_path / "s.duckdb"
    logs = tmp_path / "ws"
    logs.mkdir()
    (logs / "r0.txt").write_text("1200.0 0 1000 今天\n3000.0 1000 2500 天气\n", encoding="utf-8")
    (logs / "r1.txt").write_text("2500.0 1000 2000 你好\n5500.0 3000 5000 再见朋友\n", encoding="utf-8")
    a = import_stream(corpus, logs, "ws", db, n_boot=50, align_model="none")
    assert a.format == "whisper_streaming"
    b = import_stream(corpus, _jsonl(tmp_path / "log.jsonl", LOG), "sys-a", db, n_boot=50, align_model="none")
    res = export_all(db, tmp_path / "out", runs=[b.run_id])
    exported = tmp_path / "out" / "stream" / f"{b.run_id}.jsonl"
    assert exported in res.files
    c = import_stream(corpus, exported, "sys-a-again", db, n_boot=50, align_model="none")
    con = connect(db, read_only=True)
    try:
        def facts(run):
            return con.execute("SELECT utt_id, latency_unaware, retracted_chars, written_chars FROM stream_scores "
                               "WHERE run_id = ? ORDER BY utt_id", [run]).fetchall()
        assert facts(c.run_id) == facts(b.run_id)  # the exported log re-imports with the same metrics
        ws = dict(con.execute("SELECT utt_id, latency_unaware FROM stream_scores WHERE run_id = ?", [a.run_id]).fetchall())
        assert json.loads(ws["r0"]) == pytest.approx([0.2, -0.3, 1.0, 0.5])
        s = {r["run_id"]: r for r in stream_summary(con, [a.run_id, b.run_id], "zh-v1")}
        assert s[a.run_id]["flicker"] == 0.0 and s[b.run_id]["flicker"] == pytest.approx(1 / 11)
    finally:
        con.close()


@pytest.mark.parametrize("content,match", [
    ('{"utt_id": "r9", "emit_s": 1.0, "text": "x"}\n', r"log\.jsonl:1: utt_id 'r9' names no recording"),
    ('{"utt_id": "r0", "emit_s": 2.0, "text": "a"}\n{"utt_id": "r0", "emit_s": 1.0, "text": "b"}\n', r"log\.jsonl:2"),
    ('{"utt_id": "r0", "emit_s": -1.0, "text": "a"}\n', r"log\.jsonl:1"),
    ("", "empty file"),
])
def test_a_bad_log_is_refused_whole_and_nothing_is_stored(corpus, tmp_path, content, match):
    db = tmp_path / "s.duckdb"
    (tmp_path / "log.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(AsrEvalError, match=match):
        import_stream(corpus, tmp_path / "log.jsonl", "bad", db, align_model="none")
    assert not db.exists() or connect(db, read_only=True).execute("SELECT count(*) FROM eval_runs").fetchall() == [(0,)]


def _rec(lat_u, lat_a, audio_s=10.0, retracted=0, written=10, commits=2, calls=5, compute=4.0, rt=True,
         first=(1.0,)):
    return {"audio_s": audio_s, "n_matched": len(lat_u), "latency_unaware": json.dumps(lat_u),
            "latency_aware": json.dumps(lat_a), "first_emission_unaware": json.dumps(list(first)),
            "first_emission_aware": json.dumps(list(first)), "retracted_chars": retracted, "written_chars": written,
            "n_commits": commits, "decode_calls": calls, "compute_s": compute, "real_time": rt,
            "timing_method": "uniform"}


def test_aggregate_pools_recordings():
    recs = [_rec([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], retracted=2, written=12, compute=4.0),
            _rec([4.0], [6.0], audio_s=20.0, retracted=1, written=6, commits=4, calls=7, compute=30.0, rt=False,
                 first=(None, 3.0))]
    a = aggregate(recs, n_boot=100)
    assert (a["n"], a["n_matched"], a["audio_s"]) == (2, 4, 30.0)
    assert a["latency_median_s_unaware"] == 2.5 and a["latency_mean_s_unaware"] == 2.5
    assert a["latency_median_s_aware"] == 3.0 and a["latency_p90_s_aware"] == pytest.approx(5.25)
    assert a["flicker"] == pytest.approx(3 / 18) and a["commits_per_minute"] == pytest.approx(6 / 0.5)
    assert a["decode_calls"] == 12 and a["compute_per_audio_s"] == pytest.approx(34 / 30)
    assert a["real_time"] is False  # one recording fell behind
    assert a["first_emission_median_s_unaware"] == 2.0  # segments 1.0 and 3.0 (None: no emission)
    lo, hi = a["latency_median_lo_unaware"], a["latency_median_hi_unaware"]
    assert 1.0 <= lo <= 2.5 <= hi <= 4.0  # resampling recordings: medians of {1,2,3}, {4}, {1,2,3,4}


@pytest.mark.parametrize("method, model", [
    ("uniform", None),
    ("aligned:ct2-align:bundled:whisper-base@0123456789ab:float32:pad-audio:mf7", "bundled:whisper-base"),
    ("mixed:ct2-align:ct2:/m/x@abcdefabcdef:int8:pad-audio:mf7 (3/4 aligned)", "ct2:/m/x"),
    (None, "bundled:whisper-base"),  # never scored: the default
])
def test_recorded_align_model_reads_the_stored_timing_method(tmp_path, method, model):
    from asr_eval.store import connect
    from asr_eval.streaming.store import recorded_align_model

    con = connect(tmp_path / "s.duckdb")
    if method:
        con.execute("INSERT INTO stream_scores (run_id, utt_id, normalizer, timing_method) VALUES ('r', 'u', 'zh-v1', ?)",
                    [method])
    assert recorded_align_model(con, "r") == model
    con.close()


def test_import_stream_counts_every_recording_its_cer_is_computed_over(corpus3, tmp_path, monkeypatch):
    """A log covering 1 of 3 recordings: CER is over all 3 (the other two scored as full deletions,
    9 of 13 reference characters), so the table and --json say n = 3 and n_missing = 2, not n = 1;
    3 recordings are below the minimum evidence, so CER and ΔCER against an offline run are point
    estimates with † — no interval (in the JSON: null), no verdict."""
    from typer.testing import CliRunner

    from asr_eval.cli import _register_commands, app, console
    from asr_eval.importing import import_hypotheses

    _register_commands()
    db = tmp_path / "s.duckdb"
    off = import_hypotheses(corpus3, _jsonl(tmp_path / "offline.jsonl", [
        {"utt_id": "r0", "text": "今天天气"}, {"utt_id": "r1", "text": "你好再见朋友"}, {"utt_id": "r2", "text": "谢谢你"}]),
        "offline-sys", db, n_boot=100)
    log = _jsonl(tmp_path / "log.jsonl", [e for e in LOG if e["utt_id"] == "r0"])
    args = ["import-stream", str(log), "--corpus", str(corpus3), "--name", "sys-1of3", "--db", str(db),
            "--n-boot", "100", "--align-model", "none", "--offline", off.run_id]
    width, console.width = console.width, 250
    try:
        table = CliRunner().invoke(app, args)
        js = CliRunner().invoke(app, [*args, "--json"])
    finally:
        console.width = width
    assert table.exit_code == 0 and js.exit_code == 0, table.output + js.output
    assert ": 3 recordings of split test, 1 with a log, 2 without (scored as full deletions)" in table.output
    row = next(ln for ln in table.output.splitlines() if ln.startswith("│ sys-1of3"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[1:5] == ["3", "2", "69.23 †", "+69.23 †"]  # 9 / 13 over all three; Δ against the offline 0.00
    assert "[" not in row
    assert "insufficient data (n = 3, 13 reference characters" in table.output  # the ΔCER verdict
    (r,) = json.loads(js.output)
    assert (r["n"], r["n_missing"], r["n_streamed"]) == (3, 2, 1)
    assert r["cer"] == pytest.approx(9 / 13) and (r["cer_lo"], r["cer_hi"], r["cer_reliable"]) == (None, None, False)
    assert r["delta_cer"] == pytest.approx(9 / 13) and (r["delta_cer_lo"], r["delta_cer_hi"]) == (None, None)
    assert r["delta_reliable"] is False and r["delta_verdict"].startswith("insufficient data (n = 3, 13 reference")
    assert r["latency_reliable"] is False and r["latency_median_lo"] == {"unaware": None, "aware": None}
    # the offline run named by its model takes the model's offline run; a model with only streaming
    # runs is refused before anything is imported
    by_model = CliRunner().invoke(app, [*args[:-1], "offline-sys", "--json"])
    assert by_model.exit_code == 0 and json.loads(by_model.output)[0]["offline_run"] == off.run_id
    refused = CliRunner().invoke(app, [*args[:-1], "sys-1of3"])
    assert "has no finished offline run (only streaming runs" in str(refused.exception)
    from asr_eval.store import connect

    con = connect(db, read_only=True)
    assert con.execute("SELECT count(*) FROM eval_runs").fetchone()[0] == 2  # nothing more imported
    con.close()
    # the report's streaming table: the same counts, the same point estimates with † and no interval
    # (an imported log has no offline counterpart in the report: give it the one named above)
    import re

    from asr_eval.report import ReportOptions, render
    from asr_eval.store import connect
    from asr_eval.streaming import evaluate

    monkeypatch.setattr(evaluate, "offline_runs", lambda con, ids: {i: off.run_id for i in ids})
    con = connect(db, read_only=True)
    try:
        html, _ = render(con, ReportOptions(worst_n=0, audio_cap_bytes=0))
    finally:
        con.close()
    tr = re.search(rf'<tr data-run="{r["run_id"]}">(.*?)</tr>', html, re.DOTALL).group(1)
    tds = [re.sub(r"\s+", " ", re.sub(r"<br>|<[^>]+>", lambda m: " " if m.group(0) == "<br>" else "", c)).strip()
           for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.DOTALL)]
    assert tds[3] == "3 2 without a log" and tds[4] == "69.23% †" and tds[5].startswith("+69.23 † vs ")
    assert 'class="ci"' not in tds[4] + tds[5] and "[" not in "".join(tds[4:7])


# ───────────── hallucination over silence (asr_eval.metrics.hallucination) in the store ─────────────

SILENCE_LOG = [  # r0: speech [0.5, 2.5] of 4 s; r1: [1, 2] and [3, 5] of 6 s — every gap is >= 1 s but r0's first
    {"utt_id": "r0", "emit_s": 1.2, "text": "今天"},
    {"utt_id": "r0", "emit_s": 3.0, "text": "天气"},
    {"utt_id": "r0", "emit_s": 4.0, "text": "今天天气"},  # at the end, after the speech: a repeat, 4 in silence
    {"utt_id": "r1", "emit_s": 0.8, "text": "谢谢"},  # before the speech began: 2 in silence (the gap [0, 1])
    {"utt_id": "r1", "emit_s": 2.5, "text": "你好"},
    {"utt_id": "r1", "emit_s": 5.5, "text": "再见老朋友"},  # 老 inside the segment [3, 5]: not silence
    {"utt_id": "r1", "emit_s": 5.8, "text": "好"},  # the trailing gap [5, 6]: 1 in silence, a single unit: no repeat
]
OFFLINE_LF = "run-offline-vad"


@pytest.fixture(scope="module")
def silence_store(corpus, tmp_path_factory):
    """The log above imported with `import-stream --json`, and an offline long-form run with
    hypothesis segments (r0: 谢谢观看 in a segment [3, 4] inside the trailing silence [2.5, 4]; r1: 们
    at the end of a segment [3, 5] that does not overlap the trailing silence [5, 6]) scored by the
    real scorer, in one store."""
    import pyarrow as pa
    from typer.testing import CliRunner

    from asr_eval.cli import _register_commands, app
    from asr_eval.scoring import analyse
    from asr_eval.store.load import load_hypotheses, register_model, upsert_eval_run

    tmp = tmp_path_factory.mktemp("silence")
    db = tmp / "s.duckdb"
    _register_commands()
    res = CliRunner().invoke(app, ["import-stream", str(_jsonl(tmp / "log.jsonl", SILENCE_LOG)), "--corpus",
                                   str(corpus), "--name", "talks-over-silence", "--db", str(db), "--n-boot", "50",
                                   "--align-model", "none", "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    con = connect(db)
    try:
        cid = con.execute("SELECT corpus_id FROM corpora").fetchone()[0]
        register_model(con, {"model_id": "local:lf@0", "name": "lf", "source": "local"})
        load_hypotheses(con, OFFLINE_LF, pa.table({
            "utt_id": ["r0", "r1"], "hyp_raw": ["今天天气谢谢观看", "你好再见朋友们"],
            "segments": [json.dumps([[0.4, 2.6, "今天天气"], [3.0, 4.0, "谢谢观看"]], ensure_ascii=False),
                         json.dumps([[1.0, 2.0, "你好"], [3.0, 5.0, "再见朋友们"]], ensure_ascii=False)]}))
        upsert_eval_run(con, {"run_id": OFFLINE_LF, "corpus_id": cid, "split": "test", "model_id": "local:lf@0",
                              "status": "done", "strategy": "vad"})
        analyse(con, [OFFLINE_LF], "zh-v1", n_boot=50)
    finally:
        con.close()
    return {"db": db, "row": row, "stream": row["run_id"], "tmp": tmp}


def _halluc(con, run: str, normalizer: str = "zh-v1") -> tuple[dict, dict]:
    cur = con.execute("SELECT utt_id, time_bound, ref_units, hyp_units, inserted, inserted_in_silence, "
                      "repeated_insertions, silence_s, examples::VARCHAR FROM hallucination_scores "
                      "WHERE run_id = ? AND normalizer = ? ORDER BY utt_id", [run, normalizer])
    recs = {r[0]: r[1:] for r in cur.fetchall()}
    sl = {(r[0], r[1]): r[2:] for r in con.execute(
        "SELECT slice_attr, slice_value, n, ref_units, inserted, inserted_in_silence, repeated_insertions, silence_s "
        "FROM hallucination_slices WHERE run_id = ? AND normalizer = ?", [run, normalizer]).fetchall()}
    return recs, sl


def test_hallucination_of_an_imported_log_is_stored_and_in_the_json(silence_store):
    con = connect(silence_store["db"], read_only=True)
    try:
        recs, sl = _halluc(con, silence_store["stream"])
    finally:
        con.close()
    # r0: 今天天气 re-committed at 4.0 after the speech [0.5, 2.5]; silence: only the trailing 1.5 s (the leading 0.5 s is a pause)
    assert recs["r0"][:7] == ("emission", 4, 8, 4, 4, 4, 1.5)
    assert json.loads(recs["r0"][7]) == [{"text": "今天天气", "gap_start_s": 2.5, "gap_end_s": 4.0, "emit_s": 4.0,
                                          "repeated": True}]
    # r1: 谢谢 (gap [0, 1]) in silence; 好 alone after the speech (gap [5, 6]) is a boundary error, 老 inside
    # speech; silence [0, 1] + [2, 3] + [5, 6]
    assert recs["r1"][:7] == ("emission", 6, 10, 4, 2, 0, 3.0)
    assert [e["text"] for e in json.loads(recs["r1"][7])] == ["谢谢"]
    assert sl[("_all", "all")] == (2, 10, 8, 6, 4, 4.5)
    assert sl[("noise", "clean")] == (1, 4, 4, 4, 4, 1.5) and sl[("noise", "noisy")] == (1, 6, 4, 2, 0, 3.0)
    r = silence_store["row"]  # `import-stream --json` (the same summary rows as `stream --json`)
    assert (r["inserted_in_silence"], r["repeated_insertions"], r["inserted"], r["silence_s"]) == (6, 4, 8, 4.5)


def test_hallucination_of_an_offline_long_form_run_and_its_rescore(silence_store, tmp_path):
    from asr_eval.scoring import rescore

    con = connect(silence_store["db"], read_only=True)
    try:
        recs, sl = _halluc(con, OFFLINE_LF)
    finally:
        con.close()
    assert recs["r0"][:7] == ("segment", 4, 8, 4, 4, 0, 1.5)  # 谢谢观看's segment [3, 4] overlaps [2.5, 4]
    assert json.loads(recs["r0"][7])[0] == {"text": "谢谢观看", "gap_start_s": 2.5, "gap_end_s": 4.0, "emit_s": None,
                                             "repeated": False}
    assert recs["r1"][:7] == ("segment", 6, 7, 1, 0, 0, 3.0)  # 们's segment [3, 5] only touches [5, 6]
    assert sl[("_all", "all")] == (2, 10, 5, 4, 0, 4.5)
    # a rescore under another normalizer measures the run again under it
    db = tmp_path / "copy.duckdb"
    db.write_bytes(silence_store["db"].read_bytes())
    con = connect(db)
    try:
        rescore(con, "zh-v1-keepnum", [OFFLINE_LF], n_boot=20)
        assert _halluc(con, OFFLINE_LF, "zh-v1-keepnum")[1][("_all", "all")] == (2, 10, 5, 4, 0, 4.5)
        # an older store (v6, no hallucination tables) is measured when it is opened
        con.execute("DROP TABLE hallucination_scores")
        con.execute("DROP TABLE hallucination_slices")
        con.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    finally:
        con.close()
    con = connect(db, read_only=True)
    try:
        assert _halluc(con, silence_store["stream"])[1][("_all", "all")] == (2, 10, 8, 6, 4, 4.5)
        assert _halluc(con, OFFLINE_LF, "zh-v1-keepnum")[1][("_all", "all")] == (2, 10, 5, 4, 0, 4.5)
    finally:
        con.close()


def test_report_shows_text_over_silence(silence_store):
    import re

    from asr_eval.report import ReportOptions, render

    con = connect(silence_store["db"], read_only=True)
    try:
        html, ctx = render(con, ReportOptions(worst_n=1, audio_cap_bytes=0))
    finally:
        con.close()
    stream = html[html.index('<section id="streaming">'):html.index('<section id="longform">')]
    row = re.search(rf'<tr data-run="{silence_store["stream"]}">(.*?)</tr>', stream, re.DOTALL).group(1)
    assert re.search(r'<td class="num silence"><span class="words worse">6</span> / 4</td>', row)
    assert "“今天天气”" in stream and "committed at 4.0 s in the silence 2.5–4.0 s, a repeat" in stream
    longform = html[html.index('<section id="longform">'):]
    longform = longform[:longform.index("</section>")]
    assert '<a href="#longform">Long-form</a>' in html
    row = re.search(rf'<tr data-run="{OFFLINE_LF}">(.*?)</tr>', longform, re.DOTALL).group(1)
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]
    assert cells[1:] == ["2", "4.5 s", "10", "5", "4 80% of inserted", "0"]
    assert "“谢谢观看”" in longform and "(r0, in the silence 2.5–4.0 s)" in longform
    assert [r["run"].run_id for r in ctx["hallucination"]["longform"]["runs"]] == [OFFLINE_LF]
