"""Provenance stored with every score: library versions and stable hashes."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
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


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hash of a JSON-serialisable object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]
