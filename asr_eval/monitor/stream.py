"""`LossStreamCallback`: a transformers TrainerCallback writing the raw loss stream.

Every optimizer step's loss, grad norm and learning rate, and every evaluation's eval loss,
CER and S/D/I/N counts go to ``<run_dir>/loss_stream.jsonl`` and TensorBoard (format in
``streamfile``). The Trainer only hands callbacks what it logs, so the trainer must run with
``training_args_overrides()``:

* ``logging_steps=1`` — the Trainer averages the loss over each logging interval, so only a
  per-step log is a per-step loss (and grad norm is logged only at log steps);
* ``logging_nan_inf_filter=False`` — with the default ``True`` a NaN/inf step loss is replaced
  by the running average before logging, and NaN eval losses are dropped from eval_loss:
  exactly the divergence we exist to catch would be invisible.

Caveat (transformers' accumulator, not ours): once a step's loss is NaN the Trainer's running
sum is NaN and its reset (``tr_loss -= tr_loss``) keeps it NaN, so *every later* logged loss
is NaN too, even if a fp16 GradScaler skipped the bad step and the weights are intact. The
first non-finite step is therefore the one that counts; the rules alert on episode starts.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from asr_eval.monitor.curve import eval_point_from_metrics, train_point_from_logs
from asr_eval.monitor.streamfile import StreamWriter

# Training arguments recorded in the stream's meta line (the rules read ``fp16``).
RECORDED_ARGS = ("learning_rate", "max_steps", "num_train_epochs", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "warmup_steps", "lr_scheduler_type", "weight_decay",
                 "max_grad_norm", "seed", "fp16", "bf16", "logging_steps", "eval_steps",
                 "logging_nan_inf_filter")


def training_args_overrides() -> dict[str, Any]:
    """The TrainingArguments the trainer must use for a complete raw stream (see module doc)."""
    return {"logging_strategy": "steps", "logging_steps": 1, "logging_first_step": True,
            "logging_nan_inf_filter": False}


def stream_gaps(args: Any) -> list[str]:
    """Which of ``training_args_overrides()`` the given TrainingArguments do not honour."""
    gaps = []
    for k, want in training_args_overrides().items():
        have = getattr(args, k, None)
        have = getattr(have, "value", have)  # IntervalStrategy enum -> 'steps'
        if have != want:
            gaps.append(f"{k}={have!r} (need {want!r})")
    return gaps


class LossStreamCallback(TrainerCallback):
    """Writes the raw loss stream of one training run into ``run_dir`` (main process only)."""

    def __init__(self, run_dir: str | Path, training_run_id: str, tensorboard: bool = True,
                 meta: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.training_run_id = training_run_id
        self.tensorboard = tensorboard
        self.meta = dict(meta or {})  # e.g. base_model_id, corpus_id, baseline_run_id
        self._writer: StreamWriter | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        gaps = stream_gaps(args)
        if gaps:
            warnings.warn(
                "LossStreamCallback: the loss stream will miss per-step or non-finite losses because "
                f"TrainingArguments has {', '.join(gaps)}; build the args with "
                "asr_eval.monitor.stream.training_args_overrides()", stacklevel=2)
        self._writer = StreamWriter(self.run_dir, tensorboard=self.tensorboard)
        # enums (lr_scheduler_type) as their plain values so the params stay JSON
        params = {k: getattr(getattr(args, k), "value", getattr(args, k)) for k in RECORDED_ARGS if hasattr(args, k)}
        self._writer.meta(self.training_run_id, state.global_step, params, stream_gaps=gaps, **self.meta)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._writer is None or not logs:
            return
        p = train_point_from_logs(logs, state.global_step, wall_time=time.time())
        if p is not None:
            self._writer.train(p)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        if self._writer is None:  # trainer.evaluate() outside train(): still part of the stream
            self._writer = StreamWriter(self.run_dir, tensorboard=self.tensorboard)
        got = eval_point_from_metrics(metrics, state.global_step, wall_time=time.time())
        if got is not None:
            p, metric = got
            self._writer.eval(p, metric or "cer")

    def on_train_end(self, args, state, control, **kwargs):
        if self._writer is None:
            return
        done = state.max_steps > 0 and state.global_step >= state.max_steps
        self._writer.end(state.global_step, "finished" if done else "stopped")
        self._writer.close()
        self._writer = None
