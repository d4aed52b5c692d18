"""`asr-eval suite`: discovery of the public corpora under a folder, and one end-to-end run of the real
bundled whisper-base on an AISHELL-1 tree built from demo clips (ingest, score, protocol re-scoring,
the model × test-set table, ours beside the published whisper-base number, the report section)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import duckdb
import pytest
import soundfile as sf
from conftest import REPO, write_audio
from typer.testing import CliRunner

from asr_eval.cli import _register_commands, app
from asr_eval.errors import AsrEvalError
from asr_eval.suite import discover, missing

_register_commands()

DEMO = REPO / "datasets_local" / "demo_zh"
# Clean neural-voice demo test clips as AISHELL-1 test utterances (two speakers), one as dev.
CLIPS = {"demo_test_0001": ("test", "S0764", "BAC009S0764W0121"), "demo_test_0002": ("test", "S0764", "BAC009S0764W0122"),
         "demo_test_0011": ("test", "S0765", "BAC009S0765W0131"), "demo_test_0016": ("test", "S0765", "BAC009S0765W0132"),
         "demo_test_0015": ("dev", "S0724", "BAC009S0724W0121")}
GENDER = {"S0764": "F", "S0765": "M", "S0724": "F"}


def segmented(text: str) -> str:
    """AISHELL-1 writes its transcripts word-segmented, without punctuation: '他 从事 文艺 工作'."""
    chars = [c for c in text if c not in "。，！？"]
    return " ".join("".join(chars[i:i + 2]) for i in range(0, len(chars), 2))


def build_aishell1(root: Path) -> dict[str, str]:
    """An AISHELL-1 tree as distributed (extracted), from demo clips; returns id → reference text."""
    meta = {r["utt_id"]: r for r in csv.DictReader((DEMO / "metadata.csv").open(encoding="utf-8"))}
    lines, refs = [], {}
    for demo_id, (split, spk, utt) in CLIPS.items():
        audio, sr = sf.read(DEMO / meta[demo_id]["file_name"])
        wav = root / "data_aishell" / "wav" / split / spk / f"{utt}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, audio, sr)
        lines.append(f"{utt} {segmented(meta[demo_id]['text'])}")
        refs[utt] = meta[demo_id]["text"].rstrip("。")
    tr = root / "data_aishell" / "transcript" / "aishell_transcript_v0.8.txt"
    tr.parent.mkdir(parents=True)
    tr.write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
    info = root / "resource_aishell" / "speaker.info"
    info.parent.mkdir(parents=True)
    info.write_text("".join(f"{s[1:]} {g}\n" for s, g in sorted(GENDER.items())), encoding="utf-8")
    return refs


def build_commonvoice(folder: Path, locale: str) -> None:
    clips = folder / "clips"
    clips.mkdir(parents=True)
    write_audio(clips / f"common_voice_{locale}_1.mp3", 1.0, fmt="MP3")
    (folder / "test.tsv").write_text("client_id\tpath\tsentence\tlocale\n"
                                     f"c1\tcommon_voice_{locale}_1.mp3\t你好\t{locale}\n", encoding="utf-8")


def test_discover_finds_each_corpus_once_by_its_own_layout_and_lists_the_rest(tmp_path):
    """Parents of a corpus, corpora side by side, Common Voice locales told apart, an unrelated
    Kaldi dir and a decoy ignored; a recognised folder is not searched further."""
    build_aishell1(tmp_path / "downloads" / "aishell")
    build_commonvoice(tmp_path / "cv-corpus-17.0-2024-03-15" / "zh-CN", "zh-CN")
    build_commonvoice(tmp_path / "cv-corpus-17.0-2024-03-15" / "zh-TW", "zh-TW")
    kaldi = tmp_path / "mine" / "kaldi_dir"
    kaldi.mkdir(parents=True)
    (kaldi / "wav.scp").write_text("u1 a.wav\n")
    (kaldi / "text").write_text("u1 你好\n")
    found = discover(tmp_path)
    got = [(f.name, f.path.relative_to(tmp_path).as_posix(), [t.key for t in f.test_sets]) for f in found]
    assert got == [
        ("commonvoice-zh-CN", "cv-corpus-17.0-2024-03-15/zh-CN", ["common-voice/zh-CN/test"]),
        ("commonvoice-zh-TW", "cv-corpus-17.0-2024-03-15/zh-TW", ["common-voice/zh-TW/test"]),
        ("aishell1", "downloads/aishell", ["aishell-1/test", "aishell-1/dev"]),
    ] or sorted(got) == sorted([
        ("commonvoice-zh-CN", "cv-corpus-17.0-2024-03-15/zh-CN", ["common-voice/zh-CN/test"]),
        ("commonvoice-zh-TW", "cv-corpus-17.0-2024-03-15/zh-TW", ["common-voice/zh-TW/test"]),
        ("aishell1", "downloads/aishell", ["aishell-1/test", "aishell-1/dev"])])
    miss = [t.key for t in missing(found)]
    assert "common-voice/zh-HK/test" in miss and "wenetspeech/test_net" in miss and "aishell-1/test" not in miss
    assert discover(tmp_path / "mine") == []
    with pytest.raises(AsrEvalError, match="is not a folder"):
        discover(tmp_path / "nope")


def test_suite_refuses_unknown_test_sets_and_missing_models_before_any_work(tmp_path):
    r = CliRunner().invoke(app, ["suite", "--root", str(tmp_path), "--model", "bundled:whisper-base",
                                 "--set", "aishell-3/test", "--db", str(tmp_path / "s.duckdb")])
    assert r.exit_code != 0 and "unknown test set(s) ['aishell-3/test']" in str(r.exception or r.output)
    r = CliRunner().invoke(app, ["suite", "--root", str(tmp_path), "--db", str(tmp_path / "s.duckdb")])
    assert r.exit_code != 0 and "name at least one model" in str(r.exception or r.output)
    assert not (tmp_path / "s.duckdb").exists()


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    refs = build_aishell1(root / "corpora")
    db = root / "store" / "asr.duckdb"
    args = ["suite", "--root", str(root / "corpora"), "--model", "bundled:whisper-base", "--engine", "ctranslate2",
            "--compute-type", "int8", "--db", str(db), "--n-boot", "200", "--workers", "1"]
    first = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    return root, db, refs, args, first


@pytest.mark.integration
def test_suite_scores_the_bundled_model_on_an_aishell1_tree_beside_the_published_number(suite_run, tmp_path):
    root, db, refs, args, r = suite_run
    assert r.exit_code == 0, r.output + repr(r.exception)
    out = r.output
    assert re.search(r"aishell1\s.*aishell-1/test", out)
    assert "not found (fine):" in out and "wenetspeech/test_net" in out
    con = duckdb.connect(str(db), read_only=True)
    try:
        runs = con.execute("SELECT run_id, split, n_utts FROM eval_runs").fetchall()
        assert [(s, n) for _, s, n in runs] == [("test", 4)]  # dev is not a test split: not scored by default
        run_id = runs[0][0]
        refs_stored = dict(con.execute("SELECT utt_id, text FROM utterances").fetchall())
        cer, n = con.execute("SELECT cer, n FROM slice_metrics WHERE run_id = ? AND normalizer = 'zh-v1' "
                             "AND slice_attr = '_all'", [run_id]).fetchone()
        protocols = {p for (p,) in con.execute("SELECT DISTINCT normalizer FROM slice_metrics WHERE run_id = ?",
                                               [run_id]).fetchall()}
        genders = dict(con.execute("SELECT slice_value, n FROM slice_metrics WHERE run_id = ? AND normalizer = 'zh-v1' "
                                   "AND slice_attr = 'gender'", [run_id]).fetchall())
    finally:
        con.close()
    # The word-segmented transcripts are stored without their spaces; the speaker's gender is a slice.
    assert {u: refs_stored[u] for u in refs if u in refs_stored} == {u: segmented(t).replace(" ", "")
                                                                      for u, t in refs.items() if u in refs_stored}
    assert genders == {"female": 2, "male": 2} and n == 4
    # Re-scored under the protocol the published whisper-base result used (punct-t2s): no inference.
    assert protocols == {"zh-v1", "punct-t2s"}
    # The table shows our CER, and the published whisper-base number (Whisper-Finetune: 22.196 %) beside it.
    assert f"{100 * cer:.2f}" in out
    row = next(line for line in out.splitlines() if "22.20" in line)
    assert "aishell-1/test" in row and "punct-t2s" in row and "Whisper-Finetune" in row
    # The report's section "Standard test sets".
    html_path = tmp_path / "r.html"
    rep = CliRunner().invoke(app, ["report", "--db", str(db), "--out", str(html_path)])
    assert rep.exit_code == 0, rep.output
    html = html_path.read_text(encoding="utf-8")
    section = html[html.index('<section id="standard">'):]
    section = section[:section.index("</section>")]
    assert "AISHELL-1 test" in section and "22.20%" in section and "punct-t2s" in section
    assert "https://github.com/yeyupiaoling/Whisper-Finetune" in section
    assert 'href="#standard"' in html


@pytest.mark.integration
def test_a_second_suite_run_reuses_the_ingest_and_the_run(suite_run):
    root, db, _refs, args, first = suite_run
    assert first.exit_code == 0
    shards = sorted((root / "store" / "suite" / "corpora" / "aishell1").glob("shard-*.parquet"))
    before = [p.stat().st_mtime_ns for p in shards]
    again = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert again.exit_code == 0, again.output
    assert [p.stat().st_mtime_ns for p in shards] == before and shards
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM eval_runs").fetchone()[0] == 1
    finally:
        con.close()


def test_the_docs_list_every_registered_test_set():
    from asr_eval.corpus.registry import test_sets

    page = (REPO / "docs" / "standard-test-sets.md").read_text(encoding="utf-8")
    assert [t.key for t in test_sets() if f"| `{t.key}` | {t.title} | `{t.layout}` | `{t.split}`" not in page] == []
