"""Report view of "What kind of errors" (issue 22): the error taxonomy per run as stacked bars and a
table (on MER units: Han characters, Latin words, numbers), the pinyin error rate beside MER, the
top confusions with pinyin (``hello → 哈喽`` is one), the pairs a fine-tune
fixed or introduced against its base model, and train/test contamination — a warning for every
fine-tune scored on a split its training texts overlap, with its gain on the clean slice.

Reads what ``asr_eval.scoring.errors`` and ``asr_eval.contamination`` stored; geometry from
``charts.stacked_bars`` (no markup here: ``templates/_taxonomy.html.j2`` draws it). ``None`` when
the store predates these tables or no selected run has a taxonomy (the section is left out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import duckdb

from asr_eval import slices as slices_mod
from asr_eval.metrics.stats import stored_reliable
from asr_eval.metrics.taxonomy import ALL_BUCKETS, CLASSES, LABELS
from asr_eval.report import charts
from asr_eval.report.select import RunInfo, Selection

CLASS_COLORS = {
    "homophone": "#7c3aed", "tone": "#a78bfa", "near_homophone": "#c4b5fd", "variant": "#0891b2",
    "number_format": "#14b8a6", "latin": "#db2777", "other": "#f59e0b", "particle": "#16a34a",
    "deletion": "#ef4444", "insertion": "#3b82f6",
}
N_CHANGES = 10
MAX_PAIRS = 4  # fixed/introduced tables when no run has lineage (first run against the others)


@dataclass
class TaxonomyView:
    normalizer: str
    runs: list[dict[str, Any]]  # per run: label, counts/shares per bucket, MER, pinyin error rates
    bars: charts.BarPlot | None
    buckets: list[tuple[str, str, str]]  # (key, label, color)
    confusions: list[dict[str, Any]]  # per run: {"run", "rows"}
    changes: list[dict[str, Any]]  # per pair: {"a", "b", "lineage", "fixed", "introduced"}
    checks: list[dict[str, Any]] = field(default_factory=list)  # stored contamination checks of the corpora
    warnings: list[dict[str, Any]] = field(default_factory=list)  # fine-tunes scored on contaminated splits
    lineage_clean: list[dict[str, Any]] = field(default_factory=list)  # fine-tunes checked and clean


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _base_run(con: duckdb.DuckDBPyConnection, sel: Selection, ft: RunInfo, normalizer: str) -> str | None:
    """The base model's run on the fine-tune's corpus split: a selected one first, else any stored."""
    for r in sel.runs:
        if r.model_id == ft.base_model_id and r.corpus_id == ft.corpus_id and r.split == ft.split:
            return r.run_id
    found = con.execute("""
        SELECT r.run_id FROM eval_runs r WHERE r.model_id = ? AND r.corpus_id = ? AND r.split IS NOT DISTINCT FROM ?
          AND EXISTS (SELECT 1 FROM slice_metrics s WHERE s.run_id = r.run_id AND s.normalizer = ?)
        ORDER BY r.finished_at DESC NULLS LAST LIMIT 1""", [ft.base_model_id, ft.corpus_id, ft.split, normalizer]).fetchall()
    return found[0][0] if found else None


def _pairs(con: duckdb.DuckDBPyConnection, sel: Selection, normalizer: str) -> list[tuple[str, str, bool]]:
    """(run a, run b, b is a fine-tune of a) whose confusion changes are shown."""
    out = [(b, ft.run_id, True) for ft in sel.runs if ft.fine_tuned
           and (b := _base_run(con, sel, ft, normalizer)) is not None]
    if out:
        return out
    for cid, _ in sel.corpora:
        runs = sel.runs_of(cid)
        out += [(runs[0].run_id, r.run_id, False) for r in runs[1:] if r.split == runs[0].split][:MAX_PAIRS]
    return out


def _paired_delta(con: duckdb.DuckDBPyConnection, a: str, b: str, normalizer: str, attr: str | None,
                  value: str) -> dict[str, Any] | None:
    """Δ CER (b − a) on one slice: the stored comparison when there is one, else the same paired
    bootstrap computed here (``metrics.stats.paired_bootstrap``); ``reliable``: the minimum-evidence
    rule (``metrics.stats.Evidence``) — a thin gain is shown without its interval."""
    from asr_eval.metrics.stats import Evidence, paired_bootstrap, resampling_for, stored_reliable

    sa = attr or slices_mod.ALL_ATTR
    for x, y, sign in ((a, b, 1), (b, a, -1)):
        got = con.execute("SELECT delta, delta_lo, delta_hi, n, rate_a, rate_b, reliable, ref_chars FROM comparisons "
                          "WHERE run_a = ? AND "
                          "run_b = ? AND normalizer = ? AND metric = 'cer' AND slice_attr = ? AND slice_value = ?",
                          [x, y, normalizer, sa, value]).fetchall()
        if got:
            d, lo, hi, n, ra, rb, ok, chars = got[0]
            lo, hi = (lo, hi) if sign == 1 else (-hi if hi is not None else None, -lo if lo is not None else None)
            return {"delta": sign * d if d is not None else None, "lo": lo, "hi": hi, "n": n,
                    "rate_a": ra if sign == 1 else rb, "rate_b": rb if sign == 1 else ra, "stored": True,
                    "reliable": stored_reliable(ok, n, chars)}
    groups = [g for g in slices_mod.paired_slices(con, a, b, normalizer, attr, "cer") if g.value == value]
    if not groups:
        return None
    g = groups[0]
    r = paired_bootstrap(g.err_a, g.err_b, g.n_ref, n_boot=1000, seed=0, groups=resampling_for(g.speakers).groups)
    return {"delta": r.delta, "lo": r.lo, "hi": r.hi, "n": len(g.utt_ids), "rate_a": r.rate_a, "rate_b": r.rate_b,
            "stored": False, "reliable": Evidence(len(g.utt_ids), int(g.n_ref.sum())).reliable}


def _contamination(con: duckdb.DuckDBPyConnection, sel: Selection, normalizer: str,
                   labels: dict[str, str]) -> tuple[list[dict], list[dict], list[dict]]:
    from asr_eval.contamination import lineage, stored_checks

    checks = stored_checks(con, [c for c, _ in sel.corpora])
    rows = lineage(con, [r.model_id for r in sel.runs if r.fine_tuned])
    warnings, clean = [], []
    for ft in (r for r in sel.runs if r.fine_tuned):
        mine = [x for x in rows if x["model_id"] == ft.model_id and x["corpus_id"] == ft.corpus_id
                and x["eval_split"] == (ft.split or "all")]
        if not mine:
            continue
        n_bad = sum(x["n_exact"] + x["n_overlap"] for x in mine)
        item = {"run": ft, "rows": mine, "n_utts": max(x["n_utts"] for x in mine),
                "n_exact": sum(x["n_exact"] for x in mine), "n_overlap": sum(x["n_overlap"] for x in mine)}
        if not n_bad:
            clean.append(item)
            continue
        base = _base_run(con, sel, ft, normalizer)
        item["base_label"] = labels.get(base, base) if base else None
        item["gain_all"] = _paired_delta(con, base, ft.run_id, normalizer, None, slices_mod.ALL_VALUE) if base else None
        item["gain_clean"] = (_paired_delta(con, base, ft.run_id, normalizer, slices_mod.CONTAMINATED_ATTR, "clean")
                              if base else None)
        warnings.append(item)
    return checks, warnings, clean


def _labels(con: duckdb.DuckDBPyConnection, sel: Selection) -> dict[str, str]:
    """Labels of the selected runs, and of the base models' runs found outside the selection."""
    from asr_eval.store.labels import run_labels

    labels = {r.run_id: r.label for r in sel.runs}
    bases = [b for ft in sel.runs if ft.fine_tuned and (b := _base_run(con, sel, ft, sel.normalizer or "zh-v1"))
             and b not in labels]
    return {**run_labels(con, bases), **labels} if bases else labels


def taxonomy_view(con: duckdb.DuckDBPyConnection, sel: Selection, normalizer: str) -> TaxonomyView | None:
    from asr_eval.scoring.errors import confusion_changes, has_error_tables, stored_error_slices, top_confusions

    if not sel.runs or not has_error_tables(con):
        return None
    rows = {r["run_id"]: r for r in stored_error_slices(con, sel.run_ids, normalizer)
            if r["slice_attr"] == slices_mod.ALL_ATTR}
    runs = [r for r in sel.runs if r.run_id in rows]
    if not runs:
        return None
    labels = _labels(con, sel)
    many = len(sel.corpora) > 1
    view_runs, bar_rows = [], []
    for r in runs:
        x = rows[r.run_id]
        n = x["ref_chars"] or 0
        u = x["ref_units"] or 0  # MER units: the classes sum to the run's MER errors
        buckets = [{"key": b, "label": LABELS[b], "count": x[b], "share": x["shares"].get(b),
                    "of_units": x[b] / u if u else None} for b in ALL_BUCKETS]
        view_runs.append({"run": r, "n": x["n"], "ref_chars": n, "ref_units": u, "errors": x["errors"],
                          "mer": x["errors"] / u if u else None, "buckets": buckets,
                          "reliable": stored_reliable(x["reliable"], x["n"], x["ref_chars"]),
                          "per": x["per"], "per_lo": x["per_lo"], "per_hi": x["per_hi"], "pter": x["pter"],
                          "pter_lo": x["pter_lo"], "pter_hi": x["pter_hi"], "ci_method": x["ci_method"],
                          "pinyin_version": x["pinyin_version"] or "unknown"})
        bar_rows.append((f"{r.label} ({r.corpus_name})" if many else r.label,
                         [(LABELS[b["key"]], b["of_units"] or 0.0) for b in buckets]))
    colors = {LABELS[b]: CLASS_COLORS[b] for b in ALL_BUCKETS}
    bars = charts.stacked_bars("Errors by kind (share of reference units; bar = MER)", bar_rows,
                               colors, reliable=[v["reliable"] for v in view_runs])
    confusions = [{"run": r, "rows": top_confusions(con, r.run_id, normalizer, 15)} for r in runs]
    changes = []
    for a, b, is_lineage in _pairs(con, sel, normalizer):
        ch = confusion_changes(con, a, b, normalizer, N_CHANGES)
        changes.append({"a": labels.get(a, a), "b": labels.get(b, b), "lineage": is_lineage, **ch})
    checks, warnings, clean = _contamination(con, sel, normalizer, labels)
    return TaxonomyView(normalizer, view_runs, bars,
                        [(b, LABELS[b], CLASS_COLORS[b]) for b in ALL_BUCKETS], confusions, changes, checks,
                        warnings, clean)


__all__ = ["CLASSES", "CLASS_COLORS", "TaxonomyView", "taxonomy_view"]
