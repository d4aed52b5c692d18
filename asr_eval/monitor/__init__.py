"""Training monitor: raw loss stream, readers, divergence/regression rules, store I/O.

* ``stream``   — `LossStreamCallback` + `training_args_overrides()` (raw loss stream to the run dir)
* ``readers``  — `load_curve` (run dir | trainer_state.json | TensorBoard dir | store id) → `TrainingCurve`
* ``rules``    — `RuleConfig`, `check` → `Alert`s
* ``live``     — `LiveMonitorCallback` (rules during training; stops on critical)
* ``store``    — `save_run`, `save_alerts`, `paired_errors_from_store`

The callbacks import transformers, so they are loaded lazily: ``check-training`` stays fast.
"""

from __future__ import annotations

from typing import Any

from asr_eval.monitor.curve import EvalPoint, TrainingCurve, TrainPoint
from asr_eval.monitor.readers import load_curve
from asr_eval.monitor.rules import Alert, PairedErrors, RuleConfig, check, exit_code

_LAZY = {"LossStreamCallback": "stream", "training_args_overrides": "stream", "LiveMonitorCallback": "live"}

__all__ = ["Alert", "EvalPoint", "LiveMonitorCallback", "LossStreamCallback", "PairedErrors", "RuleConfig",
           "TrainPoint", "TrainingCurve", "check", "exit_code", "load_curve", "training_args_overrides"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
