"""Short, readable model names for tables and the report; the full path stays in provenance
(``models.path``, ``models.name``).

``/abs/path/runs/demo-ft/best`` (exported by ``asr-eval finetune`` at step 24) reads
``demo-ft/best (step 24)``; a local folder reads as its last two path parts; hub ids and
``bundled:…`` names are already short and stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

LOCAL_SOURCES = ("local", "ct2")


def display_name(name: str, source: str | None, path: str | None = None,
                 lineage: Mapping[str, Any] | None = None) -> str:
    """The readable name of a model: ``RUN/best (step N)`` for a fine-tuned export (the step from
    its lineage), the last two folder names for other local checkpoints, else ``name``."""
    name = name or ""
    is_ct2 = source == "ct2" or name.startswith("ct2:")
    local = source in LOCAL_SOURCES or name.startswith(("/", "./", "../", "ct2:"))
    if not local:
        return name
    # A ct2: model's path may be the conversion cache; the name keeps the folder the user gave.
    where = name.removeprefix("ct2:") if is_ct2 or not path or "://" in name else path
    parts = [p for p in Path(where).parts if p not in ("/", ".", "..")]
    short = "/".join(parts[-2:]) if parts else where
    step = (lineage or {}).get("step")
    return ("ct2:" if is_ct2 else "") + short + (f" (step {step})" if step is not None else "")
