"""`TrainingCurve`: the one normalized shape every reader returns and every rule reads.

A missing value is ``None``; a non-finite value that training really produced stays
``nan``/``inf``. The distinction matters: the non-finite rule fires on ``nan``, never on a
value a source simply did not log (e.g. no grad norm in an old ``trainer_state.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

# Error-rate metrics a trainer's compute_metrics may report, in order of preference: our
# scorer reports CER; plain HF recipes (the seed included) report word error rate.
METRIC_KEYS: tuple[str, ...] = ("cer", "wer", "mer")


@dataclass(frozen=True)
class TrainPoint:
    """One optimizer step's log: loss as the Trainer computed it, pre-clip grad norm, LR used."""

    step: int
    loss: float | None
    grad_norm: float | None = None
    learning_rate: float | None = None
    epoch: float | None = None
    wall_time: float | None = None


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation: eval loss and the error rate (named by ``TrainingCurve.metric``) with
    its substitution/deletion/insertion counts and reference length ``n``."""

    step: int
    loss: float | None
    cer: float | None = None
    s: int | None = None
    d: int | None = None
    i: int | None = None
    n: int | None = None
    epoch: float | None = None
    wall_time: float | None = None


@dataclass
class TrainingCurve:
    """A training run's loss stream, sorted by step, one point per (step, kind)."""

    run_id: str
    train: list[TrainPoint] = field(default_factory=list)
    evals: list[EvalPoint] = field(default_factory=list)
    metric: str = "cer"             # what ``EvalPoint.cer`` holds: 'cer', or 'wer' for HF runs
    source: str = "asr-eval"        # 'asr-eval' | 'trainer_state' | 'tensorboard' | 'store'
    name: str | None = None
    path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # params, started_at, status, lineage

    def series(self, kind: str, attr: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of ``attr`` over the ``kind`` ('train' | 'eval') points that logged it."""
        pts = self.train if kind == "train" else self.evals
        rows = [(p.step, getattr(p, attr)) for p in pts if getattr(p, attr) is not None]
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        steps, vals = zip(*rows)
        return np.asarray(steps, dtype=np.int64), np.asarray(vals, dtype=np.float64)

    @property
    def last_step(self) -> int | None:
        steps = [p.step for p in self.train] + [p.step for p in self.evals]
        return max(steps) if steps else None

    @property
    def loss_scaling(self) -> bool:
        """Whether the run trained in fp16 with a GradScaler (skipped overflow steps are normal)."""
        return bool(self.meta.get("params", {}).get("fp16"))


def build_curve(run_id: str, train: list[TrainPoint], evals: list[EvalPoint], **kw: Any) -> TrainingCurve:
    """Sort by step and keep the *last* record per step: a run resumed from a checkpoint
    re-logs the steps after it, and the re-run is what the saved weights saw."""
    t = {p.step: p for p in train}
    e = {p.step: p for p in evals}
    return TrainingCurve(run_id, [t[k] for k in sorted(t)], [e[k] for k in sorted(e)], **kw)


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _int(v: Any) -> int | None:
    if v is None:
        return None
    f = float(v)
    return int(round(f)) if math.isfinite(f) else None


def train_point_from_logs(logs: dict[str, Any], step: int, wall_time: float | None = None) -> TrainPoint | None:
    """A TrainPoint from a Trainer ``on_log`` dict / ``log_history`` entry; None for other logs
    (eval logs, the end-of-training summary, which carries ``train_loss`` not ``loss``)."""
    if "loss" not in logs:
        return None
    return TrainPoint(step=int(step), loss=_num(logs["loss"]), grad_norm=_num(logs.get("grad_norm")),
                      learning_rate=_num(logs.get("learning_rate")), epoch=_num(logs.get("epoch")),
                      wall_time=wall_time)


def eval_point_from_metrics(metrics: dict[str, Any], step: int, wall_time: float | None = None,
                            prefix: str = "eval_") -> tuple[EvalPoint, str | None] | None:
    """An EvalPoint and the error-rate metric's name from ``on_evaluate`` metrics / a
    ``log_history`` eval entry (keys ``eval_loss``, ``eval_cer``|``eval_wer``, ``eval_cer_s`` …)."""
    metric = next((m for m in METRIC_KEYS if prefix + m in metrics), None)
    if prefix + "loss" not in metrics and metric is None:
        return None
    c = (lambda k: metrics.get(f"{prefix}{metric}_{k}")) if metric else (lambda k: None)
    pt = EvalPoint(step=int(step), loss=_num(metrics.get(prefix + "loss")),
                   cer=_num(metrics.get(prefix + metric)) if metric else None,
                   s=_int(c("s")), d=_int(c("d")), i=_int(c("i")), n=_int(c("n")),
                   epoch=_num(metrics.get("epoch")), wall_time=wall_time)
    return pt, metric


def with_meta(curve: TrainingCurve, **meta: Any) -> TrainingCurve:
    """A copy of ``curve`` with ``meta`` keys set (readers stay pure)."""
    return replace(curve, meta={**curve.meta, **meta})
