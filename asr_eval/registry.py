"""Instances from a name registry of dataclasses (long-form strategies, streaming policies): the
name must be registered and every given parameter must be one of the dataclass's fields."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from asr_eval.errors import AsrEvalError


def make_registered(registry: dict[str, type], kind: str, name: str, params: dict[str, Any]) -> Any:
    """``registry[name](**params)``; an unknown ``name`` or parameter is an ``AsrEvalError`` that
    lists what ``kind`` (e.g. 'long-form strategy') accepts."""
    if name not in registry:
        raise AsrEvalError(f"unknown {kind} {name!r}; choose one of {', '.join(sorted(registry))}")
    cls = registry[name]
    known = {f.name for f in fields(cls)}
    bad = set(params) - known
    if bad:
        raise AsrEvalError(f"{kind} {name!r} has no parameter(s) {sorted(bad)}; it takes {sorted(known)}")
    return cls(**params)
