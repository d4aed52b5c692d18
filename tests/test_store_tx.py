"""Every DuckDB writer is one transaction: an exception in the middle of any of them leaves the
store exactly as it was and the connection usable; a SIGKILL during the scoring writer step
(loading parts, scoring, slice metrics, run rows) followed by a re-run ends with exactly the
rows of an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from conftest import write_audio

from asr_eval.corpus import open_source
from asr_eval.shards import IngestOptions, ingest
from asr_eval.store.schema import TABLES

# Wall-clock facts of the writer run itself, not results: every TIMESTAMP column, and the
# provenance JSON (it holds the run's wall time).
VOLATILE = {"eval_runs": {"provenance"}}


def _corpus(root: Path, n: int, name: str) -> Path:
    src = root / f"src_{name}"
    lines = ["file_name,text,split,accent"]
    texts = ["今天天气很好", "我们去北京", "你好世界", "这是一个测试"]
    for i in range(n):
        write_audio(src / f"{name}{i:02d}.wav", 0.5 + 0.1 * (i % 3), 16000, seed=i)
        lines.append(f"{name}{i:02d}.wav,{texts[i % 4]},{'test' if i % 2 == 0 else 'train'},{'n' if i % 3 else 's'}")
    (src / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = root / f"corpus_{name}"
    ingest(open_source(str(src)), out, IngestOptions(workers=1, max_rows=4), progress=False)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two tiny models scored on a 12-utterance corpus: parts on disk and a reference store
    written by one uninterrupted run."""
    from asr_eval.models import build_tiny_whisper
    from asr_eval.scoring import expand_specs, score_models

    root = tmp_path_factory.mktemp("tx")
    corpus = _corpus(root, 12, "u")
    models = [str(build_tiny_whisper(root / f"m{i}", num_mel_bins=80, seed=i)) for i in range(2)]
    specs = expand_specs(models, device="cpu", batch_size=4, max_new_tokens=4)
    ref = root / "ref.duckdb"
    run_ids = score_models(corpus, specs, ref, split="test", n_boot=20, parts_root=root / "parts", progress=False)
    return {"root": root, "corpus": corpus, "models": models, "parts": root / "parts", "ref": ref,
            "run_ids": run_ids}


def snapshot(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """Every table's rows (volatile columns dropped), in a canonical order."""
    out = {}
    for t in TABLES:
        cols = [r[0] for r in con.execute(f"DESCRIBE {t}").fetchall()
                if r[0] not in VOLATILE.get(t, set()) and not r[1].startswith("TIMESTAMP")]
        if not cols:
            continue
        sel = ", ".join(f'"{c}"' for c in cols)
        out[t] = con.execute(f"SELECT {sel} FROM {t} ORDER BY ALL").fetchall()
    return out


# ───────────── an exception in the middle of each writer ─────────────


class Injected(Exception):
    pass


class FailingCon:
    """A connection whose ``fail_at``-th write statement (INSERT/DELETE/UPDATE, execute or
    executemany) raises instead of running; counts writes when ``fail_at`` is None."""

    def __init__(self, con: duckdb.DuckDBPyConnection, fail_at: int | None):
        self._con, self.fail_at, self.writes = con, fail_at, 0

    def _write(self, sql: str) -> None:
        if sql.lstrip().upper().startswith(("INSERT", "DELETE", "UPDATE")):
            self.writes += 1
            if self.writes == self.fail_at:
                raise Injected(f"injected failure at write {self.writes}: {sql[:60]}")

    def execute(self, sql, *a, **k):
        self._write(sql)
        self._con.execute(sql, *a, **k)
        return self

    def executemany(self, sql, *a, **k):
        self._write(sql)
        self._con.executemany(sql, *a, **k)
        return self

    def fetchone(self):
        return self._con.fetchone()

    def fetchall(self):
        return self._con.fetchall()

    def __getattr__(self, name):
        return getattr(self._con, name)


def _writers(w: dict) -> dict[str, Callable]:
    """Each store writer, called with arguments that change the store (so a half-done write shows)."""
    from asr_eval.monitor.curve import EvalPoint, TrainingCurve, TrainPoint
    from asr_eval.monitor.rules import Alert
    from asr_eval.monitor.store import save_alerts, save_run
    from asr_eval.scoring.analysis import compare_runs, score_run, slice_metrics
    from asr_eval.store.load import load_corpus, load_hypotheses, register_model, upsert_eval_run

    a, b = w["run_ids"]
    hyps = pa.table({"utt_id": [f"u{i:02d}" for i in range(0, 12, 2)], "hyp_raw": ["你好"] * 6})
    curve = TrainingCurve("tr-1", [TrainPoint(1, 2.0), TrainPoint(2, 1.5)], [EvalPoint(2, 1.4, 0.5, 1, 1, 1, 6)],
                          name="tr", meta={"status": "finished"})
    alerts = [Alert("loss_spike", "warning", 2, "loss", 1.5, 1.0, "spike"),
              Alert("non_finite", "critical", 3, "loss", None, None, "nan")]
    return {
        "load_corpus": lambda con: load_corpus(con, w["corpus2"]),
        "register_model": lambda con: register_model(con, {"model_id": "new@1", "name": "new", "source": "local"}),
        "load_hypotheses": lambda con: load_hypotheses(con, a, hyps),
        "upsert_eval_run": lambda con: upsert_eval_run(con, {"run_id": a, "corpus_id": "c", "model_id": "m",
                                                              "status": "failed"}),
        "score_run": lambda con: score_run(con, a, "zh-v1"),
        "slice_metrics": lambda con: slice_metrics(con, a, "zh-v1", n_boot=10),
        "compare_runs": lambda con: compare_runs(con, a, b, "zh-v1", n_boot=10),
        "save_run": lambda con: save_run(con, curve),
        "save_alerts": lambda con: save_alerts(con, "tr-1", alerts),
    }


@pytest.fixture(scope="module")
def corpus2(world):
    return _corpus(world["root"], 4, "v")


WRITERS = ["load_corpus", "register_model", "load_hypotheses", "upsert_eval_run", "score_run", "slice_metrics",
           "compare_runs", "save_run", "save_alerts"]


@pytest.mark.parametrize("writer", WRITERS)
def test_exception_mid_writer_leaves_store_unchanged_and_connection_usable(world, corpus2, tmp_path, writer):
    from asr_eval.monitor.curve import TrainingCurve, TrainPoint
    from asr_eval.monitor.store import save_alerts, save_run
    from asr_eval.monitor.rules import Alert
    from asr_eval.store import connect

    db = tmp_path / "s.duckdb"
    shutil.copy(world["ref"], db)
    call = _writers({**world, "corpus2": corpus2})[writer]
    con = connect(db)
    # Alerts and a training log to be replaced, so their writers have rows to delete first.
    save_run(con, TrainingCurve("tr-1", [TrainPoint(1, 9.0)], name="old"))
    save_alerts(con, "tr-1", [Alert("loss_spike", "warning", 1, "loss", 9.0, 1.0, "old")])
    # Derived rows made stale, so re-deriving them visibly changes the store.
    a = world["run_ids"][0]
    stale = {"score_run": "DELETE FROM utterance_scores WHERE run_id = ? AND utt_id = 'u00'",
             "slice_metrics": "DELETE FROM slice_metrics WHERE run_id = ? AND slice_attr = 'accent'",
             "compare_runs": "DELETE FROM comparisons WHERE run_a = ? AND slice_attr = 'accent'"}
    if writer in stale:
        con.execute(stale[writer], [a]).fetchall()
    before = snapshot(con)
    con.execute("CHECKPOINT")
    shutil.copy(db, tmp_path / "count.duckdb")  # count the writer's write statements on a copy
    ccon = connect(tmp_path / "count.duckdb")
    counting = FailingCon(ccon, None)
    call(counting)
    ccon.close()
    n = counting.writes
    assert n >= 1
    with pytest.raises(Injected):
        call(FailingCon(con, n))  # the last write of the transaction fails: earlier ones must be undone
    assert snapshot(con) == before
    assert con.execute("SELECT 42").fetchall() == [(42,)]  # not left inside an aborted transaction
    call(con)  # the same writer then succeeds on the same connection …
    assert snapshot(con) != before  # … and does change the store
    con.close()


# ───────────── SIGKILL during the writer step ─────────────

KILL_POINTS = {
    # inside the hypotheses transaction (after DELETE + INSERT, before COMMIT)
    "load_parts": ("asr_eval.store.load", "insert_arrow", "hypotheses"),
    # inside score_run's replace (utterance_scores written, not committed)
    "scoring": ("asr_eval.store.tx", "insert_arrow", "utterance_scores"),
    # inside slice_metrics' replace
    "slice_metrics": ("asr_eval.store.tx", "insert_arrow", "slice_metrics"),
    # between transactions: hypotheses committed, eval_runs row not yet written
    "between": ("asr_eval.scoring.writer", "upsert_eval_run", None),
}
# What the store holds right after the kill: the interrupted transaction left nothing behind.
AFTER_KILL = {"load_parts": {"hypotheses": 0, "eval_runs": 0},
              "scoring": {"hypotheses": 12, "eval_runs": 2, "utterance_scores": 0},
              "slice_metrics": {"utterance_scores": 6, "slice_metrics": 0},  # run a scored, its slices not
              "between": {"hypotheses": 6, "eval_runs": 0}}

_CHILD = """
import sys, time, pathlib
import importlib
mod_name, fn_name, table, marker = sys.argv[1:5]
mod = importlib.import_module(mod_name)
real = getattr(mod, fn_name)
def stalled(*a, **k):
    if table == "None" or (len(a) > 1 and a[1] == table):
        out = real(*a, **k) if table != "None" else None
        pathlib.Path(marker).write_text("reached")
        time.sleep(600)
        return out
    return real(*a, **k)
setattr(mod, fn_name, stalled)
from asr_eval.scoring import expand_specs, score_models
corpus, db, parts, m0, m1 = sys.argv[5:10]
specs = expand_specs([m0, m1], device="cpu", batch_size=4, max_new_tokens=4)
score_models(corpus, specs, db, split="test", n_boot=20, parts_root=parts, progress=False)
"""


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_sigkill_during_the_writer_step_then_rerun_gives_the_rows_of_an_uninterrupted_run(world, tmp_path, point):
    from asr_eval.scoring import expand_specs, score_models

    mod, fn, table = KILL_POINTS[point]
    db, marker = tmp_path / "s.duckdb", tmp_path / "marker"
    p = subprocess.Popen([sys.executable, "-c", _CHILD, mod, fn, str(table), str(marker), str(world["corpus"]),
                          str(db), str(world["parts"]), *world["models"]])
    deadline = time.time() + 180
    while time.time() < deadline and not marker.exists() and p.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), f"the child never reached {point} (exit {p.poll()})"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    killed = duckdb.connect(str(db))
    try:
        counts = {t: killed.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in AFTER_KILL[point]}
    finally:
        killed.close()
    assert counts == AFTER_KILL[point]

    specs = expand_specs(world["models"], device="cpu", batch_size=4, max_new_tokens=4)
    ids = score_models(world["corpus"], specs, db, split="test", n_boot=20, parts_root=world["parts"], progress=False)
    assert ids == world["run_ids"]
    got = duckdb.connect(str(db), read_only=True)
    ref = duckdb.connect(str(world["ref"]), read_only=True)
    try:
        a, b = snapshot(got), snapshot(ref)
    finally:
        got.close()
        ref.close()
    assert a.keys() == b.keys()
    for t in a:
        assert a[t] == b[t], f"table {t} differs after a kill at {point}"
    assert len(a["hypotheses"]) == 12 and len(a["utterance_scores"]) == 12 and a["slice_metrics"]


def test_a_reopened_store_accepts_relational_queries_at_once(tmp_path):
    """connect() used to leave its schema-version SELECT half fetched; DuckDB 2 then refused the
    caller's first `con.sql(...)` ("connection has an unfinished result")."""
    from asr_eval.store import connect

    connect(tmp_path / "s.duckdb").close()
    con = connect(tmp_path / "s.duckdb")
    assert con.sql("SELECT 7").fetchall() == [(7,)]
    con.close()
