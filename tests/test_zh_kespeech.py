"""KeSpeech read from its distributed layout: Tasks/ASR/<part>/ Kaldi-style folders whose wav.scp
paths are relative to the KeSpeech folder, with utt2subdialect."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_audio

from asr_eval.corpus import open_source
from asr_eval.corpus.base import Rejection, Utterance
from asr_eval.corpus.detect import detect_layout
from asr_eval.corpus.kespeech import KeSpeechReader, strip_tags
from asr_eval.corpus.registry import test_sets
from asr_eval.corpus_handle import read_metadata
from asr_eval.errors import AsrEvalError
from asr_eval.shards import IngestOptions, ingest

# (utt, speaker, subdialect, text): ids and paths shaped like the release's
TEST = [
    ("1000001_02f2b6ab", "1000001", "Mandarin", "今天天气怎么样"),
    ("1000002_1a2b3c4d", "1000002", "Southwestern", "<SPOKEN_NOISE>我们去吃火锅"),
    ("1000003_5e6f7a8b", "1000003", "Jiang-Huai", "你 好 <SPOKEN_NOISE> 啊"),
    ("1000004_9c0d1e2f", "1000004", "Ji-Lu", "<SPOKEN_NOISE>"),
]


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def kespeech_tree(base: Path, metadata: bool = True) -> Path:
    top = base / "KeSpeech"
    for part, rows in (("test", TEST), ("dev_phase1", TEST[:1])):
        d = top / "Tasks" / "ASR" / part
        wav = []
        for i, (utt, spk, _dia, _text) in enumerate(rows):
            rel = f"Audio/{spk}/phase1/{utt}.wav"
            write_audio(top / rel, 0.5, 16000, seed=i)
            wav.append(f"{utt} {rel}")
        if part == "test":
            wav.append("1000005_00000000 Audio/1000005/phase1/1000005_00000000.wav")  # file absent
            wav.append("1000006_00000000 Audio/1000006/phase2/1000006_00000000.wav")  # no text line
        _write(d / "wav.scp", wav)
        text = [f"{u} {t}" for u, _s, _d, t in rows]
        if part == "test":
            text += ["1000005_00000000 文件不在", "1000007_00000000 没有音频"]
        _write(d / "text", text)
        _write(d / "utt2spk", [f"{u} {s}" for u, s, _d, _t in rows])
        _write(d / "utt2subdialect", [f"{u} {dia}" for u, _s, dia, _t in rows])
    if metadata:
        _write(top / "Metadata" / "spk2gender", ["1000001 Female", "1000002 Male"])
        _write(top / "Metadata" / "spk2age", ["1000001 25"])
    (top / "Audio" / "README.md").write_text("audio\n")
    return top


@pytest.mark.parametrize("raw,text", [
    ("<SPOKEN_NOISE>我们去吃火锅", "我们去吃火锅"),
    ("你 好 <SPOKEN_NOISE> 啊", "你 好 啊"),
    ("<SPOKEN_NOISE>", ""),
    ("a<b 中 c>", "a<b 中 c>"),
])
def test_strip_tags(raw, text):
    assert strip_tags(raw) == text


def test_test_part_items(tmp_path):
    top = kespeech_tree(tmp_path)
    reader = KeSpeechReader(top, ("test",))
    items = list(reader.items())
    utts = {u.utt_id: u for u in items if isinstance(u, Utterance)}
    rejs = {r.utt_id: r for r in items if isinstance(r, Rejection)}
    # wav.scp order (stable: ingest runs items() twice); a listed file that is absent fails at decoding
    assert list(utts) == [u for u, *_ in TEST] + ["1000005_00000000"]
    u = utts["1000002_1a2b3c4d"]
    assert (u.text, u.speaker, u.split) == ("我们去吃火锅", "1000002", "test")
    assert u.metadata == {"subdialect": "Southwestern", "gender": "Male", "age": None}  # no spk2city: no column
    assert u.audio_path == (top / "Audio/1000002/phase1/1000002_1a2b3c4d.wav").resolve()  # relative to KeSpeech/
    assert u.source_path == "Audio/1000002/phase1/1000002_1a2b3c4d.wav"
    assert utts["1000001_02f2b6ab"].metadata == {"subdialect": "Mandarin", "gender": "Female", "age": "25"}
    assert [utts[u].metadata["subdialect"] for u, *_ in TEST] == ["Mandarin", "Southwestern", "Jiang-Huai", "Ji-Lu"]
    assert utts["1000005_00000000"].metadata["subdialect"] is None  # no utt2subdialect line: an empty slice
    assert utts["1000004_9c0d1e2f"].text == ""  # noise only: ingest quarantines it as empty_transcript
    assert rejs["1000006_00000000"].reason == "bad_row" and "test/text" in rejs["1000006_00000000"].detail
    assert rejs["1000007_00000000"].reason == "missing_file" and rejs["1000007_00000000"].where.endswith("test/text")
    d = reader.describe()
    assert d["splits"] == ["test"] and d["encoding"] == "utf-8" and d["speaker_tables"] == ["spk2gender", "spk2age"]


def test_without_metadata_folder(tmp_path):
    top = kespeech_tree(tmp_path, metadata=False)
    u = next(i for i in KeSpeechReader(top, ("test",)).items() if isinstance(i, Utterance))
    assert u.metadata == {"subdialect": "Mandarin"}


def test_gbk_text(tmp_path):
    top = kespeech_tree(tmp_path)
    text = top / "Tasks" / "ASR" / "test" / "text"
    text.write_bytes(text.read_text(encoding="utf-8").encode("gbk"))
    reader = KeSpeechReader(top, ("test",))
    utts = {u.utt_id: u for u in reader.items() if isinstance(u, Utterance)}
    assert utts["1000001_02f2b6ab"].text == "今天天气怎么样" and reader.describe()["encoding"] == "gb18030"


def test_detection_wins_over_kaldi(tmp_path):
    top = kespeech_tree(tmp_path / "dl")
    part = top / "Tasks" / "ASR" / "test"
    assert detect_layout(str(top)) == "kespeech"
    assert detect_layout(str(tmp_path / "dl")) == "kespeech"  # the folder it was extracted into
    assert detect_layout(str(top / "Tasks" / "ASR")) == "kespeech"
    assert detect_layout(str(part)) == "kespeech"  # a task folder is a Kaldi dir too, but its paths are not
    r = open_source(str(part))
    assert r.root == top and r.describe()["splits"] == ["test"]
    plain = tmp_path / "kaldi_dir"  # an ordinary Kaldi dir stays Kaldi
    write_audio(plain / "a.wav", 0.5)
    _write(plain / "wav.scp", ["a a.wav"])
    _write(plain / "text", ["a 你好"])
    _write(plain / "utt2subdialect", ["a Mandarin"])
    assert detect_layout(str(plain)) == "kaldi"
    assert [t.key for t in test_sets("kespeech")] == ["kespeech/test"]


def test_splits(tmp_path):
    top = kespeech_tree(tmp_path)
    assert open_source(str(top)).describe()["splits"] == ["dev_phase1", "test"]
    assert open_source(str(top), split="test,dev_phase1").describe()["splits"] == ["dev_phase1", "test"]
    with pytest.raises(AsrEvalError, match="splits present are dev_phase1, test"):
        open_source(str(top), split="train_phase1")
    with pytest.raises(AsrEvalError, match="not KeSpeech"):
        KeSpeechReader(tmp_path / "nothing")


def test_ingest(tmp_path):
    top = kespeech_tree(tmp_path)
    s = ingest(open_source(str(top), split="test"), tmp_path / "out", IngestOptions(workers=1), progress=False)
    assert s.by_split == {"test": 3}
    assert s.quarantine_by_reason == {"empty_transcript": 1, "missing_file": 2, "bad_row": 1}
    rows = {r["utt_id"]: r for r in read_metadata(tmp_path / "out").to_pylist()}
    assert rows["1000003_5e6f7a8b"]["subdialect"] == "Jiang-Huai" and rows["1000003_5e6f7a8b"]["text"] == "你 好 啊"
    assert rows["1000001_02f2b6ab"]["gender"] == "Female"
