"""Corpora, shards, parts and exports on object storage, tested against a real S3 server (moto's,
in-process on loopback; or the endpoint ASR_EVAL_TEST_S3_ENDPOINT names)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_audio

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
    assert names == ["_progress.jsonl", "index.json", "meta", "quarantine.jsonl"] + [f"shard-{i:05d}.parquet" for i in range(4)]
    assert storage.listdir(storage.location(out) / "meta") == [f"shard-{i:05d}.parquet" for i in range(4)]
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
    _flip_byte(f"{out}/meta/shard-00002.parquet", at=100)
    checks = {c.file: c for c in verify_corpus(out)}
    assert checks["shard-00001.parquet"].problem == checks["meta/shard-00002.parquet"].problem == "sha256"
    assert checks["shard-00099.parquet"].problem == "not_in_index"
    assert all(checks[f"shard-{i:05d}.parquet"].ok for i in (0, 2, 3))
    with pytest.raises(AsrEvalError, match=rf"corpus {out}: meta/shard-00002.parquet \(the metadata of "
                                           r"shard-00002.parquet\) is corrupt — SHA-256"):
        read_metadata(out)
    with pytest.raises(AsrEvalError, match=rf"corpus {out}: shard shard-00001.parquet is corrupt — SHA-256"):
        open_corpus(out).load_audio(["audio_f2"])
    # the resumed ingest rewrites exactly those shards from the source
    fixed = ingest(open_source(str(source)), out, IngestOptions(workers=1, max_rows=2), progress=False)
    assert fixed.shards_repaired == 2 and all(c.ok for c in verify_corpus(out) if c.kind == "shard" and c.file != "shard-00099.parquet")
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


def _demo_source(dest: Path, n_test: int = 8, n_train: int = 2) -> Path:
    """A few real demo utterances (both splits, every slice column) as an audiofolder."""
    import csv
    import shutil

    from conftest import DEMO_CORPUS

    rows = list(csv.DictReader((DEMO_CORPUS / "metadata.csv").open(encoding="utf-8")))
    keep = [r for r in rows if r["split"] == "test"][:n_test] + [r for r in rows if r["split"] == "train"][:n_train]
    for r in keep:
        (dest / r["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO_CORPUS / r["file_name"], dest / r["file_name"])
    with (dest / "metadata.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    return dest


def _rows(db: Path, sql: str) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.integration
def test_bucket_end_to_end_equals_local_and_never_stores_the_secret(bucket, s3_endpoint, tmp_path, capfd, caplog):
    """Ingest the demo sample to s3://, drop every local copy, score with the bundled model, report,
    export to s3:// — the stored rows are the local job's; the secret is in none of it."""
    from asr_eval.export import export_all
    from asr_eval.report import ReportOptions, build_report
    from asr_eval.scoring import RunSpec, score_models

    src = _demo_source(tmp_path / "demo_sample")
    spec = RunSpec.make("bundled:whisper-base", engine="ctranslate2", compute_type="float32", device="cpu",
                        threads=2)
    opts = IngestOptions(workers=1, max_rows=4)
    ingest(open_source(str(src)), tmp_path / "local", opts, progress=False)
    score_models(tmp_path / "local", [spec], tmp_path / "local.duckdb", n_boot=200, progress=False,
                 parts_root=tmp_path / "local-parts")

    # credentials as --storage-option would give them (the environment's pair is removed)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
        mp.delenv("AWS_ACCESS_KEY_ID", raising=False)
        mp.setattr(storage, "_OPTIONS", {})
        storage.set_storage_options({"key": "AKIAASREVALTEST", "secret": s3_endpoint["secret"]})
        corpus = f"{bucket}/zh/demo"
        ingest(open_source(str(src)), corpus, opts, progress=False)
        import shutil

        shutil.rmtree(storage.cache_dir())  # nothing local is left: every read below goes to the bucket
        run_ids = score_models(corpus, [spec], tmp_path / "s3.duckdb", n_boot=200, progress=False,
                               parts_root=f"{bucket}/parts")
        report = build_report(tmp_path / "s3.duckdb", tmp_path / "s3.html", ReportOptions())
        exp = export_all(tmp_path / "s3.duckdb", f"{bucket}/exports")
        local_exp = export_all(tmp_path / "local.duckdb", tmp_path / "local-exports")
        exported = {str(u).removeprefix(f"{bucket}/exports/"): storage.read_bytes(storage.location(u))
                    for u in exp.files}
    storage._FS.clear()

    q = {"hyps": "SELECT utt_id, hyp_raw, n_tokens, shard FROM hypotheses ORDER BY ALL",
         "scores": "SELECT utt_id, normalizer, ref_norm, hyp_norm, cer_n, cer_s, cer_d, cer_i, flags FROM utterance_scores ORDER BY ALL",
         "slices": "SELECT slice_attr, slice_value, normalizer, n, cer, cer_lo, cer_hi, mer FROM slice_metrics ORDER BY ALL",
         "runs": "SELECT run_id, corpus_id, n_utts, audio_s, n_missing FROM eval_runs ORDER BY ALL"}
    for name, sql in q.items():
        local_rows = _rows(tmp_path / "local.duckdb", sql)
        assert _rows(tmp_path / "s3.duckdb", sql) == local_rows and local_rows, name
    assert len(_rows(tmp_path / "s3.duckdb", "SELECT * FROM hypotheses")) == 8
    assert _rows(tmp_path / "s3.duckdb", "SELECT path FROM corpora") == [(corpus,)]
    assert run_ids == [r[0] for r in _rows(tmp_path / "local.duckdb", q["runs"])]
    assert storage.listdir(storage.location(f"{bucket}/parts/{run_ids[0]}")) == [
        "part-shard-00000.parquet", "part-shard-00000.parquet.sha256",
        "part-shard-00001.parquet", "part-shard-00001.parquet.sha256"]  # test rows sit in the first 8 items
    assert report.audio_embedded == 8  # every worst-utterance clip, read from the bucket
    local_files = {str(Path(f).relative_to(tmp_path / "local-exports")): Path(f).read_bytes() for f in local_exp.files}

    def timeless(name: str, data: bytes):  # the leaderboard format carries each utterance's compute time
        if not name.startswith("leaderboard/"):
            return data
        return [{k: v for k, v in json.loads(ln).items() if k != "time"} for ln in data.splitlines()]

    assert {k: timeless(k, v) for k, v in exported.items()} == {k: timeless(k, v) for k, v in local_files.items()}
    assert sorted(exported) == sorted(local_files) and len(exported) >= 4

    secret = s3_endpoint["secret"].encode()
    out, err = capfd.readouterr()
    places = {"store": (tmp_path / "s3.duckdb").read_bytes(), "report": (tmp_path / "s3.html").read_bytes(),
              "logs": (out + err + caplog.text).encode(), **{f"export {k}": v for k, v in exported.items()},
              **{f"cache {p.name}": p.read_bytes() for p in storage.cache_dir().rglob("*") if p.is_file()
                 and p.suffix in (".json", ".jsonl", ".csv")}}
    assert [k for k, v in places.items() if secret in v] == []


def test_writer_refuses_a_run_whose_part_is_missing_from_the_store(bucket, source, tmp_path, monkeypatch):
    """A worker that wrote its part where the driver cannot read it: the run is refused, naming the
    part URL and the fix, and nothing of it is loaded."""
    from asr_eval.engines import create_engine
    from asr_eval.models import build_tiny_whisper
    from asr_eval.scoring import RunSpec, transcribe_corpus, write_runs

    import fake_engine  # noqa: F401  (registers the 'fake' engine: known output, no inference)

    corpus = f"{bucket}/corpus"
    ingest(open_source(str(source)), corpus, IngestOptions(workers=1, max_rows=2), progress=False)
    tiny = str(build_tiny_whisper(tmp_path / "tiny"))
    spec = RunSpec.make(tiny, engine="fake", device="cpu")
    info = transcribe_corpus(create_engine("fake", tiny, "cpu"), corpus, "test", spec, f"{bucket}/parts",
                             progress=False)
    assert (info.shards_done, info.n_utts) == (2, 4)
    storage.delete(storage.location(f"{info.parts_dir}/part-shard-00001.parquet"))
    with pytest.raises(AsrEvalError, match=rf"run {info.run_id}: 1 hypothesis part\(s\) missing from "
                                           rf"{info.parts_dir} \(e.g. {info.parts_dir}/part-shard-00001.parquet\)"):
        write_runs(corpus, tmp_path / "s.duckdb", [info], n_boot=20)
    assert not (tmp_path / "s.duckdb").exists()  # checked before the store is even opened


def test_finetune_from_and_to_a_bucket_registers_models_by_url(bucket, source, tmp_path):
    """Corpus in the bucket, --out a URL: trained in a local staging folder, the run published to
    the URL, the exported models registered under their URLs — and scoring ``s3://…/best`` by URL
    (fetched into the model cache) gives the registered model id, so the lineage holds."""
    import duckdb

    from asr_eval.models import build_tiny_whisper
    from asr_eval.models.loading import open_model
    from asr_eval.train import FinetuneConfig, finetune

    corpus = f"{bucket}/corpus"
    ingest(open_source(str(source)), corpus, IngestOptions(workers=1, max_rows=4), progress=False)
    tiny = str(build_tiny_whisper(tmp_path / "tiny"))
    cfg = FinetuneConfig(max_steps=2, eval_steps=2, batch_size=2, warmup_steps=0, learning_rate=1e-3,
                         max_new_tokens=4, max_eval_samples=2, tensorboard=False, live_monitor=False,
                         eval_split="test", eval_on_start=False)
    out = f"{bucket}/runs/ft"
    res = finetune(corpus, tiny, out, cfg, db=tmp_path / "s.duckdb", progress=False)
    names = storage.listdir(storage.location(out))
    assert {"training_run.json", "best", "final", "loss_stream.jsonl"} <= set(names), names
    record = json.loads(storage.read_bytes(storage.location(out) / "training_run.json"))
    assert record["status"] == "finished" and record["out_url"] == out and record["corpus_dir"] == corpus
    best = open_model(f"{out}/best")  # fetched from the bucket into the model cache
    assert best.model_id == res.model_ids["best"] == record["best"]["model_id"]
    assert best.model_id.startswith(f"{out}/best@")
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    rows = con.execute("SELECT name, base_model_id, corpus_id FROM models WHERE model_id = ?", [best.model_id]).fetchall()
    assert rows == [(f"{out}/best", record["base_model_id"], open_corpus(corpus).corpus_id)]
    assert con.execute("SELECT path FROM corpora").fetchall() == [(corpus,)]
    con.close()
