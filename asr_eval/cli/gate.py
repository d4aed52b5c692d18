"""`asr-eval gate`: the ship gate (non-inferiority of a candidate against a baseline), exit 0 / 1 / 3."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from asr_eval.cli import app, console, print_table
from asr_eval.store import DEFAULT_DB, connect

STYLE = {"PASS": "bold green", "FAIL": "bold red", "INCONCLUSIVE": "bold yellow"}
STATUS = {"within": "[green]within margin[/]", "worse": "[red]worse by > margin[/]",
          "undecided": "[yellow]undecided[/]", "insufficient": "[dim]insufficient data[/]"}


def print_gate(res) -> None:
    m = res.metric.upper()
    console.print(f"[{STYLE[res.decision]}]{res.decision}[/]  candidate [bold]{res.candidate_run}[/] vs baseline "
                  f"[bold]{res.baseline_run}[/] — margin {res.margin:g} points {m}, normalizer {res.normalizer}")
    console.print(res.summary)
    t = Table(title=f"candidate − baseline, points {m} (paired bootstrap, 95% CI; positive: candidate worse)",
              title_justify="left", header_style="bold")
    for c in ("slice", "n", "ref chars", "baseline %", "candidate %", "Δ", "95% CI", "p worse (adj.)", "resampling",
              "status"):
        t.add_column(c, justify="left" if c in ("slice", "resampling", "status") else "right")
    for s in res.slices:  # a thin slice (``reliable`` false): its numbers alone, marked †, no interval
        dag = "" if s.reliable else " [dim]†[/]"
        t.add_row(s.label, str(s.n), str(s.ref_chars), f"{100 * s.rate_baseline:.2f}{dag}",
                  f"{100 * s.rate_candidate:.2f}{dag}", f"{100 * s.delta:+.2f}{dag}",
                  f"{100 * s.lo:+.2f} … {100 * s.hi:+.2f}" if s.reliable else "—",
                  "—" if s.p_worse_adj is None or not s.reliable else f"{s.p_worse_adj:.3g}", s.ci_method,
                  STATUS[s.status])
    print_table(t)
    if not all(s.reliable for s in res.slices):
        console.print("[dim]† insufficient data (too few utterances or reference characters): the point estimates "
                      "alone, no interval, not gated[/]")
    console.print(f"[dim]gate {res.gate_id} stored; {res.n_boot} bootstrap replicates; exit code {res.exit_code}[/]")


@app.command("gate")
def gate_cmd(
    baseline: Annotated[str, typer.Option(help="Baseline run: full or short id (`asr-eval runs`), unique id prefix, "
                                               "or model name (its latest run)")],
    candidate: Annotated[str, typer.Option(help="Candidate run: full or short id, unique id prefix, or model name "
                                                "(its latest run on the baseline's corpus split)")],
    margin: Annotated[float, typer.Option(help="Non-inferiority margin in points (0.5 = half a point of CER)")] = 0.5,
    metric: Annotated[str, typer.Option(help="cer | mer")] = "cer",
    slices: Annotated[str | None, typer.Option(help="Comma-separated slice columns that must pass too "
                                                    "(default: every default slice column)")] = None,
    normalizer: Annotated[str, typer.Option(help="Normalizer profile")] = "zh-v1",
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates (raised when many slices need it)")] = 2000,
    min_utts: Annotated[int, typer.Option(help="Slices with fewer utterances are not gated")] = 20,
    min_ref_chars: Annotated[int, typer.Option(help="Slices with fewer reference characters are not gated")] = 200,
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
) -> None:
    """Ship gate: PASS (exit 0) when the candidate is within MARGIN points of the baseline overall and on every
    slice with enough data, FAIL (exit 1) when it is worse by more than MARGIN somewhere, INCONCLUSIVE (exit 3)."""
    from asr_eval.gate import evaluate_gate

    sl = [s.strip() for s in slices.split(",") if s.strip()] if slices else None
    con = connect(db)
    try:
        res = evaluate_gate(con, baseline, candidate, margin, metric, sl, normalizer, n_boot,
                            min_utts=min_utts, min_ref_chars=min_ref_chars)
    finally:
        con.close()
    print_gate(res)
    raise typer.Exit(res.exit_code)
