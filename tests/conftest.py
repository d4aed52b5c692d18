"""Shared test setup: offline hub, small audio fixtures built in code."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when ray is imported: raylets bind 127.0.0.1

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


# ───────────── a real S3 endpoint ─────────────
# moto's S3 server in this process, on loopback (s3fs and pyarrow talk to it over HTTP like to AWS);
# or a team's own S3-compatible server (MinIO, …) when ASR_EVAL_TEST_S3_ENDPOINT names it, with
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY set for it.
S3_SECRET = "asr-eval-test-SECRET-5f1c9e"  # grepped for in stores, reports, exports and logs


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    pytest.importorskip("s3fs")
    own = os.environ.get("ASR_EVAL_TEST_S3_ENDPOINT")
    server = None
    if own:
        endpoint = own
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    else:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        moto_server = pytest.importorskip("moto.server")
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint, secret = f"http://{host}:{port}", S3_SECRET
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        mp.setenv("AWS_DEFAULT_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
        if not own:
            mp.setenv("AWS_ACCESS_KEY_ID", "AKIAASREVALTEST")
            mp.setenv("AWS_SECRET_ACCESS_KEY", secret)
        mp.setenv("ASR_EVAL_CACHE_DIR", str(tmp_path_factory.mktemp("asr-eval-cache")))
        from asr_eval import storage

        storage._FS.clear()
        yield {"endpoint": endpoint, "secret": secret}
        storage._FS.clear()
    if server is not None:
        server.stop()


@pytest.fixture
def bucket(s3_endpoint, request) -> str:
    """A fresh bucket on the S3 endpoint: 's3://NAME'."""
    import re
    import uuid

    import s3fs

    name = re.sub(r"[^a-z0-9-]", "-", f"t-{request.node.name.lower()}")[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(name)
    return f"s3://{name}"



@contextlib.contextmanager
def private_cache(tmp_path_factory, name: str):
    """``$ASR_EVAL_CACHE`` pointed at a fresh folder for a module's conversions (restored after)."""
    with pytest.MonkeyPatch.context() as mp:
        folder = str(tmp_path_factory.mktemp(name))
        mp.setenv("ASR_EVAL_CACHE", folder)
        yield folder
