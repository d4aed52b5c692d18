"""`asr-eval engines`: the registered inference engines, decode recipes and preprocessing modes."""

from __future__ import annotations

from rich.table import Table

from asr_eval.cli import app, print_table


@app.command("engines")
def engines_cmd() -> None:
    """List engines (with compute types), decode recipes and preprocessing modes."""
    from asr_eval.engines import ENGINES, PREPROCESSING, RECIPES

    t = Table(title="engines (--engine)", title_justify="left", header_style="bold")
    for c in ("name", "what", "CPU compute types", "GPU compute types"):
        t.add_column(c)
    for name, e in sorted(ENGINES.items()):
        t.add_row(name, e.summary, ", ".join(e.compute_types.get("cpu", ())), ", ".join(e.compute_types.get("cuda", ())))
    print_table(t)
    from asr_eval.engines.base import engine_entry
    from asr_eval.engines.options import all_options

    t = Table(title="engine options (--engine-option KEY=VALUE; claimed output-preserving, verified against the run "
                    "without them)", title_justify="left", header_style="bold")
    for c in ("engine", "option", "default", "values", "what"):
        t.add_column(c)
    for name in sorted(ENGINES):
        for o in all_options(engine_entry(name).options).values():
            default = "—" if o.default is None else str(o.default).lower()
            t.add_row(name, o.name, default, o.values, o.summary)
    print_table(t)
    t = Table(title="decode recipes (--recipe)", title_justify="left", header_style="bold")
    t.add_column("name")
    t.add_column("what")
    for r in RECIPES.values():
        t.add_row(r.name, r.summary)
    print_table(t)
    t = Table(title="preprocessing (--preprocessing)", title_justify="left", header_style="bold")
    for c in ("name", "what", "used by"):
        t.add_column(c)
    for p in PREPROCESSING.values():
        t.add_row(p.name, p.summary, p.used_by)
    print_table(t)
