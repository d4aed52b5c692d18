"""`asr-eval verify CORPUS`: every shard against index.json (size + SHA-256), the quarantine and
journal files line by line; a table, and exit status 1 when anything is wrong."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from asr_eval.cli import StorageOptions, app, console, print_table, use_storage
from asr_eval.corpus_handle import read_index, verify_corpus
from asr_eval.errors import AsrEvalError
from asr_eval.shard_check import fix_hint
from asr_eval.storage import redact


@app.command("verify")
def verify_cmd(
    corpus: Annotated[str, typer.Argument(help="Ingested corpus folder or URL (holds index.json)")],
    storage_option: StorageOptions = None,
) -> None:
    """Check a corpus: shards (size, SHA-256, Parquet footer), quarantine.jsonl, _progress.jsonl."""
    use_storage(storage_option)
    checks = verify_corpus(corpus)
    t = Table(title=f"verify {redact(corpus)}")
    for col, kw in (("file", {"no_wrap": True}), ("kind", {}), ("status", {"no_wrap": True}),
                    ("rows", {"justify": "right"}), ("bytes", {"justify": "right"}),
                    ("sha256", {"no_wrap": True})):
        t.add_column(col, **kw)
    for c in checks:
        status = "[green]ok[/]" + (" (cached)" if c.cached else "") if c.ok else f"[bold red]{c.problem}[/]"
        t.add_row(c.file, c.kind, status, "" if c.rows is None else str(c.rows),
                  "" if c.actual_bytes is None else str(c.actual_bytes),
                  (c.actual_sha256 or "")[:12])
    print_table(t)
    bad = [c for c in checks if not c.ok]
    for c in bad:
        console.print(f"[bold red]{c.file}[/]: {c.problem} — {c.detail}")
    if bad:
        try:
            idx = read_index(corpus)
        except AsrEvalError:
            idx = None
        console.print(f"[bold red]{len(bad)} problem(s)[/] in {redact(corpus)}. Fix: {fix_hint(corpus, idx)}")
        raise typer.Exit(1)
    n = sum(1 for c in checks if c.kind == "shard")
    console.print(f"[green]ok[/]: {n} shard(s) match index.json")
