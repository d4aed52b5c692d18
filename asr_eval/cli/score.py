"""`asr-eval score` and `asr-eval rescore`: per-slice CER/MER with 95% CIs and paired A/B tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from asr_eval.cli import app, console
from asr_eval.store import DEFAULT_DB, connect


def _pct(x: float | None) -> str:
    return "—" if x is None or x != x else f"{100 * x:.2f}"


def _pts(x: float | None) -> str:
    return "—" if x is None or x != x else f"{100 * x:+.2f}"


def _rate_cell(cer: float | None, lo: float | None, hi: float | None, reliable: bool | None) -> str:
    if reliable is False:  # the point estimate, but its interval is not evidence
        return f"{_pct(cer)} [dim][{_pct(lo)}–{_pct(hi)}]†[/]"
    return f"{_pct(cer)} [{_pct(lo)}–{_pct(hi)}]"


def selection_flags(con, run_ids: list[str]) -> dict[str, str]:
    """Runs scored on the split their checkpoint was selected on (models.selection_split)."""
    found = con.execute(
        f"""SELECT r.run_id, m.selection_split FROM eval_runs r JOIN models m USING (model_id)
            WHERE r.run_id IN ({', '.join('?' * len(run_ids))}) AND m.selection_split IS NOT NULL
              AND m.selection_split = coalesce(r.split, 'all')""", run_ids).fetchall()
    return {r: f"selected on this split ({split}): optimistic" for r, split in found}


def print_results(db: Path, run_ids: list[str], normalizer: str, slices: list[str] | None = None,
                  all_slices: bool = False) -> None:
    """Terminal tables: one per slice attribute (n, hours, CER ± CI per model; † marks slices with
    insufficient data) + paired A/B deltas with multiplicity-adjusted verdicts and the smallest
    detectable difference. Only slices that differ after correction are listed unless ``all_slices``."""
    from asr_eval.metrics.stats import ADJUSTMENTS
    from asr_eval.slices import ALL_ATTR, stored_comparisons, stored_slice_metrics, value_key

    con = connect(db, read_only=True)
    try:
        names = dict(con.execute(
            "SELECT r.run_id, m.name FROM eval_runs r JOIN models m USING (model_id) WHERE r.run_id IN "
            f"({', '.join('?' * len(run_ids))})", run_ids).fetchall())
        rows = stored_slice_metrics(con, run_ids, normalizer)
        cmps = stored_comparisons(con, run_ids, normalizer, metric="cer")
        flags = selection_flags(con, run_ids)
    finally:
        con.close()
    for r, words in flags.items():
        console.print(f"[bold yellow]note:[/] {names.get(r, r)} (run {r}) was {words} — its score on this split is "
                      "biased downwards; compare on a split it was not selected on")
    by_attr: dict[str, dict[str, dict]] = {}
    methods: dict[str, set[str]] = {}
    thin = 0
    for row in rows:
        cell = by_attr.setdefault(row["slice_attr"], {}).setdefault(row["slice_value"], {"n": row["n"], "hours": row["hours"]})
        cell[row["run_id"]] = row
        methods.setdefault(row["slice_attr"], set()).add(row["ci_method"] or "utterance")
        thin += row["reliable"] is False
    order = [ALL_ATTR] + sorted(a for a in by_attr if a != ALL_ATTR)
    for attr in order:
        if attr not in by_attr or (slices and attr != ALL_ATTR and attr not in slices):
            continue
        how = ", ".join(sorted(methods.get(attr, ())))
        title = (f"all utterances — normalizer {normalizer}" if attr == ALL_ATTR else f"by {attr}") + f" ({how} resampling)"
        t = Table(title=title, title_justify="left", header_style="bold")
        t.add_column(attr if attr != ALL_ATTR else "", style="cyan")
        t.add_column("n", justify="right")
        t.add_column("hours", justify="right")
        for r in run_ids:
            t.add_column(f"{names.get(r, r)}{' (selected here)' if r in flags else ''}\nCER % [95% CI]", justify="right")
        if attr == ALL_ATTR:
            for r in run_ids:
                t.add_column(f"{names.get(r, r)}\nMER %", justify="right")
        for value in sorted(by_attr[attr], key=value_key):
            cell = by_attr[attr][value]
            ok = [cell[r]["cer"] for r in run_ids if r in cell and cell[r]["cer"] is not None and cell[r]["reliable"] is not False]
            best = min(ok, default=None)
            line = [value if attr != ALL_ATTR else "all", str(cell["n"]), f"{cell['hours'] or 0:.3f}"]
            for r in run_ids:
                if r not in cell:
                    line.append("—")
                    continue
                c = cell[r]
                txt = _rate_cell(c["cer"], c["cer_lo"], c["cer_hi"], c["reliable"])
                line.append(f"[bold green]{txt}[/]" if len(run_ids) > 1 and c["cer"] == best else txt)
            if attr == ALL_ATTR:
                line += [_rate_cell(cell[r]["mer"], cell[r]["mer_lo"], cell[r]["mer_hi"], cell[r]["reliable"])
                         if r in cell else "—" for r in run_ids]
            t.add_row(*line)
        console.print(t)
    if thin:
        console.print("[dim]† insufficient data (fewer than the minimum utterances or reference characters): the point "
                      "estimate is shown, its interval is not evidence and it gets no verdict[/]")
    if len(run_ids) > 1 and cmps:
        _print_pairs(cmps, names, slices, all_slices, ADJUSTMENTS)


def _print_pairs(cmps: list[dict], names: dict, slices: list[str] | None, all_slices: bool, adjustments: dict) -> None:
    from asr_eval.metrics.stats import mde_text
    from asr_eval.slices import ALL_ATTR, slice_label

    t = Table(title="paired A/B on CER (B − A, points; paired bootstrap 95% CI; p adjusted per slice column)",
              title_justify="left", header_style="bold")
    for c in ("A", "B", "slice", "n", "Δ CER", "95% CI", "not detectable under", "p adj.", "verdict"):
        t.add_column(c, justify="right" if c in ("n", "Δ CER", "95% CI", "not detectable under", "p adj.") else "left")
    tested = differ = raw_hits = thin = hidden = 0
    families: set[tuple] = set()
    methods: set[str] = set()
    for c in cmps:
        attr = c["slice_attr"]
        if slices and attr != ALL_ATTR and attr not in slices:
            continue
        reliable = c["reliable"] is not False
        is_tested = reliable and c["p_adj"] is not None
        sig = is_tested and c["p_adj"] < 0.05 and (c["delta_lo"] > 0 or c["delta_hi"] < 0)
        if c["adj_method"]:
            methods.add(c["adj_method"])
        if attr != ALL_ATTR:
            families.add((c["run_a"], c["run_b"], attr))
            tested += is_tested
            differ += sig
            raw_hits += is_tested and c["p_raw"] is not None and c["p_raw"] < 0.05
            thin += not reliable
            if not (all_slices or sig):
                hidden += 1
                continue
        style = "" if not sig else ("green" if c["delta_hi"] < 0 else "red")
        d = _pts(c["delta"])
        t.add_row(names.get(c["run_a"], c["run_a"]), names.get(c["run_b"], c["run_b"]),
                  slice_label(attr, c["slice_value"]), str(c["n"]), f"[{style}]{d}[/]" if style else d,
                  f"{_pts(c['delta_lo'])} … {_pts(c['delta_hi'])}", _pct(c["mde"]),
                  "—" if c["p_adj"] is None else f"{c['p_adj']:.3g}", c["verdict"] or "")
    console.print(t)
    for c in cmps:
        if c["slice_attr"] == ALL_ATTR and c["mde"] is not None:
            console.print(f"{names.get(c['run_a'], c['run_a'])} vs {names.get(c['run_b'], c['run_b'])}, all utterances: "
                          f"{mde_text(c['mde'])} ({c['ci_method'] or 'utterance'} resampling)")
    how = " / ".join(adjustments[m][1] for m in sorted(methods) if m in adjustments) or "Holm"
    console.print(f"{tested} slice comparison{'s' if tested != 1 else ''} tested in {len(families)} famil"
                  f"{'ies' if len(families) != 1 else 'y'} ({how} correction per pair × slice column): "
                  f"[bold]{differ}[/] differ after correction ({raw_hits} at p < 0.05 before)"
                  + (f"; {thin} with insufficient data not tested" if thin else "") + ".")
    if hidden:
        console.print(f"[dim]{hidden} per-slice comparisons without a difference after correction not shown — "
                      "`--all-slices` lists them all (they are in the comparisons table and the report)[/]")


@app.command("score")
def score_cmd(
    corpus: Annotated[Path, typer.Option(help="Ingested corpus directory (from `asr-eval ingest`)")],
    model: Annotated[list[str], typer.Option("--model", "-m", help="Hub id, local checkpoint dir or "
                                             "bundled:whisper-base (repeat to compare)")],
    split: Annotated[str, typer.Option(help="Split to score ('auto': test if present, else all; 'all')")] = "auto",
    slices: Annotated[str | None, typer.Option(help="Comma-separated slice columns (default: every column "
                                                    "with ≤50 values, plus duration_bucket)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default: chosen from device memory")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    normalizer: Annotated[str, typer.Option(help="Normalizer profile")] = "zh-v1",
    num_beams: Annotated[int, typer.Option(help="1 = greedy")] = 1,
    max_new_tokens: Annotated[int, typer.Option(help="Generation cap (guards against repetition loops)")] = 128,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates")] = 1000,
    ci_method: Annotated[str, typer.Option(help="auto: resample speakers where speakers are known for ≥ 50% of a "
                                                "slice (≥ 10 blocks), else utterances | utterance")] = "auto",
    min_utts: Annotated[int, typer.Option(help="Slices with fewer utterances get no verdict")] = 20,
    min_ref_chars: Annotated[int, typer.Option(help="Slices with fewer reference characters get no verdict")] = 200,
    adjust: Annotated[str, typer.Option(help="Multiplicity adjustment per pair × slice column: holm | bh")] = "holm",
    all_slices: Annotated[bool, typer.Option("--all-slices", help="List every slice comparison, not only "
                                                                   "those that differ after correction")] = False,
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
    parts: Annotated[Path | None, typer.Option(help="Where inference parts go (default: beside the DB)")] = None,
) -> None:
    """Transcribe a corpus split with one or more models and score it per slice."""
    from asr_eval.inference import DecodeParams
    from asr_eval.scoring import score_models

    params = DecodeParams(num_beams=num_beams, max_new_tokens=max_new_tokens)
    sl = [s.strip() for s in slices.split(",") if s.strip()] if slices else None
    run_ids = score_models(corpus, model, db, split=None if split == "all" else split, slices=sl,
                           batch_size=batch_size, device=device, normalizer=normalizer, params=params,
                           parts_root=parts, n_boot=n_boot, ci_method=ci_method, min_utts=min_utts,
                           min_ref_chars=min_ref_chars, adjust=adjust)
    print_results(db, run_ids, normalizer, sl, all_slices)
    console.print(f"store: [bold]{db}[/]  runs: {', '.join(run_ids)}")


@app.command("rescore")
def rescore_cmd(
    normalizer: Annotated[str, typer.Option(help="Normalizer profile to rescore with")] = "zh-v1",
    run: Annotated[list[str] | None, typer.Option("--run", help="Run ids (default: every run)")] = None,
    slices: Annotated[str | None, typer.Option(help="Comma-separated slice columns")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates")] = 1000,
    all_slices: Annotated[bool, typer.Option("--all-slices", help="List every slice comparison")] = False,
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
) -> None:
    """Re-normalize and rescore stored hypotheses with another normalizer — no inference. Each run keeps the
    interval method (speaker-block / utterance) it was scored with."""
    from asr_eval.scoring import rescore

    sl = [s.strip() for s in slices.split(",") if s.strip()] if slices else None
    con = connect(db)
    try:
        ids = rescore(con, normalizer, run, sl, n_boot)
    finally:
        con.close()
    print_results(db, ids, normalizer, sl, all_slices)


@app.command("runs")
def runs_cmd(db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB) -> None:
    """List stored evaluation runs."""
    con = connect(db, read_only=True)
    try:
        rows = con.execute(
            """SELECT r.run_id, m.name, r.corpus_id, coalesce(r.split, 'all'), r.n_utts, r.device, r.dtype,
                      round(r.rtfx, 1), r.finished_at
               FROM eval_runs r JOIN models m USING (model_id) ORDER BY r.finished_at""").fetchall()
    finally:
        con.close()
    t = Table(header_style="bold")
    for c in ("run", "model", "corpus", "split", "n", "device", "dtype", "RTFx", "finished"):
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(x) for x in r])
    console.print(t)
