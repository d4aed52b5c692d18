"""One process of the torchrun launch in tests/test_train_distributed.py: ``asr-eval finetune ARGS``
(the real CLI) with a recording of what this rank did — test instrumentation, not part of asr-eval.

``$TRACE_DIR/rank-R.jsonl`` gets a line per batch the collator built on this rank, in the order the
DataLoaders asked for them (``{"batch": [utt ids]}``: train and eval batches alike; the test tells
them apart by split), and a line per finished optimizer step with a hash of the weights
(``{"step": N, "sha256": ...}``). ``$POISON_AT=N`` makes the weights NaN after step N on every
rank (after that step's hash), so the next loss is NaN.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

import asr_eval.train

ft = importlib.import_module("asr_eval.train.finetune")  # the module (asr_eval.train.finetune is the function)

TIED = {"proj_out.weight"}  # Whisper's output projection is the decoder embedding (not saved)


def weights_sha256(tensors: dict[str, Any]) -> str:
    """SHA-256 over the weights by name (the tied projection left out, as checkpoints leave it out)."""
    h = hashlib.sha256()
    for name in sorted(set(tensors) - TIED):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def _write(record: dict[str, Any]) -> None:
    with open(Path(os.environ["TRACE_DIR"]) / f"rank-{os.environ['RANK']}.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


class RecordingCollator(ft.SpeechSeq2SeqCollator):
    def __call__(self, items):
        _write({"batch": [it["utt_id"] for it in items]})
        return super().__call__(items)


class Trace(TrainerCallback):
    def on_step_end(self, args, state, control, model=None, **kw):
        _write({"step": state.global_step, "sha256": weights_sha256(model.state_dict())})
        if state.global_step == int(os.environ.get("POISON_AT") or 0):
            import torch

            with torch.no_grad():
                model.proj_out.weight.fill_(float("nan"))


def _traced(real):
    def finetune(*args, callbacks=(), **kw):
        return real(*args, callbacks=[*callbacks, Trace()], **kw)
    return finetune


if __name__ == "__main__":
    ft.SpeechSeq2SeqCollator = RecordingCollator          # what finetune() builds its collator from
    asr_eval.train.finetune = _traced(asr_eval.train.finetune)  # what `asr-eval finetune` calls
    from asr_eval.cli import main

    sys.argv = ["asr-eval", *sys.argv[1:]]
    main()
