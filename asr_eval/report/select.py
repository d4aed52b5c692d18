"""Which eval runs, corpora and normalizer a report (or an export) covers.

Shared by ``asr_eval.report``, ``asr_eval.export`` and the web app so all resolve ``--runs`` /
``--corpus`` the same way: runs through the one run resolver (``asr_eval.store.runs.resolve_runs``:
a full or short run id, a unique id prefix, or a model — every run of it); a corpus by its corpus
id, its name or its shard directory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import duckdb

from asr_eval.errors import AsrEvalError
from asr_eval.store.labels import run_labels
from asr_eval.store.schema import ERROR_TABLES, STREAM_TABLES, TABLES

# One colour per run, in selection order; chosen to stay distinguishable for common colour blindness.
PALETTE = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626")


@dataclass(frozen=True)
class RunInfo:
    """One eval run (a model decoding a corpus split) with its model's provenance and lineage."""

    run_id: str
    label: str
    color: str
    model_id: str
    model_name: str
    model_source: str | None
    revision: str | None
    n_params: int | None
    base_model_id: str | None
    training_run_id: str | None
    train_step: int | None
    train_corpus_id: str | None
    corpus_id: str
    corpus_name: str
    corpus_path: str | None
    split: str | None
    status: str | None
    device: str | None
    dtype: str | None
    batch_size: int | None
    decode_params: dict[str, Any]
    versions: dict[str, Any]
    n_utts: int | None
    audio_s: float | None
    proc_s: float | None
    rtfx: float | None
    peak_gpu_mem_bytes: int | None
    started_at: str | None
    finished_at: str | None
    kind: str | None = "model"
    engine: str | None = None
    engine_version: str | None = None
    compute_type: str | None = None
    preprocessing: str | None = None
    recipe: str | None = None
    strategy: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    normalizer_hashes: tuple[str, ...] = ()
    n_scored: int = 0
    selection_split: str | None = None  # the split a fine-tuned checkpoint was selected on

    @property
    def fine_tuned(self) -> bool:
        return self.base_model_id is not None

    @property
    def selected_here(self) -> bool:
        """Scored on the split its checkpoint was selected on: the score is optimistic."""
        return self.selection_split is not None and self.selection_split == (self.split or "all")


@dataclass(frozen=True)
class Selection:
    """The resolved scope of a report: scored runs, the normalizer, and what was left out."""

    runs: tuple[RunInfo, ...]
    normalizer: str | None
    normalizers_available: tuple[str, ...]
    unscored: tuple[RunInfo, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.runs]

    @property
    def corpora(self) -> list[tuple[str, str]]:
        """(corpus_id, corpus_name) in first-seen order."""
        seen: dict[str, str] = {}
        for r in self.runs:
            seen.setdefault(r.corpus_id, r.corpus_name)
        return list(seen.items())

    def runs_of(self, corpus_id: str) -> list[RunInfo]:
        return [r for r in self.runs if r.corpus_id == corpus_id]

    def run(self, run_id: str) -> RunInfo:
        return next(r for r in self.runs if r.run_id == run_id)


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run a query and return its rows as dicts keyed by column name."""
    cur = con.execute(sql, params or {})
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def check_store(con: duckdb.DuckDBPyConnection, where: str) -> None:
    """Fail with a clear message when the file is not an asr-eval store."""
    have = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    missing = [t for t in TABLES if t not in have and t not in STREAM_TABLES + ERROR_TABLES]
    if missing:
        raise AsrEvalError(
            f"{where} is not an asr-eval store (missing tables: {', '.join(missing)}); "
            "point --db at the file `asr-eval score` wrote (default reports/asr_eval.duckdb)"
        )


def _split_args(values: Sequence[str]) -> list[str]:
    """Accept both repeated options and comma-separated lists."""
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def as_dict(value: Any) -> dict[str, Any]:
    """A JSON column as a dict (NULL or JSON null: empty; a non-object: under 'value')."""
    parsed = json.loads(value) if isinstance(value, str) else value
    if parsed is None:
        return {}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


_RUNS_SQL = """
SELECT r.run_id, r.corpus_id, r.split, r.model_id, r.status, r.device, r.dtype, r.batch_size,
       r.decode_params::VARCHAR AS decode_params, r.versions::VARCHAR AS versions, r.n_utts, r.audio_s,
       r.proc_s, r.rtfx, r.peak_gpu_mem_bytes, r.started_at::VARCHAR AS started_at,
       r.finished_at::VARCHAR AS finished_at, coalesce(r.kind, 'model') AS kind, r.engine, r.engine_version,
       r.compute_type, r.preprocessing, r.recipe, r.strategy, r.provenance::VARCHAR AS provenance,
       coalesce(m.name, r.model_id) AS model_name, m.source AS model_source, m.revision, m.n_params,
       m.base_model_id, m.training_run_id, m.step AS train_step, m.corpus_id AS train_corpus_id,
       m.selection_split, coalesce(c.name, r.corpus_id) AS corpus_name, c.path AS corpus_path
FROM eval_runs r
LEFT JOIN models m USING (model_id)
LEFT JOIN corpora c ON c.corpus_id = r.corpus_id
WHERE (len($runs) = 0 OR list_contains($runs, r.run_id))
  AND (len($corpora) = 0 OR list_contains($corpora, r.corpus_id) OR list_contains($corpora, c.name)
       OR list_contains($corpora, c.path))
ORDER BY corpus_name, r.corpus_id, r.started_at NULLS LAST, r.run_id
"""


def _unmatched(con: duckdb.DuckDBPyConnection, wanted: list[str], sql: str, what: str) -> None:
    known = {v for row in con.execute(sql).fetchall() for v in row if v is not None}
    bad = [w for w in wanted if w not in known]
    if bad:
        listing = ", ".join(sorted(known)[:12]) or "none (the store is empty)"
        raise AsrEvalError(f"unknown {what} {', '.join(map(repr, bad))}; the store has: {listing}")


def select(con: duckdb.DuckDBPyConnection, runs: Sequence[str] = (), corpora: Sequence[str] = (),
           normalizer: str | None = None) -> Selection:
    """Resolve run/corpus filters and pick the normalizer (default: the one most selected runs were scored with)."""
    from asr_eval.store.runs import resolve_runs

    want_runs, want_corpora = resolve_runs(con, _split_args(runs)), _split_args(corpora)
    _unmatched(con, want_corpora, "SELECT corpus_id, name, path FROM corpora "
               "UNION ALL SELECT corpus_id, NULL, NULL FROM eval_runs", "corpus")
    raw = rows(con, _RUNS_SQL, {"runs": want_runs, "corpora": want_corpora})
    scored = rows(con, """
        SELECT run_id, normalizer, list(DISTINCT normalizer_hash ORDER BY normalizer_hash) AS hashes, count(*) AS n
        FROM utterance_scores WHERE run_id IN (SELECT unnest($ids)) GROUP BY ALL""",
        {"ids": [r["run_id"] for r in raw]})
    by_norm: dict[str, set[str]] = {}
    for s in scored:
        by_norm.setdefault(s["normalizer"], set()).add(s["run_id"])
    available = tuple(sorted(by_norm))
    notes: list[str] = []
    if normalizer is None and available:
        # most runs; on a tie (e.g. after `asr-eval protocols`) the default profile, then by name
        normalizer = max(available, key=lambda k: (len(by_norm[k]), k == "zh-v1", k))
        if len(available) > 1:
            notes.append(f"the store holds scores under several normalizers ({', '.join(available)}); "
                         f"this report uses {normalizer} (choose another with --normalizer)")
    elif normalizer is not None and available and normalizer not in by_norm:
        raise AsrEvalError(f"no scores with normalizer {normalizer!r} for the selected runs; "
                           f"available: {', '.join(available)}")
    info = {(s["run_id"]): s for s in scored if s["normalizer"] == normalizer}
    out: list[RunInfo] = []
    unscored: list[RunInfo] = []
    # Display names, plus only the axes (engine, recipe, …) on which the runs of a corpus differ.
    labels: dict[str, str] = {}
    for cid in dict.fromkeys(r["corpus_id"] for r in raw):
        labels.update(run_labels(con, [r["run_id"] for r in raw if r["corpus_id"] == cid]))
    for r in raw:
        label = labels.get(r["run_id"], r["model_name"])
        s = info.get(r["run_id"])
        run = RunInfo(
            label=label, color="", decode_params=as_dict(r.pop("decode_params")),
            versions=as_dict(r.pop("versions")), provenance=as_dict(r.pop("provenance")),
            normalizer_hashes=tuple(s["hashes"]) if s else (), n_scored=s["n"] if s else 0, **r,
        )
        (out if s else unscored).append(run)
    out = [replace(r, color=PALETTE[i % len(PALETTE)]) for i, r in enumerate(out)]
    hashes = {h for r in out for h in r.normalizer_hashes}
    if len(hashes) > 1:
        notes.append(f"runs were scored with different rule versions of {normalizer} "
                     f"(hashes {', '.join(sorted(hashes))}): their numbers are not comparable until rescored")
    return Selection(runs=tuple(out), normalizer=normalizer, normalizers_available=available,
                     unscored=tuple(unscored), notes=tuple(notes))

