"""`asr-eval demo`: the end-to-end Prefect pipeline on the bundled corpus and model, offline."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from asr_eval.cli import app, console


@app.command("demo")
def demo_cmd(
    full: Annotated[bool, typer.Option(help="The full-size demo: all 150 test utterances and 24 fine-tuning steps "
                                            "(~13 min instead of ~9 on a 2-core AVX2 machine)")] = False,
    max_steps: Annotated[int | None, typer.Option(help="Fine-tuning steps (default: 12, or 24 with --full)")] = None,
    skip_finetune: Annotated[bool, typer.Option(help="Only ingest, score and report")] = False,
    long_form: Annotated[bool, typer.Option(help="Compare the long-form strategies (sequential, chunked, vad) on "
                                                 "a recording of the generated long-form demo set")] = True,
    engine_parity: Annotated[bool, typer.Option(help="Also score the zero-shot baseline on transformers (one more "
                                                     "pass over the test split): the report's engine-parity "
                                                     "section")] = False,
) -> None:
    """Run ingest → score → report → fine-tune → score → check-training → long-form strategies → report
    on datasets_local/demo_zh with bundled:whisper-base: the report is written as soon as the
    zero-shot baseline is scored and rewritten at the end; a table of the time per step closes the run."""
    started = time.time()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Without a Prefect server the flow starts a temporary one; on a busy 2-core machine it can
    # need longer than Prefect's 20 s default to come up.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    root = Path(__file__).resolve().parents[2]
    if not (root / "flows" / "pipeline.py").exists():
        console.print("[red]the demo runs from a source checkout (flows/ not found)[/]")
        raise typer.Exit(2)
    sys.path.insert(0, str(root))
    from flows.pipeline import DEMO_FULL, DEMO_QUICK, pipeline_flow

    params = dict(DEMO_FULL if full else DEMO_QUICK)
    if max_steps is not None:
        params.update(max_steps=max_steps, eval_steps=min(params["eval_steps"], max_steps))
    res = pipeline_flow(**params, skip_finetune=skip_finetune, long_form_ids=None if long_form else [],
                        zero_shot_engines="ctranslate2,transformers" if engine_parity else "ctranslate2",
                        started_at=started)
    console.rule("[bold green]demo finished")
    console.print(f"report: [bold]{res['report']}[/]")
    console.print(f"store:  [bold]{res['db']}[/]")
