"""The raw loss stream with a real (tiny, non-Whisper) transformers Trainer: NaN losses are
kept, every reader (our jsonl, our TensorBoard, transformers' TensorBoard, trainer_state.json,
the DuckDB store) gives back the same curve, and the live monitor stops a diverged run."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import PrinterCallback, Trainer, TrainingArguments  # noqa: E402

from asr_eval.errors import AsrEvalError  # noqa: E402
from asr_eval.monitor.live import LIVE_ALERTS_FILE, LiveMonitorCallback  # noqa: E402
from asr_eval.monitor.readers import detect, load_curve, read_store, read_stream, read_tensorboard  # noqa: E402
from asr_eval.monitor.store import save_run  # noqa: E402
from asr_eval.monitor.stream import LossStreamCallback, training_args_overrides  # noqa: E402
from asr_eval.monitor.streamfile import STREAM_FILE, TB_DIR  # noqa: E402
from asr_eval.store import connect  # noqa: E402

NAN_STEP = 17


class Tiny(nn.Module):
    """Linear regression whose training loss turns NaN on optimizer step ``nan_at`` (batch size
    1 per micro-step, so forward call k in train mode is micro-step k)."""

    def __init__(self, nan_at: int | None = None, grad_accum: int = 1):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 1)
        self.nan_call = None if nan_at is None else (nan_at - 1) * grad_accum + 1
        self.calls = 0

    def forward(self, x, labels=None):
        out = self.lin(x).squeeze(-1)
        loss = ((out - labels) ** 2).mean()
        if self.training:
            self.calls += 1
            if self.calls == self.nan_call:
                loss = loss * float("nan")
        return {"loss": loss, "logits": out}


def data(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4)).astype("float32")
    y = x @ np.array([1.0, -2.0, 0.5, 3.0], "float32")
    return [{"x": torch.tensor(x[i]), "labels": torch.tensor(y[i])} for i in range(n)]


def compute_metrics(p) -> dict:
    """CER-shaped metrics: a prediction off by > 0.5 (or NaN) is one substitution."""
    err = int((~(np.abs(p.predictions - p.label_ids) <= 0.5)).sum())
    n = len(p.label_ids)
    return {"cer": err / n, "cer_s": err, "cer_d": 0, "cer_i": 0, "cer_n": n}


def train_tiny(out: Path, nan_at: int | None = None, overrides: bool = True, callbacks=(), grad_accum: int = 1,
               max_steps: int = 30) -> Trainer:
    extra = training_args_overrides() if overrides else {"logging_steps": 1}
    args = TrainingArguments(
        output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=1, gradient_accumulation_steps=grad_accum,
        learning_rate=0.02, eval_strategy="steps", eval_steps=10, save_strategy="no", use_cpu=True,
        report_to=["tensorboard"], disable_tqdm=True, seed=0, **extra)
    trainer = Trainer(model=Tiny(nan_at, grad_accum), args=args, train_dataset=data(64), eval_dataset=data(16),
                      compute_metrics=compute_metrics, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # disable_tqdm swaps the progress bar for prints
    trainer.train()
    trainer.state.save_to_json(str(out / "trainer_state.json"))
    return trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, nan_at, accum in (("healthy", None, 2), ("nan", NAN_STEP, 1)):
        out = root / name
        train_tiny(out, nan_at, callbacks=[LossStreamCallback(out, f"tiny-{name}")], grad_accum=accum)
        made[name] = out
    return made


def test_stream_keeps_the_nan_step(runs):
    c = read_stream(runs["nan"])
    assert [p.step for p in c.train] == list(range(1, 31))
    assert all(math.isfinite(p.loss) and math.isfinite(p.grad_norm) for p in c.train[:NAN_STEP - 1])
    assert math.isnan(c.train[NAN_STEP - 1].loss) and math.isnan(c.train[NAN_STEP - 1].grad_norm)
    # NaN weights from then on: eval loss at 20 and 30 is NaN, every prediction an error
    assert [(e.step, math.isnan(e.loss), e.cer, e.s, e.n) for e in c.evals] == [
        (10, False, c.evals[0].cer, c.evals[0].s, 16), (20, True, 1.0, 16, 16), (30, True, 1.0, 16, 16)]
    recs = [json.loads(x) for x in (runs["nan"] / STREAM_FILE).read_text().splitlines()]
    rec = next(r for r in recs if r["kind"] == "train" and r["step"] == NAN_STEP)
    assert rec["loss"] == rec["grad_norm"] == "NaN"  # strict JSON that float() decodes
    assert (recs[0]["kind"], recs[-1]["kind"], recs[-1]["status"]) == ("meta", "end", "finished")
    assert c.meta["params"]["logging_nan_inf_filter"] is False and c.meta["stream_gaps"] == []


def test_the_trainers_default_filter_hides_the_nan_and_the_callback_warns(tmp_path):
    """Why training_args_overrides() exists: with logging_nan_inf_filter=True the Trainer logs a
    finite loss at the NaN step."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = train_tiny(tmp_path, NAN_STEP, overrides=False, callbacks=[LossStreamCallback(tmp_path, "filtered")])
    logged = {e["step"]: e["loss"] for e in t.state.log_history if "loss" in e}
    assert math.isfinite(logged[NAN_STEP])
    assert any("logging_nan_inf_filter=True (need False)" in str(w.message) for w in caught)
    assert read_stream(tmp_path).meta["stream_gaps"]


def _same(a: float | None, b: float | None, rel: float) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=rel)


def assert_same_curve(a, b, rel=1e-6):
    """TensorBoard stores float32, so values match to float32 precision."""
    assert [p.step for p in a.train] == [p.step for p in b.train]
    for p, q in zip(a.train, b.train):
        for f in ("loss", "grad_norm", "learning_rate", "epoch"):
            assert _same(getattr(p, f), getattr(q, f), rel), (p, q, f)
    assert [p.step for p in a.evals] == [p.step for p in b.evals]
    for p, q in zip(a.evals, b.evals):
        for f in ("loss", "cer", "epoch"):
            assert _same(getattr(p, f), getattr(q, f), rel), (p, q, f)
        assert (p.s, p.d, p.i, p.n) == (q.s, q.d, q.i, q.n)
    assert a.metric == b.metric == "cer"


@pytest.mark.parametrize("name", ["healthy", "nan"])
def test_readers_round_trip(runs, name, tmp_path):
    out = runs[name]
    ours = load_curve(out)                                   # run dir → loss_stream.jsonl
    assert ours.source == "asr-eval" and ours.run_id == f"tiny-{name}" and len(ours.train) == 30
    hf_runs = out / "runs"                                   # transformers' own TensorBoardCallback
    for other in (read_tensorboard(out / TB_DIR), read_tensorboard(hf_runs), load_curve(out / "trainer_state.json")):
        assert_same_curve(ours, other)
    assert detect(hf_runs)[0] == "tensorboard" and detect(out / "trainer_state.json")[0] == "trainer_state"
    # the TensorBoard dir and trainer_state.json of one HF run get one run id
    assert read_tensorboard(hf_runs).run_id == load_curve(out / "trainer_state.json").run_id
    con = connect(tmp_path / "s.duckdb")
    try:
        save_run(con, ours)
        save_run(con, ours)  # idempotent
        back = read_store(con, ours.run_id)
        assert con.execute("SELECT count(*) FROM training_log").fetchone()[0] == 33
        nan_rows = con.execute("SELECT count(*) FROM training_log WHERE isnan(loss)").fetchone()[0]
        assert nan_rows == (0 if name == "healthy" else 30 - NAN_STEP + 1 + 2)
        assert back.meta["status"] == "finished" and back.meta["params"]["max_steps"] == 30
    finally:
        con.close()
    assert_same_curve(ours, back, rel=0)


def test_grad_accumulation_logs_one_point_per_optimizer_step(runs):
    c = read_stream(runs["healthy"])
    assert c.meta["params"]["gradient_accumulation_steps"] == 2
    assert [p.step for p in c.train] == list(range(1, 31)) and all(math.isfinite(p.loss) for p in c.train)


def test_live_monitor_stops_training_at_the_nan_step(tmp_path):
    live = LiveMonitorCallback(run_dir=tmp_path, training_run_id="tiny-live")
    t = train_tiny(tmp_path, NAN_STEP, callbacks=[LossStreamCallback(tmp_path, "tiny-live"), live])
    assert t.state.global_step == NAN_STEP
    assert (live.stopped_by.rule, live.stopped_by.metric, live.stopped_by.step) == ("non_finite", "loss", NAN_STEP)
    recorded = [json.loads(x) for x in (tmp_path / LIVE_ALERTS_FILE).read_text().splitlines()]
    assert {(a["rule"], a["metric"], a["step"]) for a in recorded} == {("non_finite", "loss", NAN_STEP),
                                                                         ("non_finite", "grad_norm", NAN_STEP)}
    c = read_stream(tmp_path)
    assert c.meta["status"] == "stopped" and c.last_step == NAN_STEP


def test_stream_reader_resume_and_torn_line(tmp_path):
    """A resumed run re-logs steps after its checkpoint (the re-run wins); a crash mid-write
    leaves a torn last line (skipped); a bad line elsewhere names the file and line."""
    lines = [
        {"kind": "meta", "training_run_id": "r1", "started_at": "2025-01-01T00:00:00+00:00", "start_step": 0,
         "params": {"fp16": True}},
        {"kind": "train", "step": 1, "loss": 2.0}, {"kind": "train", "step": 2, "loss": "Infinity"},
        {"kind": "meta", "training_run_id": "r1", "started_at": "2025-01-02T00:00:00+00:00", "start_step": 1,
         "params": {"fp16": True}},
        {"kind": "train", "step": 2, "loss": 1.5, "grad_norm": None},
        {"kind": "eval", "step": 2, "loss": 0.9, "cer": 0.3, "s": 3, "d": 0, "i": 1, "n": 13, "metric": "cer"},
    ]
    f = tmp_path / STREAM_FILE
    f.write_text("\n".join(json.dumps(x) for x in lines) + '\n{"kind": "train", "st')
    c = read_stream(tmp_path)
    assert [(p.step, p.loss) for p in c.train] == [(1, 2.0), (2, 1.5)]
    assert c.evals[0].i == 1 and c.meta["started_at"] == "2025-01-01T00:00:00+00:00"
    assert c.meta["status"] == "running" and c.loss_scaling
    f.write_text(json.dumps(lines[0]) + "\nnot json\n" + json.dumps(lines[1]) + "\n")
    with pytest.raises(AsrEvalError, match=f"{STREAM_FILE}:2"):
        read_stream(f)


def test_evaluate_after_training_is_streamed_too(tmp_path):
    t = train_tiny(tmp_path, max_steps=10, callbacks=[LossStreamCallback(tmp_path, "post-eval")])
    before = read_stream(tmp_path).evals[-1]
    t.evaluate()
    after = read_stream(tmp_path).evals[-1]
    assert before.step == after.step == 10 and after.wall_time > before.wall_time  # the re-evaluation wins
