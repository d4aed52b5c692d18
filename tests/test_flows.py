"""Prefect flows: under prefect_test_harness, through a real local server + deployments, and on Ray."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
from conftest import REPO, write_audio

sys.path.insert(0, str(REPO))


@pytest.fixture(scope="module", autouse=True)
def fake_engine_plugin():
    """The seam: a plugin engine (tests/fake_engine.py) runs through the flow and on Ray workers
    exactly as the built-ins do; workers find it through the inherited environment."""
    old = {k: os.environ.get(k) for k in ("ASR_EVAL_PLUGINS", "PYTHONPATH")}
    os.environ["ASR_EVAL_PLUGINS"] = "fake_engine"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), str(REPO), old["PYTHONPATH"]]))
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _fake_run(con, runs):
    """The fake engine's run among ``runs``: every hypothesis is its fixed answer."""
    rows = con.execute(f"SELECT run_id FROM eval_runs WHERE engine = 'fake' AND run_id IN ({', '.join('?' * len(runs))})",
                       runs).fetchall()
    assert len(rows) == 1
    hyps = {h for (h,) in con.execute("SELECT DISTINCT hyp_raw FROM hypotheses WHERE run_id = ?", [rows[0][0]]).fetchall()}
    assert hyps == {"测试"}
    return rows[0][0]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from asr_eval.models import build_tiny_whisper

    return str(build_tiny_whisper(tmp_path_factory.mktemp("tiny") / "tiny80", num_mel_bins=80, seed=0))


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    lines = ["file_name,text,split,voice"]
    for i in range(8):
        write_audio(src / f"f{i}.wav", 0.5 + 0.1 * i, 16000, seed=i)
        lines.append(f"f{i}.wav,测试句子{i},{'test' if i < 4 else 'train'},{'a' if i % 2 else 'b'}")
    (src / "metadata.csv").write_text("\n".join(lines) + "\n")
    return src


def test_ingest_score_report_flows(harness, tiny, source, tmp_path):
    from flows.ingest import ingest_flow
    from flows.report import report_flow
    from flows.score import score_flow

    corpus, db = str(tmp_path / "corpus"), str(tmp_path / "s.duckdb")
    s = ingest_flow(source=str(source), out=corpus, workers=1)
    assert s["n_ingested"] == 8
    runs = score_flow(corpus=corpus, models=[tiny], db=db, device="cpu", batch_size=4, max_new_tokens=6, n_boot=50,
                      engine="transformers,fake")
    con = duckdb.connect(db, read_only=True)
    assert len(runs) == 2 and _fake_run(con, runs) == runs[1]
    assert con.execute("SELECT count(*) FROM hypotheses WHERE run_id = ?", [runs[0]]).fetchall() == [(4,)]
    assert con.execute("SELECT count(*) FROM slice_metrics WHERE slice_attr = 'voice' AND run_id = ?",
                       [runs[0]]).fetchall() == [(2,)]
    con.close()
    path = report_flow(db=db, out=str(tmp_path / "r.html"))
    assert Path(path).read_text().lstrip().lower().startswith("<!doctype html")


def test_long_form_flow_compares_strategies(harness, tiny, tmp_path):
    """The demo's long-form step: the demo's excerpt of a recording of the generated long-form set
    (its first 41 s, cut in a pause), ingested as a long-form item and scored once per strategy, the
    runs compared pairwise."""
    from flows.pipeline import DEMO_LONG_UNTIL_S, long_form_flow

    corpus, db = tmp_path / "long", str(tmp_path / "s.duckdb")
    runs = long_form_flow(["long_008"], corpus=str(corpus), model=tiny, strategies="sequential,chunked",
                          db=db, device="cpu", stream_chunk_s=10.0, stream_engine="transformers",
                          until_s=DEMO_LONG_UNTIL_S)
    assert (tmp_path / "long_src" / "audio" / "long_008-41s.flac").is_file()
    row = json.loads((tmp_path / "long_src" / "manifest.jsonl").read_text(encoding="utf-8"))
    assert (row["duration"], len(row["segments"]), row["segments"][-1]) == (41.0, 10, [37.705, 39.043, "别忽视细节。"])
    assert row["text"].split(" ") == [s[2] for s in row["segments"]]
    from make_longform import subset  # on sys.path once the flow has run

    with pytest.raises(ValueError, match=r"cutting at 21.0 s would split the segment \[20.087, 22.086"):
        subset(["long_008"], tmp_path / "bad", until_s=21.0)
    con = duckdb.connect(db, read_only=True)
    assert con.execute(f"SELECT strategy, stream_policy FROM eval_runs WHERE run_id IN ({', '.join('?' * len(runs))}) "
                       "ORDER BY strategy", runs).fetchall() == [("chunked", None), ("sequential", None),
                                                                 ("short", "local-agreement")]
    assert con.execute("SELECT utt_id, duration_s FROM utterances").fetchall() == [("long_008-41s", 41.0)]
    # the streaming run's offline reference (vad, not among the strategies here) is its own run
    offline = con.execute("SELECT run_id FROM eval_runs WHERE strategy = 'vad'").fetchall()[0][0]
    assert con.execute("SELECT count(*) FROM hypotheses WHERE segments IS NOT NULL").fetchall() == [(3,)]
    pairs = con.execute("SELECT run_a, run_b FROM comparisons WHERE slice_attr = '_all' AND metric = 'cer'").fetchall()
    assert (runs[0], runs[1]) in pairs and (offline, runs[2]) in pairs
    assert con.execute("SELECT count(*) FROM stream_slices WHERE run_id = ?", [runs[2]]).fetchall()[0][0] >= 1
    con.close()


def test_check_training_flow_fails_on_seed_table(harness, tmp_path):
    from test_monitor_rules import write_trainer_state

    from flows.check_training import TrainingRegression, check_training_flow

    state = write_trainer_state(tmp_path / "trainer_state.json")
    with pytest.raises(TrainingRegression, match="overfitting"):
        check_training_flow(run=str(state), db=str(tmp_path / "s.duckdb"))

    st = check_training_flow(run=str(state), db=str(tmp_path / "s2.duckdb"), return_state=True)
    assert st.is_failed()  # red in Prefect


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_deployment_run_against_local_server(tiny, source, tmp_path):
    """`make serve`'s script, then `prefect deployment run … --watch` from another process."""
    from asr_eval.corpus import open_source
    from asr_eval.shards import IngestOptions, ingest

    corpus, db = tmp_path / "corpus", tmp_path / "s.duckdb"
    ingest(open_source(str(source)), corpus, IngestOptions(workers=1), progress=False)
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_PORT": str(port),
           "BIN": str(Path(sys.executable).parent), "HF_HUB_OFFLINE": "1"}
    env.pop("PREFECT_API_URL", None)
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(["bash", str(REPO / "flows" / "serve.sh")], env=env, cwd=REPO,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    run_env = {**env, "PREFECT_API_URL": api, "COLUMNS": "300"}
    prefect = str(Path(sys.executable).parent / "prefect")
    try:
        deadline = time.time() + 180
        while time.time() < deadline:  # wait until the deployments are registered (the REST API: no CLI start-up)
            try:
                with urllib.request.urlopen(f"{api}/deployments/name/score/default", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:  # not up yet (connection refused), or 404 until served
                pass
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        r = subprocess.run(
            [prefect, "deployment", "run", "score/default", "--param", f"corpus={corpus}",
             "--param", f"models={json.dumps([tiny])}", "--param", f"db={db}", "--param", "device=cpu",
             "--param", "max_new_tokens=6", "--param", "n_boot=50", "--watch"],
            env=run_env, capture_output=True, text=True, timeout=400)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        con = duckdb.connect(str(db), read_only=True)
        assert con.execute("SELECT count(*) FROM hypotheses").fetchall() == [(4,)]
        assert con.execute("SELECT count(*) FROM slice_metrics WHERE slice_attr = '_all'").fetchall() == [(1,)]
        con.close()
        # a failing run exits non-zero with --watch
        bad = subprocess.run([prefect, "deployment", "run", "score/default", "--param", f"corpus={tmp_path / 'nope'}",
                              "--param", f"db={db}", "--watch"], env=run_env, capture_output=True, text=True, timeout=300)
        assert bad.returncode != 0
    finally:
        os.killpg(serve.pid, 15)
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, 9)
            serve.wait()
        log.close()


def test_gate_flow_and_deployment(harness, tmp_path):
    """The ship gate as a flow (decision returned, stored, and a FAIL fails the run on request)."""
    sys.path.insert(0, str(REPO / "tests"))
    from stat_fixtures import make_store

    from flows.gate import gate_flow
    from flows.serve import deployments

    utts = [{"utt_id": f"u{i:02d}", "speaker": f"s{i % 12}"} for i in range(60)]
    con = make_store(tmp_path / "g.duckdb", utts, {"base": {u["utt_id"]: 1 for u in utts},
                                                   "cand": {u["utt_id"]: 3 for u in utts}})
    con.close()
    out = gate_flow(baseline="base", candidate="cand", margin=0.5, db=str(tmp_path / "g.duckdb"), n_boot=200)
    assert (out["decision"], out["exit_code"]) == ("FAIL", 1) and out["slices"][0]["delta_pts"] == 20.0
    with pytest.raises(RuntimeError, match="ship gate FAIL"):
        gate_flow(baseline="base", candidate="cand", margin=0.5, db=str(tmp_path / "g.duckdb"), n_boot=200,
                  fail_run=True)
    con = duckdb.connect(str(tmp_path / "g.duckdb"), read_only=True)
    assert con.execute("SELECT decision, count(*) FROM gates GROUP BY ALL").fetchall() == [("FAIL", 2)]
    con.close()
    gate = [d for d in deployments() if d.flow_name == "gate"]
    assert [d.name for d in gate] == ["default"] and gate[0].parameters["margin"] == 0.5


def test_finetune_flow_refuses_to_run_under_torchrun(monkeypatch):
    """Started by torchrun, every rank would run the whole flow and register the run; the flow
    says to start it once with nproc_per_node instead (it launches the processes itself)."""
    from asr_eval.errors import AsrEvalError
    from flows.finetune import finetune_flow

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(AsrEvalError, match="pass nproc_per_node=N instead"):
        finetune_flow.fn()


def test_suite_flow_and_deployment(harness, tiny, tmp_path):
    """Flow `suite`: the AISHELL-1 tree of tests/test_suite.py found under a folder, its test split
    ingested and scored (the fake engine: every hypothesis 测试), the table as the flow's result; the
    `suite/default` deployment is served."""
    from test_suite import build_aishell1

    from flows.serve import deployments
    from flows.suite import suite_flow

    build_aishell1(tmp_path / "sets" / "downloads")
    db = str(tmp_path / "s.duckdb")
    table = suite_flow(root=str(tmp_path / "sets"), models=[tiny], db=db, engine="fake", device="cpu", n_boot=50)
    assert [(r["test set"], r["n"]) for r in table] == [("aishell-1/test", 4)]
    con = duckdb.connect(db, read_only=True)
    try:
        refs = [t for (t,) in con.execute("SELECT text FROM utterances WHERE split = 'test'").fetchall()]
        assert con.execute("SELECT DISTINCT hyp_raw FROM hypotheses").fetchall() == [("测试",)]
    finally:
        con.close()
    # No reference shares a character with 测试: each costs its length (2 substitutions, the rest deleted).
    assert len(refs) == 4 and not any(set(t) & set("测试") for t in refs) and table[0]["CER %"] == 100.0
    suite = [d for d in deployments() if d.flow_name == "suite"]
    assert [d.name for d in suite] == ["default"] and suite[0].parameters["models"] == ["bundled:whisper-base"]
