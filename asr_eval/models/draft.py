"""A draft model for speculative decoding, cut from the scored model itself.

distil-whisper's assistants are decoder-only ``WhisperForCausalLM`` models with two decoder layers,
initialised from the teacher's first and last decoder layers and then distilled; they read the
scored model's encoder output, so drafting costs no second encoder pass. ``build_draft`` makes the
same layout *without* the distillation: the chosen decoder layers, the embeddings, the final layer
norm and the output projection of ``model``, saved with its processor. Under greedy search the
scored model verifies every drafted token, so transcripts are the same whatever the draft; how
often drafts are accepted — the speed-up — is what an undistilled draft costs (measured in
``bench/bench_decode_speedups.py``).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from asr_eval.errors import AsrEvalError


def build_draft(model: str, out_dir: str | Path, layers: Sequence[int] = (0, -1)) -> Path:
    """Save a ``WhisperForCausalLM`` made of ``model``'s decoder layers ``layers`` (negative
    indices count from the end) to ``out_dir``; returns the folder (usable as ``assistant=``)."""
    import torch
    from transformers import WhisperConfig, WhisperForCausalLM

    from asr_eval.models.loading import load

    lm = load(model, device="cpu", dtype="float32")
    cfg = lm.model.config
    n = cfg.decoder_layers
    picked = sorted({i % n for i in layers})
    if not picked or any(not -n <= i < n for i in layers):
        raise AsrEvalError(f"draft of {model}: layers {list(layers)} — the model has decoder layers 0…{n - 1}")
    dcfg = WhisperConfig(**{**cfg.to_dict(), "decoder_layers": len(picked), "is_encoder_decoder": False,
                            "architectures": ["WhisperForCausalLM"]})
    draft = WhisperForCausalLM(dcfg).eval()
    src = lm.model.state_dict()
    state = {}
    for key in draft.state_dict():
        if key.startswith("model.decoder.layers."):
            rest = key.removeprefix("model.decoder.layers.")
            i, _, tail = rest.partition(".")
            state[key] = src[f"model.decoder.layers.{picked[int(i)]}.{tail}"]
        else:
            state[key] = src[key]
    with torch.no_grad():
        draft.load_state_dict(state, strict=True)
    draft.generation_config = lm.model.generation_config
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    draft.save_pretrained(out)
    lm.processor.save_pretrained(out)
    return out
