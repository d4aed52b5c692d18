"""The bundled demo corpus (datasets_local/demo_zh): manifest and audio files agree, the format is
what the pipeline expects, and the splits share no sentence."""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import opencc  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "datasets_local" / "demo_zh"
COLUMNS = ("utt_id", "file_name", "text", "split", "duration_s", "speaker", "voice", "hsk_level", "topic",
           "sentence_type", "speaking_rate", "noise", "snr_db", "script", "numerals", "has_digits", "has_latin")
ALLOWED = {
    "split": {"train", "test"},
    "voice": {"neural", "robotic"},
    "speaking_rate": {"slow", "normal", "fast"},
    "noise": {"clean", "white", "pink", "babble"},
    "snr_db": {"", "20", "10", "5"},
    "script": {"simplified", "traditional"},
    "numerals": {"none", "hanzi", "arabic", "fullwidth"},
    "has_digits": {"true", "false"},
    "has_latin": {"true", "false"},
    "hsk_level": {"1", "2", "3", "4", "5", "6"},
    "sentence_type": {"statement", "question", "imperative"},
}
MAX_BYTES = 25 * 1024 * 1024

_T2S = opencc.OpenCC("t2s")


def sentence_key(text: str) -> str:
    """Script-, width- and punctuation-blind form of a sentence, for the split-disjointness check."""
    text = _T2S.convert(unicodedata.normalize("NFKC", text)).lower()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:  # strict UTF-8: a bad byte fails here
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return read_csv(DEMO / "metadata.csv")


@pytest.fixture(scope="module")
def sources() -> dict[str, dict[str, str]]:
    return {r["utt_id"]: r for r in read_csv(DEMO / "sources.csv")}


def test_header_and_values(rows):
    assert tuple(rows[0]) == COLUMNS
    for r in rows:
        for col, allowed in ALLOWED.items():
            assert r[col] in allowed, (r["utt_id"], col, r[col])
        assert (r["noise"] == "clean") == (r["snr_db"] == ""), r["utt_id"]
        assert r["text"].strip() and r["topic"] and r["speaker"], r["utt_id"]
        # The written-form flags describe the reference text itself.
        nfkc = unicodedata.normalize("NFKC", r["text"])
        assert (r["has_digits"] == "true") == bool(re.search(r"[0-9]", nfkc)), r["utt_id"]
        assert (r["has_latin"] == "true") == bool(re.search(r"[A-Za-z]", nfkc)), r["utt_id"]
        assert (r["numerals"] == "fullwidth") == bool(re.search("[０-９]", r["text"])), r["utt_id"]


def test_every_row_has_a_file_and_every_file_a_row(rows):
    ids = [r["utt_id"] for r in rows]
    assert len(ids) == len(set(ids))
    listed = {r["file_name"] for r in rows}
    on_disk = {p.relative_to(DEMO).as_posix() for p in (DEMO / "audio").rglob("*") if p.is_file()}
    assert listed == on_disk
    for r in rows:
        assert r["file_name"] == f"audio/{r['split']}/{r['utt_id']}.flac"


def test_audio_format_and_durations(rows):
    for r in rows:
        path = DEMO / r["file_name"]
        info = sf.info(str(path))
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 16000, 1), path
        seconds = info.frames / info.samplerate
        assert abs(seconds - float(r["duration_s"])) <= 0.010, (path, seconds, r["duration_s"])
        assert 1.0 <= seconds <= 12.0, (path, seconds)
        x, _ = sf.read(str(path), dtype="float32")
        peak = float(np.abs(x).max())
        assert 10 ** (-30 / 20) < peak < 1.0, (path, peak)  # audible, not clipped


def test_counts_and_size(rows):
    split = Counter(r["split"] for r in rows)
    assert 300 <= len(rows) <= 500
    assert split["test"] >= 100 and split["train"] > 0
    test = [r for r in rows if r["split"] == "test"]
    # Enough of every slice in the test split for a per-slice number to mean something.
    for col in ("voice", "noise", "snr_db", "speaking_rate", "script", "hsk_level"):
        counts = Counter(r[col] for r in test)
        assert counts.keys() == ALLOWED[col], col
        assert min(counts.values()) >= 15, (col, counts)
    assert sum(r["voice"] == "neural" and r["noise"] == "clean" for r in test) >= 50
    for flag in ("has_digits", "has_latin"):
        assert sum(r[flag] == "true" for r in test) >= 5, flag
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total <= MAX_BYTES, f"{total / 2**20:.1f} MiB"


def test_splits_share_no_sentence(rows, sources):
    assert sources.keys() == {r["utt_id"] for r in rows}
    by_split: dict[str, set[str]] = {"train": set(), "test": set()}
    for r in rows:
        src = sources[r["utt_id"]]
        # The reference may show digits where the audio says 二十; compare both forms.
        by_split[r["split"]] |= {sentence_key(r["text"]), sentence_key(src["spoken_text"]), src["source_id"]}
    assert not by_split["train"] & by_split["test"]


def test_sentence_key():
    assert sentence_key("這塊手錶值１萬塊錢！") == sentence_key("这块手表值1万块钱。") == "这块手表值1万块钱"


def test_ingest_reader_sees_every_row(rows):
    """The audiofolder reader (what `asr-eval ingest datasets_local/demo_zh` uses) yields one
    utterance per row, with the split and slice columns, and rejects nothing."""
    from asr_eval.corpus.base import Utterance
    from asr_eval.corpus.detect import detect_layout, open_source

    assert detect_layout(str(DEMO)) == "audiofolder"
    items = list(open_source(str(DEMO)).items())
    assert all(isinstance(u, Utterance) for u in items), [u for u in items if not isinstance(u, Utterance)][:3]
    by_id = {u.utt_id: u for u in items}
    assert by_id.keys() == {r["utt_id"] for r in rows}
    for r in rows:
        u = by_id[r["utt_id"]]
        assert (u.split, u.text, u.speaker) == (r["split"], r["text"], r["speaker"])
        assert u.audio_path == (DEMO / r["file_name"]).resolve()
        assert u.metadata["noise"] == r["noise"] and u.metadata["hsk_level"] == r["hsk_level"]
