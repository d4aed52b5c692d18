"""Assemble the report: queries → view model → Jinja2 (autoescaped) → one self-contained HTML file."""

from __future__ import annotations

import base64
import hashlib
import math
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import jinja2
from markupsafe import Markup

from asr_eval import __version__
from asr_eval.metrics.flags import FLAGS
from asr_eval.metrics.stats import insufficient, star_keys
from asr_eval.report import charts, queries, windows
from asr_eval.report.audio import embed_audio
from asr_eval.report.engines import engine_view
from asr_eval.report.hallucination import hallucination_view
from asr_eval.report.standard import standard_view
from asr_eval.report.streaming import stream_view
from asr_eval.report.taxonomy import taxonomy_view
from asr_eval.report.charts import OP_COLORS, SEVERITY_COLORS, CiItem, Marker, SeriesSpec
from asr_eval.report.queries import ALL_ATTR, CLASSES, PairDiff, RunTotals, SliceRow
from asr_eval.report.select import Selection, check_store, select
from asr_eval.store import connect

NO_DIFF = "no significant difference on this data"
TRAIN_COLORS = {"run": "#2563eb", "eval": "#7c3aed", "baseline": "#94a3b8"}


@dataclass(frozen=True)
class ReportOptions:
    """What the report covers and how large it may get."""

    runs: tuple[str, ...] = ()  # run ids, model ids or model names; empty: every run in the store
    corpora: tuple[str, ...] = ()  # corpus ids, names or shard dirs; empty: all
    normalizer: str | None = None  # default: the profile most selected runs were scored with
    title: str = "ASR evaluation report"
    worst_n: int = 10  # worst utterances shown per run
    audio_cap_bytes: int = 5 * 2**20  # total size of embedded audio (data URIs)
    max_slice_values: int = 30  # per slice column, the values with the most utterances
    plot_slice_values: int = 12  # rows of the per-slice interval plot
    top_confusions: int = 15  # per run and per S/D/I
    max_tokens: int = 400  # alignment tokens drawn per utterance
    window_tokens: int = windows.WINDOW_TOKENS  # items over 30 s: aligned tokens per diff window
    n_windows: int = windows.N_WINDOWS  # items over 30 s: diff windows (and audio excerpts) shown
    max_curve_points: int = 1500  # training curves are bucketed in SQL beyond this
    confusion_utts: int = 100_000  # per run, utterances read for top confusions (a 1-in-k sample beyond)


@dataclass(frozen=True)
class ReportResult:
    path: Path
    size_bytes: int
    n_runs: int
    n_corpora: int
    n_training_runs: int
    audio_embedded: int
    audio_bytes: int
    audio_left_out: int
    elapsed_s: float
    headline_markdown: str
    empty_sections: tuple[str, ...] = field(default_factory=tuple)


# ───────────────────────────── wording & formatting (one place) ─────────────────────────────


def significance(d: PairDiff, label_a: str, label_b: str) -> tuple[str, str]:
    """(words, css class) for a paired difference b − a with a 95% interval. Thin differences
    (``PairDiff.reliable`` false: too few paired items, or either side thin) say "insufficient
    data (n = …)", and a difference is claimed only when it survives the multiplicity correction
    of its family (``PairDiff.significant``)."""
    if not d.reliable:
        return insufficient(d.n), "na"
    if d.lo is None or d.hi is None or any(math.isnan(v) for v in (d.lo, d.hi)):
        return "no interval (too few utterances)", "na"
    if d.lo <= 0 <= d.hi:
        return NO_DIFF, "nodiff"
    if not d.significant:
        return f"{NO_DIFF} after correcting for {d.family_size} slices", "nodiff"
    adj = f", adjusted p = {d.p_adj:.2g}" if d.p_adj is not None and (d.family_size or 1) > 1 else ""
    if d.hi < 0:
        return f"{label_b} is better (interval excludes 0{adj})", "better-b"
    return f"{label_a} is better (interval excludes 0{adj})", "better-a"


def mde(d: PairDiff | None) -> str:
    """'0.84' — differences under this many points are not detectable on this slice."""
    if d is None or not d.reliable or d.mde is None or not math.isfinite(d.mde):
        return "—"
    return f"{100 * d.mde:.2f}"


def pct(v: float | None, digits: int = 2) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{100 * v:.{digits}f}%"


def pts(v: float | None, digits: int = 2) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{100 * v:+.{digits}f}"


def dagger(reliable: bool | None) -> str:
    """' †' after a thin number's point estimate (``reliable`` false), '' otherwise."""
    return " †" if reliable is False else ""


def ci(lo: float | None, hi: float | None, signed: bool = False) -> str:
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    f = pts if signed else (lambda v: f"{100 * v:.2f}")
    return f"[{f(lo)}, {f(hi)}]"


def num(v: float | int | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}"


def size(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _natural(value: str) -> tuple:
    """Natural order: 'snr5' < 'snr20', '2-5s' < '10-20s' < '>30s', 'hsk2' < 'hsk10'."""
    parts = re.split(r"(\d+(?:\.\d+)?)", value)
    return tuple(float(p) if i % 2 else p for i, p in enumerate(parts))


def _flag_key(flag: str) -> tuple:
    """The scorer's flag order; flags it does not define (older stores) follow alphabetically."""
    return (FLAGS.index(flag), "") if flag in FLAGS else (len(FLAGS), flag)


# ───────────────────────────── view model ─────────────────────────────


def _headline(sel: Selection, totals: dict[str, RunTotals]) -> list[dict[str, Any]]:
    out = []
    for cid, cname in sel.corpora:
        runs = [r for r in sel.runs_of(cid) if r.run_id in totals]
        # ★ (lowest) only among runs with enough evidence; a thin run shows its point estimate alone
        stars = star_keys({r.run_id: (totals[r.run_id].cer.value, totals[r.run_id].reliable) for r in runs})
        is_best = {r.run_id: r.run_id in stars for r in runs}
        items = [CiItem("", r.label, r.color, totals[r.run_id].cer.value, totals[r.run_id].cer.lo,
                        totals[r.run_id].cer.hi, is_best[r.run_id], totals[r.run_id].reliable) for r in runs]
        out.append({"corpus_id": cid, "corpus_name": cname,
                    "rows": [{"run": r, "t": totals[r.run_id], "best": is_best[r.run_id]} for r in runs],
                    "plot": charts.ci_plot(f"CER with 95% interval — {cname}", items)})
    return out


def _verdicts(sel: Selection, totals: dict[str, RunTotals], diffs: list[PairDiff]) -> list[dict[str, Any]]:
    """Per corpus: the lowest-CER run and, against each other run, whether the gap is real."""
    whole = {(d.run_a, d.run_b): d for d in diffs if d.attr == ALL_ATTR}
    out = []
    for cid, cname in sel.corpora:
        runs = [r for r in sel.runs_of(cid) if r.run_id in totals and totals[r.run_id].cer.value is not None]
        if not runs:
            continue
        best = min(runs, key=lambda r: totals[r.run_id].cer.value)
        lines = []
        for other in runs:
            if other is best:
                continue
            d = whole.get((best.run_id, other.run_id))  # oriented as other − best (b − a)
            if d is None and (rev := whole.get((other.run_id, best.run_id))) is not None:
                d = rev.flipped()
            if d is None:
                lines.append({"other": other, "delta": "—", "ci": "", "words": "not compared", "cls": "na"})
                continue
            words, cls = significance(d, best.label, other.label)
            lines.append({"other": other, "delta": pts(d.delta) + dagger(d.reliable),
                          "ci": ci(d.lo, d.hi, signed=True) if d.reliable else "", "reliable": d.reliable,
                          "words": words, "cls": cls, "n": d.n, "method": d.method, "mde": mde(d),
                          "ci_method": d.ci_method, "verdict": d.verdict})
        out.append({"corpus_name": cname, "best": best, "rate": totals[best.run_id].cer,
                    "n": totals[best.run_id].n, "reliable": totals[best.run_id].reliable, "lines": lines})
    return out


def _gates(con: duckdb.DuckDBPyConnection, sel: Selection) -> list[dict[str, Any]]:
    """The latest stored ship-gate decision for each (baseline, candidate) pair of selected runs."""
    from asr_eval.gate import stored_gates

    labels = {r.run_id: r for r in sel.runs}
    seen: set[tuple[str, str]] = set()
    out = []
    for g in stored_gates(con, sel.run_ids):
        key = (g["baseline_run"], g["candidate_run"])
        if key in seen or g["normalizer"] != sel.normalizer:
            continue
        seen.add(key)
        sl = g["details"].get("slices", [])
        out.append({**g, "baseline": labels[key[0]], "candidate": labels[key[1]], "cls": g["decision"].lower(),
                    "slices": sl, "n_slices": len(sl)})
    return out


def _protocols(con: duckdb.DuckDBPyConnection, sel: Selection) -> list[dict[str, Any]]:
    """The protocol matrix (``asr-eval protocols``) of the selected runs, where more than one protocol is stored."""
    from asr_eval.protocols import PROTOCOLS, REFERENCE, read_protocol_matrices

    labels = {r.run_id: r for r in sel.runs}
    out = []
    for mx in read_protocol_matrices(con, sel.run_ids):
        if len(mx.protocols) < 2:
            continue
        out.append({"mx": mx, "runs": [labels[r] for r in mx.runs], "about": PROTOCOLS, "reference": REFERENCE,
                    "flips": mx.ranking_flips, "verdict_flips": mx.verdict_flips})
    return out


def _slices(sel: Selection, attrs: dict[str, list[str]], srows: list[SliceRow], diffs: list[PairDiff],
            opt: ReportOptions) -> list[dict[str, Any]]:
    by_key: dict[tuple[str, str], dict[str, SliceRow]] = defaultdict(dict)
    for r in srows:
        by_key[(r.run_id, r.attr)][r.value] = r
    dmap: dict[tuple[str, str, str], dict[str, PairDiff]] = defaultdict(dict)
    for d in diffs:
        dmap[(d.run_a, d.run_b, d.attr)][d.value] = d
    out = []
    for cid, cname in sel.corpora:
        runs = sel.runs_of(cid)
        tables = []
        for attr in attrs.get(cid, []):
            per_run = {r.run_id: by_key[(r.run_id, attr)] for r in runs}
            values = {v for m in per_run.values() for v in m}
            if not values:
                continue
            n_of = {v: max((m[v].n for m in per_run.values() if v in m), default=0) for v in values}
            by_size = sorted(values, key=lambda v: (-n_of[v], _natural(v)))
            shown = sorted(by_size[: opt.max_slice_values], key=_natural)
            table = []
            for v in shown:
                cells = [per_run[r.run_id].get(v) for r in runs]
                stars = star_keys({i: (c.cer.value, c.reliable) for i, c in enumerate(cells) if c is not None})
                any_row = next(c for c in cells if c is not None)
                table.append({"value": v, "n": n_of[v], "hours": any_row.hours,
                              "cells": [{"run": r, "row": c, "best": i in stars}
                                        for i, (r, c) in enumerate(zip(runs, cells, strict=True))]})
            pairs = []
            for i, a in enumerate(runs):
                for b in runs[i + 1:]:
                    got = dmap.get((a.run_id, b.run_id, attr), {})
                    prow = []
                    for v in shown:
                        d = got.get(v)
                        words, cls = significance(d, a.label, b.label) if d else ("not compared", "na")
                        prow.append({"value": v, "d": d, "words": words, "cls": cls})
                    tested = [d for d in got.values() if d.reliable and d.p_adj is not None]
                    pairs.append({"a": a, "b": b, "rows": prow,
                                  "method": next((d.method for d in got.values()), ""),
                                  "ci_methods": sorted({d.ci_method for d in got.values() if d.ci_method}),
                                  "adj_method": next((d.adj_method for d in tested if d.adj_method), None),
                                  "n_tested": len(tested), "n_differ": sum(d.significant for d in tested),
                                  "n_thin": sum(not d.reliable for d in got.values()),
                                  "n_raw": sum(d.p_raw is not None and d.p_raw < 0.05 for d in tested)})
            plot_vals = set(by_size[: min(opt.plot_slice_values, opt.max_slice_values)])
            items = [CiItem(row["value"], r.label, r.color, c.cer.value, c.cer.lo, c.cer.hi, cell["best"], c.reliable)
                     for row in table if row["value"] in plot_vals
                     for r, cell in zip(runs, row["cells"], strict=True) if (c := cell["row"]) is not None]
            methods = {c.cer.method for m in per_run.values() for c in m.values() if c.cer.method}
            thin = sorted({v for m in per_run.values() for v, c in m.items() if not c.reliable}, key=_natural)
            tables.append({"attr": attr, "rows": table, "pairs": pairs, "n_values": len(values), "thin": thin,
                           "ci_methods": sorted({c.ci_method for m in per_run.values() for c in m.values()
                                                 if c.ci_method}),
                           "n_shown": len(shown), "methods": sorted(methods),
                           "plot": charts.ci_plot(f"CER by {attr}", items) if items else None,
                           "plot_capped": len(plot_vals) < len(shown)})
        out.append({"corpus_id": cid, "corpus_name": cname, "runs": runs, "tables": tables})
    return out


def _errors(sel: Selection, totals: dict[str, RunTotals], flags: list[dict[str, Any]],
            conf: dict[str, dict[str, list[queries.Confusion]]], srows: list[SliceRow],
            slices_view: list[dict[str, Any]]) -> dict[str, Any]:
    runs = [r for r in sel.runs if r.run_id in totals]
    sdi_rows = []
    for r in runs:
        t = totals[r.run_id]
        n = t.n_chars or 1
        sdi_rows.append((f"{r.label} ({r.corpus_name})" if len(sel.corpora) > 1 else r.label,
                         [("S", t.subs / n), ("D", t.dels / n), ("I", t.ins / n)]))
    names = sorted({f["flag"] for f in flags}, key=_flag_key)
    whole = {(f["run_id"], f["flag"]): f["n"] for f in flags if f["attr"] == ALL_ATTR}
    slice_n = {(r.run_id, r.attr, r.value): r.n for r in srows}
    per_slice: dict[tuple[str, str], dict[tuple[str, str], dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for f in flags:
        if f["attr"] != ALL_ATTR:
            per_slice[(f["attr"], f["value"])][(f["run_id"], f["flag"])] = f["n"]
    flag_slices = []
    for cv in slices_view:
        for tb in cv["tables"]:
            rows_ = []
            for row in tb["rows"]:
                for r in cv["runs"]:
                    counts = per_slice.get((tb["attr"], row["value"]), {})
                    n = slice_n.get((r.run_id, tb["attr"], row["value"]))
                    rows_.append({"value": row["value"], "run": r, "n": n,
                                  "counts": [counts.get((r.run_id, fl), 0) for fl in names]})
            flag_slices.append({"corpus_name": cv["corpus_name"], "attr": tb["attr"], "rows": rows_})
    return {
        "runs": runs, "totals": totals, "classes": CLASSES,
        "sdi_plot": charts.stacked_bars("Character errors by type (share of reference characters)", sdi_rows,
                                        {"S": OP_COLORS["S"], "D": OP_COLORS["D"], "I": OP_COLORS["I"]},
                                        reliable=[totals[r.run_id].reliable for r in runs])
        if sdi_rows else None,
        "flag_names": names,
        "flag_rows": [{"run": r, "n": totals[r.run_id].n, "counts": [whole.get((r.run_id, fl), 0) for fl in names]}
                      for r in runs],
        "flag_slices": flag_slices, "confusions": conf,
    }


def long_item_view(u: queries.WorstUtt, normalize, opt: ReportOptions) -> list[dict[str, Any]] | None:
    """For an item over 30 s: the diff windows around its worst regions, each with the excerpt
    (start_s, end_s) of audio to embed; None for a short item (drawn whole)."""
    if not u.duration_s or u.duration_s <= windows.LONG_ITEM_S:
        return None
    n_ref = sum(len(r) for _, r, _ in u.alignment)
    pieces = windows.windowed_view(u.alignment, windows.error_windows(u.alignment, opt.window_tokens,
                                                                      opt.n_windows))
    for p in pieces:
        w = p["window"]
        if w is not None:
            t0, t1, how = windows.window_times(w, n_ref, u.duration_s, u.ref_segments, normalize)
            p.update(t0=t0, t1=t1, located=how, excerpt=windows.excerpt_span(t0, t1, u.duration_s))
    return pieces


def worst_views(sel: Selection, worst: dict[str, list[queries.WorstUtt]], opt: ReportOptions) -> dict[str, Any]:
    from asr_eval.text import get_profile

    normalize = get_profile(sel.normalizer).normalize if sel.normalizer else None
    views = {(u.run_id, u.utt_id): long_item_view(u, normalize, opt) for us in worst.values() for u in us}

    def items(u: queries.WorstUtt) -> list[tuple]:
        v = views[(u.run_id, u.utt_id)]
        if v is None:
            return [(u.corpus_id, u.utt_id)]
        return [(u.corpus_id, u.utt_id, *p["excerpt"]) for p in v if p["window"] is not None]

    # Rank-major order: every run's worst utterance gets audio before anyone's second.
    wanted = [it for rank in range(opt.worst_n) for r in sel.runs
              for u in worst.get(r.run_id, [])[rank:rank + 1] for it in items(u)]
    emb = embed_audio(wanted, {r.corpus_id: r.corpus_path for r in sel.runs}, opt.audio_cap_bytes)
    per_run = []
    for r in sel.runs:
        utts = []
        for u in worst.get(r.run_id, []):
            key = (u.corpus_id, u.utt_id)
            view = views[(u.run_id, u.utt_id)]
            for p in view or []:
                if p["window"] is not None:
                    it = (u.corpus_id, u.utt_id, *p["excerpt"])
                    p.update(audio=emb.keys.get(it), audio_missing=emb.missing.get(it))
            utts.append({"u": u, "tokens": u.alignment[: opt.max_tokens] if view is None else [],
                         "truncated": max(0, len(u.alignment) - opt.max_tokens) if view is None else 0,
                         "windows": view,
                         "audio": emb.keys.get(key), "audio_missing": emb.missing.get(key)})
        per_run.append({"run": r, "utts": utts})
    return {"per_run": per_run, "audio": emb, "n_embedded": len(emb.uris), "n_missing": len(emb.missing)}


def _spec(run: queries.TrainingRun | None, key: str, name: str, color: str, dashed: bool = False,
          scale: float = 1.0) -> list[SeriesSpec]:
    """One curve of a training run as chart input (none when the run or the curve is missing)."""
    s = run.series.get(key) if run else None
    if s is None:
        return []
    return [SeriesSpec(name, color, s.steps, [v * scale for v in s.values], dashed,
                       [v * scale for v in s.lo], [v * scale for v in s.hi])]


def _training(con: duckdb.DuckDBPyConnection, sel: Selection, opt: ReportOptions) -> dict[str, Any]:
    ids = queries.training_run_ids(con, sel, explicit=bool(opt.runs))
    runs = queries.training_runs(con, ids, opt.max_curve_points)
    alert_list = queries.alerts(con, ids)
    by_run: dict[str, list[queries.Alert]] = defaultdict(list)
    for a in alert_list:
        by_run[a.training_run_id].append(a)
    shown = []
    for tid in ids:
        tr = runs.get(tid)
        if tr is None:
            continue
        bl = runs.get(tr.baseline_run_id) if tr.baseline_run_id else None
        marks = [Marker(a.step, f"{a.severity}: {a.rule} @ {a.step}", SEVERITY_COLORS.get(a.severity.lower(), "#64748b"))
                 for a in by_run[tid] if a.step is not None]

        bname = f"{bl.name or bl.training_run_id} (baseline)" if bl else ""
        nf = {m: [Marker(step, f"non-finite {m} at step {step}", SEVERITY_COLORS["critical"])
                  for step, mm in tr.nonfinite if mm == m] for m in ("loss", "grad_norm")}
        plots = [
            charts.line_plot("Loss", _spec(tr, "loss", "train loss", TRAIN_COLORS["run"])
                             + _spec(tr, "eval_loss", "eval loss", TRAIN_COLORS["eval"])
                             + _spec(bl, "loss", f"{bname}, train", TRAIN_COLORS["baseline"], True),
                             marks, nf["loss"], empty="no loss logged"),
            charts.line_plot("Gradient norm", _spec(tr, "grad_norm", "grad norm", TRAIN_COLORS["run"])
                             + _spec(bl, "grad_norm", bname, TRAIN_COLORS["baseline"], True),
                             marks, nf["grad_norm"], empty="no gradient norm logged"),
            charts.line_plot("Eval CER (%)", _spec(tr, "cer", "eval CER", TRAIN_COLORS["eval"], scale=100)
                             + _spec(bl, "cer", bname, TRAIN_COLORS["baseline"], True, scale=100),
                             marks, log_y=False, empty="no evaluation logged"),
        ]
        shown.append({"tr": tr, "baseline": bl, "plots": plots, "alerts": by_run[tid]})
    return {"runs": shown, "alerts": alert_list, "n_alerts": len(alert_list), "explicit": bool(opt.runs)}


def headline_markdown(sel: Selection, totals: dict[str, RunTotals]) -> str:
    """The headline table as Markdown (for a Prefect artifact or a terminal)."""
    lines = ["| corpus | model | n | CER % [95% CI] | MER % [95% CI] | RTFx |", "|---|---|---:|---|---|---:|"]
    thin = False
    for r in sel.runs:
        t = totals.get(r.run_id)
        if t is None:
            continue
        rtfx = f"{r.rtfx:.1f}" if r.rtfx else "—"
        cer, mer = ((f"{pct(x.value)} {ci(x.lo, x.hi)}" if t.reliable else f"{pct(x.value)} †") for x in (t.cer, t.mer))
        lines.append(f"| {r.corpus_name} | {r.label} | {t.n} | {cer} | {mer} | {rtfx} |")
        thin = thin or not t.reliable
    return "\n".join(lines) + ("\n\n† insufficient data (too few utterances or reference characters): the point "
                               "estimate only, no interval" if thin else "") + f"\n\nnormalizer: {sel.normalizer}\n"


# ───────────────────────────── rendering ─────────────────────────────


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("asr_eval.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=pct, pts=pts, ci=ci, num=num, size=size, mde=mde, insufficient=insufficient)
    env.globals.update(op_colors=OP_COLORS, severity_colors=SEVERITY_COLORS, no_diff=NO_DIFF)
    return env


def _static(name: str) -> str:
    return resources.files("asr_eval.report").joinpath("static", name).read_text(encoding="utf-8")


def render(con: duckdb.DuckDBPyConnection, options: ReportOptions = ReportOptions(),
           db_label: str = "") -> tuple[str, dict[str, Any]]:
    """Query the store and render the report; returns (html, context)."""
    check_store(con, db_label or "the database")
    sel = select(con, options.runs, options.corpora, options.normalizer)
    totals = queries.run_totals(con, sel)
    attrs = queries.slice_attrs(con, sel) if sel.runs else {}
    srows = queries.slice_rows(con, sel, attrs)
    diffs = queries.pair_diffs(con, sel, attrs, queries.side_evidence(totals, srows))
    slices_view = _slices(sel, attrs, srows, diffs, options)
    stride = {r: math.ceil(t.n_err_utts / options.confusion_utts) for r, t in totals.items()
              if t.n_err_utts > options.confusion_utts}
    errors = _errors(sel, totals, queries.flag_counts(con, sel),
                     queries.confusions(con, sel, options.top_confusions, stride), srows, slices_view)
    errors["confusion_stride"] = stride
    worst = worst_views(sel, queries.worst_utterances(con, sel, options.worst_n), options)
    training = _training(con, sel, options)
    js = _static("report.js")
    ctx = {
        "title": options.title, "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "db": db_label, "version": __version__, "sel": sel, "totals": totals, "options": options,
        "verdicts": _verdicts(sel, totals, diffs), "headline": _headline(sel, totals), "slices": slices_view,
        "gates": _gates(con, sel) if sel.runs else [],
        "protocols": _protocols(con, sel),
        "standard": standard_view(con, sel.run_ids, sel.normalizer or "zh-v1"),
        "errors": errors, "worst": worst, "training": training,
        "engines": engine_view(con, [r.run_id for r in sel.runs], sel.normalizer or "zh-v1",
                               sorted({a for v in attrs.values() for a in v})),
        "streaming": stream_view(con, sel.run_ids, sel.normalizer or "zh-v1", {r.run_id: r.color for r in sel.runs}),
        "hallucination": hallucination_view(con, sel.runs, sel.normalizer or "zh-v1", options.max_slice_values),
        "taxonomy": taxonomy_view(con, sel, sel.normalizer or "zh-v1"),
        "run_by_id": {r.run_id: r for r in sel.runs},
        "css": Markup(_static("report.css")), "js": Markup(js),
        # CSP: only our own script (by hash) may run, and nothing may be fetched from anywhere.
        "script_hash": base64.b64encode(hashlib.sha256(js.encode()).digest()).decode(),
    }
    html = _env().get_template("report.html.j2").render(**ctx)
    return html, ctx


def build_report(db: str | Path | duckdb.DuckDBPyConnection, out: str | Path,
                 options: ReportOptions = ReportOptions()) -> ReportResult:
    """Build the self-contained HTML report from a store (a path, opened read-only, or an open connection)."""
    t0 = time.perf_counter()
    own = not isinstance(db, duckdb.DuckDBPyConnection)
    con = connect(db, read_only=True) if own else db
    try:
        html, ctx = render(con, options, db_label=str(db) if own else "")
    finally:
        if own:
            con.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)  # never leave a half-written report where the last good one was
    sel: Selection = ctx["sel"]
    empty = [name for name, is_empty in (
        ("runs", not sel.runs), ("slices", not any(c["tables"] for c in ctx["slices"])),
        ("training", not ctx["training"]["runs"]), ("alerts", not ctx["training"]["alerts"])) if is_empty]
    emb = ctx["worst"]["audio"]
    return ReportResult(path=out, size_bytes=out.stat().st_size, n_runs=len(sel.runs), n_corpora=len(sel.corpora),
                        n_training_runs=len(ctx["training"]["runs"]), audio_embedded=len(emb.uris),
                        audio_bytes=emb.total_bytes, audio_left_out=len(emb.missing),
                        elapsed_s=round(time.perf_counter() - t0, 3),
                        headline_markdown=headline_markdown(sel, ctx["totals"]), empty_sections=tuple(empty))





__all__ = ["NO_DIFF", "ReportOptions", "ReportResult", "build_report", "headline_markdown", "mde", "render",
           "significance"]
