"""`asr-eval contamination`: is the test set leaking? Every evaluation utterance against training
texts (a corpus split or a text file): exact match, longest shared character n-gram, share of its
8-grams; flags stored and offered as the slice ``contaminated``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from asr_eval.cli import app, console, print_table
from asr_eval.metrics.overlap import DEFAULT_THRESHOLD, NGRAM
from asr_eval.store import DEFAULT_DB, connect


@app.command("contamination")
def contamination_cmd(
    corpus: Annotated[Path, typer.Option(help="Ingested evaluation corpus directory")],
    against: Annotated[Path, typer.Option(help="Training texts: an ingested corpus directory (its --against-split) "
                                               "or a UTF-8 text file with one sentence per line")],
    split: Annotated[str, typer.Option(help="Evaluation split ('auto': test if present, else all; 'all')")] = "auto",
    against_split: Annotated[str, typer.Option(help="Split of the training corpus ('all': every utterance)")] = "train",
    threshold: Annotated[float, typer.Option(help="Flag 'overlap' when at least this share of an utterance's "
                                                  "character 8-grams occurs in the training texts")] = DEFAULT_THRESHOLD,
    ngram: Annotated[int, typer.Option(help="n of the character n-grams whose share is measured")] = NGRAM,
    normalizer: Annotated[str, typer.Option(help="Normalizer profile applied to both sides")] = "zh-v1",
    reslice: Annotated[bool, typer.Option("--reslice/--no-reslice", help="Add the 'contaminated' slice to the runs "
                                                                         "already stored for this corpus")] = True,
    top: Annotated[int, typer.Option(help="Flagged utterances listed")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
) -> None:
    """Flag evaluation utterances found in training texts (exact / overlap / clean); adds the slice 'contaminated'."""
    from asr_eval.contamination import check, training_source
    from asr_eval.contamination import reslice as reslice_runs
    from asr_eval.errors import AsrEvalError
    from asr_eval.store.labels import run_labels

    if ngram < 2:
        raise AsrEvalError(f"--ngram {ngram}: use 2 or more characters (default {NGRAM})")
    src = training_source(against, against_split, normalizer, ngram=ngram)
    if not src.texts:
        raise AsrEvalError(f"--against {against}: no training texts found (split {against_split!r})")
    con = connect(db)
    try:
        rep = check(con, corpus, src, split, threshold)
        texts = dict(con.execute("SELECT utt_id, text FROM utterances WHERE corpus_id = ?", [rep.corpus_id]).fetchall())
        resliced = reslice_runs(con, rep.corpus_id) if reslice else []
        labels = run_labels(con, resliced) if resliced else {}
    finally:
        con.close()
    out = rep.as_json(top)
    out["resliced_runs"] = resliced
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False, indent=1))
        return
    console.print(f"training texts: {src.describe()}; 'overlap' = {ngram}-gram share ≥ {threshold:g}; "
                  f"normalizer {normalizer}")
    console.print(f"[bold]contamination of {rep.corpus_id} [{out['split']}][/]")
    t = Table(header_style="bold")
    for c in ("flag", "utterances", "share %"):
        t.add_column(c, justify="left" if c == "flag" else "right")
    for f, k in out["counts"].items():
        share = out["shares"][f]
        t.add_row(f, str(k), "—" if share is None else f"{100 * share:.1f}")
    t.add_row("[bold]all[/]", f"[bold]{rep.n}[/]", "")
    print_table(t)
    if out["flagged"]:
        f = Table(title=f"most overlapping utterances (top {len(out['flagged'])})", title_justify="left",
                  header_style="bold")
        for c in ("utterance", "flag", "longest n-gram", f"{ngram}-gram share", "reference"):
            f.add_column(c, justify="right" if c in ("longest n-gram", f"{ngram}-gram share") else "left")
        for r in out["flagged"]:
            f.add_row(r["utt_id"], r["flag"], str(r["longest_ngram"]),
                      "—" if r["ngram_share"] is None else f"{r['ngram_share']:.2f}", texts.get(r["utt_id"]) or "")
        console.print(f)
    console.print(f"stored for source [bold]{src.source_hash}[/]; the slice [bold]contaminated[/] "
                  "(exact / overlap / clean) is now offered by score, compare, gate and the report")
    if resliced:
        console.print(f"re-sliced {len(resliced)} stored run{'s' if len(resliced) != 1 else ''}: "
                      + ", ".join(labels.get(r, r) for r in resliced))
