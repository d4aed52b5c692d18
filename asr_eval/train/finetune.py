"""Fine-tune a Whisper model on one split of an ingested corpus with ``Seq2SeqTrainer``.

The run directory (``out_dir``) holds everything; DuckDB is not opened during training (one
read-write process per file), ``register_finetune`` loads the run afterwards::

    checkpoint-N/        Trainer checkpoints (weights, optimizer, processor, trainer_state.json)
    best/  final/        exported models: weights + config + generation config + processor
    loss_stream.jsonl    raw per-step loss stream (asr_eval.monitor), tensorboard/ beside it
    eval_predictions/    step-N.jsonl: utt_id, ref, hyp of every evaluation
    training_run.json    params, lineage, status, best/final step, CER and model rows
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

from asr_eval.errors import AsrEvalError
from asr_eval.progress import third_party_bars
from asr_eval.provenance import package_versions, stable_hash
from asr_eval.train import distributed as dist
from asr_eval.train import remote
from asr_eval.train.checkpoints import (  # noqa: F401  (re-exported: the checkpoint helpers lived here)
    CHECKSUMS_FILE, ChecksumCallback, SaveOnStopCallback, check_checkpoint, last_complete_checkpoint,
)
from asr_eval.train.data import BlockShuffleSampler, LabelEncoder, ShardSpeechDataset, SpeechSeq2SeqCollator
from asr_eval.train.progress import fine_tune_output
from asr_eval.train.selection import resolve_selection, write_selection

RUN_FILE = "training_run.json"
PREDICTIONS_DIR = "eval_predictions"


@dataclass
class FinetuneConfig:
    """Hyper-parameters and choices of one fine-tuning run (all recorded in training_run.json)."""

    train_split: str = "train"
    eval_split: str = "auto"             # checkpoint selection: auto = dev split, else carved from train
    dev_fraction: float = 0.10           # carved dev: share of the training split …
    dev_max: int = 500                   # … capped at this many utterances
    max_steps: int = 1000
    learning_rate: float = 1e-5
    batch_size: int = 8                  # per device, per forward pass
    eval_batch_size: int | None = None   # default: batch_size
    grad_accum: int = 1
    eval_steps: int = 200                # also the checkpoint interval (best-by-CER needs both aligned)
    warmup_steps: float = 0.05           # ≥ 1: steps; in [0, 1): fraction of max_steps (5% by default)
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False  # transformers 5: `activation_checkpointing`
    freeze_encoder: bool = False
    freeze_encoder_layers: int = 0       # freeze the conv stem, positions and the first N encoder layers
    max_train_samples: int | None = None
    max_eval_samples: int | None = None  # a fixed seeded subset, the same at every evaluation
    eval_on_start: bool = True           # step-0 CER = the base model's zero-shot CER on the same subset
    max_new_tokens: int = 128
    num_beams: int = 1
    language: str = "zh"
    task: str = "transcribe"
    label_profile: str = "zh-train-v1"   # normalizes training targets (one script: Simplified)
    score_profile: str = "zh-v1"         # normalizes refs and hyps for CER, as `asr-eval score` does
    precision: str = "auto"              # auto | fp32 | fp16 | bf16 (auto: bf16/fp16 on GPU, fp32 on CPU)
    device: str = "auto"                 # auto | cpu | cuda
    seed: int = 0
    save_total_limit: int = 2            # the best checkpoint is always kept on top of this
    dataloader_workers: int = 0
    live_monitor: bool = True            # run the divergence rules live; stop on a critical alert
    baseline_run: str | None = None      # training_run_id (or run dir) of a known-good run
    tensorboard: bool = True
    resume: bool = True                  # continue from the last complete checkpoint in out_dir


@dataclass
class FinetuneResult:
    training_run_id: str
    out_dir: Path
    best_dir: Path
    final_dir: Path
    best_step: int
    final_step: int
    best_cer: float | None
    final_cer: float | None
    zero_shot_cer: float | None          # the base model, step 0 (None when not evaluated)
    model_ids: dict[str, str]            # {"best": ..., "final": ...}
    base_model_id: str
    corpus_id: str
    status: str                          # finished | stopped (live monitor) | failed
    resumed_from: str | None
    n_train: int
    n_eval: int
    train_runtime_s: float
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)  # where the best checkpoint was selected


# ───────────────────────────── pieces ─────────────────────────────


def resolve_device(device: str, precision: str) -> tuple[bool, str]:
    """(use CUDA, 'fp32' | 'fp16' | 'bf16'). On a GPU ``auto`` is bf16 where supported, else
    fp16 (the scorer's rule); on CPU fp32 — weights stay fp32 either way (mixed precision)."""
    from asr_eval.models.loading import pick_device, pick_dtype

    if device not in ("auto", "cpu", "cuda"):
        raise AsrEvalError(f"--device {device!r} is not one of auto, cpu, cuda "
                           "(pick a GPU with CUDA_VISIBLE_DEVICES)")
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise AsrEvalError(f"--precision {precision!r} is not one of auto, fp32, fp16, bf16")
    use_cuda = pick_device(device).startswith("cuda")
    if not use_cuda and precision in ("fp16", "bf16"):
        raise AsrEvalError(f"--precision {precision} needs a CUDA GPU; use fp32 (or auto) on CPU")
    dtype = pick_dtype(precision, "cuda" if use_cuda else "cpu")
    return use_cuda, {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[dtype]


def cer_metrics(refs: list[str], hyps: list[str], profile: Any) -> dict[str, float]:
    """Pooled CER and its S/D/I/N counts under a scoring profile (not word error rate)."""
    from asr_eval.metrics import pooled_rate, score_many

    t = score_many(refs, hyps, profile, with_alignment=False)
    s, d, i, n = (int(np.sum(t.column(c).to_numpy(zero_copy_only=False))) for c in ("cer_s", "cer_d", "cer_i", "cer_n"))
    return {"cer": pooled_rate(s + d + i, n), "cer_s": s, "cer_d": d, "cer_i": i, "cer_n": n}


def make_compute_metrics(tokenizer: Any, dataset: ShardSpeechDataset, profile: Any,
                         predictions_dir: Path | None = None,
                         step: Callable[[], int] = lambda: 0) -> Callable[[Any], dict[str, float]]:
    """``compute_metrics`` for ``predict_with_generate``: decode generated ids, score them
    against the dataset's raw references (eval order is the dataset order: sequential sampler)."""

    fill = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def compute(pred: Any) -> dict[str, float]:
        ids = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        ids = np.where(ids < 0, fill, ids)  # −100 padding between batches
        hyps = [h.strip() for h in tokenizer.batch_decode(ids, skip_special_tokens=True)]
        if len(hyps) != len(dataset):
            raise RuntimeError(f"{len(hyps)} predictions for {len(dataset)} eval utterances")
        if predictions_dir is not None:
            predictions_dir.mkdir(parents=True, exist_ok=True)
            lines = (json.dumps({"utt_id": u, "ref": r, "hyp": h}, ensure_ascii=False)
                     for u, r, h in zip(dataset.utt_ids, dataset.texts, hyps, strict=True))
            (predictions_dir / f"step-{step()}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return cer_metrics(dataset.texts, hyps, profile)

    return compute


class WarmupWarning(UserWarning):
    """The learning-rate warm-up is as long as (or longer than) the whole run."""


def warmup_step_count(cfg: FinetuneConfig) -> int:
    """Warm-up steps: ``warmup_steps`` itself when ≥ 1, else that fraction of ``max_steps``."""
    w = cfg.warmup_steps
    if w < 0:
        raise AsrEvalError(f"--warmup-steps {w} must be ≥ 0 (steps, or a fraction of --max-steps below 1)")
    return int(w) if w >= 1 else math.ceil(cfg.max_steps * w)


def warmup_warning(cfg: FinetuneConfig) -> str | None:
    """A warning when warm-up does not end before the run does (the peak rate is never reached)."""
    n = warmup_step_count(cfg)
    if n < cfg.max_steps:
        return None
    peak = cfg.learning_rate * cfg.max_steps / max(n, 1)
    return (f"warm-up is {n} steps but the run is {cfg.max_steps} steps: the learning rate only climbs to "
            f"{peak:.2g} of the {cfg.learning_rate:g} asked for. Pass --warmup-steps below --max-steps "
            "(e.g. 0.1 for 10% of the run)")


class _ShardTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer whose training order reads each Parquet row group once per epoch."""

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        """Whisper's ``proj_out.weight`` is tied to the decoder embeddings, so checkpoints do not
        store it and every resume reported it as a missing key. Re-tie, and report only keys
        that are missing and not tied."""
        tied = set(getattr(self.model, "all_tied_weights_keys", None) or getattr(self.model, "_tied_weights_keys", {})
                   or ())
        missing = [k for k in load_result.missing_keys if k not in tied]
        if len(missing) != len(load_result.missing_keys):
            self.model.tie_weights()
        load_result = type(load_result)(missing_keys=missing, unexpected_keys=list(load_result.unexpected_keys))
        super()._issue_warnings_after_load(load_result)

    def _get_train_sampler(self, train_dataset=None):
        """The same order on every rank (seed, epoch); accelerate then gives rank r the per-process
        batches kN + r of it, so the ranks read disjoint parts of each global batch."""
        ds = train_dataset if train_dataset is not None else self.train_dataset
        if isinstance(ds, ShardSpeechDataset):
            self._block_sampler = BlockShuffleSampler(ds.groups(), block=ds.cache_row_groups,
                                                      seed=self.args.data_seed or self.args.seed)
            return self._block_sampler
        return super()._get_train_sampler(train_dataset)

    def _run_epoch(self, model, epoch, *args, **kwargs):
        """Set the sampler's epoch here: resumed mid-epoch in a multi-process run, the loader is
        wrapped (skip_first_batches over accelerate's BatchSamplerShard) so that the Trainer's
        ``set_epoch`` no longer reaches the sampler, and the ranks replayed epoch 0's order."""
        if (sampler := getattr(self, "_block_sampler", None)) is not None:
            sampler.set_epoch(int(epoch))
        return super()._run_epoch(model, epoch, *args, **kwargs)

    def evaluation_loop(self, *args, **kwargs):
        """Gather with ``gather_for_metrics``: ``Seq2SeqTrainer.evaluate`` switches to plain
        ``gather``, which keeps the utterances a multi-process loader repeats to even out its last
        batch, so the predictions would outnumber the eval set (a no-op in one process)."""
        self.gather_function = self.accelerator.gather_for_metrics
        return super().evaluation_loop(*args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        """Encode once per eval batch: Seq2SeqTrainer runs the encoder for ``generate`` and again
        for the eval loss, and Whisper's encoder (30 s, 1500 positions) is most of the cost.
        Encoded in full precision, as the parent's ``generate`` call runs outside autocast."""
        if self.args.predict_with_generate and not prediction_loss_only and "input_features" in inputs:
            inputs = dict(self._prepare_inputs(inputs))
            with torch.no_grad():
                inputs["encoder_outputs"] = self.model.get_encoder()(inputs.pop("input_features"))
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)


def prepare_model(model: Any, cfg: FinetuneConfig) -> None:
    """What ``models.load`` does not set already (it forces language/task and the length cap)."""
    model.generation_config.num_beams = cfg.num_beams
    if cfg.freeze_encoder:
        model.freeze_encoder()
    elif cfg.freeze_encoder_layers:
        enc = model.get_encoder()
        n = len(enc.layers)
        if not 0 < cfg.freeze_encoder_layers <= n:
            raise AsrEvalError(f"--freeze-encoder-layers {cfg.freeze_encoder_layers}: this encoder has {n} layers "
                               f"(use 1…{n}, or --freeze-encoder for all of it)")
        # Backward stops at the first trainable layer: the frozen stem and lower layers cost a forward only.
        for module in (enc.conv1, enc.conv2, enc.embed_positions, *enc.layers[:cfg.freeze_encoder_layers]):
            for p in module.parameters():
                p.requires_grad_(False)


def training_args(cfg: FinetuneConfig, out_dir: Path, use_cuda: bool, precision: str, progress: bool,
                  eval_on_start: bool) -> Seq2SeqTrainingArguments:
    from asr_eval.monitor.stream import training_args_overrides

    args = Seq2SeqTrainingArguments(
        output_dir=str(out_dir),
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size or cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=warmup_step_count(cfg),
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler,
        max_grad_norm=cfg.max_grad_norm,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        eval_on_start=eval_on_start,
        save_strategy="steps",
        save_steps=cfg.eval_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="cer",
        greater_is_better=False,
        predict_with_generate=True,
        use_cpu=not use_cuda,
        fp16=precision == "fp16",
        bf16=precision == "bf16",
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=cfg.dataloader_workers,
        remove_unused_columns=False,  # items carry 'audio'; the collator makes the model inputs
        label_names=["labels"],
        report_to="none",             # TensorBoard comes from the loss stream (NaN kept)
        disable_tqdm=not progress,
        **training_args_overrides(),
    )
    # --precision decides: without fp16/bf16 the arguments take ACCELERATE_MIXED_PRECISION (set by
    # `accelerate launch --mixed_precision …` or its config), and an fp32 run would train in fp16.
    args.mixed_precision = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}[precision]
    return args


# ───────────────────────────── run record ─────────────────────────────


def read_run(out_dir: str | Path) -> dict[str, Any]:
    p = Path(out_dir) / RUN_FILE
    if not p.is_file():
        raise AsrEvalError(f"{out_dir} is not a fine-tuning run dir (no {RUN_FILE}); "
                           "pass the --out directory of `asr-eval finetune`")
    return json.loads(p.read_text(encoding="utf-8"))


def _write_run(out_dir: Path, record: dict[str, Any]) -> None:
    tmp = out_dir / f".{RUN_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, out_dir / RUN_FILE)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _run_id(out_dir: Path, base_model_id: str, corpus_id: str) -> tuple[str, dict[str, Any] | None]:
    """Reuse the id of the run already in ``out_dir`` (a resume); refuse a dir of another run."""
    p = out_dir / RUN_FILE
    if p.is_file():
        prev = json.loads(p.read_text(encoding="utf-8"))
        if (prev.get("base_model_id"), prev.get("corpus_id")) != (base_model_id, corpus_id):
            raise AsrEvalError(
                f"{out_dir} holds run {prev.get('training_run_id')} of base {prev.get('base_model_id')} on "
                f"corpus {prev.get('corpus_id')}, not {base_model_id} on {corpus_id}; use another --out")
        return prev["training_run_id"], prev
    return f"{out_dir.name}-{stable_hash([base_model_id, corpus_id, _now()], 8)}", None


def _resume_point(out_dir: Path, resume: bool) -> Path | None:
    """The checkpoint a re-run continues from (checked: a damaged one is a clear error), if any."""
    ckpt = last_complete_checkpoint(out_dir) if resume else None
    if ckpt is not None:
        check_checkpoint(ckpt)
    return ckpt


def result_from_record(record: dict[str, Any], resumed_from: str | None = None) -> FinetuneResult:
    """The ``FinetuneResult`` of a finished or stopped run, from its training_run.json record."""
    return FinetuneResult(
        training_run_id=record["training_run_id"], out_dir=Path(record["out_dir"]),
        best_dir=Path(record["best"]["dir"]), final_dir=Path(record["final"]["dir"]),
        best_step=record["best_step"], final_step=record["final_step"], best_cer=record["best_cer"],
        final_cer=record["final_cer"], zero_shot_cer=record["zero_shot_cer"],
        model_ids={k: record[k]["model_id"] for k in ("best", "final")}, base_model_id=record["base_model_id"],
        corpus_id=record["corpus_id"], status=record["status"], resumed_from=resumed_from,
        n_train=record["n_train"], n_eval=record["n_eval"], train_runtime_s=record["train_runtime_s"],
        eval_history=record["eval_history"], selection=record["selection"],
    )


def _eval_history(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("eval_loss", "eval_cer", "eval_cer_s", "eval_cer_d", "eval_cer_i", "eval_cer_n")
    return [{"step": e["step"], **{k[5:]: e[k] for k in keep if k in e}}
            for e in log_history if "eval_cer" in e]


def _cer_at(history: list[dict[str, Any]], step: int) -> float | None:
    vals = [e["cer"] for e in history if e["step"] == step]
    return vals[-1] if vals else None


def _baseline_curve(baseline: str | None, db: str | Path | None) -> Any:
    """The baseline run's curve, by run dir or (with ``db``) by training_run_id; read once,
    before training, so the store is not held open while training runs."""
    if not baseline:
        return None
    from asr_eval.monitor.readers import load_curve

    if Path(baseline).exists() or db is None or not Path(db).exists():
        return load_curve(baseline)
    from asr_eval.store import connect

    con = connect(db, read_only=True)
    try:
        return load_curve(baseline, con)
    finally:
        con.close()


class _ZeroShotToLive(TrainerCallback):
    """Hands the step-0 (base model) CER to the live monitor's zero-shot regression rule."""

    def __init__(self, live: Any):
        self.live = live

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.global_step == 0 and metrics and metrics.get("eval_cer") is not None:
            self.live.zero_shot_cer = float(metrics["eval_cer"])


def _live_callbacks(run_id: str, out_dir: Path, baseline: Any, resume_step: int | None) -> list[TrainerCallback]:
    """LiveMonitorCallback (+ its zero-shot feed); on a resume its curve starts from the
    stream already on disk, so rules over windows see the steps before the checkpoint."""
    from asr_eval.monitor.live import LiveMonitorCallback
    from asr_eval.monitor.readers import read_stream
    from asr_eval.monitor.streamfile import STREAM_FILE

    live = LiveMonitorCallback(baseline=baseline, run_dir=out_dir, training_run_id=run_id)
    if resume_step is not None and (out_dir / STREAM_FILE).is_file():
        prev = read_stream(out_dir)
        live.curve.train[:] = [p for p in prev.train if p.step <= resume_step]
        live.curve.evals[:] = [p for p in prev.evals if p.step <= resume_step]
        live.zero_shot_cer = next((p.cer for p in prev.evals if p.step == 0), None)
    return [_ZeroShotToLive(live), live]


# ───────────────────────────── the run ─────────────────────────────


def finetune(corpus_dir: str | Path, base: str, out_dir: str | Path, config: FinetuneConfig | None = None,
             db: str | Path | None = None, progress: bool = True,
             callbacks: Sequence[TrainerCallback] = ()) -> FinetuneResult:
    """Fine-tune ``base`` on ``config.train_split`` of ``corpus_dir``, evaluating CER (and selecting
    the best checkpoint) on ``config.eval_split`` — by default a dev split, or one carved from the
    training split and held out of training (``asr_eval.train.selection``); export best/final into ``out_dir`` and, with ``db``, register them
    (``db=None`` leaves that to a later ``register_finetune``, e.g. a flow's writer step).

    Re-running with the same ``out_dir`` resumes from the last complete checkpoint.
    ``callbacks`` are extra TrainerCallbacks (run after the loss stream and live monitor).
    ``progress``: bars on a terminal, progress log lines otherwise (``asr_eval.progress``).
    """
    import asr_eval.engines.transformers_engine  # noqa: F401  (filters transformers' benign generate warnings)
    from asr_eval import models
    from asr_eval.monitor.stream import LossStreamCallback
    from asr_eval.models.record import model_row
    from asr_eval.corpus_handle import open_corpus
    from asr_eval.text import get_profile
    from asr_eval.train.export import export_checkpoint

    cfg = config or FinetuneConfig()
    show_bars = third_party_bars()  # off a terminal no tqdm bars ("Loading weights", "Writing model shards"): log lines
    corpus = open_corpus(corpus_dir)  # a clear error when it is not a corpus
    corpus_dir, corpus_id = corpus.url, corpus.corpus_id
    out_dir, out_url = remote.staging(out_dir)  # a URL: trained in a local staging folder, published at the end
    use_cuda, precision = resolve_device(cfg.device, cfg.precision)
    if cfg.max_steps < 1 or cfg.eval_steps < 1 or cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise AsrEvalError("--max-steps, --eval-steps, --batch-size and --grad-accum must be ≥ 1")
    if (msg := warmup_warning(cfg)) and dist.is_main():
        warnings.warn(msg, WarmupWarning, stacklevel=2)
    # Under torchrun / accelerate launch: join the process group; rank 0 writes, all ranks train.
    dist.init(use_cuda)

    # fp32 master weights: mixed precision autocasts; half-precision weights would not train.
    # load() also forces language/task in the generation config (evaluation and the exports).
    lm = models.load(base, device="cpu", dtype="float32", language=cfg.language, task=cfg.task,
                     max_new_tokens=cfg.max_new_tokens)
    model, processor = lm.model, lm.processor
    out_dir.mkdir(parents=True, exist_ok=True)
    if out_url is not None:
        dist.on_main(lambda: remote.fetch(out_dir, out_url))  # a run started elsewhere resumes here
    run_id, prev = dist.on_main(lambda: _run_id(out_dir, lm.model_id, corpus_id))
    resume_ckpt = dist.on_main(lambda: _resume_point(out_dir, cfg.resume))
    if resume_ckpt is not None:  # every rank loads it: it must be where all of them can read it
        dist.require_same((resume_ckpt / "trainer_state.json").is_file(), f"whether {resume_ckpt} exists",
                          "--out must be on a filesystem every node of the launch sees (shared storage)")

    labels = LabelEncoder(processor.tokenizer, get_profile(cfg.label_profile), cfg.language, cfg.task)
    max_label = int(model.config.max_target_positions)
    # Checkpoints are selected on a held-out set, never on the split that will be scored.
    sel = resolve_selection(corpus_dir, cfg.train_split, cfg.eval_split, cfg.dev_fraction, cfg.dev_max, cfg.seed)
    held_out = set(sel.utt_ids) if sel.carved else None
    train_ds = ShardSpeechDataset(corpus_dir, cfg.train_split, labels, max_samples=cfg.max_train_samples,
                                  seed=cfg.seed, max_label_tokens=max_label, exclude=held_out)
    eval_ds = ShardSpeechDataset(corpus_dir, sel.split, labels, max_samples=cfg.max_eval_samples,
                                 seed=cfg.seed, max_label_tokens=max_label, include=held_out)
    if sel.carved and dist.is_main():
        write_selection(out_dir, sel)
    prepare_model(model, cfg)

    baseline = dist.on_main(lambda: _baseline_curve(cfg.baseline_run, db))
    baseline_id = baseline.run_id if baseline is not None else None
    params = {**asdict(cfg), "precision_resolved": precision, "device_resolved": "cuda" if use_cuda else "cpu"}
    record: dict[str, Any] = {
        **(prev or {}),
        "training_run_id": run_id, "name": out_dir.name, "out_dir": str(out_dir.resolve()), "status": "running",
        "started_at": (prev or {}).get("started_at") or _now(), "finished_at": None,
        "base": base, "base_model_id": lm.model_id, "base_model_row": model_row(lm),
        "corpus_dir": str(corpus_dir), "corpus_id": corpus_id,
        "train_split": cfg.train_split, "eval_split": sel.label, "selection_split": sel.label,
        "selection": sel.record(), "baseline_run_id": baseline_id,
        "params": params, "versions": package_versions(),
        "n_train": len(train_ds), "n_eval": len(eval_ds),
        "dropped": {"train": asdict(train_ds.dropped), "eval": asdict(eval_ds.dropped)},
        "resumed_from": [*(prev or {}).get("resumed_from", []), *([str(resume_ckpt)] if resume_ckpt else [])],
        "world_size": dist.world_size(),  # global batch: batch_size × grad_accum × world_size
    }
    if dist.is_main():
        _write_run(out_dir, record)

    # A resumed run was evaluated at step 0 already; its log history carries that result.
    # Progress: the Trainer's tqdm bars on a terminal, log lines otherwise (CI, Prefect): train.progress.
    bars = progress and show_bars
    args = training_args(cfg, out_dir, use_cuda, precision, bars,
                         eval_on_start=cfg.eval_on_start and not resume_ckpt)
    # Multi-process: Whisper uses every trainable weight in each forward unless layers are dropped,
    # so DDP need not search the graph for unused ones at every step.
    args.ddp_find_unused_parameters = bool(getattr(model.config, "encoder_layerdrop", 0)
                                           or getattr(model.config, "decoder_layerdrop", 0))
    all_callbacks: list[TrainerCallback] = [
        LossStreamCallback(out_dir, run_id, tensorboard=cfg.tensorboard,
                           meta={"base_model_id": lm.model_id, "corpus_id": corpus_id, "baseline_run_id": baseline_id,
                                 "name": out_dir.name, "out_dir": record["out_dir"]}),
    ]
    if cfg.live_monitor:
        all_callbacks += _live_callbacks(run_id, out_dir, baseline,
                                         int(resume_ckpt.name.split("-")[-1]) if resume_ckpt else None)
    # A stop decided on any rank (the live monitor runs on rank 0) becomes every rank's before the save.
    all_callbacks += [*callbacks, dist.StopSyncCallback(), SaveOnStopCallback(), ChecksumCallback()]

    trainer = _ShardTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=SpeechSeq2SeqCollator(processor.feature_extractor, model.config.decoder_start_token_id),
        processing_class=processor, callbacks=all_callbacks,
    )
    # Our step and evaluation lines instead of the Trainer's dict lines (rank 0 alone prints).
    fine_tune_output(trainer, progress, bars, dist.is_main())
    trainer.compute_metrics = make_compute_metrics(
        processor.tokenizer, eval_ds, get_profile(cfg.score_profile),
        out_dir / PREDICTIONS_DIR if dist.is_main() else None, step=lambda: trainer.state.global_step)

    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume_ckpt) if resume_ckpt else None)
    except BaseException as exc:
        if dist.is_main():
            record.update(status="failed", finished_at=_now(), error=f"{type(exc).__name__}: {exc}")
            _write_run(out_dir, record)
        raise
    runtime = time.perf_counter() - t0

    state = trainer.state
    final_step = state.global_step
    final_ckpt = out_dir / f"checkpoint-{final_step}"
    if not final_ckpt.is_dir():  # e.g. a callback other than ours stopped training between saves
        final_ckpt = last_complete_checkpoint(out_dir) or final_ckpt
        final_step = int(final_ckpt.name.split("-")[-1])
    best_ckpt = Path(state.best_model_checkpoint) if state.best_model_checkpoint else final_ckpt
    history = _eval_history(state.log_history)
    best_step = int(best_ckpt.name.split("-")[-1])
    status = "finished" if state.global_step >= cfg.max_steps else "stopped"
    live = next((c for c in all_callbacks if hasattr(c, "stopped_by")), None)

    def finish() -> dict[str, Any]:
        """Rank 0: export best/final, complete the run record, register (the one DuckDB writer)."""
        stopped_by = (None if live is None or live.stopped_by is None else
                      {k: getattr(live.stopped_by, k) for k in ("rule", "severity", "step", "message")})
        base_lineage = {"base_model_id": lm.model_id, "corpus_id": corpus_id, "training_run_id": run_id,
                        "selection_split": sel.label}
        exported: dict[str, dict[str, Any]] = {}
        for kind, ckpt, step in (("best", best_ckpt, best_step), ("final", final_ckpt, final_step)):
            exported[kind] = export_checkpoint(ckpt, out_dir / kind, processor, step=step,
                                               cer=_cer_at(history, step), **base_lineage)
        models_rows = [exported["best"], exported["final"]]
        where = str(out_dir)
        if out_url is not None:  # registered under the URLs they are published at
            models_rows, where = remote.url_names(models_rows, out_url), out_url
            exported.update(best=models_rows[0], final=models_rows[1])
        record.update(
            status=status, stopped_by=stopped_by, finished_at=_now(), error=None, out_url=out_url,
            final_step=final_step, best_step=best_step,
            best_cer=_cer_at(history, best_step), final_cer=_cer_at(history, final_step),
            zero_shot_cer=_cer_at(history, 0),
            best={"dir": f"{where}/best", "checkpoint": str(best_ckpt), "step": best_step,
                  "model_id": exported["best"]["model_id"]},
            final={"dir": f"{where}/final", "checkpoint": str(final_ckpt), "step": final_step,
                   "model_id": exported["final"]["model_id"]},
            models=models_rows, eval_history=history,
            train_runtime_s=round(runtime, 3),
        )
        _write_run(out_dir, record)
        if out_url is not None:
            remote.publish(out_dir, out_url)
        if db is not None:
            from asr_eval.store import connect
            from asr_eval.train.export import register_finetune

            con = connect(db)
            try:
                register_finetune(con, out_dir)
            finally:
                con.close()
        return record

    res = result_from_record(dist.on_main(finish), resumed_from=str(resume_ckpt) if resume_ckpt else None)
    return replace(res, out_dir=out_dir, train_runtime_s=runtime)
