"""WenetSpeech as distributed: WenetSpeech.json (streamed) + audio/<split>/<source>/B000nn/<aid>.opus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import asr_eval.corpus.wenetspeech as W
from asr_eval.audio import Reason
from asr_eval.corpus import detect_layout, open_source
from asr_eval.corpus.base import Rejection, Utterance
from asr_eval.corpus.registry import test_sets
from asr_eval.corpus_handle import load_audio, read_metadata, read_quarantine
from asr_eval.errors import AsrEvalError
from asr_eval.shards import IngestOptions, ingest

NET = "audio/test_net/youtube/B00000/Y0000000000_abcdEFGH123.opus"
MEET = "audio/test_meeting/third_party/B00000/M0000000000_meeting01.opus"
DEV = "audio/dev/podcast/B00000/X0000000000_100638174.opus"
TRAIN = "audio/train/podcast/B00001/X0000000001_200000001.opus"


def _seg(sid, b, e, text, *subsets, conf=1.0):
    return {"sid": sid, "confidence": conf, "begin_time": b, "end_time": e, "text": text, "subsets": list(subsets)}


def _audios() -> list[dict]:
    return [
        {"title": "网络视频", "url": "https://www.youtube.com/watch?v=abcdEFGH123", "path": NET,
         "aid": "Y0000000000_abcdEFGH123", "source": "youtube", "tags": ["drama"], "duration": 3.0,
         "segments": [_seg("Y0000000000_abcdEFGH123_S00001", 1.5, 2.7, "第二句话", "TEST_NET"),
                      _seg("Y0000000000_abcdEFGH123_S00000", 0.25, 1.25, "第一句话", "TEST_NET")]},
        {"path": MEET, "aid": "M0000000000_meeting01", "source": "third_party", "tags": ["meeting"],
         "duration": 3.0,
         "segments": [_seg("M0000000000_meeting01_S00000", 0.0, 1.0, "我们开会吧", "TEST_MEETING"),
                      _seg("M0000000000_meeting01_S00001", 1.0, 2.5, "好的 没问题", "TEST_MEETING")]},
        {"path": DEV, "aid": "X0000000000_100638174", "source": "podcast", "tags": ["news"], "duration": 3.0,
         "segments": [_seg("X0000000000_100638174_S00000", 0.5, 2.0, "今天的新闻", "DEV")]},
        {"path": TRAIN, "aid": "X0000000001_200000001", "source": "podcast", "tags": ["audiobook"],
         "duration": 3.0,
         "segments": [_seg("X0000000001_200000001_S00000", 0.0, 1.0, "从前有座山", "L", "M", "S"),
                      _seg("X0000000001_200000001_S00001", 1.0, 2.0, "山里有座庙", "L", "W", conf=0.96)]},
    ]


def _write_json(root: Path, audios: list[dict]) -> bytes:
    # as the release writes it: json.dump(indent=4, ensure_ascii=False), top-level keys around "audios"
    doc = {"dataset": "WenetSpeech", "language": "Chinese Mandarin", "version": "v1.0",
           "description": "多领域 audios ]} 语料", "audios": audios, "url": "https://wenet.org.cn/WenetSpeech/"}
    raw = json.dumps(doc, indent=4, ensure_ascii=False).encode("utf-8")
    (root / "WenetSpeech.json").write_bytes(raw)
    return raw


@pytest.fixture(scope="module")
def opus_bytes(tmp_path_factory) -> bytes:
    return _opus(tmp_path_factory.mktemp("opus") / "a.opus").read_bytes()  # encoding Opus is slow: once


@pytest.fixture
def corpus(tmp_path, opus_bytes) -> Path:
    root = tmp_path / "wenetspeech"
    for rel in (NET, MEET, DEV, TRAIN):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(opus_bytes)
    (root / "TERMS_OF_ACCESS").write_text("terms\n")
    _write_json(root, _audios())
    return root


def _opus(path: Path, seconds: float = 3.0, seed: int = 0) -> Path:
    """3 s at 16 kHz, Opus in Ogg as the release ships it; second k has amplitude 0.1·(k+1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    amp = 0.1 * (np.floor(t) + 1)
    x = (amp * np.sin(2 * np.pi * 300 * t) + 0.005 * rng.standard_normal(len(t))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, 16000, format="OGG", subtype="OPUS")
    return path


def _split(items):
    return [i for i in items if isinstance(i, Utterance)], [i for i in items if isinstance(i, Rejection)]


def test_default_reads_the_evaluation_subsets_segment_by_segment(corpus):
    r = open_source(str(corpus))
    assert r.layout == "wenetspeech" and r.name == "wenetspeech"
    utts, rej = _split(list(r.items()))
    assert rej == []
    got = [(u.utt_id, u.split, u.offset_s, u.duration_s, u.text, u.metadata, u.source_path) for u in utts]
    assert got == [  # JSON order; times as written; the train recording is not read
        ("Y0000000000_abcdEFGH123_S00001", "test_net", 1.5, 1.2, "第二句话", {"source": "youtube", "domain": "drama"}, NET),
        ("Y0000000000_abcdEFGH123_S00000", "test_net", 0.25, 1.0, "第一句话", {"source": "youtube", "domain": "drama"}, NET),
        ("M0000000000_meeting01_S00000", "test_meeting", 0.0, 1.0, "我们开会吧",
         {"source": "third_party", "domain": "meeting"}, MEET),
        ("M0000000000_meeting01_S00001", "test_meeting", 1.0, 1.5, "好的 没问题",
         {"source": "third_party", "domain": "meeting"}, MEET),
        ("X0000000000_100638174_S00000", "dev", 0.5, 1.5, "今天的新闻", {"source": "podcast", "domain": "news"}, DEV),
    ]
    assert utts[0].audio_path == (corpus / NET).resolve() and utts[0].speaker is None
    assert utts[0].segments is None
    assert [u.utt_id for u in r.items() if isinstance(u, Utterance)] == [u.utt_id for u in utts]  # stable, re-callable
    d = r.describe()
    assert d["splits"] == ["test_net", "test_meeting", "dev"] and d["encoding"] == "utf-8"
    assert d["json_bytes"] == (corpus / "WenetSpeech.json").stat().st_size and "10k hours" in d["note"]


@pytest.mark.parametrize("split, want", [
    ("train_m", [("X0000000001_200000001_S00000", "train_m")]),
    ("train_w", [("X0000000001_200000001_S00001", "train_w")]),
    ("train_l,train_s", [("X0000000001_200000001_S00000", "train_l"), ("X0000000001_200000001_S00001", "train_l")]),
    ("train_s,train_l", [("X0000000001_200000001_S00000", "train_s"), ("X0000000001_200000001_S00001", "train_l")]),
    ("dev,TEST_NET", [("Y0000000000_abcdEFGH123_S00001", "test_net"), ("Y0000000000_abcdEFGH123_S00000", "test_net"),
                      ("X0000000000_100638174_S00000", "dev")]),
])
def test_split_selection_and_nested_training_subsets(corpus, split, want):
    utts, rej = _split(list(open_source(str(corpus), split=split).items()))
    assert rej == [] and [(u.utt_id, u.split) for u in utts] == want


def test_unknown_split_lists_the_splits(corpus):
    with pytest.raises(AsrEvalError, match=r"no split 'test'.*test_net, test_meeting, dev, train_l"):
        open_source(str(corpus), split="test")


def test_recording_level_one_item_per_recording_with_segments(corpus):
    r = open_source(str(corpus), recording_level=True, split="test_net,train_l")
    utts, rej = _split(list(r.items()))
    assert rej == [] and r.describe()["recording_level"] is True
    assert [(u.utt_id, u.split, u.text, u.offset_s, u.duration_s) for u in utts] == [
        ("Y0000000000_abcdEFGH123", "test_net", "第一句话 第二句话", 0.0, None),
        ("X0000000001_200000001", "train_l", "从前有座山 山里有座庙", 0.0, None)]
    assert utts[0].segments == [(0.25, 1.25, "第一句话"), (1.5, 2.7, "第二句话")]  # time order
    assert utts[0].metadata == {"source": "youtube", "domain": "drama", "n_segments": "2"}


def test_recording_level_splits_a_recording_by_subset(corpus):
    utts, _ = _split(list(open_source(str(corpus), recording_level=True, split="train_m,train_w").items()))
    assert [(u.utt_id, u.split, u.segments) for u in utts] == [
        ("X0000000001_200000001-train_m", "train_m", [(0.0, 1.0, "从前有座山")]),
        ("X0000000001_200000001-train_w", "train_w", [(1.0, 2.0, "山里有座庙")])]


def test_ingest_cuts_the_opus_recordings(corpus, tmp_path):
    for rel in (MEET, DEV):  # one Opus recording is enough end to end
        (corpus / rel).unlink()
    s = ingest(open_source(str(corpus)), tmp_path / "out", IngestOptions(workers=1), progress=False)
    assert s.by_split == {"test_net": 2} and s.quarantine_by_reason == {"missing_file": 3}
    rows = {r["utt_id"]: r for r in read_metadata(tmp_path / "out").to_pylist()}
    assert rows["Y0000000000_abcdEFGH123_S00001"]["duration_s"] == pytest.approx(1.2, abs=1e-3)
    assert rows["Y0000000000_abcdEFGH123_S00000"]["duration_s"] == pytest.approx(1.0, abs=1e-3)
    assert rows["Y0000000000_abcdEFGH123_S00001"]["source"] == "youtube"
    assert rows["Y0000000000_abcdEFGH123_S00001"]["domain"] == "drama"
    audio = load_audio(tmp_path / "out", ["Y0000000000_abcdEFGH123_S00001"])["Y0000000000_abcdEFGH123_S00001"]
    whole, sr = sf.read(str(corpus / NET), dtype="float32")
    cut = whole[int(1.5 * sr):int(2.7 * sr)]
    assert len(audio) == len(cut) == 19200  # the seek into the Opus stream lands on the segment …
    assert np.abs(audio - cut).max() < 5e-3  # … (Opus pre-roll after a seek: tiny differences)
    assert np.abs(audio - whole[int(1.5 * sr) + 16:int(2.7 * sr) + 16]).max() > 0.05  # 1 ms later is not it
    q = {x["utt_id"]: x for x in read_quarantine(tmp_path / "out")}
    assert q["X0000000000_100638174_S00000"]["reason"] == "missing_file"
    assert DEV in q["X0000000000_100638174_S00000"]["detail"]


def test_missing_opus_is_rejected_per_segment_naming_the_file(corpus):
    (corpus / MEET).unlink()
    utts, rej = _split(list(open_source(str(corpus)).items()))
    assert [u.utt_id for u in utts] == ["Y0000000000_abcdEFGH123_S00001", "Y0000000000_abcdEFGH123_S00000",
                                        "X0000000000_100638174_S00000"]
    assert [(x.reason, x.utt_id, x.source_path) for x in rej] == [
        (Reason.MISSING_FILE, "M0000000000_meeting01_S00000", MEET),
        (Reason.MISSING_FILE, "M0000000000_meeting01_S00001", MEET)]
    assert "B00000.aes.tgz" in rej[0].detail and "sid M0000000000_meeting01_S00000" in rej[0].where


def test_bad_segment_times_and_entries(corpus):
    audios = _audios()
    audios[0]["segments"][0]["end_time"] = 1.5  # end == begin
    audios[2]["segments"].append(_seg("X0000000000_100638174_S00001", 2.5, 2.0, "倒过来", "DEV"))
    audios[2]["segments"].append("not a segment")
    audios.insert(1, {"aid": "broken", "segments": []})  # no path
    _write_json(corpus, audios)
    utts, rej = _split(list(open_source(str(corpus)).items()))
    assert [u.utt_id for u in utts] == ["Y0000000000_abcdEFGH123_S00000", "M0000000000_meeting01_S00000",
                                        "M0000000000_meeting01_S00001", "X0000000000_100638174_S00000"]
    assert [(x.reason, x.utt_id) for x in rej] == [
        (Reason.BAD_ROW, "Y0000000000_abcdEFGH123_S00001"), (Reason.BAD_ROW, "broken"),
        (Reason.BAD_ROW, None), (Reason.BAD_ROW, "X0000000000_100638174_S00001")]
    assert "end_time 1.5 is not after begin_time 1.5" in rej[0].detail
    assert "audios[1], aid broken" in rej[1].where and "'subsets'" in rej[2].detail
    # recording level: a recording with a bad segment is kept out whole
    utts, rej = _split(list(open_source(str(corpus), recording_level=True).items()))
    assert [u.utt_id for u in utts] == ["M0000000000_meeting01"]
    assert (rej[0].reason, rej[0].utt_id) == (Reason.BAD_ROW, "Y0000000000_abcdEFGH123")
    assert "reference would be incomplete" in rej[0].detail


def test_truncated_json_keeps_what_was_read_and_reports_the_break(corpus):
    raw = (corpus / "WenetSpeech.json").read_bytes()
    cut = raw.index(b'"X0000000000_100638174"')  # inside the third recording (dev)
    (corpus / "WenetSpeech.json").write_bytes(raw[:cut])
    utts, rej = _split(list(open_source(str(corpus)).items()))
    assert [u.split for u in utts] == ["test_net", "test_net", "test_meeting", "test_meeting"]
    assert len(rej) == 1 and rej[0].reason == Reason.BAD_ROW
    assert "after recording 'M0000000000_meeting01'" in rej[0].detail and "2 recording(s) before it" in rej[0].detail
    assert "v1.list" in rej[0].detail and rej[0].where.startswith(f"{corpus / 'WenetSpeech.json'}:byte ")
    offset = int(rej[0].where.rsplit("byte ", 1)[1])
    assert raw.rindex(b"{", 0, cut) <= offset <= cut  # the byte offset points into the broken entry


def test_json_that_breaks_before_any_recording_is_an_error(corpus):
    raw = (corpus / "WenetSpeech.json").read_bytes()
    (corpus / "WenetSpeech.json").write_bytes(raw[:raw.index(b'"audios"') + 20])
    with pytest.raises(AsrEvalError, match=r"WenetSpeech.json: cannot read it at byte \d+.*No recording"):
        list(open_source(str(corpus)).items())
    (corpus / "WenetSpeech.json").write_bytes(b'{"dataset": "WenetSpeech"}')
    with pytest.raises(AsrEvalError, match="no 'audios' array"):
        list(open_source(str(corpus)).items())


def test_streaming_across_small_windows_and_bad_utf8(corpus, monkeypatch):
    whole = [(u.utt_id, u.offset_s, u.text) for u in open_source(str(corpus), split="dev,train_l").items()]
    monkeypatch.setattr(W, "BUF_SIZE", 7)  # every value straddles a read edge
    assert [(u.utt_id, u.offset_s, u.text) for u in open_source(str(corpus), split="dev,train_l").items()] == whole
    raw = (corpus / "WenetSpeech.json").read_bytes()
    (corpus / "WenetSpeech.json").write_bytes(raw.replace("今天".encode(), b"\xff\xfe", 1))
    utts, rej = _split(list(open_source(str(corpus)).items()))
    assert len(utts) == 4 and rej[0].reason == Reason.BAD_ENCODING
    assert raw.index("今天".encode()) == int(rej[0].where.rsplit("byte ", 1)[1])


def test_detection(corpus, tmp_path):
    assert detect_layout(str(corpus)) == "wenetspeech"
    assert detect_layout(str(corpus / "WenetSpeech.json")) == "wenetspeech"  # not read as a manifest
    assert open_source(str(corpus / "WenetSpeech.json")).root == corpus
    other = tmp_path / "manifests"
    other.mkdir()
    (other / "test.json").write_text(json.dumps({"audio_filepath": "a.wav", "text": "你好"}) + "\n")
    assert detect_layout(str(other / "test.json")) == "manifest"
    assert not W.detects(other, str(other)) and not W.detects(corpus / "audio", "")


def test_test_sets_registered():
    got = {t.key: (t.layout, t.split, t.url) for t in test_sets("wenetspeech")}
    assert got == {f"wenetspeech/{s}": ("wenetspeech", s, "https://wenet.org.cn/WenetSpeech/")
                   for s in ("test_net", "test_meeting", "dev")}
