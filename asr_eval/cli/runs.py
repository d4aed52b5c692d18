"""`asr-eval runs`: the stored evaluation runs and what distinguishes them — kind, model, engine,
engine options, recipe, long-form strategy or streaming policy with its parameters — with the short
id every command accepts back (``asr_eval.store.runs``)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from asr_eval.cli import app, console, print_table
from asr_eval.store import DEFAULT_DB, connect
from asr_eval.store.runs import KINDS, StoredRun, filter_runs, stored_runs


def short_compute(compute_type: str | None) -> str:
    """float32 → fp32, int8_float16 → int8/fp16 (tables only; the store keeps the full name)."""
    return "/".join(p.replace("float", "fp").replace("bfp", "bf") for p in (compute_type or "").split("_"))


def _human_time(ts: datetime | None) -> str:
    if ts is None:
        return "—"
    return ts.strftime("%H:%M") if ts.date() == datetime.now().date() else ts.strftime("%b %d %H:%M")


def _engine(r: StoredRun) -> str:
    if r.kind == "imported":
        return "—"
    eng = f"{r.engine or 'transformers'} {short_compute(r.compute_type)}".strip()
    return eng + (f" {r.device}" if r.device and r.device != "cpu" else "")


def _recipe(r: StoredRun) -> str:
    if r.kind == "imported":
        return "—"
    recipe = r.recipe or "greedy"
    return recipe if (r.preprocessing or "pad-audio") == "pad-audio" else f"{recipe} ({r.preprocessing})"


def runs_table(runs: list[StoredRun], full: bool = False, normalizer: str = "zh-v1") -> Table:
    """One row per run: short id (full with ``full``), kind, model, engine, options (when a run has
    some), recipe, strategy/policy (when a run has one), corpus/split (when several), n, CER, RTFx, when."""
    from asr_eval.engines.options import describe

    corpora = {(r.corpus_id, r.split or "all") for r in runs}
    one = len(corpora) == 1
    title = None
    if one:
        cid, split = next(iter(corpora))
        title = f"runs on {cid if full else cid.split('@')[0]} ({split})"
    t = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, padding=(0, 1),
              collapse_padding=True, pad_edge=False)
    with_opts = any(r.engine_options for r in runs)
    with_mode = any(r.mode != "short" for r in runs)
    # Short cells never wrap; the long ones wrap at spaces (folding only a word longer than the column), so a
    # narrow table (a small terminal, --width) keeps every column and every name whole.
    fixed, wraps, right = {"no_wrap": True}, {"overflow": "fold"}, {"no_wrap": True, "justify": "right"}
    cols = [("run", fixed), ("kind", fixed), ("model", wraps), ("engine", wraps)]
    cols += [("options", wraps)] if with_opts else []
    cols += [("recipe", wraps)] + ([("strategy / policy", wraps)] if with_mode else [])
    cols += [] if one else [("corpus/split", wraps)]
    cols += [("n", right), ("CER %" if normalizer == "zh-v1" else f"CER % ({normalizer})", right), ("RTFx", right),
             ("when", fixed)]
    for c, kw in cols:
        t.add_column(c, **kw)
    for r in runs:
        row = [r.run_id if full else r.short_id, r.kind, r.model, _engine(r)]
        row += [describe(r.engine_options)] if with_opts else []
        row += [_recipe(r)] + (["—" if r.mode == "short" else r.mode] if with_mode else [])
        row += [] if one else [f"{r.corpus_id if full else r.corpus_id.split('@')[0]}/{r.split or 'all'}"]
        row += [f"{r.n_utts or 0}" + (f" ({r.n_missing} missing)" if r.n_missing else ""),
                "—" if r.cer is None else f"{100 * r.cer:.2f}", "—" if not r.rtfx else f"{r.rtfx:.1f}",
                _human_time(r.when) if r.status == "done" else r.status]
        t.add_row(*row)
    return t


@app.command("runs")
def runs_cmd(
    corpus: Annotated[list[str] | None, typer.Option(help="Only runs on this corpus (id, name or shard dir; "
                                                          "repeatable)")] = None,
    model: Annotated[list[str] | None, typer.Option(help="Only runs of this model (name, display name or model id; "
                                                         "repeatable)")] = None,
    kind: Annotated[list[str] | None, typer.Option(help=f"Only runs of this kind: {', '.join(KINDS)} (streaming "
                                                        "includes imported streaming logs; repeatable)")] = None,
    full: Annotated[bool, typer.Option(help="Full run ids and corpus ids")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list, one object per run with every field "
                                                         "(full ids, parameters, numbers as numbers)")] = False,
    width: Annotated[int | None, typer.Option(help="Table width in columns (default: COLUMNS, else the terminal's; "
                                                   "off a terminal, as wide as the table needs)", min=40)] = None,
    normalizer: Annotated[str, typer.Option(help="Normalizer of the CER column")] = "zh-v1",
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
) -> None:
    """List stored evaluation runs, oldest first: what distinguishes them (kind, engine, options, recipe, long-form
    strategy or streaming policy) and the short id every command accepts (`errors --run`, `gate`, `report --runs`)."""
    con = connect(db, read_only=True)
    try:
        runs = stored_runs(con, normalizer)
    finally:
        con.close()
    shown = filter_runs(runs, corpus or (), model or (), kind or ())[::-1]
    if as_json:
        typer.echo(json.dumps([r.as_json() for r in shown], ensure_ascii=False, indent=1))
        return
    if not shown:
        console.print("no runs match these filters; `asr-eval runs` lists them all" if runs else
                      "the store holds no runs yet: score one with `asr-eval score`")
        return
    print_table(runs_table(shown, full, normalizer), width)
