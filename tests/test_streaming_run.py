"""Streaming runs end to end: the stream axis in the run id, parts carrying the emission log, the
writer's streaming tables, `asr-eval stream --json`; a tiny random Whisper for the plumbing and the
real bundled model on one demo recording for the numbers."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
from conftest import DEMO_CORPUS

from asr_eval.errors import AsrEvalError
from asr_eval.scoring import RunSpec, expand_specs, make_run_id
from asr_eval.store import connect
from asr_eval.streaming.evaluate import stream_models, stream_summary, stream_specs
from asr_eval.streaming.run import expand_axes, stream_axis

SR = 16_000


def test_stream_axes_name_every_parameter_and_refuse_unknown_ones():
    a = stream_axis("local-agreement", 1)
    assert a["policy"] == "local-agreement" and a["chunk_s"] == 1.0 and a["params"]["n"] == 2
    axes = expand_axes(["local-agreement", "hold-k"], [0.5, 2], {"k": 3})
    assert [(x["policy"], x["chunk_s"]) for x in axes] == [("local-agreement", 0.5), ("local-agreement", 2.0),
                                                            ("hold-k", 0.5), ("hold-k", 2.0)]
    assert axes[2]["params"]["k"] == 3
    with pytest.raises(AsrEvalError, match="no chosen policy has them"):
        expand_axes(["local-agreement"], [1], {"k": 3})
    with pytest.raises(AsrEvalError, match="chunk_s"):
        stream_axis("local-agreement", 0)
    with pytest.raises(AsrEvalError, match="unknown streaming policy"):
        expand_axes(["agreement"], [1])


def test_each_policy_and_chunk_size_is_its_own_run():
    ids = {make_run_id("m@1", "c@2", "test", "ctranslate2", "4", "int8", "pad-audio", {"name": "greedy"},
                       stream=stream_axis(p, c)) for p in ("local-agreement", "vad-segment") for c in (0.5, 1)}
    assert len(ids) == 4 and any(i.startswith("m-local-agreement-0.5s-") for i in ids)
    base = RunSpec.make("m")
    specs, pairs = stream_specs([base], expand_axes(["local-agreement"], [1, 2]), "vad")
    assert [(s.strategy, bool(s.stream)) for s in specs] == [("vad", False), ("short", True), ("short", True)]
    assert pairs == [(1, 0), (2, 0)]
    specs, pairs = stream_specs([base], expand_axes(["local-agreement"], [1]), "none")
    assert len(specs) == 1 and pairs == [(0, None)]


def _recordings(src, n_per: tuple[int, ...] = (2, 3), pause_s: float = 0.6):
    """Recordings of demo test utterances (clean neural voice) with pauses, and their segments."""
    with open(DEMO_CORPUS / "metadata.csv", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test" and r["voice"] == "neural"
                and r["noise"] == "clean"]
    out, i = [], 0
    for k, n in enumerate(n_per):
        pieces, segs, t = [np.zeros(SR // 2, np.float32)], [], 0.5
        for r in rows[i:i + n]:
            a, _ = sf.read(DEMO_CORPUS / r["file_name"], dtype="float32")
            segs.append([round(t, 3), round(t + len(a) / SR, 3), r["text"]])
            pieces += [a, np.zeros(int(pause_s * SR), np.float32)]
            t += len(a) / SR + int(pause_s * SR) / SR
        i += n
        sf.write(src / f"rec{k}.flac", np.concatenate(pieces), SR)
        out.append({"audio_filepath": f"rec{k}.flac", "text": " ".join(s[2] for s in segs), "segments": segs,
                    "split": "test"})
    (src / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    return src / "manifest.jsonl"


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    from asr_eval.corpus import open_source
    from asr_eval.shards import IngestOptions, ingest

    root = tmp_path_factory.mktemp("stream_run")
    (root / "src").mkdir()
    manifest = _recordings(root / "src")
    ingest(open_source(str(manifest)), root / "corpus", IngestOptions(workers=1, long_form=True), progress=False)
    return root / "corpus"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from asr_eval.models.tiny import build_tiny_whisper

    return str(build_tiny_whisper(tmp_path_factory.mktemp("tiny")))


def test_stream_models_writes_runs_logs_and_metrics(small_corpus, tiny_model, tmp_path, monkeypatch):
    db = tmp_path / "s.duckdb"
    bases = expand_specs([tiny_model], "transformers", device="cpu", max_new_tokens=8)
    axes = expand_axes(["local-agreement", "vad-segment"], [2.0])
    runs = stream_models(small_corpus, bases, axes, db, n_boot=20, progress=False, align_model="none")
    assert len(runs.streams) == 2 and set(runs.offline_of) == set(runs.streams) and len(runs.offline) == 1
    con = connect(db, read_only=True)
    try:
        got = con.execute("SELECT run_id, strategy, stream_policy, json_extract(stream_params, '$.chunk_s')::DOUBLE "
                          "FROM eval_runs ORDER BY run_id").fetchall()
        assert sorted((s, p, c) for _, s, p, c in got) == [("short", "local-agreement", 2.0),
                                                           ("short", "vad-segment", 2.0), ("vad", None, None)]
        for rid in runs.streams:
            # the hypothesis is the emission log's committed text, recording by recording
            hyps = dict(con.execute("SELECT utt_id, coalesce(hyp_raw, '') FROM hypotheses WHERE run_id = ?", [rid]).fetchall())
            logs = dict(con.execute("SELECT utt_id, string_agg(coalesce(text, ''), '' ORDER BY seq) FROM stream_events "
                                    "WHERE run_id = ? GROUP BY utt_id", [rid]).fetchall())
            assert hyps == logs and len(hyps) == 2
            finals = con.execute("SELECT count(*) FROM stream_events WHERE run_id = ? AND final", [rid]).fetchall()
            assert finals == [(2,)]  # one end-of-stream flush per recording
            rec = con.execute("SELECT count(*), sum(decode_calls) > 0, min(n_chunks) FROM stream_recordings "
                              "WHERE run_id = ?", [rid]).fetchall()[0]
            assert rec[0] == 2 and rec[1] and rec[2] == 3  # 5.3 and 6.9 s of audio in 2 s chunks
        cmp = con.execute("SELECT count(*) FROM comparisons WHERE metric = 'cer' AND slice_attr = '_all' AND "
                          "run_a = ? AND run_b IN (SELECT unnest(?))", [runs.offline[0], runs.streams]).fetchall()
        assert cmp == [(2,)]
        rows = stream_summary(con, runs.streams, "zh-v1", runs.offline_of)
        assert [r["policy"] for r in rows] == ["local-agreement", "vad-segment"]
        assert all(r["delta_cer"] is not None and r["chunk_s"] == 2.0 and r["timing_method"] == "uniform"
                   for r in rows)
    finally:
        con.close()
    again = stream_models(small_corpus, bases, axes, db, n_boot=20, progress=False, align_model="none")
    assert again == runs  # deterministic ids: the parts are reused, nothing is decoded twice
    # a rescore keeps the reference timing each run was scored with (here: uniform, no aligner at all)
    import asr_eval.streaming.timing as timing
    from asr_eval.scoring import rescore

    def no_aligner(*a, **k):
        raise AssertionError("rescore re-aligned a run scored with --align-model none")

    monkeypatch.setattr(timing, "ct2_aligner", no_aligner)
    con = connect(db)
    try:
        rescore(con, "zh-v1", runs.streams, n_boot=20)
        assert con.execute("SELECT DISTINCT timing_method FROM stream_scores").fetchall() == [("uniform",)]
    finally:
        con.close()


def test_stream_cli_json(small_corpus, tiny_model, tmp_path):
    from typer.testing import CliRunner

    from asr_eval.cli import _register_commands, app

    _register_commands()
    res = CliRunner().invoke(app, ["stream", "--corpus", str(small_corpus), "--model", tiny_model, "--chunk-s", "2",
                                   "--policy", "hold-k", "--param", "k=2", "--offline-strategy", "none",
                                   "--align-model", "none", "--device", "cpu", "--n-boot", "20", "--json",
                                   "--db", str(tmp_path / "s.duckdb"), "--parts", str(tmp_path / "parts")])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    assert {"run_id", "cer", "latency_median_s", "latency_p90_s", "flicker"} <= set(row)
    assert set(row["latency_median_s"]) == {"unaware", "aware"} and row["params"]["k"] == 2
    assert row["offline_run"] is None and row["delta_cer"] is None
    # hallucination over silence: the recordings' gaps (0.5 s lead, 0.6 s pauses and tail) are all < 1 s
    assert row["silence_s"] == 0.0 and row["inserted_in_silence"] == 0
    assert 0 <= row["repeated_insertions"] <= row["inserted"]


def test_stream_cli_verifies_engine_options(small_corpus, tiny_model, tmp_path):
    """-O on `asr-eval stream`: each streaming run is also run without the option, and the JSON row
    of the one with it carries the verdict (streaming re-decodes at batch 1: where speed options matter)."""
    from typer.testing import CliRunner

    from asr_eval.cli import _register_commands, app

    _register_commands()
    res = CliRunner().invoke(app, ["stream", "--corpus", str(small_corpus), "--model", tiny_model, "--chunk-s", "2",
                                   "--policy", "hold-k", "-O", "cache=none", "--offline-strategy", "none",
                                   "--align-model", "none", "--device", "cpu", "--n-boot", "20", "--json",
                                   "--db", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r.get("engine_options_verdict") for r in rows] == [None, "identical on 2/2"]
    assert len({r["run_id"] for r in rows}) == 2 and rows[0]["cer"] == rows[1]["cer"]


@pytest.mark.integration
def test_local_agreement_on_the_bundled_model_against_offline(tmp_path):
    """One demo recording (long_008 as the demo cuts it: its first 41 s, white noise, long pauses)
    with bundled whisper-base on ctranslate2: LocalAgreement-2 at 2 s chunks (half the decodes of
    1 s) against the offline vad run of the same model. On long_008 + long_009 (bench/README.md, ct2 int8) LA at 2 s
    costs +0.6 points over offline at a 3.0 s median latency. Bound: streaming CER ≤ offline + 10
    points; median unaware latency between the chunk size and 10 s; the aware clock never earlier
    than the unaware one."""
    import sys

    from asr_eval.corpus import open_source
    from asr_eval.shards import IngestOptions, ingest

    sys.path.insert(0, str(DEMO_CORPUS))
    from make_longform import subset

    manifest = subset(["long_008"], tmp_path / "src", until_s=41.0)  # the demo's excerpt (DEMO_LONG_UNTIL_S)
    ingest(open_source(str(manifest)), tmp_path / "corpus", IngestOptions(workers=1, long_form=True), progress=False)
    db = tmp_path / "s.duckdb"
    bases = expand_specs(["bundled:whisper-base"], "ctranslate2", device="cpu")
    runs = stream_models(tmp_path / "corpus", bases, expand_axes(["local-agreement"], [2.0]), db, n_boot=200,
                         progress=False)
    con = connect(db, read_only=True)
    try:
        (row,) = stream_summary(con, runs.streams, "zh-v1", runs.offline_of)
        offline = con.execute("SELECT cer FROM slice_metrics WHERE run_id = ? AND slice_attr = '_all'",
                              [runs.offline[0]]).fetchall()[0][0]
    finally:
        con.close()
    print(json.dumps(row, ensure_ascii=False, indent=1), offline)
    assert row["timing_method"].startswith("aligned:")
    assert row["cer"] <= offline + 0.10, (row["cer"], offline)
    assert 2.0 <= row["latency_median_s"]["unaware"] <= 10.0
    assert row["latency_median_s"]["aware"] >= row["latency_median_s"]["unaware"]
