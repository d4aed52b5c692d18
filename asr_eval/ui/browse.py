"""Read-only views of the store for the web app: which runs it holds, one run's per-slice metrics
and its worst utterances with their audio.

Every request opens the DuckDB file read-only and closes it before returning, so ``asr-eval score``
can write between two page requests. While a writer holds the file, DuckDB refuses even readers
(one process owns the lock): that — like a missing store or a file that is not an asr-eval store —
is an ``AsrEvalError`` whose message the page shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb

from asr_eval.errors import AsrEvalError

WORST_N = 10
AUDIO_CAP_BYTES = 8 * 2**20  # embedded audio per page (data URIs)


@contextmanager
def read_store(db: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to ``db`` for one request, closed afterwards."""
    from asr_eval.report.select import check_store
    from asr_eval.store import connect

    db = Path(db)
    try:
        con = connect(db, read_only=True)
    except duckdb.Error as exc:  # e.g. this process already holds the file read-write
        raise AsrEvalError(f"cannot open store {db} read-only: {exc}. Another asr-eval process may be writing "
                           "it; retry when it has finished") from exc
    try:
        check_store(con, f"{db}")
        yield con
    except duckdb.Error as exc:
        raise AsrEvalError(f"reading store {db} failed: {exc}") from exc
    finally:
        con.close()


@dataclass(frozen=True)
class RunChoice:
    run_id: str
    label: str  # run_labels' label, corpus/split, utterances scored

    def as_pair(self) -> tuple[str, str]:
        return self.label, self.run_id


def list_runs(db: str | Path) -> list[RunChoice]:
    """Every stored eval run with a readable label (``store.labels.run_labels`` over all runs, so
    only the axes on which runs differ are named), newest first; unscored runs are marked."""
    from asr_eval.report.select import select
    from asr_eval.store.labels import run_labels

    with read_store(db) as con:
        sel = select(con)
        runs = [*sel.runs, *sel.unscored]
        labels = run_labels(con, [r.run_id for r in runs])
    runs.sort(key=lambda r: (r.started_at or "", r.run_id), reverse=True)
    scored = {r.run_id for r in sel.runs}
    out = []
    for r in runs:
        n = f"{r.n_scored} scored" if r.run_id in scored else "not scored"
        out.append(RunChoice(r.run_id, f"{labels.get(r.run_id, r.run_id)} — {r.corpus_name}/{r.split or 'all'} "
                                       f"({n}) · {r.run_id}"))
    return out


@dataclass
class RunView:
    """What the Browse tab shows of one run."""

    run_id: str
    label: str
    normalizer: str | None
    normalizers: tuple[str, ...]
    slices: list[dict[str, Any]]  # stored slice_metrics rows, ``_all`` first
    worst: dict[str, Any] | None  # report.build.worst_views's per-run view (utts with tokens, audio keys)
    audio: Any  # report.audio.AudioEmbed
    notes: list[str] = field(default_factory=list)


def run_view(db: str | Path, run_id: str, normalizer: str | None = None, worst_n: int = WORST_N,
             audio_cap_bytes: int = AUDIO_CAP_BYTES) -> RunView:
    """One run (a run reference, ``asr_eval.store.runs``: the picker's full id, a short id, a prefix
    or a model name): its stored per-slice metrics (``slices.stored_slice_metrics``) and its ``worst_n``
    highest-CER utterances exactly as the report selects and draws them (``report.queries``,
    ``report.build``), audio read from the corpus shards."""
    from asr_eval.report import queries
    from asr_eval.report.build import ReportOptions, worst_views
    from asr_eval.report.select import select
    from asr_eval.slices import stored_slice_metrics
    from asr_eval.store.runs import resolve_run

    if not run_id:
        raise AsrEvalError("no run chosen: pick a stored run (score one with `asr-eval score`)")
    with read_store(db) as con:
        run_id = resolve_run(con, run_id, finished_only=False)
        sel = select(con, runs=[run_id], normalizer=normalizer or None)
        runs = [r for r in sel.runs if r.run_id == run_id]
        if not runs:
            raise AsrEvalError(f"run {run_id} has no scores{f' under {normalizer}' if normalizer else ''} yet: "
                               "run `asr-eval score` (or `asr-eval rescore`) to score it")
        sel = replace(sel, runs=tuple(runs), unscored=())
        slices = stored_slice_metrics(con, [run_id], sel.normalizer)
        worst = queries.worst_utterances(con, sel, worst_n)
    opts = ReportOptions(worst_n=worst_n, audio_cap_bytes=audio_cap_bytes)
    view = worst_views(sel, worst, opts)  # the report's view model and audio embedding (reads shards, not the store)
    notes = list(sel.notes)
    if not slices:
        notes.append(f"no stored per-slice metrics for this run under {sel.normalizer}: re-run `asr-eval score` "
                     "or `asr-eval rescore` to compute them")
    return RunView(run_id, runs[0].label, sel.normalizer, sel.normalizers_available, slices,
                   view["per_run"][0] if view["per_run"] else None, view["audio"], notes)


SLICE_HEADERS = ["slice", "value", "n", "hours", "CER %", "CER 95% CI", "MER %", "S", "D", "I", "ref chars",
                 "reliable"]


def _pct(x: float | None) -> str:
    return "—" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def slice_table(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Stored slice rows as table rows (percentages with two decimals, as `asr-eval score` prints).
    A thin slice (``reliable`` false) shows its rates with † and no interval."""
    out = []
    for r in rows:
        thin = r["reliable"] is False
        ci = "—" if r["cer_lo"] is None or thin else f"{_pct(r['cer_lo'])}–{_pct(r['cer_hi'])}"
        dag = " †" if thin else ""
        out.append([r["slice_attr"], r["slice_value"], r["n"], round(r["hours"] or 0.0, 4), _pct(r["cer"]) + dag, ci,
                    _pct(r["mer"]) + dag, r["cer_s"], r["cer_d"], r["cer_i"], r["ref_chars"],
                    "yes" if r["reliable"] else ("no †" if thin else "—")])
    return out
