"""AISHELL-1 and AISHELL-2 as distributed, and the shared ``read_text_lines`` helper.

Fixture trees follow the released layouts (see asr_eval/corpus/aishell.py for the sources)."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import pytest
from conftest import write_audio

from asr_eval.audio import Reason
from asr_eval.corpus import detect_layout, open_source
from asr_eval.corpus.aishell import (
    A1_TRANSCRIPT,
    Aishell1Reader,
    Aishell2Reader,
    join_words,
)
from asr_eval.corpus.base import Rejection, Utterance, read_text_lines
from asr_eval.corpus.registry import test_sets
from asr_eval.corpus_handle import read_metadata, read_quarantine
from asr_eval.errors import AsrEvalError
from asr_eval.shards import IngestOptions, ingest

# ───────────── read_text_lines ─────────────


@pytest.mark.parametrize("data, encoding, lines", [
    ("\ufeffa 你好\nb 世界\n".encode(), "utf-8", [(1, "a 你好"), (2, "b 世界")]),
    ("a 你好\r\nb 世界\r\n".encode("gbk"), "gb18030", [(1, "a 你好"), (2, "b 世界")]),
    ("a 你好\n".encode("gbk") + b"b \xff\x80\n" + "c 再见".encode("gbk"), "gb18030",
     [(1, "a 你好"), (2, None), (3, "c 再见")]),
    # a UTF-8 file with one damaged line stays UTF-8 (GB18030 would turn all of it to mojibake)
    ("a 你好\n".encode() + b"b \xff\n" + "c 世界\nd 再见\n".encode(), "utf-8",
     [(1, "a 你好"), (2, None), (3, "c 世界"), (4, "d 再见")]),
    ("a 你好\n".encode("utf-16"), "utf-16", [(1, "a 你好")]),
])
def test_read_text_lines(tmp_path, data, encoding, lines):
    p = tmp_path / "t.txt"
    p.write_bytes(data)
    enc, it = read_text_lines(p)
    got = list(it)
    assert enc == encoding
    assert [(i, t) for i, t, _ in got] == lines
    assert all(not raw.endswith((b"\n", b"\r")) for _, _, raw in got)


@pytest.mark.parametrize("words, text", [
    (["而", "对", "楼市", "成交", "抑制", "作用"], "而对楼市成交抑制作用"),
    (["打开", "wifi", "app", "设置"], "打开wifi app设置"),  # a Latin pair keeps one space
    (["ｋ", "ｔ", "ｖ", "唱歌"], "ｋ ｔ ｖ唱歌"),  # full-width Latin letters count as Latin
    (["2018", "12", "月"], "2018 12月"),
    (["我", "的", "iphone", "七"], "我的iphone七"),
])
def test_join_words(words, text):
    assert join_words(words) == text


# ───────────── AISHELL-1 fixtures ─────────────

TRANSCRIPT = {
    "BAC009S0002W0122": "而 对 楼市 成交 抑制 作用 最 大 的 限 购",
    "BAC009S0002W0123": "也 成为 地方 政府 的 眼中 钉",
    "BAC009S0724W0121": "甚至 出现 交易 几乎 停滞 的 情况",
    "BAC009S0764W0121": "打开 wifi app 设置",
    "BAC009S0764W0122": "ｋ ｔ ｖ 唱歌 很 好",
    "BAC009S0765W0121": "二零一八 年 房价 上涨",
    # BAC009S0765W0122: the wav exists, no transcript line (like a few hundred in the release)
    "BAC009S0765W0199": "这 一 行 没有 音频",  # a transcript line without audio
    "BAC009S0002W0999": "训练 集 缺 音频",  # ditto, in train: not reported when reading test only
}
WAVS = {"train": {"S0002": ["BAC009S0002W0122", "BAC009S0002W0123"]},
        "dev": {"S0724": ["BAC009S0724W0121"]},
        "test": {"S0764": ["BAC009S0764W0121", "BAC009S0764W0122"],
                 "S0765": ["BAC009S0765W0121", "BAC009S0765W0122"]}}
SPEAKER_INFO = "0002 M\n0724 F\n0764 F\n0765 M\n"


def _transcript_bytes(encoding: str = "utf-8", extra: bytes = b"") -> bytes:
    return "".join(f"{k} {v}\n" for k, v in TRANSCRIPT.items()).encode(encoding) + extra


def build_a1(base: Path, tar: tuple[str, ...] = (), encoding: str = "utf-8", extra: bytes = b"",
             speaker_info: bool = True) -> Path:
    """``base`` holding data_aishell/ + resource_aishell/; speakers in ``tar`` packed as SPK.tar.gz."""
    data = base / "data_aishell"
    (data / "transcript").mkdir(parents=True)
    (data / "transcript" / A1_TRANSCRIPT).write_bytes(_transcript_bytes(encoding, extra))
    for k, (split, spks) in enumerate(WAVS.items()):
        for spk, utts in spks.items():
            for j, utt in enumerate(utts):
                write_audio(data / "wav" / split / spk / f"{utt}.wav", 0.5, freq=200 + 40 * j + 100 * k)
            if spk in tar:
                _pack(data / "wav", split, spk)
    if speaker_info:
        (base / "resource_aishell").mkdir()
        (base / "resource_aishell" / "speaker.info").write_text(SPEAKER_INFO)
        (base / "resource_aishell" / "lexicon.txt").write_text("你 n i3\n")
    return base


def _pack(wav_dir: Path, split: str, spk: str) -> Path:
    """SPK.tar.gz as shipped (members "<split>/SPK/….wav"), the extracted folder removed."""
    folder = wav_dir / split / spk
    out = wav_dir / f"{spk}.tar.gz"
    with tarfile.open(out, "w:gz") as t:
        t.add(folder, arcname=f"{split}/{spk}")
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    return out


def _split(items):
    utts = {i.utt_id: i for i in items if isinstance(i, Utterance)}
    rejs = [i for i in items if isinstance(i, Rejection)]
    return utts, rejs


def test_aishell1_texts_speakers_gender_and_quarantine(tmp_path):
    base = build_a1(tmp_path / "aishell")
    reader = open_source(str(base / "data_aishell"))
    assert isinstance(reader, Aishell1Reader) and reader.layout == "aishell1"
    items = list(reader.items())
    assert items == list(reader.items())  # stable: ingest reads twice
    utts, rejs = _split(items)
    assert {u: (x.text, x.split, x.speaker, x.metadata["gender"]) for u, x in utts.items()} == {
        "BAC009S0002W0122": ("而对楼市成交抑制作用最大的限购", "train", "S0002", "male"),
        "BAC009S0002W0123": ("也成为地方政府的眼中钉", "train", "S0002", "male"),
        "BAC009S0724W0121": ("甚至出现交易几乎停滞的情况", "dev", "S0724", "female"),
        "BAC009S0764W0121": ("打开wifi app设置", "test", "S0764", "female"),
        "BAC009S0764W0122": ("ｋ ｔ ｖ唱歌很好", "test", "S0764", "female"),
        "BAC009S0765W0121": ("二零一八年房价上涨", "test", "S0765", "male"),
    }
    u = utts["BAC009S0764W0121"]
    assert u.audio_path == base / "data_aishell/wav/test/S0764/BAC009S0764W0121.wav"
    assert u.source_path == "wav/test/S0764/BAC009S0764W0121.wav" and u.where.endswith(f"{A1_TRANSCRIPT}:4")
    assert {(r.reason, r.utt_id) for r in rejs} == {
        (Reason.EMPTY_TRANSCRIPT, "BAC009S0765W0122"),
        (Reason.MISSING_FILE, "BAC009S0765W0199"), (Reason.MISSING_FILE, "BAC009S0002W0999")}
    no_line = next(r for r in rejs if r.utt_id == "BAC009S0765W0122")
    assert "wav/test/S0765/BAC009S0765W0122.wav has no line in" in no_line.detail
    no_wav = next(r for r in rejs if r.utt_id == "BAC009S0765W0199")
    assert no_wav.where.endswith(f"{A1_TRANSCRIPT}:7") and "has no wav" in no_wav.detail
    d = reader.describe()
    assert d["layout"] == "aishell1" and d["splits"] == ["train", "dev", "test"] and d["encoding"] == "utf-8"
    assert d["speaker_info"] is True and d["speaker_folders"] == 4 and d["speaker_tarballs"] == 0


def test_aishell1_without_speaker_info_has_no_gender_column(tmp_path):
    base = build_a1(tmp_path / "a", speaker_info=False)
    utts, _ = _split(list(Aishell1Reader(base).items()))
    assert all(u.metadata == {} for u in utts.values())


def test_aishell1_split_selection_reads_only_that_split(tmp_path, monkeypatch):
    base = build_a1(tmp_path / "a", tar=("S0002",))  # a train speaker still packed
    visited: list[str] = []
    orig = Aishell1Reader._audio

    def spy(self, sp):
        visited.append(sp.speaker)
        return orig(self, sp)

    monkeypatch.setattr(Aishell1Reader, "_audio", spy)
    reader = open_source(str(base), split="test")
    utts, rejs = _split(list(reader.items()))
    assert sorted(visited) == ["S0764", "S0765"]
    assert {u.split for u in utts.values()} == {"test"} and len(utts) == 3
    # the train line without audio belongs to train: not reported here
    assert {r.utt_id for r in rejs} == {"BAC009S0765W0122", "BAC009S0765W0199"}
    assert reader.describe()["splits"] == ["test"]
    assert {u.split for u in _split(list(open_source(str(base), split="dev,test").items()))[0].values()} == \
        {"dev", "test"}
    with pytest.raises(AsrEvalError, match="no split 'eval'.*present are train, dev, test"):
        open_source(str(base), split="eval")


def test_aishell1_speaker_tarballs_read_in_place(tmp_path):
    base = build_a1(tmp_path / "a", tar=("S0764", "S0724"))
    wav = base / "data_aishell" / "wav"
    # a copy extracted beside its tarball (lhotse keeps both): read once, from the folder
    (wav / "dev" / "S0724").mkdir(parents=True)
    with tarfile.open(wav / "S0724.tar.gz") as t:
        t.extractall(wav, filter="data")
    reader = Aishell1Reader(base)
    utts, _ = _split(list(reader.items()))
    assert len(utts) == 6
    t = utts["BAC009S0764W0122"]
    assert t.audio_path is None and t.audio_bytes[:4] == b"RIFF" and t.split == "test" and t.speaker == "S0764"
    assert t.source_path == "wav/S0764.tar.gz:test/S0764/BAC009S0764W0122.wav"
    assert t.text == "ｋ ｔ ｖ唱歌很好" and t.metadata == {"gender": "female"}
    assert utts["BAC009S0724W0121"].audio_path == wav / "dev/S0724/BAC009S0724W0121.wav"
    assert reader.describe()["speaker_tarballs"] == 1 and reader.describe()["speaker_folders"] == 3


def test_aishell1_truncated_tarball_is_quarantined(tmp_path):
    base = build_a1(tmp_path / "a", tar=("S0765",))
    tb = base / "data_aishell" / "wav" / "S0765.tar.gz"
    raw = gzip.decompress(tb.read_bytes())
    tb.write_bytes(gzip.compress(raw[: 512 + 8000]))  # first member's header + part of its data
    utts, rejs = _split(list(Aishell1Reader(base, ("test",)).items()))
    assert sorted(utts) == ["BAC009S0764W0121", "BAC009S0764W0122"]
    trunc = [r for r in rejs if r.reason is Reason.TRUNCATED]
    assert len(trunc) == 1 and "S0765.tar.gz breaks off after 0 wavs" in trunc[0].detail


def test_aishell1_tarball_without_split_folder_is_quarantined(tmp_path):
    base = build_a1(tmp_path / "a")
    wav = base / "data_aishell" / "wav"
    with tarfile.open(wav / "S0766.tar.gz", "w:gz") as t:  # members "S0766/….wav": split unknown
        t.add(write_audio(tmp_path / "x.wav", 0.5), arcname="S0766/BAC009S0766W0121.wav")
    _, rejs = _split(list(Aishell1Reader(base, ("dev",)).items()))
    bad = [r for r in rejs if r.reason is Reason.UNREADABLE]
    assert len(bad) == 1 and "S0766.tar.gz" in bad[0].where and "members are not" in bad[0].detail


def test_aishell1_gbk_transcript_and_undecodable_line(tmp_path):
    bad = b"BAC009S0765W0122 \xff\x80\xff\n"
    base = build_a1(tmp_path / "a", encoding="gbk", extra=bad)
    reader = Aishell1Reader(base / "data_aishell")
    utts, rejs = _split(list(reader.items()))
    assert reader.describe()["encoding"] == "gb18030"
    assert utts["BAC009S0002W0122"].text == "而对楼市成交抑制作用最大的限购"
    assert utts["BAC009S0764W0122"].text == "ｋ ｔ ｖ唱歌很好"
    enc = [r for r in rejs if r.reason is Reason.BAD_ENCODING]
    n = len(TRANSCRIPT) + 1
    assert len(enc) == 1 and enc[0].where.endswith(f"{A1_TRANSCRIPT}:{n}") and enc[0].utt_id == "BAC009S0765W0122"
    assert "neither UTF-8 nor GB18030" in enc[0].detail
    # the wav of that line is not reported a second time as 'no transcript line'
    assert [r.reason for r in rejs if r.utt_id == "BAC009S0765W0122"] == [Reason.BAD_ENCODING]


def test_aishell1_detection(tmp_path):
    base = build_a1(tmp_path / "aishell")
    assert detect_layout(str(base / "data_aishell")) == "aishell1"
    assert detect_layout(str(base)) == "aishell1"
    # AISHELL-3 (data_aishell3/, content.txt) is another corpus; a Kaldi dir is not AISHELL-1
    a3 = tmp_path / "a3" / "data_aishell3" / "train"
    write_audio(a3 / "wav" / "SSB0005" / "SSB00050001.wav", 0.5)
    (a3 / "content.txt").write_text("SSB00050001.wav 广 guang3 州 zhou1\n")
    for p in (tmp_path / "a3", tmp_path / "a3" / "data_aishell3"):
        with pytest.raises(AsrEvalError):
            detect_layout(str(p))
    kd = tmp_path / "kaldi"
    kd.mkdir()
    (kd / "wav.scp").write_text("u1 a.wav\n")
    (kd / "text").write_text("u1 你好\n")
    assert detect_layout(str(kd)) == "kaldi"


def test_aishell1_ingest_end_to_end(tmp_path):
    base = build_a1(tmp_path / "a", tar=("S0765",))
    s = ingest(open_source(str(base)), tmp_path / "out", IngestOptions(workers=1), progress=False)
    assert s.by_split == {"train": 2, "dev": 1, "test": 3} and s.n_quarantined == 3
    meta = read_metadata(tmp_path / "out").to_pylist()
    row = next(r for r in meta if r["utt_id"] == "BAC009S0765W0121")
    assert row["text"] == "二零一八年房价上涨" and row["gender"] == "male" and row["speaker"] == "S0765"
    assert row["source_path"] == "wav/S0765.tar.gz:test/S0765/BAC009S0765W0121.wav"
    assert sorted(q["reason"] for q in read_quarantine(tmp_path / "out")) == \
        ["empty_transcript", "missing_file", "missing_file"]


# ───────────── AISHELL-2 ─────────────

A2 = {  # device → part → (wav.scp ids, trans.txt lines)
    "iOS": {"test": (["IT0011W0001", "IT0011W0002"], ["IT0011W0001\t换一首歌", "IT0011W0002\t帮我放一首歌Let's go"]),
            "dev": (["ID0012W0001"], ["ID0012W0001\t打开空调"])},
    "Android": {"test": (["AT0011W0001"], ["AT0011W0001\t换一首歌", "AT0011W0009\t没有音频"])},
    "Mic": {"test": (["MT0011W0001"], ["MT0011W0001 换一首歌"])},  # space instead of a tab: accepted
}


def build_a2(base: Path) -> Path:
    ts = base / "AISHELL-DEV-TEST-SET"
    for device, parts in A2.items():
        for part, (ids, trans) in parts.items():
            d = ts / device / part
            for k, utt in enumerate(ids):
                write_audio(d / "wav" / utt[1:6] / f"{utt}.wav", 0.5, freq=300 + 50 * k)
            (d / "wav.scp").write_text("".join(f"{u}\twav/{u[1:6]}/{u}.wav\n" for u in ids))
            (d / "trans.txt").write_text("".join(t + "\n" for t in trans))
    write_audio(ts / "iOS" / "test" / "wav" / "T0011" / "IT0011W0003.wav", 0.5)  # on disk, not in wav.scp
    train = base / "AISHELL-2" / "iOS" / "data"
    write_audio(train / "wav" / "C0001" / "IC0001W0001.wav", 0.5)
    (train / "wav.scp").write_text("IC0001W0001\twav/C0001/IC0001W0001.wav\n")
    (train / "trans.txt").write_text("IC0001W0001\t厨房用具\n")
    return base


def test_aishell2_splits_device_slice_and_quarantine(tmp_path):
    base = build_a2(tmp_path / "a2")
    reader = open_source(str(base))
    assert isinstance(reader, Aishell2Reader)
    assert reader.describe()["splits"] == ["train", "dev_ios", "test_ios", "test_android", "test_mic"]
    utts, rejs = _split(list(reader.items()))
    assert {u: (x.split, x.metadata, x.speaker, x.text) for u, x in utts.items()} == {
        "IC0001W0001": ("train", {"device": "iOS"}, "C0001", "厨房用具"),
        "ID0012W0001": ("dev_ios", {"device": "iOS"}, "D0012", "打开空调"),
        "IT0011W0001": ("test_ios", {"device": "iOS"}, "T0011", "换一首歌"),
        "IT0011W0002": ("test_ios", {"device": "iOS"}, "T0011", "帮我放一首歌Let's go"),
        "AT0011W0001": ("test_android", {"device": "Android"}, "T0011", "换一首歌"),
        "MT0011W0001": ("test_mic", {"device": "Mic"}, "T0011", "换一首歌"),
    }
    ts = base / "AISHELL-DEV-TEST-SET"
    assert utts["AT0011W0001"].audio_path == ts / "Android/test/wav/T0011/AT0011W0001.wav"
    assert utts["AT0011W0001"].where == f"{ts / 'Android/test/trans.txt'}:1"
    assert {(r.reason, r.utt_id) for r in rejs} == {(Reason.MISSING_FILE, "AT0011W0009"),
                                                    (Reason.EMPTY_TRANSCRIPT, "IT0011W0003")}
    assert next(r for r in rejs if r.utt_id == "IT0011W0003").detail.startswith("wav/T0011/IT0011W0003.wav is not listed")
    r = open_source(str(ts), split="test_android,test_mic")
    assert {u.split for u in r.items() if isinstance(u, Utterance)} == {"test_android", "test_mic"}
    with pytest.raises(AsrEvalError, match="no split 'test_ipad'.*dev_ios, test_ios"):
        open_source(str(ts), split="test_ipad")


@pytest.mark.parametrize("where, splits", [
    ("a2", ["train", "dev_ios", "test_ios", "test_android", "test_mic"]),
    ("a2/AISHELL-DEV-TEST-SET", ["dev_ios", "test_ios", "test_android", "test_mic"]),
    ("a2/AISHELL-DEV-TEST-SET/iOS", ["dev_ios", "test_ios"]),
    ("a2/AISHELL-DEV-TEST-SET/Mic/test", ["test_mic"]),
    ("a2/AISHELL-2", ["train"]),
    ("a2/AISHELL-2/iOS/data", ["train"]),
])
def test_aishell2_detection(tmp_path, where, splits):
    build_a2(tmp_path / "a2")
    assert detect_layout(str(tmp_path / where)) == "aishell2"
    assert open_source(str(tmp_path / where)).describe()["splits"] == splits


def test_aishell2_device_names_any_case_and_packed_parts(tmp_path):
    ts = tmp_path / "AISHELL-DEV-TEST-SET"
    d = ts / "MIC" / "test"  # some recipes spell the folders IOS / MIC
    write_audio(d / "wav" / "T0011" / "MT0011W0001.wav", 0.5)
    (d / "wav.scp").write_text("MT0011W0001\twav/T0011/MT0011W0001.wav\n")
    (d / "trans.txt").write_text("MT0011W0001\t换一首歌\n")
    (ts / "Android").mkdir()
    (ts / "Android" / "test.tar.gz").write_bytes(b"")  # as unzipped from the evaluation ZIP
    r = open_source(str(ts), split="test_mic")
    assert [u.metadata for u in r.items()] == [{"device": "Mic"}]
    with pytest.raises(AsrEvalError, match=r"test_android still packed.*tar -xzf .*Android/test.tar.gz"):
        open_source(str(ts), split="test_android")
    with pytest.raises(AsrEvalError, match="still packed"):
        open_source(str(ts))


def test_aishell2_gbk_trans(tmp_path):
    d = tmp_path / "AISHELL-DEV-TEST-SET" / "iOS" / "test"
    write_audio(d / "wav" / "T0011" / "IT0011W0001.wav", 0.5)
    (d / "wav.scp").write_text("IT0011W0001\twav/T0011/IT0011W0001.wav\n")
    (d / "trans.txt").write_bytes("IT0011W0001\t换一首歌\n".encode("gbk"))
    r = Aishell2Reader(tmp_path)
    assert [u.text for u in r.items()] == ["换一首歌"] and r.describe()["encoding"] == "gb18030"


def test_test_sets_registered():
    assert [(t.key, t.split, t.url) for t in test_sets("aishell1")] == [
        ("aishell-1/test", "test", "https://www.openslr.org/33/"),
        ("aishell-1/dev", "dev", "https://www.openslr.org/33/")]
    assert [(t.key, t.split) for t in test_sets("aishell2")] == [
        ("aishell-2/test_ios", "test_ios"), ("aishell-2/test_android", "test_android"),
        ("aishell-2/test_mic", "test_mic")]
