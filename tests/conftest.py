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


def headless_chromium(*extra_args: str, window: str = "1400,1000"):
    """A headless Chromium WebDriver with its console log captured, for the browser tests (report,
    web app); skips when Chromium/chromedriver are missing. Returns (driver, profile dir to remove)."""
    import shutil
    import tempfile

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("headless Chromium not installed: `make browser-deps` (Debian packages chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="asr-eval-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--window-size={window}", f"--user-data-dir={profile}", *extra_args):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=opts)
    driver.set_page_load_timeout(60)
    return driver, profile
