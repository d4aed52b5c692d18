"""Inference engines behind one seam.

An engine turns a batch of log-mel features into token candidates (``base.Engine``); everything
around that — audio checks, length sorting, preprocessing (``preprocessing``), decode recipes and
the temperature-fallback loop (``recipes``, ``driver``) — is engine-neutral. Engines are found by
name in a registry (``base.ENGINES``): ``transformers`` and ``ctranslate2`` are built in; a new one
registers itself with ``@register_engine``.
"""

from asr_eval.engines.base import (
    ENGINES, Candidate, DecodeRequest, Engine, create_engine, engine_names, register_engine,
)
from asr_eval.engines.driver import BatchResult, transcribe
from asr_eval.engines.preprocessing import PREPROCESSING, preprocess
from asr_eval.engines.recipes import RECIPES, Recipe, get_recipe

__all__ = [
    "ENGINES", "PREPROCESSING", "RECIPES", "BatchResult", "Candidate", "DecodeRequest", "Engine", "Recipe",
    "create_engine", "engine_names", "get_recipe", "preprocess", "register_engine", "transcribe",
]
