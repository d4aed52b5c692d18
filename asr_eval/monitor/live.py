"""`LiveMonitorCallback`: the ``check-training`` rules, run during training.

It keeps its own `TrainingCurve` from the Trainer's logs (so it needs the same
``training_args_overrides()`` as the stream), re-runs `rules.check` after each new point and
records alerts it has not seen. Because the rules are causal, the alerts it records are the
ones ``check-training`` will report afterwards. A critical alert (non-finite loss or grad
norm) sets ``control.should_training_stop``: the Trainer finishes the step and stops, saving
no more compute on a diverged run. Regressions are only recorded — a run can recover.
"""

from __future__ import annotations

import logging
import time
import math
from dataclasses import asdict, replace
from pathlib import Path

from transformers import TrainerCallback

from asr_eval.monitor.curve import TrainingCurve, TrainPoint, eval_point_from_metrics, train_point_from_logs
from asr_eval.monitor.rules import Alert, RuleConfig, check
from asr_eval.monitor.streamfile import dumps

LIVE_ALERTS_FILE = "live_alerts.jsonl"
log = logging.getLogger(__name__)


class LiveMonitorCallback(TrainerCallback):
    """Runs the rules live; ``alerts`` holds what it found, ``stopped_by`` the alert that
    stopped training. With ``run_dir`` the alerts are also appended to live_alerts.jsonl."""

    def __init__(self, config: RuleConfig | None = None, *, baseline: TrainingCurve | None = None,
                 zero_shot_cer: float | None = None, run_dir: str | Path | None = None,
                 stop_on: tuple[str, ...] = ("critical",), training_run_id: str = "live"):
        self.config = config or RuleConfig()
        self.baseline = baseline
        self.zero_shot_cer = zero_shot_cer
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.stop_on = frozenset(stop_on)
        self.curve = TrainingCurve(training_run_id)
        self.alerts: list[Alert] = []
        self.stopped_by: Alert | None = None
        self._seen: set[tuple] = set()

    def on_train_begin(self, args, state, control, **kwargs):
        self.curve.meta["params"] = {"fp16": bool(getattr(args, "fp16", False))}

    def on_log(self, args, state, control, logs=None, **kwargs):
        p = train_point_from_logs(logs or {}, state.global_step, wall_time=time.time())
        if p is not None and state.is_world_process_zero:
            self._add(self.curve.train, p)
            # Per step only the train-point rules can fire, and only at this step; they look back
            # a bounded number of points, so judge the tail: O(1) per step, not O(steps).
            tail = replace(self.curve, train=_train_tail(self.curve.train, self._lookback()), evals=[])
            self._check(control, tail, p.step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        got = eval_point_from_metrics(metrics or {}, state.global_step, wall_time=time.time())
        if got is not None and state.is_world_process_zero:
            self.curve.metric = got[1] or self.curve.metric
            self._add(self.curve.evals, got[0])
            self._check(control, self.curve, got[0].step)

    def _lookback(self) -> int:
        """Finite points a train-point rule needs behind the current one (windows + runs)."""
        c = self.config
        return (max(c.spike_window, c.zscore_window, c.min_history, c.smooth)
                + max(c.spike_min_steps, c.scaler_overflow_steps, c.baseline_min_steps) + 1)

    @staticmethod
    def _add(points: list, p) -> None:
        if points and points[-1].step >= p.step:  # a resumed run re-logs steps: keep the re-run
            while points and points[-1].step >= p.step:
                points.pop()
        points.append(p)

    def _check(self, control, curve: TrainingCurve, step: int) -> None:
        new = []
        for a in check(curve, self.config, self.baseline, self.zero_shot_cer):
            key = (a.rule, a.metric, a.step)
            # rules are causal: anything new is at this step (an episode cut by the tail is older)
            if a.step == step and key not in self._seen:
                self._seen.add(key)
                new.append(a)
        for a in new:
            self.alerts.append(a)
            log.warning("check-training %s [%s] step %s: %s", a.severity, a.rule, a.step, a.message)
            if self.run_dir is not None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                with open(self.run_dir / LIVE_ALERTS_FILE, "a", encoding="utf-8") as fh:
                    fh.write(dumps(asdict(a)) + "\n")
            if a.severity in self.stop_on and self.stopped_by is None:
                self.stopped_by = a
                control.should_training_stop = True



def _train_tail(train: list[TrainPoint], k: int) -> list[TrainPoint]:
    """The shortest suffix holding ``k`` finite values of each series the run logs."""
    attrs = [a for a in ("loss", "grad_norm") if getattr(train[-1], a) is not None]
    start = len(train)
    for attr in attrs:
        seen, i = 0, len(train)
        while i > 0 and seen < k:
            i -= 1
            v = getattr(train[i], attr)
            seen += v is not None and math.isfinite(v)
        start = min(start, i)
    return train[start:]
