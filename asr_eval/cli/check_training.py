"""`asr-eval check-training RUN [--baseline RUN2]`: divergence/regression alerts; exit 1 on
critical or regression alerts so it can gate CI. Rule options are generated from RuleConfig."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from asr_eval.cli import app, console, print_table
from asr_eval.monitor.checking import check_run
from asr_eval.monitor.rules import RuleConfig, exit_code
from asr_eval.store import DEFAULT_DB

STYLE = {"critical": "bold red", "regression": "red", "warning": "yellow", "info": "dim"}


def _number(alert, x: float | None, curve) -> str:
    """A rule's value or threshold as the alert's message writes it: our CER in % (the final
    comparison's difference in points), every other metric as logged."""
    from asr_eval.monitor.rules import rate_text

    if x is None:
        return ""
    if alert.rule == "baseline_final" and curve.source == "asr-eval" and alert.metric == "cer":
        return f"{100 * x:+.2f} pts"
    return rate_text(curve, x) if alert.metric == curve.metric else f"{x:.4g}"


def _check_training(run: str, baseline: Optional[str], db: Path, zero_shot_cer: Optional[float], no_store: bool,
                    **rules: float) -> None:
    res = check_run(run, baseline, db=db, config=RuleConfig(**rules), zero_shot_cer=zero_shot_cer,
                    store=not no_store)
    c = res.curve
    console.print(f"[bold]{c.run_id}[/] ({c.source}: {c.path or 'store'}) — {len(c.train)} train steps, "
                  f"{len(c.evals)} evaluations, metric {c.metric.upper()}"
                  + (f"; baseline [bold]{res.baseline.run_id}[/]" if res.baseline else ""))
    if res.alerts:
        t = Table(show_lines=False)
        for col, kw in (("severity", {}), ("step", {"justify": "right"}), ("rule", {}), ("metric", {}),
                        ("value", {"justify": "right"}), ("threshold", {"justify": "right"}),
                        ("message", {"overflow": "fold"})):
            t.add_column(col, **kw)
        for a in res.alerts:
            t.add_row(f"[{STYLE[a.severity]}]{a.severity}[/]", "" if a.step is None else str(a.step), a.rule,
                      a.metric, _number(a, a.value, c), _number(a, a.threshold, c), a.message)
        print_table(t)
    for note in res.notes:
        console.print(f"[dim]note: {note}[/]")
    code = exit_code(res.alerts)
    counts = {s: sum(a.severity == s for a in res.alerts) for s in STYLE}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no alerts"
    stored = f"; alerts stored in {db}" if res.stored else ""
    console.print(f"{summary}{stored} → exit {code}" + (" (critical/regression: fails CI)" if code else ""))
    raise typer.Exit(code)


def _signature() -> inspect.Signature:
    P = inspect.Parameter
    base = [
        P("run", P.POSITIONAL_OR_KEYWORD, annotation=Annotated[str, typer.Argument(
            help="run dir, loss_stream.jsonl, trainer_state.json, TensorBoard dir, or training_run_id in the store")]),
        P("baseline", P.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[str], typer.Option(
            help="known-good run to compare against (same forms as RUN); default: the run's recorded baseline")]),
        P("db", P.KEYWORD_ONLY, default=DEFAULT_DB, annotation=Annotated[Path, typer.Option(help="DuckDB store")]),
        P("zero_shot_cer", P.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[float], typer.Option(
            help="the base model's zero-shot CER on the eval set, same scale as the run's metric")]),
        P("no_store", P.KEYWORD_ONLY, default=False, annotation=Annotated[bool, typer.Option(
            "--no-store", help="only read the store; do not write the run or its alerts")]),
    ]
    types = {"int": int, "float": float}
    rules = [P(f.name, P.KEYWORD_ONLY, default=f.default, annotation=Annotated[types[f.type], typer.Option(
        f"--{f.name.replace('_', '-')}", help=f.metadata["help"], rich_help_panel="Rule thresholds")])
        for f in fields(RuleConfig)]
    return inspect.Signature(base + rules)


def check_training(**kwargs) -> None:
    """Check a training run for non-finite or spiking loss, overfitting, CER regressions and
    regressions against a baseline run; store the alerts; exit 1 on critical/regression."""
    _check_training(**kwargs)


check_training.__signature__ = _signature()
check_training.__annotations__ = {p.name: p.annotation for p in check_training.__signature__.parameters.values()}
app.command("check-training")(check_training)
