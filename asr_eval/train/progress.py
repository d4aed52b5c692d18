"""Fine-tuning progress as log lines (``asr_eval.progress``) when nobody watches a terminal.

On a terminal the Trainer's own tqdm bars show training and evaluation; in a CI log, behind
``| tee`` or in Prefect's log view they print nothing useful, so this callback logs instead:
training steps (done/total, time per step, ETA — evaluations left out of both) and each evaluation's
utterances as it decodes them.
"""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback

from asr_eval.progress import Progress


class LogProgressCallback(TrainerCallback):
    """Training steps and evaluation batches through ``asr_eval.progress.Progress`` (log mode)."""

    def __init__(self, every_s: float | None = None):
        self.every_s = every_s
        self.train: Progress | None = None
        self.eval: Progress | None = None
        self.idle_since = time.monotonic()  # the end of the last training step: where an evaluation starts

    def on_train_begin(self, args, state, control, **kwargs: Any):
        self.train = Progress("fine-tuning", state.max_steps, "steps", show="log", every_s=self.every_s,
                              initial=state.global_step)
        self.idle_since = self.train.t0

    def on_step_end(self, args, state, control, **kwargs: Any):
        if self.train is not None:
            self.train.advance(state.global_step - self.train.done)
            self.idle_since = self.train.clock()

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

    def on_evaluate(self, args, state, control, **kwargs: Any):
        if self.eval is not None:
            self.eval.close()
            if self.train is not None:  # time per step and ETA count training steps only
                self.train.exclude(self.eval.clock() - self.eval.t0)
            self.eval = None

    def on_train_end(self, args, state, control, **kwargs: Any):
        if self.train is not None:
            self.train.close()
            self.train = None
