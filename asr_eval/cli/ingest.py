"""`asr-eval ingest`: a corpus source → Parquet shards + index.json + quarantine.jsonl."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from asr_eval.audio import MAX_LONG_FORM_S, dominant_reason
from asr_eval.cli import StorageOptions, app, console, err_console, print_table, use_storage
from asr_eval.corpus import LAYOUTS, open_source
from asr_eval.errors import AsrEvalError
from asr_eval.shards import IngestOptions, ingest, parse_split_map


@app.command("ingest")
def ingest_cmd(
    source: Annotated[str, typer.Argument(help="Manifest file, Kaldi/audiofolder/Common Voice folder, a public Mandarin "
                                                "corpus as downloaded (AISHELL-1/2, WenetSpeech, KeSpeech, MagicData-RAMC, "
                                                "THCHS-30, aidatatang_200zh), datasets save_to_disk folder, Parquet, "
                                                "or a hub id")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output corpus folder or URL (s3://bucket/prefix, gs://…, "
                                                     "az://…): shards + index.json")],
    layout: Annotated[str | None, typer.Option(help=f"Force a layout: {', '.join(LAYOUTS)}")] = None,
    audio_column: Annotated[str | None, typer.Option(help="Audio path column of a manifest")] = None,
    text_column: Annotated[str | None, typer.Option(help="Transcript column of a manifest")] = None,
    id_column: Annotated[str | None, typer.Option(help="Utterance id column (default: audio file stem)")] = None,
    split: Annotated[str | None, typer.Option(help="Split name for a single-split source / HF split; the split(s) to read "
                                                   "of a public corpus, comma-separated (e.g. test, or test_net,dev)")] = None,
    split_map: Annotated[list[str] | None, typer.Option("--split-map", help="e.g. 'train+dev=train' (repeatable)")] = None,
    hf_config: Annotated[str | None, typer.Option(help="Hugging Face dataset config (hub sources)")] = None,
    cv_tsv: Annotated[list[str] | None, typer.Option(help="Common Voice TSVs to read (default train, dev, test)")] = None,
    name: Annotated[str | None, typer.Option(help="Corpus name (default: source folder name)")] = None,
    keep_long: Annotated[bool, typer.Option(help="Keep clips over 30 s, flagged 'too_long'")] = False,
    long_form: Annotated[bool, typer.Option(help="Keep recordings over 30 s (up to --max-long-hours) as long-form "
                                                 "items, whole transcript as reference; scored with --strategy")] = False,
    max_long_hours: Annotated[float, typer.Option(help="Cap of a long-form recording, in hours")] = MAX_LONG_FORM_S / 3600,
    recording_level: Annotated[bool, typer.Option(help="Kaldi dir with segments, WenetSpeech or MagicData-RAMC: one item "
                                                       "per recording (reference = its segments' texts in time order, "
                                                       "times kept); implies --long-form")] = False,
    max_rows: Annotated[int, typer.Option(help="Max rows per shard")] = 2000,
    max_mb: Annotated[int, typer.Option(help="Max MB of audio per shard")] = 128,
    workers: Annotated[int, typer.Option(help="Decoder processes (0 = one per core)")] = 0,
    confine_to_root: Annotated[bool, typer.Option(
        help="Reject every audio path outside the manifest's folder (absolute paths elsewhere included); "
             "by default absolute paths are accepted and only relative paths climbing out with '..' are rejected")] = False,
    allow_outside_root: Annotated[bool, typer.Option(hidden=True, help="Deprecated: now the default")] = False,
    overwrite: Annotated[bool, typer.Option(help="Discard an earlier ingest in --out")] = False,
    storage_option: StorageOptions = None,
) -> None:
    """Ingest a corpus into 16 kHz FLAC Parquet shards; bad items go to quarantine.jsonl."""
    use_storage(storage_option)
    if allow_outside_root:
        err_console.print("note: --allow-outside-root is deprecated and has no effect: absolute audio paths "
                          "are accepted by default now (--confine-to-root rejects them)")
    reader = open_source(source, layout, audio_column=audio_column, text_column=text_column,
                         id_column=id_column, split=split, hf_config=hf_config,
                         cv_tsvs=tuple(cv_tsv) if cv_tsv else None, confine_to_root=confine_to_root,
                         recording_level=recording_level)
    if max_long_hours <= 0:
        raise AsrEvalError(f"--max-long-hours {max_long_hours}: must be > 0")
    opts = IngestOptions(max_rows=max_rows, max_bytes=max_mb * 2**20, keep_long=keep_long,
                         long_form=long_form or recording_level, max_long_s=max_long_hours * 3600,
                         split_map=parse_split_map(split_map or []), workers=workers, corpus_name=name)
    s = ingest(reader, out, opts, progress=True, overwrite=overwrite)
    t = Table(title=f"ingested [bold]{s.corpus}[/] → {s.out_dir}", show_header=True)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("items read", str(s.n_items))
    t.add_row("ingested", f"[green]{s.n_ingested}[/]")
    t.add_row("quarantined", f"[yellow]{s.n_quarantined}[/]" if s.n_quarantined else "0")
    for reason, n in s.quarantine_by_reason.items():
        t.add_row(f"  {reason}", str(n))
    for sp, n in s.by_split.items():
        t.add_row(f"split {sp}", str(n))
    t.add_row("hours", f"{s.hours:.3f}")
    t.add_row("shards", str(s.shards))
    if s.shards_repaired:
        t.add_row("  rewritten (were missing/corrupt)", f"[yellow]{s.shards_repaired}[/]")
    t.add_row("speed", f"{s.audio_s_per_s:.0f}× real time")
    print_table(t)
    if s.n_quarantined:
        console.print(f"reasons per item: {s.out_dir.rstrip('/')}/quarantine.jsonl")
    top = dominant_reason(s.quarantine_by_reason, s.n_items)
    hint = f"; most items ({top[1]} of {s.n_items}) were quarantined as {top[0]}: {top[2]}" if top else ""
    if s.n_ingested == 0:
        raise AsrEvalError(f"nothing could be ingested from {source} ({s.n_quarantined} items quarantined){hint}")
    if top:
        err_console.print(f"[yellow]warning:[/] most items ({top[1]} of {s.n_items}) were quarantined as "
                          f"[bold]{top[0]}[/]: {top[2]}")
