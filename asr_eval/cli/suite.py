"""`asr-eval suite`: every standard Mandarin test set under a folder, every model, one table —
and our numbers beside the published ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from asr_eval.cli import app, console, print_table
from asr_eval.cli.score import _pct, _rate_cell
from asr_eval.store import DEFAULT_DB


def print_found(found, missing, empty=()) -> None:
    t = Table(title="standard test sets found", title_justify="left", header_style="bold")
    for c in ("corpus", "folder", "test sets"):
        t.add_column(c)
    for f in found:
        t.add_row(f.name, escape(str(f.path)), ", ".join(x.key for x in f.test_sets))
    print_table(t)
    if empty:
        console.print(f"[yellow]found but empty:[/] {', '.join(empty)}")
    if missing:
        console.print(f"[dim]not found (fine): {', '.join(t.key for t in missing)}[/]")


def print_matrix(cells) -> None:
    """Model × test set: CER % [95 % CI] (n); † = too little data for an interval."""
    sets = list(dict.fromkeys(c.test_set for c in cells))
    models = list(dict.fromkeys(c.model for c in cells))
    at = {(c.model, c.test_set): c for c in cells}
    t = Table(title="CER % [95% CI] by model × test set", title_justify="left", header_style="bold")
    t.add_column("model")
    for s in sets:
        t.add_column(s, justify="right")
    for m in models:
        row = [escape(m)]
        for s in sets:
            c = at.get((m, s))
            row.append("—" if c is None else f"{_rate_cell(c.cer, c.lo, c.hi, c.reliable)}\n[dim]n={c.n} {c.run_id[-8:]}[/]")
        t.add_row(*row)
    print_table(t)


def print_published(views) -> None:
    t = Table(title="ours beside published results (CER %)", title_justify="left", header_style="bold")
    for c, j in (("test set", "left"), ("model", "left"), ("ours", "right"), ("ours, their protocol", "right"),
                 ("published", "right"), ("gap", "right"), ("source", "left"), ("protocol differences", "left")):
        t.add_column(c, justify=j)
    for v in views:
        for run, pairs in v.runs:
            ours = _rate_cell(run.cer, run.lo, run.hi, run.reliable)
            if not pairs:
                t.add_row(v.test_set.key, escape(run.label), ours, "", "[dim]none published[/]", "", "", "")
            for p in pairs:
                their = ("—" if p.ours_their_protocol is None
                         else f"{_pct(p.ours_their_protocol)} ({p.profile})")
                t.add_row(v.test_set.key, escape(run.label), ours, their, _pct(p.published_cer),
                          f"{100 * p.gap:+.2f}", escape(p.source_title),
                          escape("; ".join(p.differences) or "none stated"))
    print_table(t)
    for v in views:
        if v.others:
            console.print(f"[dim]{v.test_set.key}, published for models not scored here: " + ", ".join(
                f"{p.model.removeprefix('openai/')} {p.cer:.2f}" for p in v.others) + "[/]")


@app.command("suite")
def suite_cmd(
    root: Annotated[Path, typer.Option(help="Folder holding public Mandarin corpora as downloaded (AISHELL-1/2, "
                                            "WenetSpeech, KeSpeech, MagicData-RAMC, THCHS-30, aidatatang_200zh, "
                                            "Common Voice zh-CN/zh-TW/zh-HK), searched 3 levels down")],
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model (hub id, folder, bundled:…, ct2:…); "
                                                                          "repeat for several")] = None,
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
    work: Annotated[Path | None, typer.Option(help="Where the ingested test sets are cached "
                                                   "(default: suite/ beside the store)")] = None,
    test_set: Annotated[list[str] | None, typer.Option("--set", help="Only these test sets, by key (e.g. "
                                                       "aishell-1/test, wenetspeech/dev); default every test split")] = None,
    engine: Annotated[str, typer.Option(help="Engine(s), comma-separated")] = "transformers",
    compute_type: Annotated[str, typer.Option(help="Compute type(s), comma-separated")] = "auto",
    preprocessing: Annotated[str, typer.Option(help="pad-audio | pad-features")] = "pad-audio",
    recipe: Annotated[str, typer.Option(help="Decode recipe(s), comma-separated")] = "greedy",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: the engine's)")] = None,
    normalizer: Annotated[str, typer.Option(help="Normalizer profile of our numbers")] = "zh-v1",
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates")] = 1000,
    workers: Annotated[int, typer.Option(help="Ingest decoder processes (0 = one per core)")] = 0,
    list_only: Annotated[bool, typer.Option("--list", help="Only list the test sets found; ingest and score nothing")] = False,
) -> None:
    """Find the standard Mandarin test sets under --root, ingest their test splits (cached), score every
    model on each (runs, slices, intervals, comparisons as `score`), re-score under the published results'
    protocols, and print model × test set and ours beside the published numbers."""
    from asr_eval.errors import AsrEvalError
    from asr_eval.suite import SuiteOptions, comparisons, discover, missing, run_suite

    if list_only:
        found = discover(root)
        print_found(found, missing(found))
        return
    if not model:
        raise AsrEvalError("name at least one model: --model openai/whisper-large-v3 (repeat for several)")
    opts = SuiteOptions(engine, compute_type, preprocessing, recipe, device, batch_size, normalizer, n_boot, workers,
                        tuple(test_set or ()))
    res = run_suite(root, model, db, work, opts, say=lambda s: console.print(escape(s)))
    print_found(res.found, res.missing, res.empty)
    if not res.cells:
        console.print(f"no standard test set found under {escape(str(root))}: see the folders each corpus needs "
                      "in docs/standard-test-sets.md (`asr-eval suite --list` shows what is recognised)")
        return
    print_matrix(res.cells)
    from asr_eval.store import connect

    con = connect(db, read_only=True)
    try:
        views = comparisons(con, res.run_ids, normalizer)
    finally:
        con.close()
    print_published(views)
    console.print(f"report: asr-eval report --db {escape(str(db))} (section “Standard test sets”)")
