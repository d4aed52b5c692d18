"""Conversions between the two weight formats the engines read, cached by content hash.

- ``hf_folder_of_ct2``: a CTranslate2/faster-whisper folder (``ct2:PATH``) → a transformers folder,
  so the transformers engine (and fine-tuning) can read it. Uses our faithful CT2 reader
  (``models/ct2.py``).
- ``ct2_folder``: any model the scorer loads (hub id, local fine-tuned checkpoint,
  ``bundled:whisper-base``) → a CTranslate2 folder with ``ctranslate2.converters.TransformersConverter``,
  once per (weights hash, quantization); tokenizer and preprocessor files are copied along so
  the folder also works with faster-whisper.
- ``convert_model``: the same conversion into a folder of the user's choosing (``asr-eval convert``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from asr_eval.errors import AsrEvalError
from asr_eval.integrity import file_sha256
from asr_eval.models.bundled import cache_root, cached_conversion

if TYPE_CHECKING:
    from asr_eval.models.loading import ModelFiles

# Storage quantization of a converted folder for each compute type: CTranslate2 converts again at
# load time when the two differ, so one int8 folder serves int8, int8_float32, int8_float16, ...
QUANTIZATION = {
    "float32": "float32", "int8": "int8", "int8_float32": "int8", "int8_float16": "int8", "int8_bfloat16": "int8",
    "float16": "float16", "bfloat16": "bfloat16", "int16": "int16",
}
COPY_FILES = ("tokenizer.json", "preprocessor_config.json", "tokenizer_config.json", "vocab.json", "merges.txt",
              "special_tokens_map.json", "added_tokens.json", "normalizer.json")


def hf_folder_of_ct2(ct2_dir: Path) -> Path:
    """The transformers folder converted from a CT2 Whisper folder (cached by model.bin's hash).
    Its recorded weights hash is model.bin's, so both engines give the model one id."""
    from asr_eval.models.ct2 import CONVERTER_VERSION, convert_ct2_whisper

    ct2_dir = Path(ct2_dir)
    sha = file_sha256(ct2_dir / "model.bin")
    dest = cache_root() / "models" / f"ct2-{sha[:16]}-v{CONVERTER_VERSION}"

    def build(tmp: Path) -> dict:
        t0 = time.perf_counter()
        convert_ct2_whisper(ct2_dir, tmp)
        return {"source": f"ct2:{ct2_dir}", "weights_sha256": sha, "convert_s": round(time.perf_counter() - t0, 2)}

    return cached_conversion(dest, build, f"converting ct2:{ct2_dir} (CTranslate2 → transformers, once) into {dest}")


def _convert(folder: Path, out: Path, quantization: str, feature_extractor=None) -> None:
    try:
        import ctranslate2
    except ImportError as e:  # pragma: no cover - a core dependency
        raise AsrEvalError("the ctranslate2 package is missing: pip install ctranslate2") from e
    copy = [f for f in COPY_FILES if (folder / f).is_file()]
    conv = ctranslate2.converters.TransformersConverter(str(folder), copy_files=copy, low_cpu_mem_usage=True)
    conv.convert(str(out), quantization=quantization, force=True)
    if feature_extractor is not None and not (out / "preprocessor_config.json").is_file():
        # faster-whisper reads the mel-bin count from here (transformers 5 may save processor_config.json only)
        feature_extractor.to_json_file(str(out / "preprocessor_config.json"))


def ct2_folder(mf: ModelFiles, compute_type: str) -> Path:
    """A CTranslate2 folder for ``mf`` whose stored weights suit ``compute_type``. A ``ct2:``
    model is used as it is (CTranslate2 converts its weights at load time)."""
    import ctranslate2

    if mf.spec.source == "ct2":
        return Path(mf.spec.path or "")
    if compute_type not in QUANTIZATION:
        raise AsrEvalError(f"unknown compute type {compute_type!r}; one of {', '.join(QUANTIZATION)}")
    q = QUANTIZATION[compute_type]
    dest = cache_root() / "ct2" / f"{mf.revision[:16]}-{q}-ct2v{ctranslate2.__version__}"

    def build(tmp: Path) -> dict:
        t0 = time.perf_counter()
        _convert(mf.folder, tmp, q, mf.processor.feature_extractor)
        return {"source": mf.spec.name, "model_id": mf.model_id, "quantization": q,
                "ctranslate2": ctranslate2.__version__, "convert_s": round(time.perf_counter() - t0, 2)}

    return cached_conversion(dest, build, f"converting {mf.spec.name} to CTranslate2 ({q}, once) into {dest}")


def convert_model(name: str, out: str | Path, quantization: str = "int8", force: bool = False) -> Path:
    """``asr-eval convert``: write a CTranslate2 (faster-whisper-compatible) folder for ``name``."""
    from asr_eval.models.loading import open_model

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise AsrEvalError(f"{out} exists and is not empty; choose another --out or pass --force")
    if quantization not in QUANTIZATION:
        raise AsrEvalError(f"unknown quantization {quantization!r}; one of {', '.join(sorted(set(QUANTIZATION.values())))}")
    mf = open_model(name)
    src = ct2_folder(mf, quantization)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    return out
