"""Readers: a run dir's loss stream, a plain HF ``trainer_state.json``, a TensorBoard log dir,
or the store's ``training_log`` → one normalized `TrainingCurve`. ``load_curve`` auto-detects."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import duckdb

from asr_eval.errors import AsrEvalError
from asr_eval.monitor.curve import (METRIC_KEYS, EvalPoint, TrainingCurve, TrainPoint, build_curve,
                                    eval_point_from_metrics, train_point_from_logs)
from asr_eval.monitor.streamfile import EVAL_COUNT_FIELDS, STREAM_FILE, TB_DIR, TRAIN_TAGS, decode_float

TRAINER_STATE = "trainer_state.json"
TB_GLOB = "events.out.tfevents.*"


def derive_run_id(run_dir: Path) -> str:
    """Stable id for a run made outside asr-eval: dir name + hash of its absolute path, so
    re-checking the same dir replaces, not duplicates, its rows."""
    run_dir = run_dir.resolve()
    return f"{run_dir.name}@{hashlib.sha1(str(run_dir).encode()).hexdigest()[:8]}"


def _tb_run_dir(d: Path) -> Path:
    """The run dir a TensorBoard dir belongs to: ``run/tensorboard`` (ours) → ``run``,
    ``out/runs`` or ``out/runs/<date_host>`` (transformers' default logging dir) → ``out``."""
    d = d.resolve()
    if d.parent.name == "runs":
        return d.parent.parent
    return d.parent if d.name in (TB_DIR, "runs") else d


def _run_dir_of(path: Path) -> Path:
    """The run dir a trainer_state.json belongs to (``out/checkpoint-500/…`` → ``out``)."""
    d = path.parent
    return d.parent if d.name.startswith("checkpoint-") else d


# ---------------------------------------------------------------- loss_stream.jsonl

def read_stream(path: str | Path) -> TrainingCurve:
    """Read ``loss_stream.jsonl`` (or the run dir holding it). A torn last line (the process
    died mid-write) is skipped; a bad line elsewhere is an error naming it."""
    path = Path(path)
    f = path / STREAM_FILE if path.is_dir() else path
    lines = f.read_text(encoding="utf-8").splitlines()
    train: list[TrainPoint] = []
    evals: list[EvalPoint] = []
    meta: dict[str, Any] = {}
    run_id, metric = None, "cer"
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if no == len(lines):
                break
            raise AsrEvalError(f"{f}:{no}: not a loss-stream record ({exc}); the file is corrupt — "
                               "delete that line or re-run check-training on trainer_state.json") from exc
        kind = rec.pop("kind", None)
        if kind == "train":
            train.append(TrainPoint(step=int(rec["step"]), **{k: decode_float(rec.get(k)) for k in
                                    ("loss", "grad_norm", "learning_rate", "epoch", "wall_time")}))
        elif kind == "eval":
            metric = rec.get("metric", metric)
            counts = {k: None if rec.get(k) is None else int(rec[k]) for k in EVAL_COUNT_FIELDS}
            evals.append(EvalPoint(step=int(rec["step"]), **counts, **{k: decode_float(rec.get(k)) for k in
                                   ("loss", "cer", "epoch", "wall_time")}))
        elif kind == "meta":
            run_id = rec.pop("training_run_id", run_id)
            meta.setdefault("started_at", rec.pop("started_at", None))
            meta.update(rec)  # a resumed run's meta line refreshes params
            meta["status"] = "running"
        elif kind == "end":
            meta.update(status=rec.get("status"), finished_at=rec.get("finished_at"))
    run_dir = f.parent
    return build_curve(run_id or derive_run_id(run_dir), train, evals, metric=metric, source="asr-eval",
                       name=run_dir.name, path=str(run_dir), meta=meta)


# ---------------------------------------------------------------- trainer_state.json

def curve_from_log_history(run_id: str, history: list[dict[str, Any]], **kw: Any) -> TrainingCurve:
    """A curve from a Trainer ``log_history`` (train entries carry ``loss``; eval entries
    ``eval_loss`` and ``eval_cer``/``eval_wer``…; the final ``train_loss`` summary is skipped)."""
    train, evals, metric = [], [], None
    for entry in history:
        step = entry.get("step")
        if step is None:
            continue
        if (tp := train_point_from_logs(entry, step)) is not None:
            train.append(tp)
        elif (got := eval_point_from_metrics(entry, step)) is not None:
            evals.append(got[0])
            metric = metric or got[1]
    return build_curve(run_id, train, evals, metric=metric or "cer", **kw)


def read_trainer_state(path: str | Path) -> TrainingCurve:
    path = Path(path)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AsrEvalError(f"{path}: not valid JSON ({exc}); pass a trainer_state.json written by transformers") from exc
    if not isinstance(state, dict) or "log_history" not in state:
        raise AsrEvalError(f"{path}: no 'log_history' key, so not a transformers trainer_state.json")
    run_dir = _run_dir_of(path)
    max_steps, step = state.get("max_steps"), state.get("global_step")
    params = {k: state[k] for k in ("max_steps", "logging_steps", "eval_steps", "train_batch_size") if k in state}
    status = "finished" if max_steps and step is not None and step >= max_steps else "partial"
    return curve_from_log_history(derive_run_id(run_dir), state["log_history"], source="trainer_state",
                                  name=run_dir.name, path=str(path),
                                  meta={"params": params, "status": status,
                                        "best_model_checkpoint": state.get("best_model_checkpoint")})


def _latest_trainer_state(run_dir: Path) -> Path | None:
    """The trainer_state.json with the most steps: ``out/`` (save_state) or a checkpoint's."""
    found = [run_dir / TRAINER_STATE, *run_dir.glob(f"checkpoint-*/{TRAINER_STATE}")]
    found = [p for p in found if p.is_file()]
    if not found:
        return None

    def steps(p: Path) -> int:
        try:
            return int(json.loads(p.read_text(encoding="utf-8")).get("global_step") or 0)
        except (json.JSONDecodeError, ValueError):
            return -1
    return max(found, key=steps)


# ---------------------------------------------------------------- TensorBoard

def read_tensorboard(path: str | Path) -> TrainingCurve:
    """A curve from TensorBoard event files anywhere under ``path`` — ours or transformers'
    TensorBoardCallback's (both use ``train/loss``, ``eval/cer`` … tags). Several event dirs
    (a resumed run writes a new one) are merged; per step the latest-written value wins."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    path = Path(path)
    root = _tb_run_dir(path.parent if path.is_file() else path)
    dirs = sorted({p.parent for p in ([path] if path.is_file() else path.rglob(TB_GLOB))})
    if not dirs:
        raise AsrEvalError(f"{path}: no TensorBoard event files ({TB_GLOB})")
    scalars: dict[str, dict[int, tuple[float, float]]] = {}  # tag -> step -> (wall_time, value)
    for d in dirs:
        acc = EventAccumulator(str(d), size_guidance={SCALARS: 0})  # 0 = keep every point
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            per_step = scalars.setdefault(tag, {})
            for ev in acc.Scalars(tag):
                if ev.step not in per_step or ev.wall_time >= per_step[ev.step][0]:
                    per_step[ev.step] = (ev.wall_time, ev.value)
    loss = scalars.get(TRAIN_TAGS["loss"], {})
    train = []
    for step, (wall, _) in loss.items():
        logs = {k: scalars[t][step][1] for k, t in TRAIN_TAGS.items() if step in scalars.get(t, {})}
        train.append(train_point_from_logs(logs, step, wall_time=wall))
    metric = next((m for m in METRIC_KEYS if f"eval/{m}" in scalars), None)
    eval_tags = {f"eval_{t[5:]}": t for t in scalars if t.startswith("eval/")}
    eval_steps = set(scalars.get("eval/loss", {})) | set(scalars.get(f"eval/{metric}", {}))
    evals = []
    for step in eval_steps:
        logs = {k: scalars[t][step][1] for k, t in eval_tags.items() if step in scalars[t]}
        wall = max(scalars[t][step][0] for t in eval_tags.values() if step in scalars[t])
        # transformers logs an eval's epoch as train/epoch, we as eval/epoch
        epoch = logs.get("eval_epoch", scalars.get(TRAIN_TAGS["epoch"], {}).get(step, (None, None))[1])
        evals.append(eval_point_from_metrics(logs | {"epoch": epoch}, step, wall_time=wall)[0])
    return build_curve(derive_run_id(root), train, evals, metric=metric or "cer", source="tensorboard",
                       name=root.name, path=str(root), meta={})


# ---------------------------------------------------------------- DuckDB store

def resolve_store_run(con: duckdb.DuckDBPyConnection, ref: str) -> str | None:
    """training_run_id for ``ref`` (an id, or a unique name); None when unknown."""
    if con.execute("SELECT 1 FROM training_runs WHERE training_run_id = ?", [ref]).fetchall():
        return ref
    ids = [r[0] for r in con.execute("SELECT training_run_id FROM training_runs WHERE name = ? ORDER BY 1",
                                     [ref]).fetchall()]
    if len(ids) > 1:
        raise AsrEvalError(f"run name {ref!r} matches several training runs ({', '.join(ids)}); pass the id")
    return ids[0] if ids else None


def read_store(con: duckdb.DuckDBPyConnection, ref: str) -> TrainingCurve:
    run_id = resolve_store_run(con, ref)
    if run_id is None:
        raise AsrEvalError(f"no training run {ref!r} in the store; pass a run dir, a trainer_state.json "
                           "or a TensorBoard dir, or check --db")
    cols = ["name", "out_dir", "source", "base_model_id", "corpus_id", "params", "baseline_run_id", "status",
            "started_at", "finished_at"]
    row = dict(zip(cols, con.execute(f"SELECT {', '.join(cols)} FROM training_runs WHERE training_run_id = ?",
                                     [run_id]).fetchone()))
    params = json.loads(row.pop("params") or "{}")
    metric = params.pop("eval_metric", "cer")
    rows = con.execute(
        "SELECT step, kind, epoch, loss, grad_norm, learning_rate, cer, cer_s, cer_d, cer_i, cer_n, wall_time "
        "FROM training_log WHERE training_run_id = ? ORDER BY step", [run_id]).fetchall()
    train, evals = [], []
    for step, kind, epoch, loss, gn, lr, cer, s, d, i, n, wall in rows:
        if kind == "train":
            train.append(TrainPoint(step, loss, gn, lr, epoch, wall))
        else:
            evals.append(EvalPoint(step, loss, cer, s, d, i, n, epoch, wall))
    name, out_dir, source = row.pop("name"), row.pop("out_dir"), row.pop("source")
    meta = {k: (str(v) if v is not None and k.endswith("_at") else v) for k, v in row.items()}
    return build_curve(run_id, train, evals, metric=metric, source=source or "store", name=name, path=out_dir,
                       meta={**meta, "params": params})


# ---------------------------------------------------------------- auto-detection

def detect(path: Path) -> tuple[str, Path]:
    """('stream' | 'trainer_state' | 'tensorboard', file or dir to read) for a path."""
    if path.is_file():
        if path.name.endswith(".jsonl"):
            return "stream", path
        if path.name.startswith("events.out.tfevents"):
            return "tensorboard", path
        if path.suffix == ".json":
            return "trainer_state", path
        raise AsrEvalError(f"{path}: not a {STREAM_FILE}, trainer_state.json or TensorBoard event file")
    if (path / STREAM_FILE).is_file():
        return "stream", path / STREAM_FILE
    if (state := _latest_trainer_state(path)) is not None:
        return "trainer_state", state
    if next(path.rglob(TB_GLOB), None) is not None:
        return "tensorboard", path
    raise AsrEvalError(f"{path}: found no {STREAM_FILE}, {TRAINER_STATE} (also checked checkpoint-*/) or "
                       f"TensorBoard event files ({TB_GLOB}); pass the training output dir")


READERS = {"stream": read_stream, "trainer_state": read_trainer_state, "tensorboard": read_tensorboard}


def load_curve(ref: str | Path, con: duckdb.DuckDBPyConnection | None = None) -> TrainingCurve:
    """A run by path (run dir, loss_stream.jsonl, trainer_state.json, TensorBoard dir) or,
    when ``ref`` is not a path, by training_run_id / name in the store ``con``."""
    path = Path(ref)
    if path.exists():
        kind, target = detect(path)
        return READERS[kind](target)
    if con is None:
        raise AsrEvalError(f"{ref!r} is not a path and no store is open to look it up as a training run id; "
                           "pass a run dir / trainer_state.json / TensorBoard dir, or --db")
    return read_store(con, str(ref))
