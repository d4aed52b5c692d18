"""Shared test setup: offline hub, small audio fixtures built in code."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEMO_CORPUS = REPO / "datasets_local" / "demo_zh"


def tone(seconds: float = 1.0, sr: int = 16000, channels: int = 1, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    """A speech-like test signal: a tone with a little noise (never all-silent)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    x = x.astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def write_audio(path: Path, seconds: float = 1.0, sr: int = 16000, channels: int = 1, fmt: str | None = None,
                **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, sr, channels, **kw), sr, format=fmt)
    return path


@pytest.fixture
def make_audio():
    return write_audio
