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
    quantization: Annotated[str | None, typer.Option(help="ct2: float32 | int8 (default) | float16 | bfloat16 | int16; "
                                                     "ggml: float16 (default) | q8_0 | q5_0 | float32; "
                                                     "openvino: float32 | int8 (default) | int4")] = None,
    to: Annotated[str, typer.Option(help="ct2 (CTranslate2 folder) | ggml (whisper.cpp model file) | "
                                        "openvino (OpenVINO IR folder)")] = "ct2",
    force: Annotated[bool, typer.Option(help="Overwrite a non-empty --out")] = False,
) -> None:
    """Convert MODEL to CTranslate2 for deployment (faster-whisper loads the folder as it is)."""
    from asr_eval.models.convert import convert_model

    if to == "ggml":
        from asr_eval.models.ggml import convert_model_ggml

        dest = convert_model_ggml(model, out, quantization or "float16", force)
        console.print(f"[green]wrote[/] {dest} ({dest.stat().st_size / 2**20:.1f} MiB); whisper.cpp loads it as it "
                      f"is (`whisper-cli -m {dest}`); `asr-eval score --engine whispercpp` converts the same way")
        return
    if to == "openvino":
        from asr_eval.models.openvino import convert_model_openvino

        dest = convert_model_openvino(model, out, quantization or "int8", force)
        size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
        console.print(f"[green]wrote[/] {dest} ({size / 2**20:.1f} MiB, {quantization or 'int8'} weights: "
                      "encoder/cross/decoder .xml + .bin, OpenVINO IR); `asr-eval score --engine openvino` exports "
                      "the same way")
        return
    if to != "ct2":
        from asr_eval.errors import AsrEvalError

        raise AsrEvalError(f"--to {to!r}: one of ct2, ggml, openvino")
    quantization = quantization or "int8"
    dest = convert_model(model, out, quantization, force)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    console.print(f"[green]wrote[/] {dest} ({size / 2**20:.1f} MiB, {quantization}); score it with "
                  f"`asr-eval score --model ct2:{dest} --engine ctranslate2`, or load it with faster-whisper")
