"""`asr-eval import-hyps`: register another system's transcripts as a run, scored like ours."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from asr_eval.cli import app, console
from asr_eval.store import DEFAULT_DB


@app.command("import-hyps")
def import_hyps_cmd(
    file: Annotated[Path, typer.Argument(help="Hypothesis file: JSONL, TSV, NeMo manifest or open_asr_leaderboard JSONL")],
    corpus: Annotated[Path, typer.Option(help="Ingested corpus directory (from `asr-eval ingest`)")],
    name: Annotated[str, typer.Option(help="Name of the system that produced the hypotheses (e.g. sensevoice-small)")],
    split: Annotated[str, typer.Option(help="Split the hypotheses are for ('auto': test if present, else all; 'all')")] = "auto",
    format: Annotated[str, typer.Option("--format", help="auto | jsonl | tsv | nemo | leaderboard")] = "auto",
    engine_notes: Annotated[str | None, typer.Option(help="Free text kept in the run's provenance "
                                                          "(API version, settings, date)")] = None,
    normalizer: Annotated[str, typer.Option(help="Normalizer profile")] = "zh-v1",
    slices: Annotated[str | None, typer.Option(help="Comma-separated slice columns (default: as `asr-eval score`)")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates")] = 1000,
    ci_method: Annotated[str, typer.Option(help="auto (speaker blocks when speakers are known for most utterances), "
                                                "utterance or speaker-block")] = "auto",
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
) -> None:
    """Import external hypotheses as a run: scored per slice, compared with every stored run of the split."""
    from asr_eval.cli.score import print_results
    from asr_eval.importing import import_hypotheses

    sl = [s.strip() for s in slices.split(",") if s.strip()] if slices else None
    r = import_hypotheses(corpus, file, name, db, split=split, fmt=format, engine_notes=engine_notes,
                          normalizer=normalizer, slices=sl, n_boot=n_boot, ci_method=ci_method)
    n_split = r.n_matched + r.n_missing
    console.print(f"imported [bold]{name}[/] ({r.format}, sha256 {r.sha256[:12]}) as run [bold]{r.run_id}[/]")
    console.print(f"matched {r.n_matched} of {n_split} utterances of split {r.split or 'all'}"
                  + (f" ({r.n_empty} empty)" if r.n_empty else ""))
    if r.n_missing:
        console.print(f"[yellow]missing {r.n_missing}[/]: utterances without a hypothesis, scored as full deletions")
    else:
        console.print("missing 0")
    print_results(db, [*r.compared_with, r.run_id], normalizer, sl)
    console.print(f"store: [bold]{db}[/]  run: {r.run_id}")
