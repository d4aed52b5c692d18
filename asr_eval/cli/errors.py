"""`asr-eval errors`: what kind of errors a run makes — the Mandarin error taxonomy (homophones,
tones, near-homophones, variants, number formats, Latin, particles) on MER units, the pinyin error
rate beside MER, the top confusions with pinyin (``hello → 哈喽`` is one), and between two runs the
pairs the second fixed or introduced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from asr_eval.cli import app, console, print_table
from asr_eval.store import DEFAULT_DB, connect
from asr_eval.store.labels import run_labels


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _ci(lo: float | None, hi: float | None) -> str:
    return "" if lo is None or hi is None else f" [{100 * lo:.2f}–{100 * hi:.2f}]"


def _py(p: str | None) -> str:
    return p or "—"


def collect(db: Path, refs: list[str], normalizer: str, top: int) -> dict[str, Any]:
    """Resolve the runs, classify any run not classified yet (no inference), read the summaries."""
    from asr_eval.errors import AsrEvalError
    from asr_eval.store.runs import resolve_pair, resolve_run
    from asr_eval.scoring.analysis import stored_ci_method
    from asr_eval.scoring.errors import confusion_changes, error_taxonomy, run_summary, top_confusions

    if not 1 <= len(refs) <= 2:
        raise AsrEvalError("give one --run (its errors) or two (A then B: what B fixed and introduced)")
    con = connect(db, read_only=True)
    try:
        run_ids = list(resolve_pair(con, *refs)) if len(refs) == 2 else [resolve_run(con, refs[0])]
        todo = [r for r in run_ids if run_summary(con, r, normalizer) is None]
        if todo:  # analysed before the taxonomy existed: classify now from the stored alignments
            con.close()
            con = connect(db)
            for r in todo:
                if not con.execute("SELECT 1 FROM utterance_scores WHERE run_id = ? AND normalizer = ? LIMIT 1",
                                   [r, normalizer]).fetchall():
                    raise AsrEvalError(f"run {r} is not scored with normalizer {normalizer}; "
                                       f"`asr-eval rescore --normalizer {normalizer} --run {r}` first")
                error_taxonomy(con, r, normalizer, ci_method=stored_ci_method(con, r))
        out: dict[str, Any] = {"normalizer": normalizer, "runs": []}
        for r in run_ids:
            out["runs"].append({**run_summary(con, r, normalizer), "top_confusions": top_confusions(con, r, normalizer, top)})
        if len(run_ids) == 2:
            out["changes"] = {"run_a": run_ids[0], "run_b": run_ids[1],
                              **confusion_changes(con, run_ids[0], run_ids[1], normalizer, top)}
        out["labels"] = run_labels(con, run_ids)
    finally:
        con.close()
    return out


def print_errors(data: dict[str, Any]) -> None:
    from asr_eval.metrics.taxonomy import ALL_BUCKETS, CLASSES, LABELS

    runs, names = data["runs"], data["labels"]
    console.print(f"[bold]what kind of errors[/] — normalizer {data['normalizer']}; units as in MER (Han characters, "
                  "Latin words, numbers); share = of all errors (S + D + I)")
    t = Table(header_style="bold")
    t.add_column("class")
    for r in runs:
        t.add_column(f"{names.get(r['run_id'], r['run_id'])}\ncount (share %)", justify="right")
    for b in ALL_BUCKETS:
        cells = []
        for r in runs:
            c = r["classes"][b] if b in CLASSES else r["unclassified"][b]
            cells.append(f"{c['count']} ({_pct(c['share'])})")
        t.add_row(LABELS[b] if b in CLASSES else f"[dim]{LABELS[b]}[/]", *cells)
    t.add_row("[bold]errors (MER units)[/]", *[f"[bold]{r['errors']}[/]" for r in runs])
    print_table(t)
    m = Table(title="error rates (%) with 95% CI", title_justify="left", header_style="bold")
    for c in ("run", "n", "MER", "pinyin ER (toneless)", "pinyin ER (tones)"):
        m.add_column(c, justify="left" if c == "run" else "right")
    for r in runs:
        p = r["pinyin_error_rate"]
        dagger = "" if p["reliable"] else " †"  # thin: the point estimates alone, no interval
        m.add_row(names.get(r["run_id"], r["run_id"]), str(r["n"]), _pct(r["mer"]) + dagger,
                  _pct(p["toneless"]) + (_ci(*p["toneless_ci"]) if p["reliable"] else dagger),
                  _pct(p["tones"]) + (_ci(*p["tones_ci"]) if p["reliable"] else dagger))
    console.print(m)
    for r in runs:
        c = Table(title=f"top confusions — {names.get(r['run_id'], r['run_id'])}", title_justify="left",
                  header_style="bold")
        for col in ("ref → hyp", "pinyin", "class", "count"):
            c.add_column(col, justify="right" if col == "count" else "left")
        for x in r["top_confusions"]:
            c.add_row(f"{x['ref_tok']} → {x['hyp_tok']}", f"{_py(x['ref_pinyin'])} → {_py(x['hyp_pinyin'])}",
                      LABELS.get(x["class"], x["class"]), str(x["n"]))
        console.print(c)
    ch = data.get("changes")
    if ch:
        a, b = names.get(ch["run_a"], ch["run_a"]), names.get(ch["run_b"], ch["run_b"])
        for kind, words in (("fixed", f"fixed by {b} (fewer than in {a})"), ("introduced", f"introduced by {b}")):
            c = Table(title=f"substitutions {words}", title_justify="left", header_style="bold")
            for col in ("ref → hyp", "pinyin", "class", a, b, "Δ"):
                c.add_column(col, justify="left" if col in ("ref → hyp", "pinyin", "class") else "right")
            for x in ch[kind]:
                c.add_row(f"{x['ref_tok']} → {x['hyp_tok']}", f"{_py(x['ref_pinyin'])} → {_py(x['hyp_pinyin'])}",
                          LABELS.get(x["class"], x["class"]), str(x["n_a"]), str(x["n_b"]), f"{x['delta']:+d}")
            console.print(c)
    if any(not r["pinyin_error_rate"]["reliable"] for r in runs):
        console.print("[dim]† insufficient data for an interval (fewer than the minimum utterances or characters)[/]")


@app.command("errors")
def errors_cmd(
    run: Annotated[list[str], typer.Option("--run", help="Run: full or short id (`asr-eval runs`), unique id "
                                                         "prefix, or model name (its latest run); give two to see "
                                                         "which confusions the second fixed or introduced")],
    normalizer: Annotated[str, typer.Option(help="Normalizer profile the runs were scored with")] = "zh-v1",
    top: Annotated[int, typer.Option(help="Confusion pairs listed per table")] = 15,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (per run: classes keyed by class name, each "
                                                         "with count and share)")] = False,
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
) -> None:
    """What kind of errors: error classes (count and share), pinyin error rate, top confusions with pinyin."""
    data = collect(db, run, normalizer, top)
    if as_json:
        typer.echo(json.dumps({k: v for k, v in data.items() if k != "labels"}, ensure_ascii=False, indent=1,
                              default=str))
        return
    print_errors(data)
