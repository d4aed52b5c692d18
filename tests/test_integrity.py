"""Integrity: a shard that does not match index.json (size + SHA-256) is never scored, trained
on or embedded; `asr-eval verify` lists it; re-running ingest rewrites it; the cache works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import write_audio

from asr_eval import integrity
from asr_eval.corpus import open_source
from asr_eval.errors import AsrEvalError
from asr_eval.shards import IngestOptions, ingest
from asr_eval.corpus_handle import iter_batches, load_audio, open_corpus, read_index, read_metadata, verify_corpus

BAD = "shard-00001.parquet"  # holds u04..u07


def _source(root: Path, n: int = 12) -> Path:
    src = root / "src"
    lines = ["file_name,text,split"]
    texts = ["今天天气很好", "我们去北京", "你好世界", "这是一个测试"]
    for i in range(n):
        write_audio(src / f"u{i:02d}.wav", 0.5 + 0.1 * (i % 3), 16000, seed=i)
        lines.append(f"u{i:02d}.wav,{texts[i % 4]},{'test' if i % 2 == 0 else 'train'}")
    (src / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return src


def _ingest(src: Path, out: Path):
    return ingest(open_source(str(src)), out, IngestOptions(workers=1, max_rows=4), progress=False)


@pytest.fixture
def corpus(tmp_path) -> Path:
    out = tmp_path / "corpus"
    s = _ingest(_source(tmp_path), out)
    assert s.shards == 3 and s.n_ingested == 12
    return out


def flip(path: Path) -> None:
    """One byte inverted in the middle of the file (size unchanged)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])


DAMAGE = {"flip": flip, "truncate": truncate}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from asr_eval.models import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny") / "m", num_mel_bins=80, seed=0)


def _says_shard_and_fix(msg: str) -> None:
    assert BAD in msg and "nothing from it is used" in msg
    assert "asr-eval ingest" in msg and "rewrites the corrupt ones" in msg


# ───────────── every reader ─────────────


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_scoring_refuses_a_damaged_shard_and_stores_nothing(corpus, tiny, tmp_path, damage):
    from asr_eval.scoring import expand_specs, score_models

    DAMAGE[damage](corpus / BAD)
    db = tmp_path / "s.duckdb"
    specs = expand_specs([str(tiny)], device="cpu", batch_size=4, max_new_tokens=4)
    with pytest.raises(AsrEvalError) as e:
        score_models(corpus, specs, db, split="test", n_boot=10, progress=False, parts_root=tmp_path / "parts")
    _says_shard_and_fix(str(e.value))
    assert ("SHA-256" in str(e.value)) if damage == "flip" else ("bytes but index.json records" in str(e.value))
    assert not list((tmp_path / "parts").glob("*/part-*.parquet"))  # refused before any inference
    if db.exists():
        con = duckdb.connect(str(db), read_only=True)
        assert con.execute("SELECT count(*) FROM hypotheses").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM utterance_scores").fetchone() == (0,)
        con.close()


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_shard_readers_refuse_a_damaged_shard(corpus, damage):
    DAMAGE[damage](corpus / BAD)
    assert read_metadata(corpus).num_rows == 12  # text and slices come from the shards' metadata files
    for call in (lambda: list(iter_batches(corpus, batch_size=4)), lambda: load_audio(corpus, ["u05"])):
        with pytest.raises(AsrEvalError) as e:
            call()
        _says_shard_and_fix(str(e.value))
    DAMAGE[damage](corpus / "meta" / BAD)  # a damaged metadata file is refused the same way
    for call in (lambda: read_metadata(corpus), lambda: list(open_corpus(corpus).iter_rows(BAD, None, ["utt_id"]))):
        with pytest.raises(AsrEvalError, match=f"meta/{BAD} \\(the metadata of {BAD}\\) is") as e:
            call()
        _says_shard_and_fix(str(e.value))


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_finetune_dataset_refuses_a_damaged_shard(corpus, tiny, damage):
    from asr_eval import models
    from asr_eval.text import get_profile
    from asr_eval.train import LabelEncoder, ShardSpeechDataset

    labels = LabelEncoder(models.load(str(tiny), device="cpu").processor.tokenizer, get_profile("zh-train-v1"))
    assert len(ShardSpeechDataset(corpus, "train", labels)) == 6  # sound corpus: all 6 train rows
    DAMAGE[damage](corpus / BAD)
    with pytest.raises(AsrEvalError) as e:
        ShardSpeechDataset(corpus, "train", labels)
    _says_shard_and_fix(str(e.value))


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_report_audio_leaves_out_a_damaged_shard_and_says_why(corpus, damage):
    from asr_eval.report.audio import embed_audio

    DAMAGE[damage](corpus / BAD)
    wanted = [("c", f"u{i:02d}") for i in range(12)]
    emb = embed_audio(wanted, {"c": str(corpus)}, cap_bytes=10**8)
    assert sorted(u for _, u in emb.keys) == [f"u{i:02d}" for i in (0, 1, 2, 3, 8, 9, 10, 11)]
    assert sorted(u for _, u in emb.missing) == ["u04", "u05", "u06", "u07"]
    assert all(BAD in why and "corrupt" in why for why in emb.missing.values())


def test_unreadable_index_is_a_clear_error(corpus):
    (corpus / "index.json").write_text('{"corpus": "x", "shards": [')
    with pytest.raises(AsrEvalError, match="index.json is unreadable"):
        read_metadata(corpus)


# ───────────── verify ─────────────


def _verify_cli(corpus: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr_eval", "verify", str(corpus)], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "120"}, timeout=120)


def test_verify_cli_sound_then_damaged(corpus):
    ok = _verify_cli(corpus)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "3 shard(s) match index.json" in ok.stdout
    flip(corpus / BAD)
    truncate(corpus / "shard-00002.parquet")
    with (corpus / "quarantine.jsonl").open("a") as f:
        f.write('{"utt_id": "x", "reason": "bad_row"}\n{torn\n')
    bad = _verify_cli(corpus)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    lines = {ln.split(":")[0]: ln for ln in bad.stdout.splitlines() if ln.startswith(("shard-", "quarantine"))}
    assert "sha256" in lines[BAD] and "size" in lines["shard-00002.parquet"]
    assert "1 unparseable line(s): 2" in lines["quarantine.jsonl"]
    assert "3 problem(s)" in bad.stdout and "asr-eval ingest" in bad.stdout
    checks = {c.file: c for c in verify_corpus(corpus)}
    assert checks["shard-00000.parquet"].ok and checks["shard-00000.parquet"].rows == 4
    assert checks[BAD].problem == "sha256" and checks[BAD].expected_sha256 == read_index(corpus)["shards"][1]["sha256"]
    assert checks["shard-00002.parquet"].problem == "size"
    assert checks["shard-00002.parquet"].actual_bytes == checks["shard-00002.parquet"].expected_bytes - 100


def test_stray_shard_is_reported(corpus):
    (corpus / "shard-00007.parquet").write_bytes((corpus / BAD).read_bytes())
    checks = {c.file: c for c in verify_corpus(corpus)}
    assert checks["shard-00007.parquet"].problem == "not_in_index"
    assert sum(not c.ok for c in checks.values()) == 1


# ───────────── re-ingest rewrites ─────────────


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_reingest_rewrites_the_damaged_shard_only(tmp_path, damage):
    src = _source(tmp_path)
    out = tmp_path / "corpus"
    _ingest(src, out)
    before = read_index(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    rows = duckdb.sql(f"SELECT utt_id, split, audio_sha256 FROM '{out}/*.parquet' ORDER BY 1").fetchall()
    {"flip": flip, "truncate": truncate, "delete": lambda p: p.unlink()}[damage](out / BAD)
    s = _ingest(src, out)
    assert (s.shards_repaired, s.n_ingested, s.n_quarantined, s.shards) == (1, 12, 0, 3)
    assert read_index(out)["shards"] == before["shards"]  # byte-identical rewrite
    assert all(c.ok for c in verify_corpus(out))
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet") if p.name != BAD} == \
        {k: v for k, v in mtimes.items() if k != BAD}
    assert duckdb.sql(f"SELECT utt_id, split, audio_sha256 FROM '{out}/*.parquet' ORDER BY 1").fetchall() == rows


def test_reingest_after_a_kill_with_a_damaged_finished_shard(tmp_path):
    """A journal from an interrupted run, one of its finished shards then damaged: the resume
    rewrites it and finishes the rest, ending with the rows of a clean run."""
    src = _source(tmp_path)
    ref, out = tmp_path / "ref", tmp_path / "out"
    _ingest(src, ref)
    _ingest(src, out)
    journal = (out / "_progress.jsonl").read_text().splitlines()
    (out / "_progress.jsonl").write_text("\n".join(journal[:3]) + "\n")  # header + 2 finished shards
    (out / "index.json").unlink()
    (out / "shard-00002.parquet").unlink()
    flip(out / BAD)
    s = _ingest(src, out)
    assert (s.shards_repaired, s.n_ingested, s.shards) == (1, 12, 3)
    assert read_index(out)["shards"] == read_index(ref)["shards"]


# ───────────── cache ─────────────


def test_verification_cache_avoids_rehashing(corpus, monkeypatch):
    calls: list[str] = []
    real = integrity.file_sha256

    def counting(path):
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(integrity, "file_sha256", counting)
    monkeypatch.setattr(integrity, "_MEMO", {})
    old = 1_600_000_000
    for p in [*corpus.glob("shard-*.parquet"), *corpus.glob("meta/shard-*.parquet")]:
        os.utime(p, (old, old))  # not "racily clean": older than the racy window
    assert all(c.ok for c in verify_corpus(corpus))
    shards = ["shard-00000.parquet", BAD, "shard-00002.parquet"]
    assert sorted(calls) == sorted(2 * shards)  # each shard and its metadata file (meta/…), once
    for folder in (corpus, corpus / "meta"):
        assert set(json.loads((folder / integrity.CACHE_FILE).read_text())) == set(shards)

    # A new process (empty memo) reads the cache file: nothing is hashed again.
    monkeypatch.setattr(integrity, "_MEMO", {})
    calls.clear()
    assert all(c.ok and c.cached for c in verify_corpus(corpus) if c.kind == "shard")
    assert read_metadata(corpus).num_rows == 12
    assert calls == []

    # A changed file (same size, new mtime) is hashed again, and caught.
    flip(corpus / BAD)
    os.utime(corpus / BAD, (old + 5, old + 5))
    monkeypatch.setattr(integrity, "_MEMO", {})
    calls.clear()
    assert open_corpus(corpus).check(BAD).problem == "sha256"
    assert calls == [BAD]


def test_a_freshly_modified_file_is_not_cached(corpus, monkeypatch):
    """Racy-clean rule: a file modified within RACY_S of hashing could change again inside the
    same mtime tick, so it is hashed again next time."""
    monkeypatch.setattr(integrity, "_MEMO", {})
    now = __import__("time").time()
    for p in corpus.glob("shard-*.parquet"):
        os.utime(p, (now, now))
    assert all(c.ok and not c.cached for c in verify_corpus(corpus) if c.kind == "shard")
    assert not (corpus / integrity.CACHE_FILE).exists() or \
        json.loads((corpus / integrity.CACHE_FILE).read_text()) == {}
