"""`asr-eval convert`: write a CTranslate2 (faster-whisper-compatible) folder for any model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from asr_eval.cli import app, console


@app.command("convert")
def convert_cmd(
    model: Annotated[str, typer.Argument(help="Hub id, local checkpoint dir (e.g. an `asr-eval finetune` export) "
                                              "or bundled:whisper-base")],
    out: Annotated[Path, typer.Option(help="Output folder (model.bin, config.json, tokenizer.json, …)")],
    quantization: Annotated[str, typer.Option(help="float32 | int8 | float16 | bfloat16 | int16")] = "int8",
    force: Annotated[bool, typer.Option(help="Overwrite a non-empty --out")] = False,
) -> None:
    """Convert MODEL to CTranslate2 for deployment (faster-whisper loads the folder as it is)."""
    from asr_eval.models.convert import convert_model

    dest = convert_model(model, out, quantization, force)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    console.print(f"[green]wrote[/] {dest} ({size / 2**20:.1f} MiB, {quantization}); score it with "
                  f"`asr-eval score --model ct2:{dest} --engine ctranslate2`, or load it with faster-whisper")
