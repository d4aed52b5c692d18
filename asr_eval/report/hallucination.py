"""Report view of hallucination over silence (issue 31): text produced where the reference has no
speech, and insertions repeating what was already said (``asr_eval.metrics.hallucination``; stored
by ``asr_eval.scoring.hallucination``).

``hallucination_view`` lays out what is stored for the selected runs:

- ``streaming``: per streaming run (ours and imported logs), its whole-run numbers and its longest
  examples — the Streaming section shows them beside latency (``templates/_streaming.html.j2``);
- ``stream_slices``: (run, slice attribute, value) → the slice's numbers, for the Streaming
  section's per-slice table;
- ``longform``: the offline runs measured (recordings with reference segments: long-form
  corpora) — a row per run, a table per slice attribute (values with the most recordings first,
  at most ``max_slice_values``) and the examples, for ``templates/_longform.html.j2``.

Numbers only — the templates draw them (every text passes through autoescaping). ``None`` when no
selected run was measured or the store predates the tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb

from asr_eval.scoring.hallucination import (
    has_hallucination_tables,
    run_totals,
    stored_hallucination_slices,
    top_examples,
)
from asr_eval.slices import value_key

MAX_EXAMPLE_CHARS = 60  # an example longer than this is cut (the whole text is its tooltip)


def _example(e: Mapping[str, Any]) -> dict[str, Any]:
    text = str(e["text"])
    cut = text if len(text) <= MAX_EXAMPLE_CHARS else text[:MAX_EXAMPLE_CHARS] + "…"
    return {**e, "shown": cut, "full": text}


def _slice_tables(srows: Sequence[Mapping[str, Any]], runs: Mapping[str, Any],
                  max_values: int) -> list[dict[str, Any]]:
    """Per slice attribute: a row per value × run (stored order), the values with the most recordings."""
    attrs: dict[str, list[Mapping[str, Any]]] = {}
    for s in srows:
        if s["run_id"] in runs:
            attrs.setdefault(s["slice_attr"], []).append(s)
    out = []
    for attr, rows in attrs.items():
        n_of: dict[str, int] = {}
        for s in rows:
            n_of[s["slice_value"]] = max(n_of.get(s["slice_value"], 0), int(s["n"] or 0))
        shown = set(sorted(n_of, key=lambda v: (-n_of[v], value_key(v)))[:max_values])
        out.append({"attr": attr, "n_values": len(n_of), "n_shown": len(shown),
                    "rows": [{**s, "run": runs[s["run_id"]]} for s in rows if s["slice_value"] in shown]})
    return out


def hallucination_view(con: duckdb.DuckDBPyConnection, runs: Sequence[Any], normalizer: str,
                       max_slice_values: int = 30) -> dict[str, Any] | None:
    """The hallucination numbers of the selected ``runs`` (``report.select.RunInfo``; module docstring)."""
    if not runs or not has_hallucination_tables(con):
        return None
    from asr_eval.streaming.store import stream_run_ids

    ids = [r.run_id for r in runs]
    totals = run_totals(con, ids, normalizer)
    if not totals:
        return None
    streams = set(stream_run_ids(con, ids))
    srows = stored_hallucination_slices(con, ids, normalizer, include_all=False)
    streaming = {rid: {**totals[rid], "examples": [_example(e) for e in top_examples(con, rid, normalizer)]}
                 for rid in ids if rid in streams and rid in totals}
    offline = [r for r in runs if r.run_id in totals and r.run_id not in streams]
    longform = None
    if offline:
        longform = {
            "runs": [{"run": r, **totals[r.run_id],
                      "examples": [_example(e) for e in top_examples(con, r.run_id, normalizer)]} for r in offline],
            "slices": _slice_tables(srows, {r.run_id: r for r in offline}, max_slice_values)}
    return {"streaming": streaming, "longform": longform,
            "stream_slices": {(s["run_id"], s["slice_attr"], s["slice_value"]): s for s in srows
                              if s["run_id"] in streams}}


__all__ = ["MAX_EXAMPLE_CHARS", "hallucination_view"]
