"""MagicData-RAMC as distributed: DataPartition/*.tsv + MDT2021S003/{TXT,WAV,SPKINFO.txt,UTTERANCEINFO.txt}."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_audio

import asr_eval.corpus.magicdata as M
from asr_eval.audio import Reason
from asr_eval.corpus import detect_layout, open_source
from asr_eval.corpus.base import Rejection, Utterance
from asr_eval.corpus.registry import test_sets
from asr_eval.corpus_handle import read_metadata
from asr_eval.errors import AsrEvalError
from asr_eval.shards import IngestOptions, ingest

TEST_REC = "CTS-CN-F2F-2019-11-15-188"
DEV_REC = "CTS-CN-F2F-2019-11-15-1421"
TRAIN_REC = "CTS-CN-F2F-2019-11-15-200"

TEST_TXT = (  # UTF-8; tabs as in the release; a no-participant line, a mark-only line, times reversed
    "[0.000,0.500]\tG00000000\t\t[*]\n"
    "[0.520,1.600]\tG00000016\t男,普通话\t爱数智慧语音采集[+]\n"
    "[1.700,2.400]\tG00000015\t女,四川话\t[LAUGHTER]，\n"
    "[2.500,3.800]\tG00000015\t女,四川话\t嗯，最近那个新海诚的啊\n"
    "[3.900,3.850]\tG00000016\t男,普通话\t反了\n"
)
DEV_TXT = (  # GBK, the second line carries a byte no GB18030 decoder accepts
    "[0.200,1.400]\tG00000140\t女,普通话\t你好你好\n".encode("gbk")
    + b"[1.400,1.500]\tG00000140\t\xff\xff\t\xff\n"
    + "[1.500,2.900]\tG00000141\t男,普通话\t[SONANT]今天天气不错\n".encode("gbk")
)
SPKINFO = (
    "CHANNEL\tSPEAKER_ID\tGENDER\tAGE\tREGION,CITY\tDEVICE\n"
    "C0\tG00000016\tM\tMiddle-aged and young people\tSichuan,Chengdu\tMobile phone\n"
    "C0\tG00000015\tF\tMiddle-aged and young people\tBeijing\tMobile phone\n"
    "C0\tG00000140\tF\tOld people\tGuangdong,Shenzhen\tMobile phone\n"
    "C0\tG00000141\tM\tMiddle-aged and young people\tHebei\tMobile phone\n"
)
UTTINFO = (
    "CHANNEL\tUTTRANS_ID\tSPEAKER_ID-1\tSPEAKER_ID-2\tTOPIC\tVALID(min)\tTOTAL(min)\tEnvironment\n"
    f"C0\t{TEST_REC}.wav\tG00000016\tG00000015\t职业发展\t27.63\t31.1\t室内\n"
    f"C0\t{DEV_REC}.wav\tG00000140\tG00000141\t体育\t20.10\t25.0\t室内\n"
    f"C0\t{TRAIN_REC}.wav\tG00000200\tG00000201\t教育\t30.00\t31.0\t室内\n"
)


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "MagicData-RAMC"
    c = r / "MDT2021S003"
    for rec in (TEST_REC, DEV_REC, TRAIN_REC):
        write_audio(c / "WAV" / f"{rec}.wav", 4.0)
    (c / "TXT").mkdir()
    (c / "TXT" / f"{TEST_REC}.txt").write_text(TEST_TXT, encoding="utf-8")
    (c / "TXT" / f"{DEV_REC}.txt").write_bytes(DEV_TXT)
    (c / "TXT" / f"{TRAIN_REC}.txt").write_text("[0.100,1.100]\tG00000200\t女,普通话\t训练集的一句\n")
    (c / "SPKINFO.txt").write_text(SPKINFO)
    (c / "UTTERANCEINFO.txt").write_text(UTTINFO)
    (c / "README.txt").write_text("MagicData-RAMC\n")
    p = r / "DataPartition"
    p.mkdir()
    for split, rec in (("train", TRAIN_REC), ("dev", DEV_REC), ("test", TEST_REC)):
        (p / f"{split}.tsv").write_text(f"/data/MagicData-RAMC/MDT2021S003/WAV\n{rec}.wav\n")  # first line: a path
    (r / "KeywordList").mkdir()
    (r / "KeywordList" / "kwlist.txt").write_text("新海诚\n")
    return r


def _split(items):
    return [i for i in items if isinstance(i, Utterance)], [i for i in items if isinstance(i, Rejection)]


def test_timed_lines_become_segments_with_speaker_slices(root):
    r = open_source(str(root), split="test")
    assert r.layout == "magicdata-ramc" and r.describe()["splits"] == ["test"]
    utts, rej = _split(list(r.items()))
    wav = (root / "MDT2021S003" / "WAV" / f"{TEST_REC}.wav").resolve()
    assert [(u.utt_id, u.split, u.offset_s, u.duration_s, u.text, u.speaker, u.audio_path, u.source_path)
            for u in utts] == [
        (f"{TEST_REC}-G00000016-0000520-0001600", "test", 0.52, 1.08, "爱数智慧语音采集[+]", "G00000016", wav,
         f"MDT2021S003/WAV/{TEST_REC}.wav"),
        (f"{TEST_REC}-G00000015-0002500-0003800", "test", 2.5, 1.3, "嗯，最近那个新海诚的啊", "G00000015", wav,
         f"MDT2021S003/WAV/{TEST_REC}.wav")]
    assert utts[0].metadata == {"gender": "male", "dialect": "普通话", "age": "Middle-aged and young people",
                                "region": "Sichuan", "topic": "职业发展"}
    assert utts[1].metadata["dialect"] == "四川话" and utts[1].metadata["gender"] == "female"
    txt = root / "MDT2021S003" / "TXT" / f"{TEST_REC}.txt"
    assert [(x.reason, x.utt_id, x.where) for x in rej] == [
        (Reason.EMPTY_TRANSCRIPT, f"{TEST_REC}-G00000000-0000000-0000500", f"{txt}:1"),  # no participant
        (Reason.EMPTY_TRANSCRIPT, f"{TEST_REC}-G00000015-0001700-0002400", f"{txt}:3"),  # only a mark
        (Reason.BAD_ROW, None, f"{txt}:5")]
    assert "G00000000" in rej[0].detail and "[LAUGHTER]" in rej[1].detail and "0 ≤ start < end" in rej[2].detail


def test_gbk_transcript_is_decoded_and_an_undecodable_line_rejected(root):
    r = open_source(str(root), split="dev")
    utts, rej = _split(list(r.items()))
    assert [(u.utt_id, u.text, u.speaker, u.metadata["gender"], u.metadata["region"], u.metadata["topic"])
            for u in utts] == [
        (f"{DEV_REC}-G00000140-0000200-0001400", "你好你好", "G00000140", "female", "Guangdong", "体育"),
        (f"{DEV_REC}-G00000141-0001500-0002900", "[SONANT]今天天气不错", "G00000141", "male", "Hebei", "体育")]
    assert [(x.reason, x.where) for x in rej] == [
        (Reason.BAD_ENCODING, f"{root / 'MDT2021S003' / 'TXT' / f'{DEV_REC}.txt'}:2")]
    d = r.describe()
    assert d["encoding"] == "mixed" and d["non_utf8"] == {f"MDT2021S003/TXT/{DEV_REC}.txt": "gb18030"}


def test_default_is_every_split_in_partition_order(root):
    r = open_source(str(root))
    assert r.describe()["splits"] == ["train", "dev", "test"]
    utts, _ = _split(list(r.items()))
    assert [u.split for u in utts] == ["train", "dev", "dev", "test", "test"]
    assert (utts[0].utt_id, utts[0].text) == (f"{TRAIN_REC}-G00000200-0000100-0001100", "训练集的一句")
    assert utts[0].metadata["age"] is None  # speaker not in SPKINFO.txt: its columns stay empty


def test_recording_level_one_item_per_dialogue(root):
    r = open_source(str(root), split="dev,test", recording_level=True)
    utts, rej = _split(list(r.items()))
    assert r.describe()["recording_level"] is True
    # the dev dialogue has an undecodable line and the test dialogue a malformed one: kept out whole
    assert utts == [] and [(x.reason, x.utt_id) for x in rej] == [(Reason.BAD_ENCODING, DEV_REC),
                                                                  (Reason.BAD_ROW, TEST_REC)]
    assert "reference would be incomplete" in rej[1].detail
    txt = root / "MDT2021S003" / "TXT" / f"{TEST_REC}.txt"
    txt.write_text(TEST_TXT.replace("[3.900,3.850]", "[3.900,3.950]"), encoding="utf-8")
    utts, rej = _split(list(open_source(str(root), split="test", recording_level=True).items()))
    assert rej == [] and len(utts) == 1
    u = utts[0]
    assert (u.utt_id, u.split, u.speaker, u.offset_s, u.duration_s) == (TEST_REC, "test", None, 0.0, None)
    assert u.segments == [(0.52, 1.6, "爱数智慧语音采集[+]"), (2.5, 3.8, "嗯，最近那个新海诚的啊"), (3.9, 3.95, "反了")]
    assert u.text == "爱数智慧语音采集[+] 嗯，最近那个新海诚的啊 反了"
    assert u.metadata == {"topic": "职业发展", "n_speakers": "2"}


def test_missing_and_unlisted_files_are_reported(root):
    c = root / "MDT2021S003"
    (c / "WAV" / f"{TRAIN_REC}.wav").unlink()
    write_audio(c / "WAV" / "CTS-CN-F2F-2019-11-15-999.wav", 1.0)  # in no partition
    part = root / "DataPartition"
    (part / "train.tsv").write_text(f"path\n{TRAIN_REC}.wav\nCTS-CN-F2F-2019-11-15-404.wav\nnot-a-wav-name\n")
    (part / "test.tsv").write_text(f"path\n{DEV_REC}.wav\n")  # also in dev.tsv, which comes first
    utts, rej = _split(list(open_source(str(root), split="train,test").items()))
    assert utts == []
    assert [(x.reason, x.utt_id) for x in rej] == [
        (Reason.BAD_ROW, None),  # train.tsv line 4 names no .wav
        (Reason.MISSING_FILE, f"{TRAIN_REC}-G00000200-0000100-0001100"),  # transcript, no audio
        (Reason.MISSING_FILE, "CTS-CN-F2F-2019-11-15-404"),  # listed, neither file there
        (Reason.BAD_ROW, DEV_REC),  # a dialogue in two partitions: the first (train, dev, test) keeps it
        # in no partition (the test dialogue is no longer listed): each WAV, then each TXT, by name
        (Reason.BAD_ROW, TEST_REC), (Reason.BAD_ROW, "CTS-CN-F2F-2019-11-15-999"), (Reason.BAD_ROW, TEST_REC)]
    assert rej[0].where.endswith("train.tsv:4") and f"WAV/{TRAIN_REC}.wav is missing" in rej[1].detail
    assert "are missing" in rej[2].detail and "already in dev.tsv" in rej[3].detail
    assert "in no split" in rej[5].detail and rej[5].where == str(c / "WAV" / "CTS-CN-F2F-2019-11-15-999.wav")
    assert rej[6].detail.startswith(f"TXT/{TEST_REC}.txt is in none of DataPartition/")


def test_structural_errors(root, tmp_path):
    with pytest.raises(AsrEvalError, match=r"no split 'eval'.*train, dev, test"):
        open_source(str(root), split="eval")
    (root / "DataPartition" / "dev.tsv").unlink()
    with pytest.raises(AsrEvalError, match=r"no split 'dev'.*train, test"):
        open_source(str(root), split="dev")
    (root / "DataPartition").rename(tmp_path / "elsewhere")
    with pytest.raises(AsrEvalError, match="no DataPartition/.*official split"):
        open_source(str(root))


def test_ingest_cuts_the_dialogue(root, tmp_path):
    s = ingest(open_source(str(root), split="dev"), tmp_path / "out", IngestOptions(workers=1), progress=False)
    assert s.by_split == {"dev": 2} and s.quarantine_by_reason == {"bad_encoding": 1}
    rows = {r["utt_id"]: r for r in read_metadata(tmp_path / "out").to_pylist()}
    r0 = rows[f"{DEV_REC}-G00000140-0000200-0001400"]
    assert r0["duration_s"] == pytest.approx(1.2, abs=1e-3) and r0["speaker"] == "G00000140"
    assert (r0["gender"], r0["dialect"], r0["age"], r0["region"], r0["topic"]) == (
        "female", "普通话", "Old people", "Guangdong", "体育")


def test_detection(root, tmp_path):
    assert detect_layout(str(root)) == "magicdata-ramc"
    inner = root / "MDT2021S003"
    assert detect_layout(str(inner)) == "magicdata-ramc"  # the corpus folder itself: DataPartition beside it
    assert [u.split for u in open_source(str(inner), split="test").items() if isinstance(u, Utterance)] == ["test"] * 2
    # MAGICDATA read speech (openslr 68) and another MagicHub TXT/WAV release are not RAMC
    read = tmp_path / "magicdata"
    (read / "train").mkdir(parents=True)
    (read / "train" / "TRANS.txt").write_text("UtteranceID\tSpeakerID\tTranscription\n")
    other = tmp_path / "MDT2022S001"
    (other / "TXT").mkdir(parents=True)
    (other / "WAV").mkdir()
    assert not M.detects(read, "") and not M.detects(other, "") and not M.detects(inner / "TXT", "")


def test_test_sets_registered():
    got = {t.key: (t.layout, t.split, t.url) for t in test_sets("magicdata-ramc")}
    assert got == {"magicdata-ramc/test": ("magicdata-ramc", "test", "https://www.openslr.org/123/"),
                   "magicdata-ramc/dev": ("magicdata-ramc", "dev", "https://www.openslr.org/123/")}
