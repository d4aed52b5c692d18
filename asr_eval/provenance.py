"""Provenance stored with every score: library versions and stable hashes."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("asr-eval", "torch", "transformers", "datasets", "pyarrow", "duckdb", "jiwer",
             "rapidfuzz", "opencc", "numpy", "soundfile", "soxr", "prefect")


def package_versions() -> dict[str, str]:
    """Versions of the packages that can change a number we report."""
    out: dict[str, str] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "avx_vnni")


def cpu_isa() -> list[str]:
    """The vector extensions of this CPU that decide the engines' CPU kernels and speed (``/proc/cpuinfo``
    flags; an AVX2 and an AVX-512 VNNI machine differ ~3× on Whisper's encoder)."""
    p = Path("/proc/cpuinfo")
    flags: set[str] = set()
    if p.is_file():
        for line in p.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return [f for f in ISA_FLAGS if f in flags]


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hash of a JSON-serialisable object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]
