"""`asr-eval protocols`: CER of every stored run under several scoring protocols (no inference)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from asr_eval.cli import app, console, print_table
from asr_eval.store import DEFAULT_DB, connect


def print_matrices(matrices) -> None:
    from asr_eval.protocols import PROTOCOLS, REFERENCE

    for mx in matrices:
        t = Table(title=escape(f"CER % by scoring protocol — {mx.corpus_id} [{mx.split or 'all'}] (rank in brackets)"),
                  title_justify="left", header_style="bold")
        t.add_column("model / run")
        for p in mx.protocols:
            t.add_column(p, justify="right")
        for r in mx.runs:
            line = [f"{mx.names[r]}\n[dim]{r}[/]"]
            for p in mx.protocols:
                c = mx.cells.get((r, p))
                if c is None or c.cer is None:
                    line.append("—")
                    continue
                ci = f"[{100 * c.lo:.2f}–{100 * c.hi:.2f}]" if c.reliable and c.lo is not None else "†"
                txt = f"{100 * c.cer:.2f} {ci} (#{c.rank})"
                line.append(f"[bold]{txt}[/]" if c.best else txt)
            t.add_row(*line)
        print_table(t)
        if any(not c.reliable for c in mx.cells.values() if c.cer is not None):
            console.print("[dim]† insufficient data (too few utterances or reference characters): the CER alone, "
                          "no interval and no verdict[/]")
        for p in mx.protocols:
            console.print(f"[dim]{p}: {PROTOCOLS.get(p, '')}[/]")
        if len(mx.runs) < 2:
            continue
        flips = mx.ranking_flips
        console.print(f"ranking flips against {REFERENCE} under: [bold red]{', '.join(flips)}[/]" if flips
                      else f"the ranking is the same under every protocol as under {REFERENCE}")
        vf = mx.verdict_flips
        for a, b, p, ref, got in vf:
            console.print(f"verdict flips: {mx.names[a]} vs {mx.names[b]} — {REFERENCE}: {ref}; {p}: [bold]{got}[/]")
        if not vf:
            console.print("no paired verdict flips between protocols")


@app.command("protocols")
def protocols_cmd(
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
    corpus: Annotated[str | None, typer.Option(help="Corpus id, name or shard dir (default: every corpus)")] = None,
    protocol: Annotated[list[str] | None, typer.Option("--protocol", help="Protocols (normalizer profiles) to "
                                                       "compare (repeat; default: the five built-in ones)")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates")] = 1000,
) -> None:
    """Score every stored run under named protocols (zh-v1, zh-v1-keepnum, none, punct-t2s, whisper-basic) from its
    stored hypotheses; show CER per run × protocol and whether the ranking or any verdict flips."""
    from asr_eval.protocols import PROTOCOLS, compute_protocols

    con = connect(db)
    try:
        matrices = compute_protocols(con, corpus, protocol or tuple(PROTOCOLS), n_boot=n_boot)
    finally:
        con.close()
    if not matrices:
        console.print("no finished runs in the store: run `asr-eval score` first")
        return
    print_matrices(matrices)
