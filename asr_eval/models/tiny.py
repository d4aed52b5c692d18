"""Tiny random Whisper checkpoints for fast tests: real tokenizer and generation config (the
bundled whisper-base's), random weights, any mel-bin count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TINY = {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
        "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128}


def build_tiny_whisper(out_dir: str | Path, num_mel_bins: int = 80, seed: int = 0, **overrides) -> Path:
    """Save a randomly initialised ``WhisperForConditionalGeneration`` (d_model 64, 2+2 layers
    unless ``overrides`` say otherwise) with processor and generation config to ``out_dir``.
    Weights depend only on ``seed`` and the config, so two builds hash the same."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from asr_eval.models.bundled import bundled_files
    from asr_eval.models.processor import make_generation_config, make_processor, special_ids

    files = bundled_files("whisper-base")
    ct2_cfg = json.loads(files.config.read_text(encoding="utf-8"))
    processor = make_processor(files.tokenizer, num_mel_bins)
    ids = special_ids(processor.tokenizer)
    kw = {**TINY, "vocab_size": len(processor.tokenizer), "num_mel_bins": num_mel_bins,
          # the encoder always sees 30 s = 3000 frames → 1500 positions after the stride-2 conv
          "max_source_positions": 1500, "max_target_positions": 448,
          "suppress_tokens": ct2_cfg["suppress_ids"], "begin_suppress_tokens": ct2_cfg["suppress_ids_begin"],
          **{k: ids[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")},
          **overrides}
    config = WhisperConfig(**kw)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = make_generation_config(
        processor.tokenizer, config, lang_ids=ct2_cfg["lang_ids"],
        suppress_tokens=ct2_cfg["suppress_ids"], begin_suppress_tokens=ct2_cfg["suppress_ids_begin"])
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
