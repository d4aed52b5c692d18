"""Corpora, shards, parts and exports on object storage, tested against a real S3 server (moto's,
in-process on loopback; or the endpoint ASR_EVAL_TEST_S3_ENDPOINT names)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, write_audio

from asr_eval import storage
from asr_eval.corpus import open_source
from asr_eval.corpus_handle import open_corpus, read_metadata, verify_corpus
from asr_eval.errors import AsrEvalError
from asr_eval.shards import IngestOptions, ingest


@pytest.mark.parametrize("items,expected", [
    (["endpoint_url=http://minio:9000"], {"endpoint_url": "http://minio:9000"}),
    (["anon=true", "default_block_size=1048576"], {"anon": True, "default_block_size": 1048576}),
    (["client_kwargs.region_name=eu-west-1", "profile=prod"], {"client_kwargs": {"region_name": "eu-west-1"},
                                                                "profile": "prod"}),
    (["token=abc=def"], {"token": "abc=def"}),
])
def test_storage_options_parse(items, expected):
    assert storage.parse_storage_options(items) == expected


@pytest.mark.parametrize("raw,url,is_local", [
    ("s3://bucket/a/b/", "s3://bucket/a/b", False),
    ("gs://bucket", "gs://bucket", False),
    ("file:///tmp/x", "/tmp/x", True),
    ("relative/dir", str(Path("relative/dir").resolve()), True),
])
def test_location_normalizes(raw, url, is_local):
    loc = storage.location(raw)
    assert (loc.url, loc.is_local) == (url, is_local)
    assert str(loc / "index.json").endswith("/index.json")


def test_redact_and_bad_scheme():
    assert storage.redact("s3://AKIA:secret@bucket/x?X-Amz-Signature=abc") == "s3://bucket/x"
    with pytest.raises(AsrEvalError, match="unknown storage scheme 'ftp'"):
        storage.location("ftp://host/x")
    with pytest.raises(AsrEvalError, match="must look like key=value"):
        storage.parse_storage_options(["endpoint_url"])


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """8 short clips, 2 splits, a slice column; with max_rows=2 they make 4 shards."""
    src = tmp_path_factory.mktemp("src")
    lines = ["file_name,text,split,voice"]
    for i in range(8):
        write_audio(src / "audio" / f"f{i}.wav", 0.5 + 0.1 * i, 16000, seed=i)
        lines.append(f"audio/f{i}.wav,测试句子{i},{'test' if i < 4 else 'train'},{'a' if i % 2 else 'b'}")
    (src / "metadata.csv").write_text("\n".join(lines) + "\n")
    return src


def _flip_byte(url: str, at: int = 200) -> None:
    loc = storage.location(url)
    data = bytearray(storage.read_bytes(loc))
    data[at] ^= 0xFF
    storage.write_bytes(loc, bytes(data))


def test_ingest_to_s3_is_verified_resumable_and_refuses_a_flipped_byte(bucket, source, tmp_path):
    out = f"{bucket}/zh/corpus"
    s = ingest(open_source(str(source)), out, IngestOptions(workers=1, max_rows=2), progress=False)
    assert (s.n_ingested, s.shards, s.out_dir) == (8, 4, out)
    names = storage.listdir(storage.location(out))
    assert names == ["_progress.jsonl", "index.json", "quarantine.jsonl"] + [f"shard-{i:05d}.parquet" for i in range(4)]
    local = ingest(open_source(str(source)), tmp_path / "local", IngestOptions(workers=1, max_rows=2), progress=False)
    # the same bytes as a local ingest: same index, same corpus id, same rows
    assert storage.read_bytes(storage.location(out) / "index.json") == (tmp_path / "local" / "index.json").read_bytes()
    assert open_corpus(out).corpus_id == open_corpus(tmp_path / "local").corpus_id
    assert read_metadata(out).to_pylist() == read_metadata(tmp_path / "local").to_pylist()
    assert local.n_ingested == 8 and all(c.ok for c in verify_corpus(out))

    # a re-run resumes from the journal: nothing rewritten
    etags = {n: storage.stat(storage.location(out) / n).version for n in names if n.startswith("shard-")}
    again = ingest(open_source(str(source)), out, IngestOptions(workers=1, max_rows=2), progress=False)
    assert again.shards_repaired == 0
    assert {n: storage.stat(storage.location(out) / n).version for n in etags} == etags

    # an object the index does not name is not part of the corpus (a half-finished upload of a killed run)
    storage.write_bytes(storage.location(out) / "shard-00099.parquet", b"PAR1 torn")
    assert [s.name for s in open_corpus(out).shards] == [f"shard-{i:05d}.parquet" for i in range(4)]

    # one flipped byte in an object: refused by every reader, listed by verify, naming the URL
    _flip_byte(f"{out}/shard-00001.parquet")
    checks = {c.file: c for c in verify_corpus(out)}
    assert checks["shard-00001.parquet"].problem == "sha256"
    assert checks["shard-00099.parquet"].problem == "not_in_index"
    assert all(checks[f"shard-{i:05d}.parquet"].ok for i in (0, 2, 3))
    with pytest.raises(AsrEvalError, match=rf"corpus {out}: shard shard-00001.parquet is corrupt — SHA-256"):
        read_metadata(out)
    # the resumed ingest rewrites exactly that shard from the source
    fixed = ingest(open_source(str(source)), out, IngestOptions(workers=1, max_rows=2), progress=False)
    assert fixed.shards_repaired == 1 and all(c.ok for c in verify_corpus(out) if c.kind == "shard" and c.file != "shard-00099.parquet")
    assert read_metadata(out).to_pylist() == read_metadata(tmp_path / "local").to_pylist()


def test_ingest_source_from_a_bucket(bucket, source, tmp_path):
    """A corpus folder in a bucket (copied once) and a manifest object whose relative audio paths
    are objects beside it (fetched by the decoder workers) give the rows of the local source; an
    audio object that is missing is quarantined with its URL, the rest ingested."""
    fs = storage.filesystem(storage.location(bucket))
    src = f"{bucket}/data/{source.name}"  # named like the local folder: the corpus name comes from it
    fs.put(str(source) + "/", f"{src[5:]}/", recursive=True)
    want = read_metadata(ingest(open_source(str(source)), tmp_path / "local", IngestOptions(workers=1),
                                progress=False).out_dir).drop_columns(["source_path"]).to_pylist()

    folder = ingest(open_source(src), f"{bucket}/from-folder", IngestOptions(workers=1), progress=False)
    assert folder.n_ingested == 8
    assert read_metadata(f"{bucket}/from-folder").drop_columns(["source_path"]).to_pylist() == want
    assert open_corpus(f"{bucket}/from-folder").index["source"]["path"] == src

    fs.rm_file(f"{src[5:]}/audio/f7.wav")
    manifest = ingest(open_source(f"{src}/metadata.csv", "manifest"), f"{bucket}/from-manifest",
                      IngestOptions(workers=1), progress=False)
    assert (manifest.n_ingested, manifest.n_quarantined) == (7, 1)
    q = open_corpus(f"{bucket}/from-manifest").quarantine()
    assert q[0]["utt_id"] == "audio_f7" and f"{src}/audio/f7.wav" in q[0]["detail"]
    assert read_metadata(f"{bucket}/from-manifest").drop_columns(["source_path"]).to_pylist() == want[:7]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr_eval", *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, check=False)


def test_storage_errors_are_clear_and_leave_nothing(bucket, source, tmp_path):
    """Each mistake: exit 2, one message naming the URL and the fix, no traceback, nothing written."""
    no_bucket = _cli("ingest", str(source), "--out", "s3://no-such-bucket-asr-eval/c")
    no_index = _cli("score", "--corpus", f"{bucket}/empty", "--model", "bundled:whisper-base",
                    "--db", str(tmp_path / "s.duckdb"))
    unreachable = _cli("verify", f"{bucket}/c", "--storage-option", "endpoint_url=http://127.0.0.1:9",
                       "--storage-option", 'config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 1}')
    for r in (no_bucket, no_index):
        assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout, r.stderr
    assert "s3://no-such-bucket-asr-eval/c: bucket 'no-such-bucket-asr-eval' does not exist" in " ".join(no_bucket.stderr.split())
    assert f"{bucket}/empty is not an ingested corpus (no index.json)" in " ".join(no_index.stderr.split())
    assert not (tmp_path / "s.duckdb").exists()
    # verify lists an unreachable store as a failed check (exit 1) with the endpoint fix
    assert unreachable.returncode == 1 and "cannot reach the storage endpoint" in " ".join(unreachable.stdout.split())
    # a scheme whose back-end is not installed names the pip install
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "adlfs", None)
        with pytest.raises(AsrEvalError, match=r"az:// needs the adlfs package; pip install 'asr-eval\[cloud\]'"):
            open_corpus("az://container/corpus")
