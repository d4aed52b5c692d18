"""Export Trainer checkpoints as standalone models and register a run's models in DuckDB.

An exported dir is what ``transformers.pipeline("automatic-speech-recognition", model=DIR)``
and ``asr-eval score --model DIR`` load: weights, config, generation config (language and
task set), feature extractor and tokenizer — and none of the optimizer/scheduler state.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import duckdb

from asr_eval.errors import AsrEvalError

# Trainer state in a checkpoint that a standalone model does not need (hundreds of MB for Adam).
TRAINER_ONLY = ("optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin", "trainer_state.json")
LINEAGE_FILE = "asr_eval_lineage.json"


def export_checkpoint(ckpt: Path, dst: Path, processor: Any, *, step: int, cer: float | None,
                      base_model_id: str, corpus_id: str, training_run_id: str,
                      selection_split: str | None = None) -> dict[str, Any]:
    """Copy a checkpoint's model files to ``dst`` (replacing it), save the processor beside
    them, and return the ``models`` row with lineage (model id from the exported weights)."""
    from asr_eval import models
    from asr_eval.models.record import model_row

    if not (ckpt / "config.json").is_file():
        raise AsrEvalError(f"checkpoint {ckpt} has no config.json; it was not written completely — "
                           "delete it and re-run to resume from the one before")
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ckpt.iterdir():
        if f.is_file() and f.name not in TRAINER_ONLY and not f.name.startswith("rng_state"):
            shutil.copy2(f, tmp / f.name)
    processor.save_pretrained(tmp)  # the checkpoint has it too; this makes the export self-sufficient
    _drop_trainer_max_length(tmp / "generation_config.json")
    lineage = {"base_model_id": base_model_id, "corpus_id": corpus_id, "training_run_id": training_run_id,
               "step": step, "eval_cer": cer, "checkpoint": str(ckpt), "selection_split": selection_split}
    (tmp / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, ensure_ascii=False), encoding="utf-8")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    lm = models.load(str(dst), device="cpu", dtype="float32")
    row = model_row(lm, base_model_id=base_model_id, corpus_id=corpus_id, training_run_id=training_run_id, step=step,
                    selection_split=selection_split)
    del lm
    return row


def _drop_trainer_max_length(path: Path) -> None:
    """Seq2SeqTrainer stores the library default ``max_length`` (20) next to our
    ``max_new_tokens``; users of the export would get a warning on every call for nothing."""
    if path.is_file():
        gc = json.loads(path.read_text(encoding="utf-8"))
        if gc.get("max_new_tokens") is not None and gc.pop("max_length", None) is not None:
            path.write_text(json.dumps(gc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def register_finetune(con: duckdb.DuckDBPyConnection, out_dir: str | Path) -> list[str]:
    """The single-writer step of a fine-tuning run: its corpus, base model and exported models
    (with lineage) into ``models``, its loss stream into training_runs/training_log, and the
    contamination of the split it will be scored on by its training texts
    (``asr_eval.contamination.check_finetune`` → ``lineage_contamination``).
    Idempotent; returns the registered model ids (best, final)."""
    from asr_eval.monitor.curve import with_meta
    from asr_eval.monitor.readers import read_stream
    from asr_eval.monitor.store import save_run
    from asr_eval.store.load import load_corpus, register_model
    from asr_eval.train.finetune import read_run

    from asr_eval.train import remote

    out_dir, url = remote.staging(out_dir)  # a run published to a URL: its local staging folder, or a copy
    if url is not None:
        remote.fetch(out_dir, url)
    run = read_run(out_dir)
    if run.get("status") not in ("finished", "stopped"):
        raise AsrEvalError(f"run {run['training_run_id']} in {out_dir} is {run.get('status')!r}, not finished; "
                           "re-run `asr-eval finetune` with the same --out to resume it")
    from asr_eval import storage

    if storage.stat(storage.location(run["corpus_dir"]) / "index.json") is not None:  # a folder or a URL
        load_corpus(con, run["corpus_dir"])
    if run.get("base_model_row"):
        register_model(con, run["base_model_row"])
    ids = [register_model(con, row) for row in run["models"]]
    curve = read_stream(out_dir)
    # The stream records the Trainer's arguments; add ours (splits, profiles, precision, …).
    curve = with_meta(curve, params={**curve.meta.get("params", {}), "finetune": run["params"]},
                      status=run["status"], finished_at=run.get("finished_at"),
                      base_model_id=run["base_model_id"], corpus_id=run["corpus_id"])
    save_run(con, curve, baseline_run_id=run.get("baseline_run_id"))
    # Lineage: the run's training texts against the split its models will be scored on.
    from asr_eval.contamination import check_finetune

    check_finetune(con, run, out_dir)
    return ids
