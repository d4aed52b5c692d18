"""Name → loaded Whisper: a hub id, a local checkpoint folder, or ``bundled:NAME``.

Whatever the source, the result is checked the same way: a real tokenizer (> 50 000 tokens), a
feature extractor whose mel bins are the model config's, and a generation config that can
force a language and task in transformers 5.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from asr_eval.errors import AsrEvalError
from asr_eval.models.bundled import BUNDLED, bundled_dir, recorded_weights_hash, weights_hash
from asr_eval.models.processor import (
    SAMPLING_RATE, check_tokenizer, lang_to_id, make_feature_extractor, special_ids,
)

DEFAULT_MAX_NEW_TOKENS = 128  # Mandarin utterances ≤ 30 s need far fewer; robotic audio can loop to the limit
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRUE = {"1", "on", "yes", "true"}
_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class ModelSpec:
    """What a model name refers to. ``name`` is canonical (an absolute path for local folders),
    so the same checkpoint always gets the same model id."""

    name: str
    source: str  # 'hub' | 'local' | 'bundled' | 'ct2'
    path: str | None = None  # local folder; filled in for every source once loaded


def resolve(name: str) -> ModelSpec:
    """Classify a model name; raises AsrEvalError for one that can be none of the three."""
    name = name.strip()
    if name.startswith("bundled:"):
        key = name.removeprefix("bundled:")
        if key not in BUNDLED:
            raise AsrEvalError(f"unknown bundled model {name!r}; available: " + ", ".join(f"bundled:{n}" for n in BUNDLED))
        return ModelSpec(name, "bundled")
    from asr_eval import storage

    if storage.is_url(name.removeprefix("ct2:")):
        # a folder in a bucket: fetched once per machine (cache keyed by its objects' ETags); the
        # URL stays the model's name, so the same weights keep the same model id on every node
        url = storage.redact(name.removeprefix("ct2:")).rstrip("/")
        local = storage.local_mirror(storage.location(url))
        inner = resolve(f"ct2:{local}" if name.startswith("ct2:") else str(local))
        return replace(inner, name=f"ct2:{url}" if inner.source == "ct2" else url)
    if name.startswith("ct2:"):
        p = Path(name.removeprefix("ct2:")).expanduser()
        missing = [f for f in ("model.bin", "config.json", "tokenizer.json") if not (p / f).is_file()]
        if missing:
            raise AsrEvalError(f"{name}: {p} is not a CTranslate2/faster-whisper Whisper folder (missing "
                               f"{', '.join(missing)}); it needs model.bin, config.json and tokenizer.json")
        return ModelSpec(f"ct2:{p.resolve()}", "ct2", str(p.resolve()))
    p = Path(name).expanduser()
    if p.is_dir():
        if (p / "model.bin").is_file() and not (p / "model.safetensors").is_file():
            raise AsrEvalError(f"{p} holds a CTranslate2 model.bin, not a transformers checkpoint; name it ct2:{p}")
        if not (p / "config.json").is_file():
            raise AsrEvalError(f"{p} is a folder but has no config.json, so it is not a transformers checkpoint; "
                               "pass the folder that holds config.json and model.safetensors")
        return ModelSpec(str(p.resolve()), "local", str(p.resolve()))
    if p.exists():
        raise AsrEvalError(f"{name} is a file; a model is a checkpoint folder, a hub id or bundled:whisper-base")
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1  # hub ids are ORG/NAME
    if looks_local or not HUB_ID.match(name):
        raise AsrEvalError(f"model {name!r}: no such folder, and not a Hugging Face hub id (like openai/whisper-large-v3); "
                           "check the path, or use bundled:whisper-base")
    return ModelSpec(name, "hub")


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: Any  # WhisperForConditionalGeneration (transformers imported lazily)
    processor: Any  # WhisperProcessor
    model_id: str  # f"{name}@{revision[:12]}"
    revision: str  # hub commit sha, else sha256 of the weight files
    num_mel_bins: int
    n_params: int
    device: str
    dtype: str

    def config_dict(self) -> dict:
        """The architecture config, JSON-able, without load-time details (dtype, versions)."""
        from asr_eval.models.record import config_dict

        return config_dict(self.model.config)


def _offline(local_files_only: bool | None) -> bool:
    # Read at call time: huggingface_hub reads HF_HUB_OFFLINE once, at import.
    return local_files_only if local_files_only is not None else os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


def _hub_folder(repo_id: str, offline: bool) -> Path:
    """The snapshot folder of ``repo_id`` with every file but the weights, fetched if needed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        # The non-weight files only: from_pretrained then picks safetensors over .bin itself,
        # instead of this fetching both (6 GB each for large-v2).
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.txt"], local_files_only=offline,
                                      etag_timeout=5))
    except Exception as e:  # offline-miss, DNS failure, 404, gated repo: all end the same way for the user
        why = ("it is not in the Hugging Face cache and HF_HUB_OFFLINE=1" if offline
               else f"it could not be fetched from the Hub ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
        raise AsrEvalError(
            f"model {repo_id!r}: {why}. Download it ahead on a machine with network: `hf download {repo_id}` "
            f"(cache: {os.environ.get('HF_HUB_CACHE', HF_HUB_CACHE)}; copy it or set HF_HOME to share it), "
            f"or pass a local checkpoint folder instead: --model /path/to/{repo_id.split('/')[-1]}") from e


def _materialize(spec: ModelSpec, offline: bool) -> tuple[Path, str | None]:
    """(folder holding config + processor files, hub commit sha or None)."""
    if spec.source == "bundled":
        return bundled_dir(spec.name.removeprefix("bundled:")), None
    if spec.source == "ct2":
        from asr_eval.models.convert import hf_folder_of_ct2

        return hf_folder_of_ct2(Path(spec.path or "")), None
    if spec.source == "local":
        return Path(spec.path or spec.name), None
    folder = _hub_folder(spec.name, offline)
    return folder, folder.name  # snapshot folders are named by commit sha


def _feature_extractor(folder: Path, config: Any):
    """The checkpoint's own feature extractor when it ships one (it must agree with the model
    config), else one built from ``config.num_mel_bins``."""
    from transformers import WhisperFeatureExtractor

    saved = [f for f in ("preprocessor_config.json", "processor_config.json") if (folder / f).is_file()
             and (f == "preprocessor_config.json" or "feature_extractor" in json.loads((folder / f).read_text()))]
    if not saved:
        return make_feature_extractor(config.num_mel_bins)
    fe = WhisperFeatureExtractor.from_pretrained(folder)
    if fe.feature_size != config.num_mel_bins:
        raise AsrEvalError(
            f"{folder / saved[0]}: feature_size {fe.feature_size} but the model's config.json has num_mel_bins "
            f"{config.num_mel_bins}; the model would be fed the wrong log-mel features. Fix feature_size in "
            f"{saved[0]} (or delete it to use the model config's value)")
    if fe.sampling_rate != SAMPLING_RATE:
        raise AsrEvalError(f"{folder / saved[0]}: sampling_rate {fe.sampling_rate}, but Whisper and the shards are 16 kHz")
    return fe


def _processor(folder: Path, config: Any, where: str):
    from transformers import WhisperProcessor, WhisperTokenizer

    try:
        tok = WhisperTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise AsrEvalError(f"{where}: its tokenizer does not load ({e}); copy tokenizer.json and "
                           "tokenizer_config.json from its base model into the folder") from e
    check_tokenizer(tok, where)
    if tok.pad_token is None:  # some fine-tune exports drop it; Whisper pads with <|endoftext|>
        tok.pad_token = "<|endoftext|>"
    return WhisperProcessor(_feature_extractor(folder, config), tok)


def force_language(model: Any, tokenizer: Any, language: str, task: str, max_new_tokens: int, where: str) -> None:
    """Make ``generate`` transcribe ``language`` with no further arguments: fill in the language
    and task tables older checkpoints lack, drop the deprecated ``forced_decoder_ids`` (which
    transformers 5 would otherwise mix in), bound the output length."""
    gc = model.generation_config
    ids = special_ids(tokenizer)
    if not getattr(gc, "lang_to_id", None):
        gc.lang_to_id = lang_to_id(tokenizer)
    if not getattr(gc, "task_to_id", None):
        gc.task_to_id = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
    if getattr(gc, "no_timestamps_token_id", None) is None:
        gc.no_timestamps_token_id = ids["no_timestamps_token_id"]
    if f"<|{language}|>" not in gc.lang_to_id:
        raise AsrEvalError(f"{where}: the model has no <|{language}|> language token (an English-only checkpoint?); "
                           "use a multilingual Whisper")
    if task not in gc.task_to_id:
        raise AsrEvalError(f"{where}: unknown task {task!r}; one of {sorted(gc.task_to_id)}")
    gc.language, gc.task, gc.forced_decoder_ids = language, task, None
    model.config.forced_decoder_ids = None
    gc.max_new_tokens, gc.max_length = max_new_tokens, None
    tokenizer.set_prefix_tokens(language=language, task=task, predict_timestamps=False)


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AsrEvalError(f"device {device!r} requested but no CUDA GPU is visible to torch {torch.__version__}; "
                           "use --device cpu (or install a CUDA build of torch)")
    return device


def pick_dtype(dtype: str, device: str) -> str:
    """fp32 on CPU; on GPU bf16 where supported (same range as fp32: no overflow), else fp16."""
    import torch

    if dtype == "auto":
        if not device.startswith("cuda"):
            return "float32"
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if dtype not in _DTYPES:
        raise AsrEvalError(f"unknown dtype {dtype!r}; one of auto, {', '.join(sorted(set(_DTYPES.values())))}")
    return _DTYPES[dtype]


@dataclass
class ModelFiles:
    """A model located and checked, weights not loaded: what every engine starts from."""

    spec: ModelSpec  # path: the transformers folder (config, processor files, weights)
    folder: Path
    hub_sha: str | None
    config: Any  # WhisperConfig
    processor: Any  # WhisperProcessor

    @functools.cached_property
    def revision(self) -> str:
        """Hub commit sha, else sha256 of the weights (for ct2: the model.bin it came from)."""
        if self.hub_sha:
            return self.hub_sha
        recorded = recorded_weights_hash(self.folder) if self.spec.source in ("bundled", "ct2") else None
        return recorded or weights_hash(self.folder)

    @property
    def model_id(self) -> str:
        return f"{self.spec.name}@{self.revision[:12]}"


def open_model(name: str, local_files_only: bool | None = None) -> ModelFiles:
    """Resolve ``name`` and check its config and processor, without loading weights."""
    from transformers import WhisperConfig

    spec = resolve(name)
    offline = _offline(local_files_only)
    folder, sha = _materialize(spec, offline)
    model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type != "whisper":
        raise AsrEvalError(f"{folder / 'config.json'}: model_type {model_type!r}, not 'whisper'; only Whisper "
                           "checkpoints can be scored")
    config = WhisperConfig.from_pretrained(folder)
    processor = _processor(folder, config, f"model {spec.name!r} ({folder})")
    return ModelFiles(replace(spec, path=spec.path or str(folder)), folder, sha, config, processor)


def load(name: str, device: str = "auto", dtype: str = "auto", local_files_only: bool | None = None, *,
         language: str = "zh", task: str = "transcribe", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
         files: ModelFiles | None = None, attn: str = "sdpa") -> LoadedModel:
    """Load a Whisper for scoring or fine-tuning (eval mode, ``attn`` attention: sdpa unless an
    engine option says eager). ``local_files_only``
    defaults to ``HF_HUB_OFFLINE``; an uncached hub model then fails at once with the fix."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from asr_eval.progress import third_party_bars

    third_party_bars()  # no "Loading weights" tqdm bar off a terminal (a log file gets fragments)
    mf = files or open_model(name, local_files_only)
    spec, folder, sha, config, processor = mf.spec, mf.folder, mf.hub_sha, mf.config, mf.processor
    offline = _offline(local_files_only)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()  # so the peak recorded with a run is this model's
    src = spec.name if spec.source == "hub" else folder
    try:
        model = WhisperForConditionalGeneration.from_pretrained(
            src, revision=sha or "main", local_files_only=offline or spec.source != "hub",
            dtype=getattr(torch, dt), attn_implementation=attn)
    except OSError as e:
        raise AsrEvalError(f"model {spec.name!r}: weights could not be loaded from {src} ({e}); "
                           f"re-download it (`hf download {spec.name}`) or check the folder's model.safetensors") from e
    model.to(dev).eval()
    force_language(model, processor.tokenizer, language, task, max_new_tokens, f"model {spec.name!r}")
    return LoadedModel(spec=spec, model=model, processor=processor, model_id=mf.model_id, revision=mf.revision,
                       num_mel_bins=config.num_mel_bins, n_params=sum(p.numel() for p in model.parameters()),
                       device=dev, dtype=dt)
