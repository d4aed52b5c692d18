"""The web app in headless Chromium: upload a demo utterance and get exactly the library's transcript
and CER; stream a (fake) microphone through a streaming policy; see errors as messages; browse a
stored run. Chromium's fake capture device plays a WAV file as the microphone. A screenshot of each
tab goes to reports/ui_screenshots/."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np
import pytest
import soundfile as sf
from conftest import DEMO_CORPUS, headless_chromium

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "reports" / "ui_screenshots"
SR = 16_000
MODEL, ENGINE = "bundled:whisper-base", "ctranslate2"
LIVE_COMPUTE = "float32"  # the Live tab's default on a CPU (at 2 s chunks: asr_eval/ui/app.py)
# Live committed text (local-agreement, the CPU default: 2 s chunks, float32) vs the offline transcript of the
# same file (same model, engine, compute type, recipe, preprocessing): 0.0 % CER in 2 of 2 runs on the quiet
# 2-core AVX2 VM (2026-12-07; int8 at 1 s, the default before: 0.0–6.9 % in 6 runs, 20.7 % once on the
# slowest CI VM, whose last step's latency was 18 s — far behind real time, so the updates saw other
# chunkings of the audio: docs/ui.md). The bound leaves room for where the fake device's audio falls on chunk
# boundaries, for when the test stops recording and for a machine slower than real time; a broken stream
# scores far above it.
LIVE_CER_BOUND = 0.30


def _utterances(n: int, skip: int = 0) -> list[dict]:
    with open(DEMO_CORPUS / "metadata.csv", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test" and r["noise"] == "clean"
                and r["voice"] == "neural"]
    return rows[skip:skip + n]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An upload (one test utterance, FLAC as shipped), a corrupt file, and the microphone's WAV:
    four utterances with pauses (~9 s of speech), then 8 s of silence so that the recording stops
    before Chromium loops the file, 16-bit."""
    tmp = tmp_path_factory.mktemp("ui-browser")
    (upload,) = _utterances(1)
    pieces = [np.zeros(SR // 2, np.float32)]
    for r in _utterances(4, skip=1):
        pieces += [sf.read(DEMO_CORPUS / r["file_name"], dtype="float32")[0], np.zeros(int(0.6 * SR), np.float32)]
    speech_s = sum(len(p) for p in pieces) / SR
    pieces.append(np.zeros(8 * SR, np.float32))
    mic = tmp / "mic.wav"
    sf.write(mic, np.concatenate(pieces), SR, subtype="PCM_16")
    bad = tmp / "corrupt.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + os.urandom(4000))
    return {"upload": DEMO_CORPUS / upload["file_name"], "upload_text": upload["text"], "mic": mic, "bad": bad,
            "speech_s": speech_s, "tmp": tmp}


@pytest.fixture(scope="module")
def library(files):
    """The library's own answers, computed without the app: transcripts of the upload and of the
    microphone file (ingest's decoding, engine.transcribe; the microphone file at the Live tab's
    compute type)."""
    from asr_eval.audio import decode_flac, encode_flac, load
    from asr_eval.engines import create_engine, get_recipe

    engine = create_engine(ENGINE, MODEL, device="cpu")  # auto: float32 on a CPU
    audio = [decode_flac(encode_flac(load(files[k]).samples)) for k in ("upload", "mic")]
    greedy = engine.transcribe(audio[:1], get_recipe("greedy"), "pad-audio").texts[0]
    beam = engine.transcribe(audio[:1], get_recipe("beam5"), "pad-features").texts[0]
    live = create_engine(ENGINE, MODEL, device="cpu", compute_type=LIVE_COMPUTE)
    mic = live.transcribe(audio[1:], get_recipe("greedy"), "pad-audio").texts[0]
    return {"upload": greedy, "mic": mic, "upload_beam5_pad_features": beam}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    pytest.importorskip("gradio")
    from report_fixtures import build_scored_store

    from asr_eval.ui.app import build_app, launch

    store = build_scored_store(tmp_path_factory.mktemp("ui-store"), n_utts=12)
    demo = build_app(store.db, device="cpu")
    port = _free_port()
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    yield {"url": f"http://127.0.0.1:{port}/", "demo": demo, "store": store}
    demo.close()


@pytest.fixture(scope="module")
def browser(files):
    driver, profile = headless_chromium("--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
                                        "--use-fake-device-for-media-stream",
                                        f"--use-file-for-fake-audio-capture={files['mic']}", window="1400,1100")
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


# ───────────────────────────── page helpers ─────────────────────────────


def _wait(fn, timeout: float = 60.0, every: float = 0.2, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if v := fn():
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _js(b, script: str, *args):
    return b.execute_script(script, *args)


def _text(b, elem_id: str) -> str:
    return _js(b, "const e = document.getElementById(arguments[0]); return e ? e.innerText : '';", elem_id)


def _value(b, elem_id: str) -> str:
    return _js(b, "const e = document.querySelector('#' + arguments[0] + ' textarea, #' + arguments[0] + ' input');"
                  "return e ? e.value : '';", elem_id)


def _page(b, url: str) -> None:
    """The app's page (loaded once; the tests also run alone)."""
    if not b.current_url.startswith(url):
        b.get(url)
    _wait(lambda: _js(b, "return !!document.querySelector('#tr-run')"), what="the app")


def _dismiss_notices(b) -> None:
    _js(b, "document.querySelectorAll('[data-testid=toast-close], button.toast-close').forEach(x => x.click());")


def _tab(b, name: str) -> None:
    btn = _wait(lambda: _js(b, "return [...document.querySelectorAll('button[role=tab]')]"
                               ".find(x => x.innerText.trim() === arguments[0]) || null;", name), what=f"tab {name}")
    btn.click()


def _upload(b, path: Path) -> None:
    from selenium.webdriver.common.by import By

    clear = _js(b, "return document.querySelector('#tr-audio button[aria-label=Clear]');")
    if clear:
        clear.click()
    inp = _wait(lambda: b.find_elements(By.CSS_SELECTOR, "#tr-audio input[type=file]"), what="the upload input")[0]
    inp.send_keys(str(path))
    _wait(lambda: _js(b, "return !document.querySelector('#tr-audio input[type=file]');"), 30, what="the upload")


def _set_text(b, elem_id: str, value: str, choose: bool = False) -> None:
    """Type into a textbox, or into a dropdown and pick the option that is ``value`` (labelled
    ``value`` or ``value (…)``; a value no option has is entered as a custom value)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    el = b.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
    el.click()
    el.send_keys(Keys.CONTROL, "a")
    el.send_keys(Keys.DELETE)
    el.send_keys(value)
    if choose:
        time.sleep(0.3)
        opts = [o for o in b.find_elements(By.CSS_SELECTOR, "[role=option]")
                if o.text.strip() == value or o.text.strip().startswith(value + " (")]
        if opts:
            opts[0].click()
            return
        el.send_keys(Keys.ENTER)
    el.send_keys(Keys.TAB)


_REQUESTS = iter(range(1, 100))


def _transcribe(b, timeout: float = 120.0) -> None:
    """Click Transcribe and wait for this request's status line (numbered by the app)."""
    n = next(_REQUESTS)
    b.find_element("css selector", "#tr-run").click()
    _wait(lambda: _text(b, "tr-status").strip().startswith(f"#{n} "), timeout, what=f"transcription #{n}")


def _shot(b, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = min(_js(b, "return Math.max(...[document.documentElement, document.body, "
                        "document.querySelector('.gradio-container')].filter(Boolean).map(e => e.scrollHeight))"), 4000)
    b.set_window_size(1400, height)
    b.set_window_size(1400, height + height - _js(b, "return window.innerHeight"))  # the window's frame
    assert b.save_screenshot(str(SCREENSHOTS / name)) and (SCREENSHOTS / name).stat().st_size > 20_000
    b.set_window_size(1400, 1100)


# ───────────────────────────── the tests ─────────────────────────────


def test_upload_gives_the_librarys_transcript_and_cer(browser, app, files, library):
    from asr_eval.metrics import score_pair

    b = browser
    _page(b, app["url"])
    _tab(b, "Transcribe & compare")
    _upload(b, files["upload"])
    _set_text(b, "tr-ref", files["upload_text"])
    # configuration 3: the same engine (cached) with beam search and faster-whisper's preprocessing
    _js(b, "document.querySelector('#cfg3-on input').click();")
    _set_text(b, "cfg3-recipe", "beam5", choose=True)
    _js(b, "[...document.querySelectorAll('#cfg3-pre label')].find(x => x.innerText.includes('pad-features')).click();")
    _transcribe(b)
    for k, want in ((1, library["upload"]), (3, library["upload_beam5_pad_features"])):
        assert _value(b, f"cfg{k}-text") == want != ""
        cer = score_pair(files["upload_text"], want, "zh-v1").cer
        info = _text(b, f"cfg{k}-info")
        assert f"CER {100 * cer:.2f} %" in info and "RTFx" in info, info
        assert _js(b, f"return document.querySelectorAll('#cfg{k}-diff .diff .tok').length") >= 7
    assert "model cached" in _text(b, "cfg3-info")  # one engine serves both columns
    _shot(b, "ui-transcribe.png")
    _js(b, "document.querySelector('#cfg3-on input').click();")


def test_errors_show_in_the_page_and_the_app_keeps_serving(browser, app, files, library):
    b = browser
    _page(b, app["url"])
    _tab(b, "Transcribe & compare")
    _upload(b, files["bad"])
    _transcribe(b)
    status = _text(b, "tr-status")
    assert "error:" in status and "corrupt.wav" in status, status
    _upload(b, files["upload"])
    _set_text(b, "cfg1-model", "no/such/model/here", choose=True)
    _transcribe(b)
    info = _text(b, "cfg1-info")
    assert "error:" in info and "no such folder" in info, info
    _set_text(b, "cfg1-model", MODEL, choose=True)
    _transcribe(b)
    assert _value(b, "cfg1-text") == library["upload"] and "model cached" in _text(b, "cfg1-info")
    assert app["demo"].asr_eval_cache.loads == 1  # one engine, loaded once, for all these requests


def test_live_microphone_commits_text_while_it_plays(browser, app, files, library):
    from asr_eval.metrics import score_pair

    b = browser
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    _page(b, app["url"])
    _dismiss_notices(b)  # the previous test's error notices
    _tab(b, "Live")
    record = _wait(lambda: _js(b, "return [...document.querySelectorAll('#live-mic button')]"
                                  ".find(x => /record/i.test(x.innerText + (x.getAttribute('aria-label') || '')))"
                                  " || null;"), what="the record button")
    record.click()
    # Stop once the speech has played and some text is committed, at the latest 6 s after the speech
    # (the file's silent tail is 8 s: later, Chromium's loop would start the speech again).
    t0, seen = time.monotonic(), []
    while (t := time.monotonic() - t0) < files["speech_s"] + 6.0:
        committed = _js(b, "const e = document.querySelector('#live-text .committed'); return e ? e.innerText : '';")
        seen.append((round(t, 1), committed))
        if committed and sum(bool(c) for _, c in seen) == 1:
            b.save_screenshot(str(SCREENSHOTS / "ui-live.png"))  # mid-stream: committed + grey tentative
        if committed and t > files["speech_s"] + 1.0:
            break
        time.sleep(0.5)
    stop = _js(b, "return [...document.querySelectorAll('#live-mic button')]"
                  ".find(x => /stop/i.test(x.innerText + (x.getAttribute('aria-label') || ''))) || null;")
    stop.click()
    t_stop = time.monotonic() - t0
    _wait(lambda: "finished" in _text(b, "live-stats"), 60, what="the stream to finish")
    final = _js(b, "return document.querySelector('#live-text .committed').innerText")
    growing = [c for t, c in seen if c]
    assert growing, f"no committed text while the audio played: {seen}"
    cer = score_pair(library["mic"], final, "zh-v1").cer
    print(f"\nlive: committed text over time {seen}; stopped at {t_stop:.1f} s, finished at "
          f"{time.monotonic() - t0:.1f} s; "
          f"final {final!r}; offline {library['mic']!r}; CER vs offline {100 * cer:.1f} %; {_text(b, 'live-stats')}")
    assert cer <= LIVE_CER_BOUND, (final, library["mic"], cer)
    _shot(b, "ui-live-finished.png")


def test_browse_a_stored_run(browser, app):
    b = browser
    _page(b, app["url"])
    _dismiss_notices(b)
    _tab(b, "Browse a run")
    _wait(lambda: _js(b, "return document.querySelectorAll('#br-worst audio').length"), 30, what="the worst utterances")
    assert _js(b, "return document.querySelectorAll('#br-worst .utt').length") == 10
    assert "_all" in _text(b, "br-slices") and "normalizer" in _text(b, "br-status")
    duration = b.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const a = document.querySelector('#br-worst audio');
        a.preload = 'auto';
        a.addEventListener('loadedmetadata', () => done(a.duration));
        a.addEventListener('error', () => done(-1));
        a.load();""")
    assert 0.5 < duration < 1.2  # the fixture's ingested 0.6–1.0 s clips, playable
    _shot(b, "ui-browse.png")
