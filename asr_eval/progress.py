"""Progress of long work, for whoever is watching: a rich bar on a terminal, log lines otherwise.

When nobody watches a terminal (CI logs, ``make demo | tee``, Prefect's log view) a bar prints
nothing useful, so a ``Progress`` then logs a line through the ``asr_eval.progress`` logger at a
bounded interval — done/total, rate, ETA — and one line when the work ends::

    scoring whisper-base · ctranslate2 float32 · greedy: 45/150 utterances (30 %), 1.04 utterances/s, ETA 1m41s

``heartbeat`` does the same for one opaque call that has no done/total (a model conversion): it
logs how long the call has been running until it returns.

The interval is ``$ASR_EVAL_PROGRESS_INTERVAL`` seconds (default 15). ``$ASR_EVAL_PROGRESS``
forces a mode: ``bar``, ``log`` or ``off`` (default ``auto``: a bar when stdout and stderr are a
terminal and no Prefect flow or task is running — its log view is what people watch then).
Prefect flows route the ``asr_eval`` logger into the run's logs (``PREFECT_LOGGING_EXTRA_LOGGERS``);
elsewhere, with no handler configured, the lines go to stderr.

Where ours are log lines, third-party bars are off too (``third_party_bars``: huggingface_hub,
transformers — "Loading weights", "Writing model shards" — and datasets draw tqdm bars that turn
into fragments in a log file). Numbers a person reads are formatted one way: rates with
``fmt_pct`` (``76.12 %``), durations with ``fmt_duration``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

LOGGER_NAME = "asr_eval.progress"
DEFAULT_INTERVAL_S = 15.0
MODES = ("auto", "bar", "log", "off")

log = logging.getLogger(LOGGER_NAME)


def interval_s() -> float:
    """The log interval: ``$ASR_EVAL_PROGRESS_INTERVAL`` (seconds, > 0), else 15."""
    raw = os.environ.get("ASR_EVAL_PROGRESS_INTERVAL", "")
    try:
        v = float(raw) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        v = DEFAULT_INTERVAL_S
    return v if v > 0 else DEFAULT_INTERVAL_S


def under_prefect() -> bool:
    """Inside a Prefect flow or task run (its log view, not a terminal, is where people watch)."""
    ctx = sys.modules.get("prefect.context")  # never imports Prefect itself
    if ctx is None:
        return False
    try:
        return ctx.FlowRunContext.get() is not None or ctx.TaskRunContext.get() is not None
    except Exception:  # noqa: BLE001  (another Prefect's API: no context, no Prefect run)
        return False


def mode() -> str:
    """``bar`` when stdout and stderr are both a terminal (rich draws its bars on stdout, spinners
    on stderr) and no Prefect run is going on, ``log`` otherwise — ``| tee``, CI, a file, a flow;
    ``$ASR_EVAL_PROGRESS`` overrides."""
    m = os.environ.get("ASR_EVAL_PROGRESS", "auto").strip().lower()
    if m in ("bar", "log", "off"):
        return m
    if under_prefect():
        return "log"
    try:
        return "bar" if sys.stdout.isatty() and sys.stderr.isatty() else "log"
    except (AttributeError, ValueError):  # a closed or replaced stream
        return "log"


def third_party_bars() -> bool:
    """Whether huggingface_hub, transformers and datasets may draw their tqdm bars: only where ours
    are bars (``mode() == "bar"``). Otherwise this switches them off for the process (and its
    children, through ``HF_HUB_DISABLE_PROGRESS_BARS`` / ``HF_DATASETS_DISABLE_PROGRESS_BARS``) and
    returns False. Cheap: it imports none of them."""
    if mode() == "bar":
        return True
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    return False


def _ensure_handler() -> None:
    """Lines must reach someone: with no handler anywhere up the logger tree, add one on stderr."""
    if not log.hasHandlers():
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(h)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)


def fmt_pct(rate: float | None, digits: int = 2) -> str:
    """A rate (a fraction: CER, MER, a share) as a person reads it: ``0.7612 → "76.12 %"``; ``—``
    for None or a non-finite value."""
    if rate is None or rate != rate or rate in (float("inf"), float("-inf")):
        return "—"
    return f"{100 * rate:.{digits}f} %"


def fmt_duration(s: float) -> str:
    """1h02m, 4m05s, 12s."""
    s = max(0, int(round(s)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def progress_line(label: str, done: int, total: int | None, elapsed_s: float, unit: str = "items",
                  audio_s: float = 0.0, final: bool = False, done_before: int = 0) -> str:
    """One log line: ``label: done/total unit (pct), rate, ETA`` (``done in …`` when final).
    Rate and ETA count only the ``done - done_before`` items finished in ``elapsed_s``."""
    head = f"{label}: {done}/{total} {unit}" if total else f"{label}: {done} {unit}"
    if total:
        head += f" ({100 * done / total:.0f} %)"
    here = done - done_before
    rate = here / elapsed_s if elapsed_s > 0 else 0.0
    parts = [head]
    if here and elapsed_s > 0:
        parts.append(f"{rate:.3g} {unit}/s" if rate >= 1 else f"{elapsed_s / here:.3g} s per {unit.rstrip('s')}")
    if audio_s > 0 and elapsed_s > 0:
        parts.append(f"RTFx {audio_s / elapsed_s:.2f}")
    if final:
        parts.append(f"done in {fmt_duration(elapsed_s)}")
    elif total and here and rate > 0:
        parts.append(f"ETA {fmt_duration((total - done) / rate)}")
    else:
        parts.append(f"elapsed {fmt_duration(elapsed_s)}")
    return ", ".join(parts)


class Progress:
    """Count finished items of one piece of work; show them as a bar or as periodic log lines.

    ``Progress(label, total, unit)`` then ``advance(n, audio_s=…)`` per finished batch, ``close()``
    (or use it as a context manager). ``enabled=False`` shows nothing. ``clock`` is for tests.
    ``detail``: text that ends the next log line (``fine-tuning: 6/12 steps …, ETA 40s — loss
    2.3456, grad-norm 14.21, lr 4.17e-05``); the caller keeps it current.
    """

    def __init__(self, label: str, total: int | None, unit: str = "items", *, enabled: bool = True,
                 show: str | None = None, every_s: float | None = None, initial: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.unit = label, total, unit
        self.mode = "off" if not enabled else (show or mode())
        self.every_s = interval_s() if every_s is None else every_s
        self.clock = clock
        self.done, self.initial, self.audio_s = initial, initial, 0.0
        self.t0 = self.last = clock()
        self.excluded_s = 0.0
        self.detail = ""
        self.closed = False
        self._bar: Any = None
        if self.mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                TimeRemainingColumn

            self._bar = RichProgress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            self._task = self._bar.add_task(label, total=total, completed=initial)
            self._bar.start()
        elif self.mode == "log":
            _ensure_handler()
            third_party_bars()
            log.info(f"{label}: started" + (f", {total} {unit}" if total else "")
                     + (f" ({initial} done before)" if initial else ""))

    def advance(self, n: int = 1, audio_s: float = 0.0) -> None:
        self.done += n
        self.audio_s += audio_s
        if self._bar is not None:
            self._bar.update(self._task, advance=n)
        elif self.mode == "log":
            now = self.clock()
            if now - self.last >= self.every_s and not (self.total and self.done >= self.total):
                self.last = now
                log.info(self._line(now - self.t0))

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` spent on other work (an evaluation between training steps) out of the
        rate and the ETA."""
        self.t0 += seconds
        self.excluded_s += seconds

    def _line(self, elapsed_s: float, final: bool = False) -> str:
        line = progress_line(self.label, self.done, self.total, elapsed_s, self.unit, self.audio_s, final,
                             done_before=self.initial)
        if final and self.excluded_s:
            line += f" (+ {fmt_duration(self.excluded_s)} of other work)"
        return f"{line} — {self.detail}" if self.detail else line

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._bar.stop()
        elif self.mode == "log":
            log.info(self._line(self.clock() - self.t0, final=True))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextmanager
def heartbeat(label: str, *, enabled: bool = True, every_s: float | None = None,
              spinner: bool = True) -> Iterator[None]:
    """Around one call that reports nothing itself: a spinner on a terminal (``spinner=False``
    inside another live bar: nothing), else a log line when it starts, every ``every_s`` while it
    runs, and when it ends (with its duration)."""
    m = "off" if not enabled else mode()
    if m == "bar" and not spinner:
        m = "off"
    if m == "bar":
        from rich.console import Console

        with Console(stderr=True).status(label):
            yield
        return
    if m == "off":
        yield
        return
    _ensure_handler()
    third_party_bars()
    every = interval_s() if every_s is None else every_s
    t0 = time.monotonic()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            log.info(f"{label}: still running, {fmt_duration(time.monotonic() - t0)} so far")

    log.info(f"{label}: started")
    th = threading.Thread(target=beat, name="asr-eval-heartbeat", daemon=True)
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join()
        log.info(f"{label}: done in {fmt_duration(time.monotonic() - t0)}")
