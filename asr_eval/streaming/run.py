"""A streaming run: shard rows streamed through a policy into hypothesis parts that also carry the
emission log — the ``scoring.parts`` per-shard path with streaming instead of batch decoding.

A streaming run is an ordinary run (``RunSpec``) with a ``stream`` axis: ``{"policy": name,
"chunk_s": seconds, "params": the policy's parameters}`` (``stream_axis``). It is part of the run
id, so each policy × chunk size × parameter set is its own run, and the final committed text of
each recording is the run's hypothesis: CER, slices, comparisons, the gate and the report treat
it like any other run. The part's extra columns ``emissions`` (the emission log, JSON) and
``stream_stats`` (decode calls, compute, lag) are loaded into ``stream_events`` and scored into
``stream_scores`` by the writer (``asr_eval.streaming.store``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pyarrow as pa

from asr_eval.audio import decode_flac
from asr_eval.errors import AsrEvalError
from asr_eval.progress import heartbeat
from asr_eval.streaming.base import POLICIES, Emission, StreamResult, check_chunk_s, make_policy
from asr_eval.streaming.simulate import engine_transcribers, simulate

# What one emission is stored as in a part's ``emissions`` column (a JSON list of these lists).
EMISSION_FIELDS = ("emit_s", "emit_aware_s", "text", "tentative", "chunk", "final")
STATS_FIELDS = ("decode_calls", "compute_s", "audio_s", "chunk_s", "n_chunks", "final_lag_s", "max_lag_s",
                "lag_slope", "real_time")


def stream_axis(policy: str, chunk_s: float, **params: Any) -> dict[str, Any]:
    """The ``RunSpec.stream`` value of ``policy`` at ``chunk_s`` (validated; every parameter of the
    policy, defaults included, so the run id names them all)."""
    p = make_policy(policy, **params)
    return {"policy": policy, "chunk_s": check_chunk_s(float(chunk_s)), "params": p.params()}


def expand_axes(policies: Sequence[str], chunk_sizes: Sequence[float], params: dict[str, Any] | None = None
                ) -> list[dict[str, Any]]:
    """Every policy × chunk size; ``params`` apply to each policy that has them (a parameter no chosen
    policy has is an error, as with long-form strategy parameters)."""
    from dataclasses import fields

    params = params or {}
    if not policies:
        raise AsrEvalError("no streaming policy given; use --policy local-agreement (or vad-segment, hold-k)")
    if not chunk_sizes:
        raise AsrEvalError("no chunk size given; use --chunk-s 1 (or a list: 0.5,1,2)")
    used: set[str] = set()
    out = []
    for name in policies:
        make_policy(name)  # registers the built-ins, validates the name
        own = {f.name for f in fields(POLICIES[name])} & set(params)
        used |= own
        out += [stream_axis(name, c, **{k: params[k] for k in own}) for c in chunk_sizes]
    if set(params) - used:
        raise AsrEvalError(f"policy parameter(s) {sorted(set(params) - used)}: no chosen policy has them "
                           f"(policies: {', '.join(policies)})")
    return out


def axis_label(stream: dict[str, Any]) -> str:
    """``local-agreement 1s`` for tables and legends."""
    return f"{stream['policy']} {stream['chunk_s']:g}s"


# ───────────── the emission log as stored data ─────────────


def emissions_json(emissions: Sequence[Emission]) -> str:
    return json.dumps([[round(e.emit_s, 4), round(e.emit_aware_s, 4), e.text, e.tentative, e.chunk, e.final]
                       for e in emissions], ensure_ascii=False)


def emissions_from_json(value: str | list) -> list[Emission]:
    rows = json.loads(value) if isinstance(value, str) else value
    return [Emission(float(a), float(b), t, tt, int(k), bool(f)) for a, b, t, tt, k, f in rows]


def stats_json(r: StreamResult) -> str:
    return json.dumps({k: getattr(r, k) for k in STATS_FIELDS})


def stream_rows(engine, rows: Iterable[dict], spec, on_batch: Callable[[int, float], None] | None = None
                ) -> tuple[pa.Table, float, float]:
    """Stream each shard row (utt_id, audio, duration_s) through ``spec.stream``'s policy on
    ``engine`` under ``spec``'s recipe and preprocessing: the part table (hypothesis columns +
    ``emissions`` + ``stream_stats``), audio seconds, and compute seconds (Σ step costs)."""
    axis = spec.stream
    policy = make_policy(axis["policy"], **axis["params"])
    transcribers = engine_transcribers(engine, spec.recipe_obj, spec.preprocessing)
    cols: dict[str, list] = {k: [] for k in ("utt_id", "hyp_raw", "n_tokens", "emissions", "stream_stats")}
    audio_s = proc_s = 0.0
    for r in rows:
        with heartbeat(f"streaming {axis_label(axis)}: {r['utt_id']} ({r['duration_s']:.0f} s of audio)",
                       spinner=False):
            res = simulate(policy, decode_flac(r["audio"]), transcribers, axis["chunk_s"])
        cols["utt_id"].append(r["utt_id"])
        cols["hyp_raw"].append(res.text)
        cols["n_tokens"].append(None)
        cols["emissions"].append(emissions_json(res.emissions))
        cols["stream_stats"].append(stats_json(res))
        audio_s += r["duration_s"]
        proc_s += res.compute_s
        if on_batch:
            on_batch(1, r["duration_s"])
    types = {"utt_id": pa.string(), "hyp_raw": pa.string(), "n_tokens": pa.int32(), "emissions": pa.string(),
             "stream_stats": pa.string()}
    return pa.table({k: pa.array(v, types[k]) for k, v in cols.items()}), audio_s, proc_s
