"""`asr-eval` command line. Each command lives in its own module in this package and
registers itself on `app`; every module here is imported so adding a command is adding a file."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Annotated

import typer
from rich.console import Console

from asr_eval.errors import AsrEvalError

app = typer.Typer(
    name="asr-eval",
    help="Mandarin ASR evaluation harness: ingest corpora, score Whisper models per slice, "
    "fine-tune, watch training runs, build reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


@app.callback()
def _root() -> None:
    """Mandarin ASR evaluation harness (keeps `asr-eval CMD` a command group)."""
    from asr_eval.progress import third_party_bars

    third_party_bars()  # off a terminal: progress lines, no hub/transformers/datasets tqdm bars
err_console = Console(stderr=True, soft_wrap=True)

# Every command that takes a corpus, parts or output location takes this too (object stores).
StorageOptions = Annotated[list[str] | None, typer.Option(
    "--storage-option", help="Object-store option KEY=VALUE for s3fs/gcsfs/adlfs, e.g. endpoint_url=http://minio:9000, "
    "anon=true, profile=prod, client_kwargs.region_name=eu-west-1 (repeatable; used, never stored or logged). "
    "Credentials come from the standard places: AWS_* / ~/.aws / instance roles, GOOGLE_APPLICATION_CREDENTIALS, "
    "AZURE_STORAGE_*")]


def use_storage(items: list[str] | None) -> None:
    """Apply ``--storage-option`` values for this process."""
    if items:
        from asr_eval.storage import parse_storage_options, set_storage_options

        set_storage_options(parse_storage_options(items))


def print_table(t, width: int | None = None) -> None:
    """Print a rich table ``width`` columns wide, else ``COLUMNS`` when set, else on a terminal its
    width, else (a pipe, a file, CI) as wide as the table needs — never cut to rich's 80 columns
    with "…" where nobody can widen the window."""
    import os

    columns = os.environ.get("COLUMNS", "")
    if width is None and columns.isdigit():  # read now: the shared console fixed its width when it was made
        width = int(columns)
    if width is None and not console.is_terminal:
        width = Console(width=100_000).measure(t).maximum
    if not width:
        console.print(t)
        return
    # Widen the shared console (so that its capture() and redirections still apply) for this table
    # only; print(width=) cannot go past the console's width. Restore its own setting, not the width
    # it reports: a console without one reads the terminal / COLUMNS at each print.
    before = console._width
    console.width = width
    try:
        console.print(t, soft_wrap=False)
    finally:
        console._width = before


def _register_commands() -> None:
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def main() -> None:
    _register_commands()
    try:
        app()
    except AsrEvalError as exc:  # user error: message, no traceback
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
