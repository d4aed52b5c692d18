"""What a fine-tuning run prints: our step lines, never the Trainer's dict lines or tqdm fragments.

The Trainer prints every log as a Python dict (``{'loss': 2.31, 'grad_norm': 14.2, ...}``: its
``PrinterCallback`` when its bars are off, ``ProgressCallback.on_log`` above them otherwise).
``fine_tune_output`` takes both out and puts one of ours in:

- **log mode** (not a terminal: CI, ``make demo > demo.log``, Prefect's log view) —
  ``LogProgressCallback``: training steps as ``asr_eval.progress`` lines (done/total, time per step,
  ETA — evaluations left out of both) ending with the step's loss, grad-norm and learning rate;
  each evaluation's utterances as it decodes them, its last line ending with the CER (``NN.NN %``)
  and the eval loss::

      fine-tuning: 6/12 steps (50 %), 3.21 s per step, ETA 19s — loss 2.3456, grad-norm 14.21, lr 4.17e-05
      evaluating at step 6: 40/40 utterances (100 %), 3.5 utterances/s, done in 11s — CER 45.67 % (S 52 · D 3 · I 9 of 140), eval loss 1.2345

- **bar mode** (a terminal) — ``BarProgressCallback``: the Trainer's tqdm bars, with the latest
  loss, grad-norm and learning rate shown on the training bar and one line per evaluation above it.

With ``progress=False`` nothing is printed.
"""

from __future__ import annotations

import math
import time
from typing import Any

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from asr_eval.progress import Progress, fmt_pct


def _num(v: Any, spec: str) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return format(x, spec) if math.isfinite(x) else str(x)  # nan / inf as they are: the monitor's business


def step_fields(logs: dict[str, Any]) -> str | None:
    """``loss 2.3456, grad-norm 14.21, lr 4.17e-05`` of a Trainer training log; None for other logs
    (evaluations, the end-of-training summary)."""
    if "loss" not in logs:
        return None
    parts = [f"loss {_num(logs['loss'], '.4f')}"]
    if logs.get("grad_norm") is not None:
        parts.append(f"grad-norm {_num(logs['grad_norm'], '.2f')}")
    if logs.get("learning_rate") is not None:
        parts.append(f"lr {_num(logs['learning_rate'], '.2e')}")
    return ", ".join(parts)


def eval_fields(metrics: dict[str, Any], prefix: str = "eval_") -> str:
    """``CER 45.67 % (S 52 · D 3 · I 9 of 140), eval loss 1.2345`` of an evaluation's metrics."""
    parts = []
    cer = metrics.get(f"{prefix}cer")
    if cer is not None:
        text = f"CER {fmt_pct(float(cer))}"
        s, d, i, n = (metrics.get(f"{prefix}cer_{k}") for k in ("s", "d", "i", "n"))
        if None not in (s, d, i, n):
            text += f" (S {int(s)} · D {int(d)} · I {int(i)} of {int(n)})"
        parts.append(text)
    if metrics.get(f"{prefix}loss") is not None:
        parts.append(f"eval loss {_num(metrics[f'{prefix}loss'], '.4f')}")
    return ", ".join(parts)


def summary_fields(logs: dict[str, Any]) -> str | None:
    """``mean loss 2.3456`` of the Trainer's end-of-training log; None for other logs."""
    if "train_loss" not in logs:
        return None
    return f"mean loss {_num(logs['train_loss'], '.4f')}"


class LogProgressCallback(TrainerCallback):
    """Training steps and evaluation batches through ``asr_eval.progress.Progress`` (log mode),
    with each step's loss, grad-norm and learning rate and each evaluation's CER and loss."""

    def __init__(self, every_s: float | None = None):
        self.every_s = every_s
        self.train: Progress | None = None
        self.eval: Progress | None = None
        self.pending: int | None = None  # a finished step whose log has not come yet
        self.idle_since = time.monotonic()  # the end of the last training step: where an evaluation starts

    def on_train_begin(self, args, state, control, **kwargs: Any):
        self.train = Progress("fine-tuning", state.max_steps, "steps", show="log", every_s=self.every_s,
                              initial=state.global_step)
        self.idle_since = self.train.t0

    def _advance(self) -> None:
        if self.train is not None and self.pending is not None:
            self.train.advance(self.pending - self.train.done)
        self.pending = None

    def on_step_end(self, args, state, control, **kwargs: Any):
        # The step's log (loss, grad-norm, lr) comes right after this event: count the step there,
        # so that its line carries its own numbers (a step that logs nothing is counted at the next).
        self._advance()
        if self.train is not None:
            self.pending = state.global_step
            self.idle_since = self.train.clock()

    def on_log(self, args, state, control, logs=None, **kwargs: Any):
        if self.train is None or not logs:
            return
        if (line := step_fields(logs)) is not None:
            self.train.detail = line
            self._advance()
        elif (line := summary_fields(logs)) is not None:
            self.train.detail = line

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs: Any):
        if self.eval is None:
            total = len(eval_dataloader.dataset) if eval_dataloader is not None else None
            self.eval = Progress(f"evaluating at step {state.global_step}", total, "utterances", show="log",
                                 every_s=self.every_s)
            # there is no "evaluation begins" event: it began when the last step ended, one batch ago
            self.eval.t0 = self.eval.last = min(self.idle_since, self.eval.t0)
        n = args.eval_batch_size * max(1, args.world_size)  # one prediction step = a batch on every rank
        if self.eval.total is not None:
            n = min(n, self.eval.total - self.eval.done)
        self.eval.advance(n)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs: Any):
        if self.eval is not None:
            self.eval.detail = eval_fields(metrics or {})
            self.eval.close()
            if self.train is not None:  # time per step and ETA count training steps only
                self.train.exclude(self.eval.clock() - self.eval.t0)
            self.eval = None

    def on_train_end(self, args, state, control, **kwargs: Any):
        self._advance()
        if self.train is not None:
            self.train.close()
            self.train = None


class BarProgressCallback(ProgressCallback):
    """The Trainer's tqdm bars, without its dict lines: the training bar shows the latest loss,
    grad-norm and learning rate; each evaluation writes one line above it."""

    def on_log(self, args, state, control, logs=None, **kwargs: Any):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if (line := step_fields(logs)) is not None:
            self.training_bar.set_postfix_str(line)
        elif (line := summary_fields(logs)) is not None:
            self.training_bar.write(f"fine-tuning: {state.global_step} steps, {line}")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs: Any):
        super().on_evaluate(args, state, control, **kwargs)
        if state.is_world_process_zero and metrics:
            from tqdm.auto import tqdm

            tqdm.write(f"evaluation at step {state.global_step}: {eval_fields(metrics)}")


def fine_tune_output(trainer: Any, progress: bool, bars: bool, main: bool) -> None:
    """Replace the Trainer's printing (its ``PrinterCallback`` or ``ProgressCallback``) with ours:
    ``BarProgressCallback`` on a terminal (``bars``), ``LogProgressCallback`` elsewhere, nothing
    without ``progress`` or off the main process."""
    for cls in (PrinterCallback, ProgressCallback):
        while any(isinstance(cb, cls) for cb in trainer.callback_handler.callbacks):
            trainer.remove_callback(cls)
    if progress and main:
        trainer.add_callback(BarProgressCallback() if bars else LogProgressCallback())
