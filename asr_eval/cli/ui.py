"""`asr-eval ui`: the web app — transcribe & compare, live microphone streaming, browse stored runs."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Annotated

import typer

from asr_eval.cli import app, console
from asr_eval.errors import AsrEvalError
from asr_eval.store import DEFAULT_DB

INSTALL_HINT = "pip install -e '.[ui]' (or `make ui`, which installs it and starts the app)"


def require_gradio() -> None:
    """gradio is an optional extra: fail with how to install it, before anything is loaded."""
    if importlib.util.find_spec("gradio") is None:
        raise AsrEvalError(f"the web app needs gradio, which is not installed: {INSTALL_HINT}")


@app.command("ui")
def ui_cmd(
    db: Annotated[Path, typer.Option("--db", help="DuckDB store to browse and list models from (opened "
                                                  "read-only per request, so `asr-eval score` can write meanwhile)")]
    = DEFAULT_DB,
    host: Annotated[str, typer.Option(help="Interface to listen on (127.0.0.1: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 7860,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    max_engines: Annotated[int, typer.Option(help="Loaded engines kept in memory (least recently used go first)")] = 3,
    max_audio_s: Annotated[float, typer.Option(help="Longest recording accepted, seconds (over 30 s: long-form)")]
    = 600.0,
    share: Annotated[bool, typer.Option(help="Also open a public gradio.live link (off by default: anyone with "
                                             "the link could use this machine)")] = False,
) -> None:
    """Start the web app: upload or record audio and compare up to three model configurations side by side
    (transcript, time, RTFx, CER and diff against a reference), stream the microphone through the streaming
    policies, and browse a stored run's slices and worst utterances with their audio."""
    require_gradio()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from asr_eval.ui.app import build_app, launch

    if max_engines < 1:
        raise AsrEvalError(f"--max-engines {max_engines}: must be at least 1")
    if not db.exists():
        console.print(f"[yellow]no store at {db} yet[/]: transcribe and live work; 'Browse a run' will list runs "
                      "once `asr-eval score` has written some")
    demo = build_app(db, device=device, max_engines=max_engines, max_audio_s=max_audio_s)
    console.print(f"asr-eval ui on [bold]http://{host}:{port}[/] (store {db}; Ctrl-C stops it)")
    launch(demo, host=host, port=port, share=share, quiet=not share)  # gradio prints the public link
