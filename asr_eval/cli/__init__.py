"""`asr-eval` command line. Each command lives in its own module in this package and
registers itself on `app`; every module here is imported so adding a command is adding a file."""

from __future__ import annotations

import importlib
import pkgutil
import sys

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
err_console = Console(stderr=True, soft_wrap=True)


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
