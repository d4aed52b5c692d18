"""Trainer checkpoints of a fine-tuning run: a save when the run stops early, the last complete
checkpoint to resume from, and the checksums that let a resume refuse a damaged one."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

from asr_eval.errors import AsrEvalError
from asr_eval.integrity import file_sha256
from asr_eval.train.distributed import barrier


class SaveOnStopCallback(TrainerCallback):
    """A run stopped early (live monitor) still leaves a checkpoint of its last step, so the
    'final' model is what training ended with, not the last periodic save."""

    def _save_if_stopping(self, control):
        if control.should_training_stop:
            control.should_save = True
        return control

    def on_step_end(self, args, state, control, **kwargs):
        return self._save_if_stopping(control)

    def on_log(self, args, state, control, **kwargs):
        return self._save_if_stopping(control)

    def on_evaluate(self, args, state, control, **kwargs):
        return self._save_if_stopping(control)


def last_complete_checkpoint(out_dir: Path) -> Path | None:
    """The highest ``checkpoint-N`` whose trainer_state.json was written (saved last, so a
    checkpoint torn by a crash mid-save is never resumed from)."""
    found = []
    for p in out_dir.glob("checkpoint-*"):
        if p.is_dir() and p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file():
            found.append((int(p.name.split("-")[-1]), p))
    return max(found)[1] if found else None


CHECKSUMS_FILE = "asr_eval_checksums.json"


class ChecksumCallback(TrainerCallback):
    """After each checkpoint save, record the SHA-256 of its files (``asr_eval_checksums.json``),
    so a resume can tell a checkpoint damaged on disk from a good one. Rank 0 writes it, once
    every rank has saved its part (each writes its own ``rng_state_N.pth``)."""

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every rank has written its RNG state into the checkpoint (multi-process runs)
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                sums = {p.name: file_sha256(p) for p in sorted(ckpt.iterdir())
                        if p.is_file() and p.name != CHECKSUMS_FILE}
                (ckpt / CHECKSUMS_FILE).write_text(json.dumps(sums, indent=1))
        return control


def check_checkpoint(ckpt: Path) -> None:
    """An ``AsrEvalError`` naming the file and the fix when a checkpoint about to be resumed from
    is damaged: its weights must open with safetensors (header and size agree), and every file
    recorded in ``asr_eval_checksums.json`` must still have its SHA-256."""
    from safetensors import safe_open

    def bad(what: str) -> AsrEvalError:
        others = sorted((int(p.name.split("-")[-1]) for p in ckpt.parent.glob("checkpoint-*")
                         if p != ckpt and p.name.split("-")[-1].isdigit()), reverse=True)
        prev = f"checkpoint-{others[0]}" if others else "the start"
        return AsrEvalError(f"checkpoint {ckpt} is damaged: {what}. Fix: delete {ckpt} to resume from "
                            f"{prev}, or use a new --out directory to train from scratch")

    weights = sorted(ckpt.glob("*.safetensors"))
    if not weights:
        raise bad("no *.safetensors weights file")
    for w in weights:
        try:
            with safe_open(str(w), framework="pt") as f:
                for key in f.keys():
                    f.get_slice(key).get_shape()
        except Exception as exc:  # safetensors raises its own SafetensorError / OSError
            raise bad(f"{w.name} does not open ({type(exc).__name__}: {exc})") from None
    sums_file = ckpt / CHECKSUMS_FILE
    if sums_file.is_file():
        try:
            sums = json.loads(sums_file.read_text())
        except ValueError:
            raise bad(f"{CHECKSUMS_FILE} is unreadable") from None
        for name, sha in sums.items():
            f = ckpt / name
            if not f.is_file():
                raise bad(f"{name} is missing")
            if file_sha256(f) != sha:
                raise bad(f"{name} has SHA-256 {file_sha256(f)[:16]}… but was saved with {sha[:16]}…")
