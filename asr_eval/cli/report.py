"""`asr-eval report` (self-contained HTML) and `asr-eval export` (NeMo / leaderboard JSONL, CSV)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from asr_eval.cli import StorageOptions, app, console, use_storage
from asr_eval.export import ExportResult, export_all
from asr_eval.report import ReportOptions, build_report
from asr_eval.store import DEFAULT_DB

_DB = typer.Option("--db", help="DuckDB store written by `asr-eval score`")
_CORPUS = typer.Option("--corpus", help="Corpus id, name or shard dir (repeatable or comma-separated; default all)")
_RUNS = typer.Option("--runs", help="Runs: full or short ids (`asr-eval runs`), unique id prefixes, or models (name, "
                                    "display name or model id: every run of the model); repeatable or comma-separated; "
                                    "default all")
_NORM = typer.Option("--normalizer", help="Normalizer profile (default: the one most runs were scored with)")


def _print_exports(res: ExportResult, out_dir: str) -> None:
    console.print(f"exports → [bold]{out_dir}[/]: " + ", ".join(f"{k} ({v} rows)" for k, v in res.rows.items()))


@app.command("report")
def report_cmd(
    db: Annotated[Path, _DB] = DEFAULT_DB,
    corpus: Annotated[list[str] | None, _CORPUS] = None,
    runs: Annotated[list[str] | None, _RUNS] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write")] = Path("reports/report.html"),
    export_dir: Annotated[str | None, typer.Option("--export-dir", help="Also write NeMo/leaderboard JSONL and CSV "
                                                                        "here (a folder or URL)")] = None,
    normalizer: Annotated[str | None, _NORM] = None,
    title: Annotated[str, typer.Option(help="Report title")] = "ASR evaluation report",
    worst: Annotated[int, typer.Option(help="Worst utterances shown per model")] = 10,
    audio_mb: Annotated[float, typer.Option(help="Cap on embedded audio, MB")] = 5.0,
    max_slice_values: Annotated[int, typer.Option(help="Values shown per slice column (most utterances first)")] = 30,
    storage_option: StorageOptions = None,
) -> None:
    """Build one self-contained HTML report (no network needed to open it) from the store."""
    use_storage(storage_option)  # audio clips are read from the corpus shards, wherever they live
    opts = ReportOptions(runs=tuple(runs or ()), corpora=tuple(corpus or ()), normalizer=normalizer, title=title,
                         worst_n=worst, audio_cap_bytes=int(audio_mb * 2**20), max_slice_values=max_slice_values)
    with console.status("building report…"):
        res = build_report(db, out, opts)
    console.print(f"report → [bold]{res.path}[/] ({res.size_bytes / 2**20:.1f} MB, {res.n_runs} runs, "
                  f"{res.n_corpora} corpora, {res.n_training_runs} training runs, {res.audio_embedded} audio clips) "
                  f"in {res.elapsed_s:.1f} s")
    if res.audio_left_out:
        console.print(f"[yellow]{res.audio_left_out} worst-utterance clips not embedded (cap or missing shards)[/]")
    if res.empty_sections:
        console.print(f"[dim]no data for: {', '.join(res.empty_sections)}[/]")
    if export_dir is not None:
        with console.status("exporting…"):
            exp = export_all(db, export_dir, runs or (), corpus or (), normalizer)
        _print_exports(exp, export_dir)


@app.command("export")
def export_cmd(
    out_dir: Annotated[str, typer.Argument(help="Folder or URL for nemo/, leaderboard/, slice_metrics.csv, "
                                                "comparisons.csv")],
    db: Annotated[Path, _DB] = DEFAULT_DB,
    corpus: Annotated[list[str] | None, _CORPUS] = None,
    runs: Annotated[list[str] | None, _RUNS] = None,
    normalizer: Annotated[str | None, _NORM] = None,
    storage_option: StorageOptions = None,
) -> None:
    """Export predictions (NeMo manifest, open_asr_leaderboard JSONL) and slice metrics (CSV)."""
    use_storage(storage_option)
    with console.status("exporting…"):
        res = export_all(db, out_dir, runs or (), corpus or (), normalizer)
    _print_exports(res, out_dir)
