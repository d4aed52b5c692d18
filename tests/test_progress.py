"""Progress reporting when nobody watches a terminal, the pipeline's step timings, the quick demo's
test sample and the headline's minimum-evidence rule in the flow's log line."""

from __future__ import annotations

import csv
import logging
import sys
import time
from collections import Counter

import pytest
from conftest import DEMO_CORPUS, REPO

from asr_eval.progress import LOGGER_NAME, Progress, fmt_duration, heartbeat, mode, progress_line
from asr_eval.timing import StepTimer

sys.path.insert(0, str(REPO / "datasets_local" / "demo_zh"))
sys.path.insert(0, str(REPO))


@pytest.fixture
def lines():
    """Messages of the asr_eval.progress logger."""
    got: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            got.append(record.getMessage())

    h = Keep()
    log = logging.getLogger(LOGGER_NAME)
    log.addHandler(h)
    yield got
    log.removeHandler(h)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("seconds, want", [(0, "0s"), (12.4, "12s"), (59.6, "1m00s"), (245, "4m05s"),
                                           (3725, "1h02m")])
def test_fmt_duration(seconds, want):
    assert fmt_duration(seconds) == want


@pytest.mark.parametrize("args, kw, want", [
    (("scoring", 45, 150, 43.2, "utterances", 100.0), {},
     "scoring: 45/150 utterances (30 %), 1.04 utterances/s, RTFx 2.31, ETA 1m41s"),
    (("fine-tuning", 3, 24, 42.0, "steps"), {}, "fine-tuning: 3/24 steps (12 %), 14 s per step, ETA 4m54s"),
    (("fine-tuning", 24, 24, 336.0, "steps"), {"final": True},
     "fine-tuning: 24/24 steps (100 %), 14 s per step, done in 5m36s"),
    (("ingest", 60, 100, 10.0, "items"), {"done_before": 50}, "ingest: 60/100 items (60 %), 1 items/s, ETA 40s"),
    (("convert", 0, None, 31.0, "items"), {}, "convert: 0 items, elapsed 31s"),
])
def test_progress_line(args, kw, want):
    assert progress_line(*args, **kw) == want


def test_log_mode_writes_bounded_lines_with_rate_and_eta(lines):
    clock = Clock()
    p = Progress("scoring m · ctranslate2", 10, "utterances", show="log", every_s=15, clock=clock)
    for _ in range(10):
        clock.t += 4.0  # 4 s per utterance: a line at most every 15 s
        p.advance(1, audio_s=2.0)
    p.close()
    p.close()  # idempotent
    assert lines == [
        "scoring m · ctranslate2: started, 10 utterances",
        "scoring m · ctranslate2: 4/10 utterances (40 %), 4 s per utterance, RTFx 0.50, ETA 24s",
        "scoring m · ctranslate2: 8/10 utterances (80 %), 4 s per utterance, RTFx 0.50, ETA 8s",
        "scoring m · ctranslate2: 10/10 utterances (100 %), 4 s per utterance, RTFx 0.50, done in 40s",
    ]


def test_disabled_and_bar_modes_log_nothing(lines):
    with Progress("x", 3, show="log", enabled=False) as p:
        p.advance(3)
    with Progress("y", 3, show="bar") as p:
        p.advance(3)
    assert lines == []


def test_mode_follows_the_environment(monkeypatch):
    monkeypatch.setenv("ASR_EVAL_PROGRESS", "log")
    assert mode() == "log"
    monkeypatch.setenv("ASR_EVAL_PROGRESS", "off")
    assert mode() == "off"
    monkeypatch.setenv("ASR_EVAL_PROGRESS", "auto")
    assert mode() == "log"  # pytest captures stderr: not a terminal


def test_heartbeat_logs_while_an_opaque_call_runs(lines, monkeypatch):
    monkeypatch.setenv("ASR_EVAL_PROGRESS", "log")
    with heartbeat("converting m", every_s=0.05):
        time.sleep(0.18)
    assert lines[0] == "converting m: started" and lines[-1].startswith("converting m: done in")
    assert 2 <= sum("still running" in x for x in lines) <= 4


def test_step_timer_table_and_failed_steps():
    ticks = iter([0.0, 3.0, 3.0, 183.5, 183.5, 190.0])
    t = StepTimer(clock=lambda: next(ticks))
    with t.step("ingest"):
        pass
    with t.step("zero-shot score"):
        pass
    with pytest.raises(RuntimeError), t.step("report"):
        raise RuntimeError("boom")
    assert [(s.name, s.seconds, s.status) for s in t.steps] == [
        ("ingest", 3.0, "ok"), ("zero-shot score", 180.5, "ok"), ("report", 6.5, "failed")]
    assert t.total() == 190.0
    table = t.table("time per step").splitlines()
    assert table[0] == "time per step"
    assert table[3].split() == ["ingest", "0:03.0", "2", "%", "0:03.0"]
    assert table[4].split() == ["zero-shot", "score", "3:00.5", "95", "%", "3:03.5"]
    assert table[5].split()[:2] == ["report", "(failed)"]
    assert table[-1].split() == ["total", "3:10.0", "100", "%"]


# ───────────────────────────── the quick demo's test sample ─────────────────────────────


@pytest.mark.parametrize("n, want", [
    (8, {"a": 5, "b": 2, "c": 1}),  # strata of 60/30/10: proportional, at least one each
    (3, {"a": 1, "b": 1, "c": 1}),
    (2, {"a": 1, "b": 1, "c": 0}),  # fewer draws than strata: largest remainders decide
    (50, {"a": 30, "b": 15, "c": 5}),
    (100, {"a": 60, "b": 30, "c": 10}),
])
def test_allocate_is_proportional_and_exact(n, want):
    from quick import allocate

    got = allocate({"a": 60, "b": 30, "c": 10}, n)
    assert got == want and sum(got.values()) == n


def test_quick_source_samples_60_test_utterances_by_voice_then_noise(tmp_path):
    from flows.pipeline import DEMO_QUICK
    from quick import quick_source, voice_sizes

    assert DEMO_QUICK["demo_test_sample"] == 60
    # voices in proportion (120 neural / 30 robotic), each raised to 24 at the others' expense
    assert voice_sizes({"neural": 120, "robotic": 30}, 84) == {"neural": 60, "robotic": 24}
    assert voice_sizes({"neural": 120, "robotic": 30}, 120) == {"neural": 96, "robotic": 24}
    assert voice_sizes({"neural": 120, "robotic": 10}, 40) == {"neural": 30, "robotic": 10}
    with pytest.raises(ValueError, match="cannot give every voice 24"):
        voice_sizes({"neural": 120, "robotic": 30}, 40)
    a = quick_source(tmp_path / "a", 60)
    b = quick_source(tmp_path / "b", 60)
    rows = list(csv.DictReader((a / "metadata.csv").open(encoding="utf-8")))
    assert (a / "metadata.csv").read_bytes() == (b / "metadata.csv").read_bytes()  # fixed seed
    full = list(csv.DictReader((DEMO_CORPUS / "metadata.csv").open(encoding="utf-8")))
    splits = Counter(r["split"] for r in rows)
    assert splits == {"train": sum(r["split"] == "train" for r in full), "test": 60}
    test = [r for r in rows if r["split"] == "test"]
    assert Counter((r["voice"], r["noise"]) for r in test) == {
        ("neural", "clean"): 18, ("neural", "babble"): 6, ("neural", "pink"): 6, ("neural", "white"): 6,
        ("robotic", "clean"): 12, ("robotic", "babble"): 4, ("robotic", "pink"): 4, ("robotic", "white"): 4}
    # both voices reach the minimum evidence for a verdict (≥ 20 utterances, ≥ 200 reference characters)
    from asr_eval.text import get_profile

    zh = get_profile("zh-v1")
    robotic = [r for r in test if r["voice"] == "robotic"]
    assert len(robotic) == 24 and sum(len(zh.normalize(r["text"]).replace(" ", "")) for r in robotic) == 223
    kept = [r for r in full if r["utt_id"] in {x["utt_id"] for x in rows}]
    assert [r["utt_id"] for r in rows] == [r["utt_id"] for r in kept]  # corpus order
    assert [r["file_name"] for r in rows] == [str((DEMO_CORPUS / r["file_name"]).resolve()) for r in kept]


def test_demo_sample_refuses_another_source(tmp_path):
    from flows.pipeline import demo_sample_source

    with pytest.raises(ValueError, match="samples the bundled demo corpus"):
        demo_sample_source(str(tmp_path), 10, tmp_path / "out")


# ───────────────────────────── the flow's headline line ─────────────────────────────


def test_headline_line_drops_the_interval_below_the_minimum_evidence():
    from flows.score import headline_line

    row = {"model": "m · vad", "CER %": 6.96, "CER lo": None, "CER hi": None, "MER %": 6.96, "RTFx": 6.6, "n": 1,
           "reliable": False}
    assert headline_line(row) == "m · vad: CER 6.96 % † (insufficient data: no interval) MER 6.96 % RTFx 6.6 (n=1)"
    ok = {**row, "CER lo": 5.1, "CER hi": 9.0, "reliable": True, "n": 150}
    assert headline_line(ok) == "m · vad: CER 6.96 % [5.10–9.00] MER 6.96 % RTFx 6.6 (n=150)"


def test_excluded_time_leaves_the_rate_and_eta(lines):
    """Evaluations between training steps are left out of the time per step and the ETA."""
    clock = Clock()
    p = Progress("fine-tuning", 4, "steps", show="log", every_s=0, clock=clock)
    clock.t = 30.0  # a 30 s evaluation before the first step…
    p.exclude(30.0)
    clock.t = 40.0
    p.advance(1)  # …then a 10 s step
    clock.t = 50.0
    p.advance(1)
    p.close()
    assert lines[1] == "fine-tuning: 1/4 steps (25 %), 10 s per step, ETA 30s"
    assert lines[-1] == "fine-tuning: 2/4 steps (50 %), 10 s per step, done in 20s (+ 30s of other work)"


@pytest.mark.parametrize("out_tty, err_tty, want", [(True, True, "bar"), (False, True, "log"), (True, False, "log"),
                                                    (False, False, "log")])
def test_auto_mode_draws_bars_only_when_both_streams_are_a_terminal(monkeypatch, out_tty, err_tty, want):
    """`make demo | tee log` pipes stdout (where rich draws): progress must then be logged."""
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.delenv("ASR_EVAL_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stdout", Stream(out_tty))
    monkeypatch.setattr(sys, "stderr", Stream(err_tty))
    assert mode() == want


def test_a_prefect_run_logs_and_third_party_bars_follow_our_mode(monkeypatch):
    """Inside a Prefect flow or task run, even on a terminal, progress is logged (Prefect's log view
    is what people watch) and huggingface_hub's / transformers' tqdm bars are switched off."""
    import os
    import types

    from huggingface_hub.utils import are_progress_bars_disabled

    from asr_eval.progress import third_party_bars

    class Stream:
        def isatty(self):
            return True

    running = types.SimpleNamespace(get=lambda: object())
    idle = types.SimpleNamespace(get=lambda: None)
    monkeypatch.delenv("ASR_EVAL_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stdout", Stream())
    monkeypatch.setattr(sys, "stderr", Stream())
    monkeypatch.setitem(sys.modules, "prefect.context", types.SimpleNamespace(FlowRunContext=idle, TaskRunContext=idle))
    assert mode() == "bar" and third_party_bars() is True
    monkeypatch.setitem(sys.modules, "prefect.context", types.SimpleNamespace(FlowRunContext=idle, TaskRunContext=running))
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    assert mode() == "log" and third_party_bars() is False
    assert are_progress_bars_disabled() and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    monkeypatch.setenv("ASR_EVAL_PROGRESS", "bar")  # the override still wins
    assert mode() == "bar"


@pytest.mark.parametrize("rate, want", [(0.7611940298507462, "76.12 %"), (0.0, "0.00 %"), (1.5, "150.00 %"),
                                        (None, "—"), (float("nan"), "—")])
def test_fmt_pct(rate, want):
    from asr_eval.progress import fmt_pct

    assert fmt_pct(rate) == want
