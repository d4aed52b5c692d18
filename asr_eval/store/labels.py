"""Readable names for runs and models in every table and the report.

A run is labelled by its model's display name, plus only the axes (engine, compute type,
preprocessing, recipe, strategy, engine options) on which the runs shown together differ — so two engines on one
model read "whisper-base · ctranslate2 int8" instead of two hashes. Full ids stay in provenance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from asr_eval.engines.options import describe

AXES = ("engine", "compute_type", "preprocessing", "recipe", "strategy", "options")  # a streaming run's strategy: "streaming POLICY Cs"


@dataclass(frozen=True)
class RunAxes:
    run_id: str
    model: str  # display name
    engine: str
    compute_type: str
    preprocessing: str
    recipe: str
    strategy: str
    kind: str
    options: str = "defaults"  # engine options (engines.options.describe)


def model_display(name: str, source: str | None, display_name: str | None = None, step: int | None = None) -> str:
    """``display_name`` when stored; else a short form: the hub id, ``bundled:x``, or the last two
    path parts of a local folder (``demo-ft/best``), with the training step when known."""
    if display_name:
        return display_name
    from asr_eval.models.naming import display_name as short_name

    return short_name(name, source, None, {"step": step})


def run_axes(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> dict[str, RunAxes]:
    if not run_ids:
        return {}
    rows = con.execute(
        f"""SELECT r.run_id, m.name, m.source, m.display_name, m.step, coalesce(r.engine, 'transformers'),
                   coalesce(r.compute_type, r.dtype, ''), coalesce(r.preprocessing, 'pad-audio'),
                   coalesce(r.recipe, 'greedy'), coalesce(r.strategy, 'short'), coalesce(r.kind, 'model'),
                   r.stream_policy, json_extract(r.stream_params, '$.chunk_s')::DOUBLE, r.engine_options
            FROM eval_runs r LEFT JOIN models m USING (model_id)
            WHERE r.run_id IN ({', '.join('?' * len(run_ids))})""", list(run_ids)).fetchall()
    out = {}
    for rid, name, source, disp, step, eng, ct, pre, rec, strat, kind, policy, chunk, opts in rows:
        model = model_display(name or rid, source, disp, step)
        if policy:
            strat = f"streaming {policy}" + (f" {chunk:g}s" if chunk is not None else "")
        out[rid] = RunAxes(rid, model, eng, ct, pre, rec, strat, kind, describe(json.loads(opts) if opts else None))
    return out


def run_labels(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> dict[str, str]:
    """run_id → label, naming only the axes that differ among ``run_ids`` (and the id when two
    runs would otherwise read the same)."""
    axes = run_axes(con, run_ids)
    varying = [a for a in AXES if len({getattr(x, a) for x in axes.values()}) > 1]
    labels = {}
    for rid, x in axes.items():
        if x.kind == "import":
            labels[rid] = f"{x.model} (imported{' stream' if x.strategy.startswith('streaming') else ''})"
            continue
        parts = [x.model]
        eng = " ".join(getattr(x, a) for a in ("engine", "compute_type") if a in varying)
        if eng:
            parts.append(eng)
        parts += [getattr(x, a) for a in ("preprocessing", "recipe", "strategy", "options") if a in varying]
        labels[rid] = " · ".join(parts)
    seen: dict[str, int] = {}
    for v in labels.values():
        seen[v] = seen.get(v, 0) + 1
    return {rid: (f"{v} [{rid[-6:]}]" if seen[v] > 1 else v) for rid, v in labels.items()} | \
        {rid: rid for rid in run_ids if rid not in labels}
