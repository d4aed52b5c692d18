"""Report view of the engine axis: how each run was produced (engine, compute type, preprocessing,
recipe, strategy, engine options), engine parity between runs of the same weights (the verdict on
speed options that claim to leave transcripts unchanged), and what decoding did per run
and per slice (temperature fallbacks fired, outputs cut off at max_new_tokens)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import duckdb

from asr_eval.scoring.parity import ParityPair, parity_pairs, preprocessing_mismatches
from asr_eval.store.labels import run_axes


@dataclass
class DecodeStats:
    run_id: str
    n: int
    with_fallback: int  # utterances re-decoded at a higher temperature at least once
    redecodes: int  # total re-decodes
    cut_off: int  # stopped at max_new_tokens
    by_slice: dict[str, list[tuple[str, int, int, int]]] = field(default_factory=dict)  # attr -> (value, n, fb, cut)


@dataclass
class EngineView:
    axes: dict[str, dict[str, Any]]  # run_id -> engine, compute_type, preprocessing, recipe, strategy, identity
    parity: list[ParityPair]
    decoding: list[DecodeStats]
    mismatches: list[tuple[str, str, str]]  # (run_id, trained with, scored with)

    @property
    def any_decoding(self) -> bool:
        return any(d.with_fallback or d.cut_off for d in self.decoding)


def _decode_stats(con: duckdb.DuckDBPyConnection, run_ids: list[str], attrs: list[str]) -> list[DecodeStats]:
    if not run_ids:
        return []
    q = f"""SELECT run_id, count(*), count(*) FILTER (WHERE coalesce(n_fallbacks, 0) > 0),
                   coalesce(sum(n_fallbacks), 0), count(*) FILTER (WHERE cut_off)
            FROM hypotheses WHERE run_id IN ({', '.join('?' * len(run_ids))}) GROUP BY run_id"""
    out = {r[0]: DecodeStats(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in con.execute(q, run_ids).fetchall()}
    for attr in attrs:
        rows = con.execute(
            f"""SELECT h.run_id, coalesce(a.value, '(none)'), count(*),
                       count(*) FILTER (WHERE coalesce(h.n_fallbacks, 0) > 0), count(*) FILTER (WHERE h.cut_off)
                FROM hypotheses h JOIN eval_runs r USING (run_id)
                LEFT JOIN utterance_attrs a ON a.corpus_id = r.corpus_id AND a.utt_id = h.utt_id AND a.attr = ?
                WHERE h.run_id IN ({', '.join('?' * len(run_ids))}) GROUP BY 1, 2 ORDER BY 1, 2""",
            [attr, *run_ids]).fetchall()
        for rid, value, n, fb, cut in rows:
            if rid in out and (fb or cut):
                out[rid].by_slice.setdefault(attr, []).append((value, int(n), int(fb), int(cut)))
    return [out[r] for r in run_ids if r in out]


def engine_view(con: duckdb.DuckDBPyConnection, run_ids: list[str], normalizer: str,
                slice_attrs: list[str] | None = None, top: int = 5) -> EngineView:
    ax = run_axes(con, run_ids)
    prov = dict(con.execute(
        f"SELECT run_id, provenance::VARCHAR FROM eval_runs WHERE run_id IN ({', '.join('?' * len(run_ids))})",
        run_ids).fetchall()) if run_ids else {}
    axes = {}
    for rid, x in ax.items():
        p = json.loads(prov.get(rid) or "null") or {}
        axes[rid] = {"engine": x.engine, "compute_type": x.compute_type, "preprocessing": x.preprocessing,
                     "recipe": x.recipe, "strategy": x.strategy, "kind": x.kind, "options": x.options,
                     "identity": p.get("engine") or {}, "import": {k: v for k, v in p.items() if k != "engine"}
                     if x.kind == "import" else {}}
    return EngineView(axes, parity_pairs(con, run_ids, normalizer, top),
                      _decode_stats(con, run_ids, list(slice_attrs or [])), preprocessing_mismatches(con, run_ids))
