"""The ``Engine`` protocol and the engine registry.

An engine is a model loaded for one inference library at one compute type. It decodes a batch of
log-mel features (already computed by ``preprocessing``) under a ``DecodeRequest`` into candidate
token sequences with their average log-probability. It never sorts, pads, checks audio or decides
about fallbacks: ``driver.transcribe`` does that the same way for every engine.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from asr_eval.engines.options import CTRANSLATE2, TRANSFORMERS, OptionSet
from asr_eval.errors import AsrEvalError

if TYPE_CHECKING:
    import numpy as np

    from asr_eval.engines.driver import BatchResult
    from asr_eval.engines.recipes import Recipe
    from asr_eval.models.loading import ModelFiles


@dataclass(frozen=True)
class DecodeRequest:
    """One decoding pass over a batch (the driver derives it from a recipe and a temperature)."""

    language: str = "zh"
    task: str = "transcribe"
    beam_size: int = 1
    patience: float = 1.0
    temperature: float = 0.0  # 0: greedy/beam search; > 0: sampling
    num_candidates: int = 1  # candidates per input (best_of when sampling)
    max_new_tokens: int = 128
    prompt_ids: tuple[int, ...] = ()  # previous-text tokens, placed after <|startofprev|>
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    seed: int = 0


@dataclass
class Candidate:
    """One decoded sequence: text tokens only (no prompt, specials or EOT)."""

    tokens: list[int]
    avg_logprob: float | None  # sum of token log-probs incl. EOT / (len + 1), as OpenAI's decoder
    cut_off: bool  # stopped at max_new_tokens without EOT
    # probability of the no-speech token at the <|startoftranscript|> position (softmax of the raw
    # logits there, before any suppression or temperature), as openai-whisper's
    # DecodingResult.no_speech_prob; None where the engine's path cannot give it
    no_speech_prob: float | None = None


NO_SPEECH_TOKENS = ("<|nospeech|>", "<|nocaptions|>")  # the name in current vocabularies; the older one


def no_speech_id(tokenizer: Any) -> int | None:
    """Id of Whisper's no-speech token, looked up by name as openai-whisper, faster-whisper and
    CTranslate2 do (``<|nospeech|>``, else ``<|nocaptions|>``); None when the vocabulary has neither."""
    unk = getattr(tokenizer, "unk_token_id", None)
    for name in NO_SPEECH_TOKENS:
        i = tokenizer.convert_tokens_to_ids(name)
        if isinstance(i, int) and i != unk:
            return i
    return None


@runtime_checkable
class Engine(Protocol):
    """What the scorer needs from an inference library."""

    name: str  # registry name, e.g. 'transformers'
    version: str  # the library's version
    compute_type: str  # 'float32', 'int8', 'float16', ...
    device: str
    files: ModelFiles  # model identity, config, tokenizer and feature extractor

    def decode(self, features: np.ndarray | Any, request: DecodeRequest) -> list[list[Candidate]]:
        """Features [batch, n_mels, 3000] → per input, ``request.num_candidates`` candidates."""
        ...

    def suggest_batch_size(self, recipe: Recipe) -> int: ...

    def peak_memory_bytes(self) -> int | None: ...

    def identity(self) -> dict[str, Any]:
        """JSON-able description stored as provenance (library versions, threads, device name)."""
        ...

    def transcribe(self, audios: list[np.ndarray], recipe: Recipe, preprocessing: str = "pad-audio",
                   batch_size: int | None = None,
                   on_batch: Callable[[int, float], None] | None = None) -> BatchResult: ...


class EngineBase:
    """Shared parts of the built-in engines: ``transcribe`` is the engine-neutral driver."""

    name: str = ""
    version: str = ""
    compute_type: str = ""
    device: str = "cpu"
    files: ModelFiles

    @property
    def model_id(self) -> str:
        return self.files.model_id

    def transcribe(self, audios, recipe, preprocessing: str = "pad-audio", batch_size: int | None = None,
                   on_batch=None):
        from asr_eval.engines.driver import transcribe

        return transcribe(self, audios, recipe, preprocessing, batch_size, on_batch=on_batch)

    def max_new_tokens_cap(self, recipe) -> int:
        """The most tokens this engine can generate after the recipe's prompt."""
        from asr_eval.engines.driver import PROMPT_LEN, prompt_ids

        extra = len(prompt_ids(self.files.processor.tokenizer, recipe))
        return self.files.config.max_target_positions - PROMPT_LEN - (extra + 1 if extra else 0)


EngineFactory = Callable[..., Engine]


@dataclass
class EngineEntry:
    factory: EngineFactory | None
    module: str  # imported on first use, so `asr-eval --help` does not import torch or ctranslate2
    summary: str
    compute_types: dict[str, tuple[str, ...]] = field(default_factory=dict)  # device kind -> allowed
    options: OptionSet = field(default_factory=OptionSet)  # speed options (``engines.options``); batch_size for all


ENGINES: dict[str, EngineEntry] = {
    "transformers": EngineEntry(None, "asr_eval.engines.transformers_engine",
                                "transformers WhisperForConditionalGeneration.generate (PyTorch)",
                                {"cpu": ("float32", "bfloat16"), "cuda": ("float32", "float16", "bfloat16")},
                                TRANSFORMERS),
    "ctranslate2": EngineEntry(None, "asr_eval.engines.ctranslate2_engine",
                               "ctranslate2.models.Whisper.generate (the engine under faster-whisper)",
                               {"cpu": ("float32", "int8", "int8_float32", "int16", "bfloat16"),
                                "cuda": ("float32", "float16", "bfloat16", "int8_float16", "int8_bfloat16",
                                         "int8_float32", "int8")},
                               CTRANSLATE2),
    # optional extra `openvino` (openvino + nncf); int8/int4 are weight-only (NNCF), activations float32
    "openvino": EngineEntry(None, "asr_eval.engines.openvino_engine",
                            "OpenVINO runtime (CPU) on our export; int8/int4 = NNCF weight-only compression",
                            {"cpu": ("float32", "int8", "int4")}),
    # optional extra `whispercpp` (pywhispercpp); our ggml conversion (models/ggml.py), fed our log-mel
    "whispercpp": EngineEntry(None, "asr_eval.engines.whispercpp_engine",
                              "whisper.cpp (ggml) via pywhispercpp on our log-mel; f16, q8_0/q5_0 weight blocks",
                              {"cpu": ("float16", "q8_0", "q5_0")}),
}


def register_engine(name: str, summary: str = "", compute_types: dict[str, tuple[str, ...]] | None = None,
                    options: OptionSet | None = None):
    """Class/function decorator: ``@register_engine("myengine")`` makes ``--engine myengine`` work.
    The factory is called as ``factory(files, device=…, compute_type=…, threads=…)``, plus
    ``options=`` (every option resolved, ``engines.options.resolve``) when the engine declares
    an ``OptionSet``."""

    def deco(factory: EngineFactory) -> EngineFactory:
        entry = ENGINES.get(name)
        if entry is None:
            ENGINES[name] = EngineEntry(factory, factory.__module__, summary or (factory.__doc__ or "").strip(),
                                        compute_types or {}, options or OptionSet())
        else:
            entry.factory = factory
            if compute_types:
                entry.compute_types = compute_types
            if options:
                entry.options = options
        return factory

    return deco


def engine_names() -> list[str]:
    return sorted(ENGINES)


PLUGINS_ENV = "ASR_EVAL_PLUGINS"  # comma-separated modules that register engines/recipes when imported


def load_plugins() -> None:
    """Import the modules named in ``$ASR_EVAL_PLUGINS`` (each registers what it brings). Workers
    (Prefect, Ray) inherit the variable, so a plugin engine runs everywhere the built-ins do."""
    for mod in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise AsrEvalError(f"${PLUGINS_ENV} names {mod!r}, which cannot be imported ({e}); fix the module "
                               "name or PYTHONPATH") from e


def engine_entry(name: str) -> EngineEntry:
    if name not in ENGINES:
        load_plugins()
    if name not in ENGINES:
        raise AsrEvalError(f"unknown engine {name!r}; available: {', '.join(engine_names())}")
    entry = ENGINES[name]
    if entry.factory is None:
        importlib.import_module(entry.module)  # registers the factory
    if entry.factory is None:
        raise AsrEvalError(f"engine {name!r}: module {entry.module} did not register it")
    return entry


def resolve_compute_type(name: str, compute_type: str, device: str) -> str:
    """'auto' → float32 on CPU; bfloat16 (else float16) on a GPU. Other values are checked."""
    entry = engine_entry(name)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if compute_type == "auto":
        if kind == "cpu":  # float32, else the engine's first (whispercpp: float16)
            cpu = entry.compute_types.get("cpu")
            return "float32" if not cpu or "float32" in cpu else cpu[0]
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    allowed = entry.compute_types.get(kind)
    if allowed and compute_type not in allowed:
        raise AsrEvalError(f"engine {name} on {kind} runs compute types {', '.join(allowed)}; not {compute_type!r}")
    return compute_type


def create_engine(name: str, model: str | ModelFiles, device: str = "auto", compute_type: str = "auto",
                  threads: int = 0, options: dict[str, Any] | None = None) -> Engine:
    """Load ``model`` (a name or ``ModelFiles``) into engine ``name`` with engine ``options``
    (``engines.options``; checked before any weights are read)."""
    from asr_eval.engines.options import resolve
    from asr_eval.models.loading import ModelFiles, open_model, pick_device

    entry = engine_entry(name)
    opts = resolve(name, options)
    files = model if isinstance(model, ModelFiles) else open_model(model)
    dev = pick_device(device)
    ct = resolve_compute_type(name, compute_type, dev)
    assert entry.factory is not None
    if entry.options.options:  # batch_size, the one option every engine has, is the driver's (scoring.parts)
        return entry.factory(files, device=dev, compute_type=ct, threads=threads, options=opts)
    return entry.factory(files, device=dev, compute_type=ct, threads=threads)
