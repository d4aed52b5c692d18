"""The raw loss stream on disk: ``<run_dir>/loss_stream.jsonl`` plus TensorBoard event files.

During training the DuckDB store is not touched (one read-write process per file); the
trainer appends here and ``asr_eval.monitor.store`` loads the run dir afterwards.

Format — one strict-JSON object per line, appended and flushed per record:

    {"kind": "meta",  "training_run_id": ..., "started_at": ISO, "start_step": int, "params": {...}}
    {"kind": "train", "step": 12, "loss": 2.31, "grad_norm": 8.1, "learning_rate": 1e-05, "epoch": .., "wall_time": ..}
    {"kind": "eval",  "step": 500, "loss": 0.41, "cer": 0.123, "s": .., "d": .., "i": .., "n": .., "metric": "cer", ..}
    {"kind": "end",   "finished_at": ISO, "step": int, "status": "finished" | "stopped"}

Non-finite floats are written as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
(JSON has no NaN; Python's ``allow_nan`` tokens break jq and most other parsers) and
``float()`` reads them back; ``null`` means "not logged". A resumed run appends another
``meta`` line and re-logs steps after its checkpoint; readers keep the last record per step.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from asr_eval.monitor.curve import EvalPoint, TrainPoint

STREAM_FILE = "loss_stream.jsonl"
TB_DIR = "tensorboard"
# TensorBoard tags follow transformers' TensorBoardCallback (train/loss, eval/cer, ...) so the
# TensorBoard reader handles our event files and a plain HF run's alike.
TRAIN_TAGS = {"loss": "train/loss", "grad_norm": "train/grad_norm", "learning_rate": "train/learning_rate",
              "epoch": "train/epoch"}
EVAL_COUNT_FIELDS = ("s", "d", "i", "n")


def encode_float(x: float | None) -> float | str | None:
    if x is None or math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def decode_float(x: Any) -> float | None:
    return None if x is None else float(x)  # float("NaN"), float("-Infinity") parse


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def dumps(record: dict[str, Any]) -> str:
    """One stream line; raises on a raw NaN so a bug can never write non-strict JSON."""
    return json.dumps({k: encode_float(v) if isinstance(v, float) else v for k, v in record.items()},
                      allow_nan=False, ensure_ascii=False)


class StreamWriter:
    """Appends train/eval points to the run dir's jsonl (flushed per record, so a crash
    loses at most the line being written) and mirrors them into TensorBoard."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO = open(self.run_dir / STREAM_FILE, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when writing

            self._tb = SummaryWriter(log_dir=str(self.run_dir / TB_DIR))

    def _write(self, record: dict[str, Any]) -> None:
        self._fh.write(dumps(record) + "\n")
        self._fh.flush()

    def meta(self, training_run_id: str, start_step: int, params: dict[str, Any], **extra: Any) -> None:
        self._write({"kind": "meta", "training_run_id": training_run_id, "started_at": now_iso(),
                     "start_step": start_step, "params": params, **extra})

    def train(self, p: TrainPoint) -> None:
        self._write({"kind": "train", **asdict(p)})
        if self._tb is not None:
            for attr, tag in TRAIN_TAGS.items():
                if getattr(p, attr) is not None:
                    self._tb.add_scalar(tag, getattr(p, attr), p.step, walltime=p.wall_time)

    def eval(self, p: EvalPoint, metric: str) -> None:
        self._write({"kind": "eval", **asdict(p), "metric": metric})
        if self._tb is not None:
            vals = {"eval/loss": p.loss, f"eval/{metric}": p.cer, "eval/epoch": p.epoch,
                    **{f"eval/{metric}_{k}": getattr(p, k) for k in EVAL_COUNT_FIELDS}}
            for tag, v in vals.items():
                if v is not None:
                    self._tb.add_scalar(tag, v, p.step, walltime=p.wall_time)
            self._tb.flush()

    def end(self, step: int, status: str) -> None:
        self._write({"kind": "end", "finished_at": now_iso(), "step": step, "status": status})

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if not self._fh.closed:
            self._fh.close()
