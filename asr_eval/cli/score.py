"""`asr-eval score` and `asr-eval rescore`: per-slice CER/MER with 95% CIs and paired A/B tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from asr_eval.cli import app, console
from asr_eval.store import DEFAULT_DB, connect
from asr_eval.store.labels import run_labels


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def print_results(db: Path, run_ids: list[str], normalizer: str, slices: list[str] | None = None) -> None:
    """Terminal tables: one per slice attribute (n, hours, CER ± CI per model) + A/B deltas."""
    con = connect(db, read_only=True)
    try:
        names = run_labels(con, run_ids)
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


@app.command("score")
def score_cmd(
    corpus: Annotated[Path, typer.Option(help="Ingested corpus directory (from `asr-eval ingest`)")],
    model: Annotated[list[str], typer.Option("--model", "-m", help="Hub id, local checkpoint dir, "
                                             "bundled:whisper-base or ct2:DIR (repeat to compare)")],
    engine: Annotated[str, typer.Option(help="Inference engine(s), comma-separated: transformers, ctranslate2 "
                                             "(see `asr-eval engines`)")] = "transformers",
    compute_type: Annotated[str, typer.Option(help="auto (fp32 on CPU, bf16/fp16 on GPU) or e.g. float32, int8, "
                                                   "int8_float32, float16, int8_float16, bfloat16; comma-separated")] = "auto",
    preprocessing: Annotated[str, typer.Option(help="pad-audio (transformers/HF fine-tuning) or pad-features "
                                                    "(openai-whisper/faster-whisper); comma-separated")] = "pad-audio",
    recipe: Annotated[str, typer.Option(help="Decode recipe(s): greedy, beam5, fallback, beam5-fallback, "
                                             "prompt-simplified; comma-separated")] = "greedy",
    split: Annotated[str, typer.Option(help="Split to score ('auto': test if present, else all; 'all')")] = "auto",
    slices: Annotated[str | None, typer.Option(help="Comma-separated slice columns (default: every column "
                                                    "with ≤50 values, plus duration_bucket)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default: the engine's suggestion (device memory)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for the engine (0: all cores)")] = 0,
    normalizer: Annotated[str, typer.Option(help="Normalizer profile")] = "zh-v1",
    max_new_tokens: Annotated[int | None, typer.Option(help="Generation cap (recipe default 128; guards loops)")] = None,
    no_repeat_ngram_size: Annotated[int | None, typer.Option(help="Forbid repeating n-grams of this size")] = None,
    repetition_penalty: Annotated[float | None, typer.Option(help="> 1 penalizes repeated tokens")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates")] = 1000,
    block_by_speaker: Annotated[bool, typer.Option(help="Speaker-block bootstrap instead of utterance")] = False,
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
    parts: Annotated[Path | None, typer.Option(help="Where inference parts go (default: beside the DB)")] = None,
) -> None:
    """Transcribe a corpus split with models × engines × recipes and score it per slice."""
    from asr_eval.scoring import expand_specs, score_models

    specs = expand_specs(model, engine, compute_type, preprocessing, recipe, device, batch_size, threads,
                      max_new_tokens=max_new_tokens, no_repeat_ngram_size=no_repeat_ngram_size,
                      repetition_penalty=repetition_penalty)
    sl = [s.strip() for s in slices.split(",") if s.strip()] if slices else None
    run_ids = score_models(corpus, specs, db, split=split, slices=sl, normalizer=normalizer, parts_root=parts,
                           n_boot=n_boot, block_by_speaker=block_by_speaker)
    print_results(db, run_ids, normalizer, sl)
    print_parity(db, run_ids, normalizer)
    print_preprocessing_notes(db, run_ids)
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


def short_compute(compute_type: str) -> str:
    """float32 → fp32, int8_float16 → int8/fp16 (tables only; the store keeps the full name)."""
    return "/".join(p.replace("float", "fp").replace("bfp", "bf") for p in (compute_type or "").split("_"))


def _human_time(ts) -> str:
    from datetime import datetime

    if ts is None:
        return "—"
    now = datetime.now()
    return ts.strftime("%H:%M") if ts.date() == now.date() else ts.strftime("%b %d %H:%M")


@app.command("runs")
def runs_cmd(db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
             full: Annotated[bool, typer.Option(help="Full run ids and corpus ids")] = False) -> None:
    """List stored evaluation runs (short ids; `--full` for complete ones)."""
    from asr_eval.store.labels import run_axes

    con = connect(db, read_only=True)
    try:
        rows = con.execute(
            """SELECT r.run_id, r.corpus_id, coalesce(r.split, 'all'), r.n_utts, r.device, r.rtfx, r.finished_at,
                      s.cer
               FROM eval_runs r LEFT JOIN slice_metrics s ON s.run_id = r.run_id AND s.slice_attr = '_all'
                    AND s.normalizer = 'zh-v1'
               ORDER BY r.finished_at""").fetchall()
        axes = run_axes(con, [r[0] for r in rows])
    finally:
        con.close()
    from rich import box

    corpora = {(c, s) for _, c, s, *_ in rows}
    one = len(corpora) == 1
    title = f"runs on {next(iter(corpora))[0] if full else next(iter(corpora))[0].split('@')[0]} " \
            f"({next(iter(corpora))[1]})" if one else None
    t = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
              padding=(0, 1), collapse_padding=True, pad_edge=False)
    cols = [("run", {"no_wrap": True}), ("model", {"min_width": 14}), ("engine", {"min_width": 12}),
            ("recipe", {"min_width": 8})]
    if not one:
        cols.append(("corpus/split", {"min_width": 12, "max_width": 24}))
    cols += [("n", {"justify": "right"}), ("CER %", {"justify": "right"}), ("RTFx", {"justify": "right"}),
             ("when", {"no_wrap": True})]
    for c, kw in cols:
        t.add_column(c, **kw)
    for run_id, corpus, split, n, device, rtfx, finished, cer in rows:
        x = axes[run_id]
        eng = "imported" if x.kind == "import" else f"{x.engine} {short_compute(x.compute_type)}".strip()
        if x.kind != "import" and device and device != "cpu":
            eng += f" {device}"
        recipe = x.recipe if x.preprocessing == "pad-audio" else f"{x.recipe} ({x.preprocessing})"
        where = [] if one else [f"{corpus if full else corpus.split('@')[0]}/{split}"]
        t.add_row(run_id if full else run_id[-10:], x.model, eng, recipe, *where, str(n or 0), _pct(cer),
                  "—" if not rtfx else f"{rtfx:.1f}", _human_time(finished))
    console.print(t)


def preprocessing_mismatches(con, run_ids: list[str]) -> list[tuple[str, str, str]]:
    """(run_id, trained with, scored with) for fine-tuned models scored under another preprocessing."""
    if not run_ids:
        return []
    return con.execute(
        f"""SELECT r.run_id, m.train_preprocessing, r.preprocessing FROM eval_runs r JOIN models m USING (model_id)
            WHERE m.train_preprocessing IS NOT NULL AND r.preprocessing IS NOT NULL
              AND m.train_preprocessing <> r.preprocessing AND r.run_id IN ({', '.join('?' * len(run_ids))})""",
        run_ids).fetchall()


def print_preprocessing_notes(db: Path, run_ids: list[str]) -> None:
    con = connect(db, read_only=True)
    try:
        rows = preprocessing_mismatches(con, run_ids)
        names = run_labels(con, run_ids)
    finally:
        con.close()
    for run_id, trained, scored in rows:
        console.print(f"[yellow]note:[/] {names.get(run_id, run_id)} was fine-tuned with {trained} preprocessing and "
                      f"scored with {scored} — what a deployment using {scored} sees, not what it was trained on")


def print_parity(db: Path, run_ids: list[str], normalizer: str) -> None:
    """Engine parity: for runs of the same weights that differ in engine/compute/preprocessing/recipe,
    % identical raw transcripts and the paired CER difference."""
    from asr_eval.scoring.parity import parity_pairs

    con = connect(db, read_only=True)
    try:
        pairs = parity_pairs(con, run_ids, normalizer)
        names = run_labels(con, run_ids)
    finally:
        con.close()
    if not pairs:
        return
    t = Table(title="engine parity (same weights; B vs A)", title_justify="left", header_style="bold")
    for c in ("A", "B", "n", "identical", "Δ CER (B − A)", "95% CI"):
        t.add_column(c, justify="right" if c not in ("A", "B") else "left")
    for p in pairs:
        t.add_row(names.get(p.run_a, p.run_a), names.get(p.run_b, p.run_b), str(p.n),
                  f"{p.n_identical}/{p.n} ({100 * p.identical:.1f} %)", _pct(p.delta).replace("-", "−") if p.delta is not None else "—",
                  f"{_pct(p.delta_lo)} … {_pct(p.delta_hi)}" if p.delta_lo is not None else "—")
    console.print(t)
