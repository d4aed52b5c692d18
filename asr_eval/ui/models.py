"""Engines for the web app: loaded once, kept in a small LRU cache; and the models a user can pick.

A page request names a model, an engine, a compute type (and the app a device); the engine is
loaded on the first request and reused afterwards, so a second transcription with the same
configuration costs no loading. At most ``max_engines`` are kept (least recently used goes
first): whisper-large weights are GBs each.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asr_eval.errors import AsrEvalError

BUNDLED_MODEL = "bundled:whisper-base"
DEFAULT_MAX_ENGINES = 3

EngineKey = tuple[str, str, str, str]  # (model, engine, compute type, device), canonical


class EngineCache:
    """``get(model, engine, compute_type, device)`` → (engine, seconds spent loading it; 0 when cached).

    Keys are canonical (``models.loading.resolve``'s name, the resolved device and compute type),
    so ``./ckpt`` and its absolute path, or ``auto`` and ``float32`` on a CPU, share one engine.
    Loads run one at a time (they are memory- and CPU-heavy); hits never wait for a load.
    """

    def __init__(self, max_engines: int = DEFAULT_MAX_ENGINES, create: Callable[..., Any] | None = None) -> None:
        if max_engines < 1:
            raise AsrEvalError(f"max_engines {max_engines}: the engine cache must hold at least one engine")
        self.max_engines = max_engines
        self._create = create
        self._engines: OrderedDict[EngineKey, Any] = OrderedDict()
        self._lock = threading.Lock()  # guards _engines and the counters
        self._load_lock = threading.Lock()  # one load at a time
        self.loads = 0
        self.hits = 0
        self.evicted: list[EngineKey] = []

    @staticmethod
    def key(model: str, engine: str, compute_type: str = "auto", device: str = "auto") -> EngineKey:
        """The canonical key; raises AsrEvalError for an unknown model, engine, device or compute type."""
        from asr_eval.engines.base import resolve_compute_type
        from asr_eval.models.loading import pick_device, resolve

        if not (model or "").strip():
            raise AsrEvalError("no model chosen: pick one from the list, or type a checkpoint folder, ct2:FOLDER "
                               "or a Hugging Face hub id")
        name = resolve(model).name
        dev = pick_device(device)
        return name, engine, resolve_compute_type(engine, compute_type or "auto", dev), dev

    def keys(self) -> list[EngineKey]:
        with self._lock:
            return list(self._engines)

    def get(self, model: str, engine: str, compute_type: str = "auto", device: str = "auto") -> tuple[Any, float]:
        key = self.key(model, engine, compute_type, device)
        if (hit := self._hit(key)) is not None:
            return hit, 0.0
        with self._load_lock:
            if (hit := self._hit(key)) is not None:  # loaded by the request we waited for
                return hit, 0.0
            t0 = time.perf_counter()
            eng = self._load(key)
            load_s = time.perf_counter() - t0
            with self._lock:
                self._engines[key] = eng
                self.loads += 1
                while len(self._engines) > self.max_engines:
                    old, _ = self._engines.popitem(last=False)
                    self.evicted.append(old)
        return eng, load_s

    def _hit(self, key: EngineKey) -> Any | None:
        with self._lock:
            eng = self._engines.get(key)
            if eng is not None:
                self._engines.move_to_end(key)
                self.hits += 1
            return eng

    def _load(self, key: EngineKey) -> Any:
        from asr_eval.engines import create_engine

        name, engine, compute_type, device = key
        create = self._create or create_engine
        return create(engine, name, device=device, compute_type=compute_type)


# ───────────────────────────── which models a user can pick ─────────────────────────────


@dataclass(frozen=True)
class ModelChoice:
    """A model for the picker: ``value`` is the name the engines load (what ``asr-eval score --model``
    takes), ``label`` its display name with lineage."""

    value: str
    label: str


def _lineage(base: str | None, training_run: str | None, step: int | None) -> str:
    parts = []
    if base:
        parts.append(f"fine-tuned from {base}")
    if training_run:
        parts.append(f"run {training_run}")
    if step is not None:
        parts.append(f"step {step}")
    return f" — {', '.join(parts)}" if parts else ""


def model_choices(db: str | Path) -> tuple[list[ModelChoice], str | None]:
    """The bundled model, then every model registered in the store (fine-tunes with their lineage:
    base model, training run, step; newest first), imported systems left out (they have no
    weights). Returns (choices, a note when the store could not be read — the bundled model is
    still offered)."""
    from asr_eval.store.labels import model_display
    from asr_eval.ui.browse import read_store

    out = [ModelChoice(BUNDLED_MODEL, f"{BUNDLED_MODEL} (bundled)")]
    try:
        with read_store(db) as con:
            rows = con.execute("""
                SELECT m.name, m.source, m.display_name, m.step, m.training_run_id,
                       b.name AS base_name, b.source AS base_source, b.display_name AS base_display, m.base_model_id
                FROM models m LEFT JOIN models b ON b.model_id = m.base_model_id
                WHERE m.source <> 'import'
                ORDER BY m.registered_at DESC NULLS LAST, m.name""").fetchall()
    except AsrEvalError as exc:
        return out, f"models registered in the store are not listed: {exc}"
    seen = {BUNDLED_MODEL}
    for name, source, disp, step, trun, base_name, base_source, base_disp, base_id in rows:
        if name in seen:
            continue
        seen.add(name)
        base = model_display(base_name, base_source, base_disp) if base_name else base_id
        label = model_display(name, source, disp) + _lineage(base, trun, step)
        out.append(ModelChoice(name, label))
    return out, None
