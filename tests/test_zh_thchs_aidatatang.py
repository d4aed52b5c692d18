"""THCHS-30 (OpenSLR 18) and aidatatang_200zh (OpenSLR 62) read from their distributed layouts."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from conftest import write_audio

from asr_eval.corpus import open_source
from asr_eval.corpus.aidatatang import AidatatangReader
from asr_eval.corpus.base import Rejection, Utterance
from asr_eval.corpus.detect import detect_layout
from asr_eval.corpus.registry import test_sets
from asr_eval.corpus.base import join_words
from asr_eval.corpus.thchs import ThchsReader
from asr_eval.errors import AsrEvalError
from asr_eval.corpus_handle import read_metadata
from asr_eval.shards import IngestOptions, ingest


def _split(items):
    utts = {u.utt_id: u for u in items if isinstance(u, Utterance)}
    rejs = {r.utt_id: r for r in items if isinstance(r, Rejection)}
    return utts, rejs


# ───────────── THCHS-30 ─────────────

def _trn(words: str, pinyin: str = "lv4 shi4", phones: str = "l v4 sh ix4") -> str:
    return f"{words}\n{pinyin}\n{phones}\n"


def thchs_tree(base: Path) -> Path:
    """data_thchs30/ as extracted: data/ holds audio + .wav.trn; split folders link into it —
    real symlinks, link-turned-text pointer files, or nothing (then data/'s .trn is read)."""
    top = base / "data_thchs30"
    data = top / "data"
    words = {"A11_0": "绿 是 阳春 烟 景", "A11_1": "他 仅 凭 腰部 的 力量", "B2_0": "用 iPhone X 拍 的",
             "C4_1": "我们 一起 走", "F2_0": "早上 好", "D8_0": "没有 音频", "G1_0": ""}
    for i, (utt, w) in enumerate(words.items()):
        write_audio(data / f"{utt}.wav", 0.5, 16000, seed=i)
        (data / f"{utt}.wav.trn").write_text(_trn(w), encoding="utf-8")
    test, train, dev = top / "test", top / "train", top / "dev"
    for d in (test, train, dev):
        d.mkdir(parents=True)
    os.symlink("../data/A11_0.wav", test / "A11_0.wav")  # links, as the tarball has them
    os.symlink("../data/A11_0.wav.trn", test / "A11_0.wav.trn")
    (test / "B2_0.wav").write_bytes((data / "B2_0.wav").read_bytes())  # a copied wav …
    (test / "B2_0.wav.trn").write_text("../data/B2_0.wav.trn\n")  # … and a link turned into a text file
    (test / "C4_1.wav").write_bytes((data / "C4_1.wav").read_bytes())  # no .trn in the split folder
    (test / "F2_0.wav").write_text("../data/F2_0.wav")  # a wav link turned into a text file
    (test / "F2_0.wav.trn").write_text("../data/F2_0.wav.trn")
    (test / "D8_0.wav.trn").write_text("../data/D8_0.wav.trn\n")  # a transcript without audio here
    write_audio(test / "E1_0.wav", 0.5, 16000, seed=9)  # audio without any transcript
    (test / "G1_0.wav").write_bytes((data / "G1_0.wav").read_bytes())
    (test / "G1_0.wav.trn").write_text("../data/G1_0.wav.trn\n")  # line 1 empty
    os.symlink("../data/A11_1.wav", train / "A11_1.wav")
    os.symlink("../data/A11_1.wav.trn", train / "A11_1.wav.trn")
    (top / "lm_word").mkdir()
    return top


@pytest.mark.parametrize("words,text", [
    ("绿 是 阳春 烟 景", "绿是阳春烟景"),
    ("用 iPhone X 拍 的", "用iPhone X拍的"),
    ("  2008 年  北京 ", "2008年北京"),
    ("共 3 G 流量", "共3 G流量"),
])
def test_join_words(words, text):
    assert join_words(words.split()) == text


def test_thchs_test_split(tmp_path):
    top = thchs_tree(tmp_path)
    reader = ThchsReader(top, ("test",))
    items = list(reader.items())
    utts, rejs = _split(items)
    assert sorted(utts) == ["A11_0", "B2_0", "C4_1", "F2_0"]
    assert utts["A11_0"].text == "绿是阳春烟景" and utts["A11_0"].speaker == "A11"
    assert utts["B2_0"].text == "用iPhone X拍的" and utts["B2_0"].speaker == "B2"
    assert utts["B2_0"].where == f"{top / 'data' / 'B2_0.wav.trn'}:1"  # the pointer was followed
    assert utts["C4_1"].text == "我们一起走"  # data/'s .trn when the split folder has none
    assert utts["F2_0"].audio_path == (top / "data" / "F2_0.wav").resolve()  # wav pointer followed
    assert {u.split for u in utts.values()} == {"test"}
    assert utts["A11_0"].source_path == "test/A11_0.wav"
    assert rejs["D8_0"].reason == "missing_file" and rejs["D8_0"].where.endswith("test/D8_0.wav.trn")
    assert rejs["E1_0"].reason == "bad_row" and "E1_0.wav.trn" in rejs["E1_0"].detail
    assert rejs["G1_0"].reason == "empty_transcript" and rejs["G1_0"].where.endswith("G1_0.wav.trn:1")
    assert [i.utt_id for i in reader.items()] == [i.utt_id for i in items]  # stable, repeatable
    d = reader.describe()
    assert d["layout"] == "thchs30" and d["splits"] == ["test"] and d["encoding"] == "utf-8"


def test_thchs_pointer_escaping_the_corpus_is_refused(tmp_path):
    top = thchs_tree(tmp_path)
    (top / "test" / "B2_0.wav.trn").write_text("../../../etc/passwd.trn\n")
    _, rejs = _split(list(ThchsReader(top, ("test",)).items()))
    assert rejs["B2_0"].reason == "path_escape"


def test_thchs_detection_and_splits(tmp_path):
    top = thchs_tree(tmp_path / "thchs")
    (tmp_path / "thchs" / "resource").mkdir()  # resource.tgz extracted beside it
    assert detect_layout(str(top)) == "thchs30"
    assert detect_layout(str(tmp_path / "thchs")) == "thchs30"  # the folder it was extracted into
    assert open_source(str(tmp_path / "thchs")).root == top
    (tmp_path / "thchs" / "data_aishell").mkdir()  # a folder of several corpora is not THCHS-30 itself
    with pytest.raises(AsrEvalError):
        detect_layout(str(tmp_path / "thchs"))
    r = open_source(str(top), split="train,test")
    assert r.describe()["splits"] == ["train", "test"]
    with pytest.raises(AsrEvalError, match="splits present are train, dev, test"):
        open_source(str(top), split="eval")
    assert [t.key for t in test_sets("thchs30")] == ["thchs-30/test"]


def test_thchs_ingest(tmp_path):
    top = thchs_tree(tmp_path)
    s = ingest(open_source(str(top), split="test"), tmp_path / "out", IngestOptions(workers=1), progress=False)
    assert s.by_split == {"test": 4}
    assert s.quarantine_by_reason == {"missing_file": 1, "bad_row": 1, "empty_transcript": 1}
    rows = {r["utt_id"]: r for r in read_metadata(tmp_path / "out").to_pylist()}
    assert rows["A11_0"]["text"] == "绿是阳春烟景" and rows["A11_0"]["speaker"] == "A11"


# ───────────── aidatatang_200zh ─────────────

TRANSCRIPT = [
    "T0055G0002S0001 以后 你 是 男孩子",
    "T0055G0002S0002 兰州 哪有 买路 虎 汽车 的",
    "T0055G0013S0001 我 要 听 Jay Chou 的 歌",
    "T0055G0013S0002 ",
    "T0055G0013S0009 没有 录音 的 句子",
    "T0055G0100S0001 训练 集 的 句子",
    "T0055G0002S0001 重复 的 行",
]
META = "LHD\tDatatang\nSCD\tG0002\nSEX\tfemale\nAGE\t24\nACC\t甘肃\n"


def datatang_tree(base: Path, encoding: str = "utf-8") -> Path:
    top = base / "aidatatang_200zh"
    (top / "transcript").mkdir(parents=True)
    (top / "transcript" / "aidatatang_200_zh_transcript.txt").write_bytes(
        ("\n".join(TRANSCRIPT) + "\n").encode(encoding))
    for split, spk, n in (("test", "G0002", 3), ("test", "G0013", 2), ("train", "G0100", 1), ("dev", "G0200", 0)):
        folder = top / "corpus" / split / spk
        folder.mkdir(parents=True)
        for i in range(1, n + 1):
            utt = f"T0055{spk}S{i:04d}"
            write_audio(folder / f"{utt}.wav", 0.6, 16000, seed=i)
            (folder / f"{utt}.txt").write_text("句子\n", encoding="utf-8")
            if spk == "G0002":
                (folder / f"{utt}.metadata").write_bytes(META.encode(encoding))
    return top


def test_aidatatang_items(tmp_path):
    top = datatang_tree(tmp_path)
    reader = AidatatangReader(top, ("test",))
    items = list(reader.items())
    utts, rejs = _split(items)
    assert sorted(utts) == ["T0055G0002S0001", "T0055G0002S0002", "T0055G0013S0001"]
    u = utts["T0055G0002S0002"]
    assert (u.text, u.speaker, u.split) == ("兰州哪有买路虎汽车的", "G0002", "test")
    assert u.metadata == {"gender": "female", "age": "24", "accent": "甘肃"}
    assert u.source_path == "corpus/test/G0002/T0055G0002S0002.wav"
    assert u.where.endswith("aidatatang_200_zh_transcript.txt:2")
    assert utts["T0055G0013S0001"].text == "我要听Jay Chou的歌" and utts["T0055G0013S0001"].metadata == {}
    assert rejs["T0055G0002S0003"].reason == "bad_row"  # a wav without a transcript line
    assert "corpus/test/G0002/T0055G0002S0003.wav" in rejs["T0055G0002S0003"].detail
    assert rejs["T0055G0013S0002"].reason == "empty_transcript"
    assert rejs["T0055G0013S0009"].reason == "missing_file"  # a line without its wav
    assert rejs["T0055G0013S0009"].where.endswith("aidatatang_200_zh_transcript.txt:5")
    dup = [r for r in items if isinstance(r, Rejection) and r.reason == "duplicate_id"]
    assert len(dup) == 1 and dup[0].where.endswith(":7")
    assert "T0055G0100S0001" not in rejs  # train's line, train not read
    assert reader.describe()["encoding"] == "utf-8"


def test_aidatatang_gbk_transcript(tmp_path):
    top = datatang_tree(tmp_path, encoding="gbk")
    with (top / "transcript" / "aidatatang_200_zh_transcript.txt").open("ab") as f:
        f.write(b"T0055G0013S0003 \xff\xfe\xfd\n")  # neither UTF-8 nor GB18030
    reader = AidatatangReader(top, ("test",))
    utts, _ = _split(list(reader.items()))
    assert utts["T0055G0002S0001"].text == "以后你是男孩子"
    assert utts["T0055G0002S0001"].metadata["accent"] == "甘肃"  # the .metadata file is GBK too
    assert reader.describe()["encoding"] == "gb18030"
    bad = [r for r in reader.items() if isinstance(r, Rejection) and r.reason == "bad_encoding"]
    assert len(bad) == 1 and bad[0].where.endswith("aidatatang_200_zh_transcript.txt:8")


def test_aidatatang_tarballs(tmp_path):
    top = datatang_tree(tmp_path)
    test = top / "corpus" / "test"
    with tarfile.open(test / "G0013.tar.gz", "w:gz") as tar:  # as distributed: one archive per speaker
        tar.add(test / "G0013", arcname="G0013")
    AidatatangReader(top, ("test",))  # archive kept beside its extracted folder (lhotse keeps them): fine
    for f in (test / "G0013").iterdir():
        f.unlink()
    (test / "G0013").rmdir()
    with pytest.raises(AsrEvalError, match=r"G0013\.tar\.gz.*tar -xzf"):
        AidatatangReader(top, ("test",))
    AidatatangReader(top, ("train",))  # another split's archives do not matter


def test_aidatatang_detection_and_ingest(tmp_path):
    top = datatang_tree(tmp_path / "dl")
    assert detect_layout(str(top)) == "aidatatang"
    assert detect_layout(str(tmp_path / "dl")) == "aidatatang"
    (tmp_path / "dl" / "data_thchs30").mkdir()  # a folder of several corpora is not aidatatang itself
    with pytest.raises(AsrEvalError):
        detect_layout(str(tmp_path / "dl"))
    assert [t.key for t in test_sets("aidatatang")] == ["aidatatang_200zh/test"]
    aishell = tmp_path / "data_aishell"  # a neighbour's tree is not taken for aidatatang or THCHS-30
    write_audio(aishell / "wav" / "test" / "S0764" / "BAC009S0764W0121.wav", 0.5)
    (aishell / "transcript").mkdir()
    (aishell / "transcript" / "aishell_transcript_v0.8.txt").write_text("BAC009S0764W0121 甚至 出现\n")
    assert detect_layout(str(aishell)) == "aishell1"
    s = ingest(open_source(str(top), split="test"), tmp_path / "out", IngestOptions(workers=1), progress=False)
    assert s.by_split == {"test": 3}
    rows = {r["utt_id"]: r for r in read_metadata(tmp_path / "out").to_pylist()}
    assert rows["T0055G0002S0001"]["gender"] == "female" and rows["T0055G0013S0001"]["gender"] is None
