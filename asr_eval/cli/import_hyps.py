"""`asr-eval import-hyps`: register another system's transcripts as a run, scored like ours."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from asr_eval.cli import app, console
from asr_eval.store import DEFAULT_DB, connect


def import_summary(db: Path, r, normalizer: str) -> dict[str, Any]:
    """What ``--json`` prints: the import's counts (``n`` = every utterance of the split the run is
    scored over, ``n_missing`` of them without a hypothesis, scored as full deletions) and the
    whole-run CER/MER; a thin run (``reliable`` false) keeps its point estimates, its intervals null."""
    from asr_eval.slices import ALL_ATTR, stored_slice_metrics

    con = connect(db, read_only=True)
    try:
        whole = next((x for x in stored_slice_metrics(con, [r.run_id], normalizer) if x["slice_attr"] == ALL_ATTR), {})
    finally:
        con.close()
    out = {**dataclasses.asdict(r), "n": r.n, "compared_with": list(r.compared_with), "normalizer": normalizer}
    reliable = whole.get("reliable")
    for k in ("cer", "cer_lo", "cer_hi", "mer", "mer_lo", "mer_hi", "ref_chars", "ci_method"):
        out[k] = None if reliable is False and k.endswith(("_lo", "_hi")) else whole.get(k)
    out["reliable"] = reliable
    return out


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
    as_json: Annotated[bool, typer.Option("--json", help="Print the import's counts (n, n_matched, n_missing, "
                                                         "n_empty) and whole-run CER/MER as JSON")] = False,
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
) -> None:
    """Import external hypotheses as a run: scored per slice, compared with every stored run of the split."""
    from asr_eval.cli.score import print_results
    from asr_eval.importing import import_hypotheses

    sl = [s.strip() for s in slices.split(",") if s.strip()] if slices else None
    r = import_hypotheses(corpus, file, name, db, split=split, fmt=format, engine_notes=engine_notes,
                          normalizer=normalizer, slices=sl, n_boot=n_boot, ci_method=ci_method)
    if as_json:
        typer.echo(json.dumps(import_summary(db, r, normalizer), ensure_ascii=False, indent=1))
        return
    n_split = r.n
    console.print(f"imported [bold]{name}[/] ({r.format}, sha256 {r.sha256[:12]}) as run [bold]{r.run_id}[/]")
    console.print(f"matched {r.n_matched} of {n_split} utterances of split {r.split or 'all'}"
                  + (f" ({r.n_empty} empty)" if r.n_empty else ""))
    if r.n_missing:
        console.print(f"[yellow]missing {r.n_missing}[/]: utterances without a hypothesis, scored as full deletions")
    else:
        console.print("missing 0")
    print_results(db, [*r.compared_with, r.run_id], normalizer, sl)
    console.print(f"store: [bold]{db}[/]  run: {r.run_id}")
