"""Common Voice Chinese releases: the locale (zh-CN / zh-TW / zh-HK) and release told from the folder
as extracted (cv-corpus-<version>-<date>/<locale>/) or the TSV's locale column, and the three
standard test sets registered by locale."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_audio

from asr_eval.corpus import open_source
from asr_eval.corpus.base import Utterance
from asr_eval.corpus.commonvoice import CommonVoiceReader
from asr_eval.corpus.detect import detect_layout
from asr_eval.corpus.registry import test_sets
from asr_eval.corpus_handle import read_metadata
from asr_eval.shards import IngestOptions, ingest

# the columns of recent releases (v17+), in their order
HEADER = ("client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\t"
          "accents\tvariant\tlocale\tsegment")
SENTENCES = {"zh-CN": "我们今天去公园", "zh-TW": "我們今天去公園", "zh-HK": "我哋今日去公園"}


def cv_folder(folder: Path, locale: str, tsv_locale: str | None = None, n: int = 2) -> Path:
    lines = [HEADER]
    for i in range(n):
        name = f"common_voice_{locale}_{40000 + i}.mp3"
        write_audio(folder / "clips" / name, 0.8, 48000, fmt="MP3", seed=i)
        loc = locale if tsv_locale is None else tsv_locale
        lines.append(f"c{i}\t{name}\ts{i}\t{SENTENCES[locale]}\tgeneral\t2\t0\ttwenties\tfemale_feminine\t"
                     f"\t\t{loc}\t")
    (folder / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("locale", ["zh-CN", "zh-TW", "zh-HK"])
def test_variant_and_release_from_extracted_folder(tmp_path, locale):
    folder = cv_folder(tmp_path / "cv-corpus-17.0-2024-03-15" / locale, locale, tsv_locale="")
    assert detect_layout(str(folder)) == "commonvoice"
    d = open_source(str(folder)).describe()
    assert d["variant"] == locale and d["release"] == "cv-corpus-17.0-2024-03-15"
    ts = [t for t in test_sets("commonvoice") if t.variant == d["variant"]]
    assert [t.key for t in ts] == [f"common-voice/{locale}/test"] and ts[0].split == "test"


def test_variant_from_locale_column(tmp_path):
    d = CommonVoiceReader(cv_folder(tmp_path / "my_cv_copy", "zh-TW")).describe()
    assert d["variant"] == "zh-TW" and "release" not in d


def test_variant_from_folder_name_alone(tmp_path):
    assert CommonVoiceReader(cv_folder(tmp_path / "zh-HK", "zh-HK", tsv_locale="")).describe()["variant"] == "zh-HK"


def test_no_variant_when_it_cannot_be_told(tmp_path):
    folder = tmp_path / "cv"
    write_audio(folder / "clips" / "a.mp3", 0.8, 48000, fmt="MP3")
    (folder / "test.tsv").write_text("client_id\tpath\tsentence\nc\ta.mp3\t你好\n", encoding="utf-8")
    d = CommonVoiceReader(folder).describe()
    assert "variant" not in d and "release" not in d  # old releases without the column: unchanged


def test_registered_test_sets():
    sets = {t.key: t for t in test_sets("commonvoice")}
    assert set(sets) == {"common-voice/zh-CN/test", "common-voice/zh-TW/test", "common-voice/zh-HK/test"}
    assert {k: t.variant for k, t in sets.items()} == {k: k.split("/")[1] for k in sets}
    assert sets["common-voice/zh-HK/test"].language == "yue"  # Cantonese
    assert all(t.url == "https://commonvoice.mozilla.org/datasets" for t in sets.values())


def test_recent_columns_and_ingest(tmp_path):
    folder = cv_folder(tmp_path / "cv-corpus-17.0-2024-03-15" / "zh-TW", "zh-TW")
    items = [u for u in CommonVoiceReader(folder).items() if isinstance(u, Utterance)]
    assert [u.utt_id for u in items] == ["common_voice_zh-TW_40000", "common_voice_zh-TW_40001"]
    assert items[0].text == "我們今天去公園" and items[0].speaker == "c0" and items[0].split == "test"
    assert items[0].metadata["locale"] == "zh-TW" and items[0].metadata["sentence_domain"] == "general"
    assert "sentence_id" not in items[0].metadata
    s = ingest(open_source(str(folder)), tmp_path / "out", IngestOptions(workers=1), progress=False)
    assert s.by_split == {"test": 2} and s.n_quarantined == 0
    row = read_metadata(tmp_path / "out").to_pylist()[0]
    assert (row["text"], row["locale"], row["gender"]) == ("我們今天去公園", "zh-TW", "female_feminine")


def test_suite_discovers_each_locale(tmp_path):
    from asr_eval.suite.discover import discover

    release = tmp_path / "cv-corpus-17.0-2024-03-15"
    for locale in SENTENCES:
        cv_folder(release / locale, locale, n=1)
    found = {f.name: [t.key for t in f.test_sets] for f in discover(tmp_path)}
    assert found == {f"commonvoice-{loc}": [f"common-voice/{loc}/test"] for loc in SENTENCES}
