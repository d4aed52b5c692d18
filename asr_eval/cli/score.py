"""`asr-eval score` and `asr-eval rescore`: per-slice CER/MER with 95% CIs and paired A/B tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from asr_eval.cli import app, console
from asr_eval.errors import AsrEvalError
from asr_eval.store import DEFAULT_DB, connect


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def print_results(db: Path, run_ids: list[str], normalizer: str, slices: list[str] | None = None) -> None:
    """Terminal tables: one per slice attribute (n, hours, CER ± CI per model) + A/B deltas."""
    con = connect(db, read_only=True)
    try:
        names = dict(con.execute(
            "SELECT r.run_id, m.name FROM eval_runs r JOIN models m USING (model_id) WHERE r.run_id IN "
            f"({', '.join('?' * len(run_ids))})", run_ids).fetchall())
        rows = con.execute(
            f"""SELECT run_id, slice_attr, slice_value, n, hours, cer, cer_lo, cer_hi, mer, mer_lo, mer_hi
                FROM slice_metrics WHERE normalizer = ? AND run_id IN ({', '.join('?' * len(run_ids))})""",
            [normalizer, *run_ids]).fetchall()
        rtfx = dict(con.execute(
            f"SELECT run_id, rtfx FROM eval_runs WHERE run_id IN ({', '.join('?' * len(run_ids))})", run_ids).fetchall())
        cmps = con.execute(
            f"""SELECT run_a, run_b, metric, slice_attr, slice_value, n, delta, delta_lo, delta_hi, p_b_better, verdict
                FROM comparisons WHERE normalizer = ? AND metric = 'cer' AND run_a IN ({', '.join('?' * len(run_ids))})
                ORDER BY slice_attr = '_all' DESC, slice_attr, slice_value""", [normalizer, *run_ids]).fetchall()
    finally:
        con.close()
    by_attr: dict[str, dict[str, dict]] = {}
    for run_id, attr, value, n, hours, cer, lo, hi, mer, mlo, mhi in rows:
        cell = by_attr.setdefault(attr, {}).setdefault(value, {"n": n, "hours": hours})
        cell[run_id] = (cer, lo, hi, mer, mlo, mhi)
    order = ["_all"] + sorted(a for a in by_attr if a != "_all")
    for attr in order:
        if attr not in by_attr or (slices and attr != "_all" and attr not in slices):
            continue
        title = f"all utterances — normalizer {normalizer}" if attr == "_all" else f"by {attr}"
        t = Table(title=title, title_justify="left", header_style="bold")
        t.add_column(attr if attr != "_all" else "", style="cyan")
        t.add_column("n", justify="right")
        t.add_column("hours", justify="right")
        for r in run_ids:
            t.add_column(f"{names.get(r, r)}\nCER % [95% CI]", justify="right")
        if attr == "_all":
            for r in run_ids:
                t.add_column(f"{names.get(r, r)}\nMER %", justify="right")
        for value, cell in by_attr[attr].items():
            best = min((cell[r][0] for r in run_ids if r in cell and cell[r][0] is not None), default=None)
            line = [value if attr != "_all" else "all", str(cell["n"]), f"{cell['hours']:.3f}"]
            for r in run_ids:
                if r not in cell:
                    line.append("—")
                    continue
                cer, lo, hi = cell[r][:3]
                txt = f"{_pct(cer)} [{_pct(lo)}–{_pct(hi)}]"
                line.append(f"[bold green]{txt}[/]" if len(run_ids) > 1 and cer == best else txt)
            if attr == "_all":
                line += [f"{_pct(cell[r][3])} [{_pct(cell[r][4])}–{_pct(cell[r][5])}]" if r in cell else "—" for r in run_ids]
            t.add_row(*line)
        console.print(t)
    if len(run_ids) > 1:
        t = Table(title="paired A/B on CER (B − A, points; paired bootstrap 95% CI)", title_justify="left",
                  header_style="bold")
        for c in ("A", "B", "slice", "n", "Δ CER", "95% CI", "P(B better)", "verdict"):
            t.add_column(c, justify="right" if c in ("n", "Δ CER", "95% CI", "P(B better)") else "left")
        hidden = 0
        for a, b, _m, attr, value, n, d, lo, hi, p, verdict in cmps:
            significant = lo > 0 or hi < 0
            if attr != "_all" and not significant:
                hidden += 1
                continue
            style = "green" if hi < 0 else "red" if lo > 0 else ""
            t.add_row(names.get(a, a), names.get(b, b), "all" if attr == "_all" else f"{attr}={value}", str(n),
                      f"[{style}]{100 * d:+.2f}[/]" if style else f"{100 * d:+.2f}",
                      f"{100 * lo:+.2f} … {100 * hi:+.2f}", f"{p:.3f}", verdict)
        console.print(t)
        if hidden:
            console.print(f"[dim]{hidden} per-slice comparisons with no significant difference not shown "
                          "(all are in the comparisons table and the report)[/]")


def _strategies(names: list[str], specs: list[str]) -> list:
    """Strategies by name, each given the ``name=value`` parameters it has (any unknown to all is an error)."""
    from dataclasses import fields

    from asr_eval.longform import STRATEGIES, make_strategy, parse_params

    kv = parse_params(specs)
    out = [make_strategy(n) for n in names]  # registers the built-ins, validates names
    used: set[str] = set()
    for i, st in enumerate(out):
        own = {f.name for f in fields(STRATEGIES[st.name])}
        used |= own & set(kv)
        out[i] = make_strategy(st.name, **{k: v for k, v in kv.items() if k in own})
    if set(kv) - used:
        raise AsrEvalError(f"--strategy-param {sorted(set(kv) - used)}: no chosen strategy has such a parameter")
    return out


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
    block_by_speaker: Annotated[bool, typer.Option(help="Speaker-block bootstrap instead of utterance")] = False,
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
    parts: Annotated[Path | None, typer.Option(help="Where inference parts go (default: beside the DB)")] = None,
    strategy: Annotated[list[str] | None, typer.Option(help="Long-form strategy for recordings over 30 s: "
                                                             "sequential | chunked | vad (repeat to compare)")] = None,
    strategy_param: Annotated[list[str] | None, typer.Option(help="Strategy parameter name=value, e.g. "
                                                                  "stride_s=4 (repeatable; applies to each strategy "
                                                                  "that has it)")] = None,
) -> None:
    """Transcribe a corpus split with one or more models and score it per slice."""
    from asr_eval.inference import DecodeParams
    from asr_eval.scoring import score_models

    params = DecodeParams(num_beams=num_beams, max_new_tokens=max_new_tokens)
    strategies = _strategies(strategy or [], strategy_param or [])
    sl = [s.strip() for s in slices.split(",") if s.strip()] if slices else None
    run_ids = score_models(corpus, model, db, split=None if split == "all" else split, slices=sl,
                           batch_size=batch_size, device=device, normalizer=normalizer, params=params,
                           parts_root=parts, n_boot=n_boot, block_by_speaker=block_by_speaker,
                           strategies=strategies)
    print_results(db, run_ids, normalizer, sl)
    console.print(f"store: [bold]{db}[/]  runs: {', '.join(run_ids)}")


@app.command("rescore")
def rescore_cmd(
    normalizer: Annotated[str, typer.Option(help="Normalizer profile to rescore with")] = "zh-v1",
    run: Annotated[list[str] | None, typer.Option("--run", help="Run ids (default: every run)")] = None,
    slices: Annotated[str | None, typer.Option(help="Comma-separated slice columns")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates")] = 1000,
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
) -> None:
    """Re-normalize and rescore stored hypotheses with another normalizer — no inference."""
    from asr_eval.scoring import rescore

    sl = [s.strip() for s in slices.split(",") if s.strip()] if slices else None
    con = connect(db)
    try:
        ids = rescore(con, normalizer, run, sl, n_boot)
    finally:
        con.close()
    print_results(db, ids, normalizer, sl)


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
