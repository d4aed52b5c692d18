"""Paths and defaults shared by the flows. Defaults work offline on the bundled demo."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DEMO_SOURCE = str(PROJECT / "datasets_local" / "demo_zh")
REPORTS = PROJECT / "reports"
DEMO_CORPUS = str(REPORTS / "corpora" / "demo_zh")
DEMO_LONG_CORPUS = str(REPORTS / "corpora" / "demo_zh_long")
DEFAULT_DB = str(REPORTS / "asr_eval.duckdb")
RUNS = PROJECT / "runs"
BUNDLED = "bundled:whisper-base"


def offline_default() -> None:
    """Hub access follows the environment; without network, a missing model fails fast."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
