"""`asr-eval finetune`: fine-tune a Whisper model on an ingested corpus (Seq2SeqTrainer)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from asr_eval.cli import StorageOptions, app, console, err_console, print_table, use_storage
from asr_eval.store import DEFAULT_DB


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


@app.command("finetune")
def finetune_cmd(
    corpus: Annotated[str, typer.Option(help="Ingested corpus folder or URL (from `asr-eval ingest`)")],
    base: Annotated[str, typer.Option(help="Base model: hub id, local dir or bundled:whisper-base")],
    out: Annotated[str, typer.Option(help="Run directory, e.g. runs/NAME (re-run to resume); a URL "
                                          "(s3://bucket/runs/NAME) trains in a local staging folder and publishes "
                                          "the run there at the end")],
    train_split: Annotated[str, typer.Option(help="Split to train on")] = "train",
    eval_split: Annotated[str, typer.Option(help="Split to evaluate CER on and select the best checkpoint by. "
                                                 "auto: the corpus's dev/validation split, else one carved from the "
                                                 "training split (held out of training). Never the split you will "
                                                 "score: that makes the score optimistic")] = "auto",
    dev_fraction: Annotated[float, typer.Option(help="Carved dev set: share of the training split")] = 0.10,
    dev_max: Annotated[int, typer.Option(help="Carved dev set: at most this many utterances")] = 500,
    max_steps: Annotated[int, typer.Option(help="Optimizer steps")] = 1000,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate")] = 1e-5,
    batch_size: Annotated[int, typer.Option(help="Per-process batch size; the global batch is this × --grad-accum × "
                                                 "the processes of a torchrun launch")] = 8,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps")] = 1,
    eval_steps: Annotated[int, typer.Option(help="Evaluate (and checkpoint) every N steps")] = 200,
    warmup_steps: Annotated[float, typer.Option(
        help="Linear warm-up: steps when ≥ 1, a fraction of --max-steps when below 1")] = 0.05,
    gradient_checkpointing: Annotated[bool, typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Activation checkpointing: less memory, ~30% slower")] = False,
    freeze_encoder: Annotated[bool, typer.Option(help="Train the decoder only")] = False,
    freeze_encoder_layers: Annotated[int, typer.Option(
        help="Freeze the encoder's conv stem and its first N layers (~35% less time per step with N = 3 of 6 "
             "on whisper-base; see docs)")] = 0,
    max_eval_samples: Annotated[int | None, typer.Option(help="Evaluate on a fixed seeded subset")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Generation cap at evaluation")] = 128,
    eval_on_start: Annotated[bool, typer.Option(help="Evaluate the base model at step 0 (zero-shot CER)")] = True,
    precision: Annotated[str, typer.Option(help="auto | fp32 | fp16 | bf16 (auto: bf16/fp16 on GPU)")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for init, data order and the eval subset")] = 0,
    baseline_run: Annotated[str | None, typer.Option(help="Known-good run (dir or training_run_id) "
                                                          "for the live monitor and check-training")] = None,
    live_monitor: Annotated[bool, typer.Option("--live-monitor/--no-live-monitor",
                                               help="Run the divergence rules live; stop on a critical alert")] = True,
    db: Annotated[Path, typer.Option(help="DuckDB store the models and loss stream are registered in")] = DEFAULT_DB,
    register: Annotated[bool, typer.Option(help="Register in --db at the end")] = True,
    storage_option: StorageOptions = None,
) -> None:
    """Fine-tune Whisper; best (by CER) and final models are exported to OUT/best, OUT/final.
    Multi-process: launch this command with torchrun or accelerate launch (docs/train.md)."""
    use_storage(storage_option)
    from asr_eval.train import FinetuneConfig, distributed, finetune
    from asr_eval.train.finetune import WarmupWarning, warmup_warning

    cfg = FinetuneConfig(
        train_split=train_split, eval_split=eval_split, dev_fraction=dev_fraction, dev_max=dev_max,
        max_steps=max_steps, learning_rate=lr,
        batch_size=batch_size, grad_accum=grad_accum, eval_steps=eval_steps, warmup_steps=warmup_steps,
        gradient_checkpointing=gradient_checkpointing, freeze_encoder=freeze_encoder,
        freeze_encoder_layers=freeze_encoder_layers, max_eval_samples=max_eval_samples,
        max_new_tokens=max_new_tokens, eval_on_start=eval_on_start,
        precision=precision, device=device, seed=seed, baseline_run=baseline_run, live_monitor=live_monitor,
    )
    main = distributed.is_main()  # under torchrun: rank 0 alone prints (and writes, and registers)
    if (msg := warmup_warning(cfg)) and main:
        err_console.print(f"[yellow]warning:[/] {msg}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WarmupWarning)  # printed above
        r = finetune(corpus, base, out, cfg, db=db if register else None, progress=True)
    if not main:
        return
    t = Table(title=f"training run {r.training_run_id} — {r.status}", title_justify="left", header_style="bold")
    for c in ("model", "step", "CER %"):
        t.add_column(c, justify="left" if c == "model" else "right")
    t.add_column("model id (the exported dir for best/final)", overflow="fold")
    t.add_row("base (zero-shot)", "0", _pct(r.zero_shot_cer), r.base_model_id)
    t.add_row("best", str(r.best_step), _pct(r.best_cer), r.model_ids["best"])
    t.add_row("final", str(r.final_step), _pct(r.final_cer), r.model_ids["final"])
    print_table(t)
    if r.resumed_from:
        console.print(f"resumed from {r.resumed_from}")
    sel = r.selection
    console.print(f"best checkpoint selected on [bold]{sel.get('label')}[/]"
                  + (f" ({sel.get('n')} utterances carved from {sel.get('split')} by {sel.get('by')}, held out of "
                     "training)" if sel.get("carved") else ""))
    console.print(f"{r.n_train} training / {r.n_eval} eval utterances, {r.train_runtime_s:.0f} s"
                  + (f"; registered in {db}" if register else ""))
    if out != str(r.out_dir):
        console.print(f"published to [bold]{out}[/] (trained in {r.out_dir}); score it with --model {out.rstrip('/')}/best")
    console.print(f"check it: asr-eval check-training {r.out_dir}"
                  + (f" --baseline {baseline_run}" if baseline_run else ""))
