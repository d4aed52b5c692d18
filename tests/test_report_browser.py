"""The report in a real browser: headless Chromium opens it from file://, runs its script without
errors, draws the SVG charts, attaches playable audio, loads nothing from outside, and the hostile
transcripts show up as text instead of running. A screenshot is saved for people to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
from conftest import headless_chromium  # noqa: E402

from asr_eval.report import ReportOptions, build_report  # noqa: E402
from report_fixtures import XSS_ALERT, XSS_ATTR, XSS_SCRIPT, build_scored_store, build_store  # noqa: E402

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "reports" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    driver, profile = headless_chromium()
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    store = build_store(tmp / "store")
    res = build_report(store.db, tmp / "report.html")
    return res, tmp


def _open_and_check(browser, path: Path, payloads: tuple[str, ...]) -> dict:
    """Open a report; assert nothing ran or loaded that should not; return chart counts."""
    from selenium.common.exceptions import NoAlertPresentException

    browser.set_window_size(1400, 1000)
    browser.get(path.resolve().as_uri())
    # the payloads did not run: no dialog, no marker global, and they are visible as text
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text
    assert browser.execute_script("return typeof window.__xss") == "undefined"
    text = browser.execute_script("return document.body.innerText")
    for payload in payloads:
        assert payload in text
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    # no JavaScript errors or CSP violations in the console
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
    # nothing fetched from anywhere (data: URIs do not count as resources)
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'))")
    assert fetched == []
    # the charts rendered: SVG elements with real geometry
    return browser.execute_script("""
        const out = {};
        for (const kind of ['line', 'ci', 'bars']) {
          const svgs = [...document.querySelectorAll('svg.chart.' + kind)];
          out[kind] = {n: svgs.length, drawn: svgs.filter(s => s.getBBox().width > 50).length};
        }
        out.series = [...document.querySelectorAll('path.series')].filter(p => p.getTotalLength() > 10).length;
        out.markers = document.querySelectorAll('g.marker').length;
        out.audio = Number(document.documentElement.dataset.audioReady);
        return out;""")


def _first_audio_duration(browser) -> float:
    return browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const a = document.querySelector('audio[data-audio]');
        a.preload = 'auto';
        a.addEventListener('loadedmetadata', () => done(a.duration));
        a.addEventListener('error', () => done(-1));
        a.load();""")


def _screenshot(browser, path: Path, name: str) -> None:
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(height, 20000))
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 20_000
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / name)


def test_report_in_headless_chromium(browser, report):
    res, tmp = report
    charts = _open_and_check(browser, res.path, (XSS_SCRIPT, XSS_ATTR, XSS_ALERT))
    assert charts["line"] == {"n": 6, "drawn": 6}  # 3 curves × 2 training runs
    assert charts["ci"] == {"n": 6, "drawn": 6}  # headline + 5 slice columns
    assert charts["bars"] == {"n": 1, "drawn": 1}
    assert charts["series"] >= 8 and charts["markers"] == 3 * 4  # 4 alerts on each chart of the alerting run
    assert charts["audio"] == 30
    assert 0.5 < _first_audio_duration(browser) < 2.0  # the fixture's clips are 0.8–1.2 s of FLAC
    _screenshot(browser, tmp / "report.png", "report_fixture.png")


def test_report_from_real_scoring_output_in_headless_chromium(browser, tmp_path):
    fs = build_scored_store(tmp_path / "scored")
    res = build_report(fs.db, tmp_path / "scored.html", ReportOptions(title="Real scorer output"))
    charts = _open_and_check(browser, res.path, (XSS_SCRIPT,))
    # bars: the error-class chart of the error analysis + the error-kind stacked bars ("What kind of errors")
    assert charts["ci"]["n"] == charts["ci"]["drawn"] >= 3 and charts["bars"] == {"n": 2, "drawn": 2}
    assert charts["line"] == {"n": 0, "drawn": 0} and charts["audio"] > 0  # no training runs in this store
    assert 0.5 < _first_audio_duration(browser) < 1.2  # ingested 0.6–1.0 s clips
    _screenshot(browser, tmp_path / "scored.png", "report_scored.png")


def test_empty_report_in_headless_chromium(browser, tmp_path):
    from asr_eval.store import connect

    connect(tmp_path / "empty.duckdb").close()
    res = build_report(tmp_path / "empty.duckdb", tmp_path / "empty.html")
    browser.set_window_size(1400, 1000)
    browser.get(res.path.resolve().as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
    nodata = browser.execute_script("return [...document.querySelectorAll('.nodata')].map(e => e.innerText)")
    assert any("No scored runs in this store yet" in t for t in nodata)
    assert any("No training runs" in t for t in nodata)
    browser.save_screenshot(str(tmp_path / "empty.png"))
    shutil.copy(tmp_path / "empty.png", SCREENSHOTS / "report_empty.png")
