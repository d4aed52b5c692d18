"""Monitor ↔ DuckDB: load a run's curve into training_runs/training_log, write check-training
alerts, and find the per-utterance errors of two training runs' final evaluations.

Called from the single writer process (``check-training``, the finetune flow after training);
every write is idempotent: a run's log and alerts are replaced, never appended twice.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from asr_eval.monitor.curve import TrainingCurve
from asr_eval.monitor.rules import Alert, PairedErrors
from asr_eval.store.tx import insert_arrow, transaction

RUN_COLS = ("name", "out_dir", "source", "base_model_id", "corpus_id", "params", "baseline_run_id", "status",
            "started_at", "finished_at")
LOG_COLS = ("training_run_id", "step", "kind", "epoch", "loss", "grad_norm", "learning_rate", "cer", "cer_s",
            "cer_d", "cer_i", "cer_n", "wall_time")


def _log_table(curve: TrainingCurve) -> pa.Table:
    rows = [(p.step, "train", p.epoch, p.loss, p.grad_norm, p.learning_rate, None, None, None, None, None,
             p.wall_time) for p in curve.train]
    rows += [(p.step, "eval", p.epoch, p.loss, None, None, p.cer, p.s, p.d, p.i, p.n, p.wall_time)
             for p in curve.evals]
    cols = list(zip(*rows)) if rows else [[] for _ in LOG_COLS[1:]]
    types = [pa.int64(), pa.string()] + [pa.float64()] * 5 + [pa.int64()] * 4 + [pa.float64()]
    # pa.array keeps float('nan') as NaN (not NULL): the non-finite values stay as they were logged
    arrays = [pa.array([curve.run_id] * len(rows), pa.string())]
    arrays += [pa.array(list(c), t) for c, t in zip(cols, types)]
    return pa.table(arrays, names=list(LOG_COLS))


def save_run(con: duckdb.DuckDBPyConnection, curve: TrainingCurve, baseline_run_id: str | None = None) -> str:
    """Upsert the run's training_runs row (keeping lineage a trainer recorded earlier when this
    source lacks it) and replace its training_log. Returns the training_run_id."""
    m = curve.meta
    params = {**m.get("params", {}), "eval_metric": curve.metric}
    new: dict[str, Any] = {"name": curve.name, "out_dir": curve.path, "source": curve.source,
                           "base_model_id": m.get("base_model_id"), "corpus_id": m.get("corpus_id"),
                           "params": params, "baseline_run_id": baseline_run_id or m.get("baseline_run_id"),
                           "status": m.get("status"), "started_at": m.get("started_at"),
                           "finished_at": m.get("finished_at")}
    old = con.execute(f"SELECT {', '.join(RUN_COLS)} FROM training_runs WHERE training_run_id = ?",
                      [curve.run_id]).fetchone()
    if old is not None:
        old_d = dict(zip(RUN_COLS, old))
        new["params"] = {**json.loads(old_d.pop("params") or "{}"), **params}
        new = {k: old_d.get(k) if v is None else v for k, v in new.items()}
    new["params"] = json.dumps(new["params"])
    with transaction(con):
        con.execute(f"INSERT OR REPLACE INTO training_runs (training_run_id, {', '.join(RUN_COLS)}) "
                    f"VALUES ({', '.join('?' * (len(RUN_COLS) + 1))})", [curve.run_id, *new.values()])
        con.execute("DELETE FROM training_log WHERE training_run_id = ?", [curve.run_id])
        insert_arrow(con, "training_log", _log_table(curve))
    return curve.run_id


def alert_id(run_id: str, index: int, a: Alert) -> str:
    h = hashlib.sha1(f"{run_id}|{a.rule}|{a.metric}|{a.step}|{index}".encode()).hexdigest()[:12]
    return f"{run_id}:{a.rule}:{h}"


def save_alerts(con: duckdb.DuckDBPyConnection, run_id: str, alerts: list[Alert],
                baseline_run_id: str | None = None) -> int:
    """Replace the run's alerts with ``alerts`` (a re-check supersedes the previous one)."""
    with transaction(con):
        con.execute("DELETE FROM alerts WHERE training_run_id = ?", [run_id])
        if alerts:
            con.executemany(
                "INSERT INTO alerts (alert_id, training_run_id, baseline_run_id, rule, severity, step, metric, "
                "value, threshold, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [[alert_id(run_id, i, a), run_id, baseline_run_id, a.rule, a.severity, a.step, a.metric, a.value,
                  a.threshold, a.message] for i, a in enumerate(alerts)])
    return len(alerts)


def _scored_evals(con: duckdb.DuckDBPyConnection, training_run_id: str) -> list[tuple]:
    """(step, eval run_id, corpus_id, split) of the run's scored checkpoints, latest step first."""
    return con.execute(
        "SELECT m.step, e.run_id, e.corpus_id, e.split FROM models m JOIN eval_runs e ON e.model_id = m.model_id "
        "WHERE m.training_run_id = ? AND EXISTS (SELECT 1 FROM utterance_scores u WHERE u.run_id = e.run_id) "
        "ORDER BY m.step DESC NULLS LAST, e.finished_at DESC NULLS LAST, e.run_id", [training_run_id]).fetchall()


def paired_errors_from_store(con: duckdb.DuckDBPyConnection, training_run_id: str,
                             baseline_run_id: str) -> PairedErrors | None:
    """Per-utterance CER errors of both runs' final scored checkpoints on the same corpus split
    and normalizer (models.training_run_id → eval_runs → utterance_scores); None when the
    store has no such pair (score the final checkpoints with ``asr-eval score`` first)."""
    run, base = _scored_evals(con, training_run_id), _scored_evals(con, baseline_run_id)
    if not run or not base:
        return None
    run = [r for r in run if r[0] == run[0][0]]      # only the final (highest-step) checkpoint
    base = [b for b in base if b[0] == base[0][0]]
    pair = next(((r, b) for r in run for b in base if (r[2], r[3]) == (b[2], b[3])), None)
    if pair is None:
        return None
    (_, ra, corpus, split), (_, rb, _, _) = pair
    norm = con.execute(
        "SELECT normalizer, normalizer_hash FROM utterance_scores WHERE run_id = ? INTERSECT "
        "SELECT normalizer, normalizer_hash FROM utterance_scores WHERE run_id = ? ORDER BY 1, 2 LIMIT 1",
        [ra, rb]).fetchone()
    if norm is None:
        return None
    rows = con.execute(
        "SELECT a.cer_s + a.cer_d + a.cer_i, b.cer_s + b.cer_d + b.cer_i, a.cer_n "
        "FROM utterance_scores a JOIN utterance_scores b ON a.utt_id = b.utt_id "
        "WHERE a.run_id = ? AND b.run_id = ? AND a.normalizer = ? AND b.normalizer = ? "
        "AND a.normalizer_hash = ? AND b.normalizer_hash = ? ORDER BY a.utt_id",
        [ra, rb, norm[0], norm[0], norm[1], norm[1]]).fetchall()
    if not rows:
        return None
    err_run, err_base, n = (np.asarray(c, dtype=np.int64) for c in zip(*rows))
    return PairedErrors(err_run, err_base, n, metric="cer",
                        label=f"{corpus} {split}, normalizer {norm[0]}, eval runs {ra} vs {rb}")
