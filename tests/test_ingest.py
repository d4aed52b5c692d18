"""Ingest: every source layout, every bad-input class, idempotence, crash-resume, readability."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import REPO, write_audio

from asr_eval import audio as A
from asr_eval.corpus import detect_layout, open_source
from asr_eval.errors import AsrEvalError
from asr_eval.shards import IngestOptions, ingest, parse_split_map
from asr_eval.corpus_handle import iter_batches, load_audio, read_index, read_metadata, read_quarantine

FORMATS = [("wav", 8000, 1), ("flac", 16000, 2), ("mp3", 44100, 1), ("ogg", 48000, 2), ("wav", 48000, 2)]


def _ingest(src, out, layout=None, **kw):
    opts = IngestOptions(workers=1, **kw)
    return ingest(open_source(str(src), layout), out, opts, progress=False)


def _rows(out: Path) -> list[dict]:
    return read_metadata(out).to_pylist()


# ───────────── audio ─────────────


@pytest.mark.parametrize("ext,sr,ch", FORMATS)
def test_audio_decodes_to_16k_mono(tmp_path, ext, sr, ch):
    p = write_audio(tmp_path / f"x.{ext}", 1.25, sr, ch)
    a = A.load(p)
    assert a.source_sample_rate == sr and a.source_channels == ch
    assert a.samples.dtype == np.float32 and a.samples.ndim == 1
    # mp3 adds encoder padding; the others are exact after resampling
    assert abs(a.duration_s - 1.25) < (0.06 if ext == "mp3" else 1e-3)
    flac = A.encode_flac(a.samples)
    back = A.decode_flac(flac)
    assert np.max(np.abs(back - np.clip(a.samples, -1, 1))) < 1 / 32768 + 1e-6  # 16-bit quantisation only


def test_resampling_preserves_frequency(tmp_path):
    p = write_audio(tmp_path / "x.wav", 1.0, 44100, freq=1000.0)
    s = A.load(p).samples
    spectrum = np.abs(np.fft.rfft(s))
    peak_hz = np.argmax(spectrum) * 16000 / len(s)
    assert abs(peak_hz - 1000.0) < 2.0


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "ogg"])
def test_truncated_files_are_detected(tmp_path, ext):
    p = write_audio(tmp_path / f"x.{ext}", 2.0, 16000)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(A.AudioError) as e:
        A.load(p)
    assert e.value.reason is A.Reason.TRUNCATED


# ───────────── layouts ─────────────


def _manifest_corpus(root: Path, kind: str) -> Path:
    rows = []
    for i, (ext, sr, ch) in enumerate(FORMATS):
        write_audio(root / "audio" / f"u{i}.{ext}", 1.0 + 0.25 * i, sr, ch, seed=i)
        rows.append({"audio": f"audio/u{i}.{ext}", "text": f"第{i}句话", "accent": ["北方", "南方"][i % 2],
                     "gender": "female" if i % 2 else "male", "split": "test" if i < 3 else "train"})
    if kind == "jsonl":
        path = root / "manifest.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        sep = "," if kind == "csv" else "\t"
        path = root / f"manifest.{kind}"
        lines = [sep.join(rows[0])] + [sep.join(str(v) for v in r.values()) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_manifest_layouts(tmp_path, kind):
    path = _manifest_corpus(tmp_path / "src", kind)
    assert detect_layout(str(path)) == "manifest"
    s = _ingest(path, tmp_path / "out")
    assert (s.n_ingested, s.n_quarantined) == (5, 0)
    assert s.by_split == {"test": 3, "train": 2}
    rows = {r["utt_id"]: r for r in _rows(tmp_path / "out")}
    assert rows["audio_u1"]["accent"] == "南方" and rows["audio_u1"]["gender"] == "female"
    assert rows["audio_u3"]["duration_s"] == pytest.approx(1.75, abs=1e-3)
    assert all(r["sample_rate"] == 16000 for r in rows.values())
    assert read_index(tmp_path / "out")["slice_columns"] == ["accent", "gender"]


def test_nemo_manifest_with_offsets(tmp_path):
    src = tmp_path / "src"
    write_audio(src / "long.wav", 4.0, 16000)
    lines = [
        {"audio_filepath": "long.wav", "text": "前半", "duration": 1.5, "offset": 0.0},
        {"audio_filepath": "long.wav", "text": "后半", "duration": 2.0, "offset": 2.0},
    ]
    (src / "test.json").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    s = _ingest(src / "test.json", tmp_path / "out")
    assert s.n_ingested == 2 and s.by_split == {"test": 2}  # split from the file name
    rows = sorted(_rows(tmp_path / "out"), key=lambda r: r["utt_id"])
    assert [r["duration_s"] for r in rows] == pytest.approx([1.5, 2.0], abs=1e-3)


def test_kaldi_dir_with_segments_and_gender(tmp_path):
    d = tmp_path / "kaldi"
    write_audio(d / "wav" / "rec1.wav", 3.0, 8000)
    write_audio(d / "wav" / "rec2.flac", 2.0, 16000)
    (d / "wav.scp").write_text("rec1 wav/rec1.wav\nrec2 wav/rec2.flac\nrec3 sox x.wav -t wav - |\n")
    (d / "segments").write_text("u1 rec1 0.0 1.0\nu2 rec1 1.0 3.0\nu3 rec2 0.5 1.5\nu4 rec3 0 1\n")
    (d / "text").write_text("u1 你好\nu2 世界\nu3 再见\nu4 管道\n")
    (d / "utt2spk").write_text("u1 s1\nu2 s1\nu3 s2\nu4 s2\n")
    (d / "spk2gender").write_text("s1 f\ns2 m\n")
    assert detect_layout(str(d)) == "kaldi"
    s = _ingest(d, tmp_path / "out")
    assert s.n_ingested == 3 and s.quarantine_by_reason == {"unsupported": 1}
    rows = {r["utt_id"]: r for r in _rows(tmp_path / "out")}
    assert rows["u2"]["duration_s"] == pytest.approx(2.0, abs=1e-3)
    assert rows["u3"]["speaker"] == "s2" and rows["u3"]["gender"] == "m"
    q = read_quarantine(tmp_path / "out")[0]
    assert q["utt_id"] == "u4" and "piped command" in q["detail"]


def test_kaldi_plain_wav_scp(tmp_path):
    d = tmp_path / "kaldi"
    write_audio(d / "a.wav", 1.0)
    (d / "wav.scp").write_text(f"a {d / 'a.wav'}\n")
    (d / "text").write_text("a 测试\nb 无音频\n")
    s = _ingest(d, tmp_path / "out")
    assert s.n_ingested == 1 and s.quarantine_by_reason == {"missing_file": 1}


def test_audiofolder_with_split_folders(tmp_path):
    root = tmp_path / "af"
    for split, n in (("train", 2), ("test", 3)):
        lines = ["file_name,transcription,topic"]
        for i in range(n):
            write_audio(root / split / f"{split}{i}.flac", 1.0, 16000, seed=i)
            lines.append(f"{split}{i}.flac,句子{i},天气")
        (root / split / "metadata.csv").write_text("\n".join(lines) + "\n")
    assert detect_layout(str(root)) == "audiofolder"
    s = _ingest(root, tmp_path / "out")
    assert s.by_split == {"test": 3, "train": 2} and s.n_quarantined == 0
    assert {r["topic"] for r in _rows(tmp_path / "out")} == {"天气"}


def test_common_voice_folder(tmp_path):
    cv = tmp_path / "cv-corpus-zh-CN"
    header = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment"
    for split, n in (("train", 2), ("dev", 1), ("test", 2)):
        lines = [header]
        for i in range(n):
            name = f"common_voice_zh-CN_{split}{i}.mp3"
            write_audio(cv / "clips" / name, 1.5, 48000, fmt="MP3", seed=i)
            lines.append(f"spk{i}\t{name}\tsid{i}\t他说\"好\"{i}\t\t2\t0\tthirties\tmale_masculine\t北京\t\tzh-CN\t")
        (cv / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    assert detect_layout(str(cv)) == "commonvoice"
    s = ingest(open_source(str(cv)), tmp_path / "out",
               IngestOptions(workers=1, split_map=parse_split_map(["train+dev=train"])), progress=False)
    assert s.by_split == {"test": 2, "train": 3}
    rows = {r["utt_id"]: r for r in _rows(tmp_path / "out")}
    r = rows["common_voice_zh-CN_test1"]
    assert r["text"] == '他说"好"1' and r["speaker"] == "spk1"
    assert (r["accents"], r["age"], r["gender"], r["up_votes"]) == ("北京", "thirties", "male_masculine", "2")
    assert r["segment"] is None


def _hf_dataset(tmp_path):
    import datasets

    files = [str(write_audio(tmp_path / "hfsrc" / f"h{i}.wav", 1.0 + i * 0.5, 22050, seed=i)) for i in range(3)]
    ds = datasets.Dataset.from_dict(
        {"audio": files, "sentence": ["一", "二", "三"], "accent": ["a", "b", "a"], "age": [20, 30, 40]}
    ).cast_column("audio", datasets.Audio(decode=False))
    # embed the bytes so the saved dataset no longer needs the source files
    ds = ds.map(lambda r: {"audio": {"bytes": Path(r["audio"]["path"]).read_bytes(), "path": Path(r["audio"]["path"]).name}})
    return datasets.DatasetDict({"test": ds})


def test_hf_save_to_disk_and_parquet(tmp_path):
    dd = _hf_dataset(tmp_path)
    dd.save_to_disk(str(tmp_path / "disk"))
    assert detect_layout(str(tmp_path / "disk")) == "hf-disk"
    s = _ingest(tmp_path / "disk", tmp_path / "out1")
    assert s.by_split == {"test": 3} and s.n_quarantined == 0
    rows = {r["utt_id"]: r for r in _rows(tmp_path / "out1")}
    assert rows["h2"]["duration_s"] == pytest.approx(2.0, abs=1e-3) and rows["h2"]["age"] == "40"

    dd["test"].to_parquet(str(tmp_path / "pq" / "test.parquet"))
    assert detect_layout(str(tmp_path / "pq")) == "hf-parquet"
    s2 = ingest(open_source(str(tmp_path / "pq"), split="test"), tmp_path / "out2", IngestOptions(workers=1), progress=False)
    assert s2.n_ingested == 3


def test_hf_hub_id_offline_fails_fast_with_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(AsrEvalError, match="HF_HUB_OFFLINE"):
        _ingest("someone/not-a-cached-dataset", tmp_path / "out")
    assert time.time() - t0 < 30


def test_a_registered_layout_is_detected_and_opened(tmp_path, monkeypatch):
    """Layouts are a registry: a plugin's layout (here: a .lst file naming the manifest to read)
    is detected after the built-ins and opened with the caller's options."""
    from asr_eval.corpus import detect as D
    from asr_eval.corpus import registry
    from asr_eval.corpus.manifest import ManifestReader

    csv_path = _manifest_corpus(tmp_path / "src", "csv")
    lst = tmp_path / "corpus.lst"
    lst.write_text(f"{csv_path}\n", encoding="utf-8")
    with pytest.raises(AsrEvalError, match="cannot tell the layout"):
        detect_layout(str(lst))
    monkeypatch.setattr(registry, "_LAYOUTS", dict(registry._LAYOUTS))  # the registration ends with the test
    seen = {}

    def opens(source, opts):
        seen["split"] = opts.split
        target = Path(Path(source).read_text(encoding="utf-8").strip())
        return ManifestReader(target, opts.audio_column, opts.text_column, opts.id_column, opts.split)

    D.register_layout(D.Layout("lst", lambda p, _s: p.suffix == ".lst", opens, "a .lst manifest"))
    assert detect_layout(str(lst)) == "lst" and "lst" in D.layout_names()
    s = _ingest(lst, tmp_path / "out")
    assert (s.n_ingested, s.n_quarantined) == (5, 0) and seen == {"split": None}
    with pytest.raises(AsrEvalError, match="registered twice"):
        D.register_layout(D.Layout("lst", lambda p, _s: False, opens, ""))
    with pytest.raises(AsrEvalError, match=r"--recording-level applies to sources with segment times \(wenetspeech, magicdata-ramc, kaldi\)"):
        open_source(str(lst), recording_level=True)


def test_unknown_layout_lists_what_was_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AsrEvalError, match="wav.scp"):
        detect_layout(str(tmp_path / "empty"))
    with pytest.raises(AsrEvalError, match="does not exist"):
        detect_layout(str(tmp_path / "nope"))


# ───────────── bad input → quarantine ─────────────


def _bad_corpus(root: Path) -> Path:
    for i in range(3):
        write_audio(root / f"good{i}.wav", 1.0, seed=i)
    sf.write(root / "zero.wav", np.zeros((0,), np.float32), 16000)
    sf.write(root / "nan.wav", np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    sf.write(root / "silent.wav", np.zeros(16000, np.float32), 16000)
    write_audio(root / "short.wav", 0.05)
    write_audio(root / "long.wav", 31.0, 8000)
    (root / "garbage.wav").write_bytes(b"RIFF this is not audio at all")
    t = write_audio(root / "trunc.flac", 2.0)
    t.write_bytes(t.read_bytes()[:3000])
    rows = [
        ("good0.wav", "好的"), ("good1.wav", "可以"), ("missing.wav", "没有"), ("garbage.wav", "坏的"),
        ("trunc.flac", "截断"), ("zero.wav", "零"), ("nan.wav", "非数"), ("silent.wav", "静音"),
        ("short.wav", "太短"), ("long.wav", "太长"), ("good2.wav", "  。！？ "), ("good0.wav", "重复"),
        ("../../etc/passwd", "逃逸"),
    ]
    lines = ["file_name,text"] + [f"{a},{t}" for a, t in rows]
    data = ("\n".join(lines) + "\n").encode("utf-8") + "bad.wav,".encode() + b"\xff\xfe\xfa\n"
    (root / "metadata.csv").write_bytes(data)
    return root


def test_every_bad_input_class_is_quarantined_with_reason(tmp_path):
    src = _bad_corpus(tmp_path / "bad")
    s = _ingest(src, tmp_path / "out")
    assert s.n_ingested == 2
    assert s.quarantine_by_reason == {
        "bad_encoding": 1, "duplicate_id": 1, "empty_transcript": 1, "missing_file": 1, "non_finite": 1,
        "path_escape": 1, "silent": 1, "too_long": 1, "too_short": 1, "truncated": 1, "unreadable": 1,
        "zero_length": 1,
    }
    q = {r["reason"]: r for r in read_quarantine(tmp_path / "out")}
    assert q["bad_encoding"]["where"].endswith("metadata.csv:15")
    assert q["missing_file"]["utt_id"] == "missing" and "does not exist" in q["missing_file"]["detail"]
    assert q["duplicate_id"]["where"].endswith(":13")


def test_keep_long_admits_flagged(tmp_path):
    src = _bad_corpus(tmp_path / "bad")
    s = _ingest(src, tmp_path / "out", keep_long=True)
    assert s.n_ingested == 3 and "too_long" not in s.quarantine_by_reason
    long = [r for r in _rows(tmp_path / "out") if r["utt_id"] == "long"][0]
    assert long["qc_flags"] == ["too_long"] and long["duration_s"] == pytest.approx(31.0, abs=1e-3)


def test_cli_exit_codes(tmp_path):
    src = _bad_corpus(tmp_path / "bad")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run([sys.executable, "-m", "asr_eval", "ingest", str(src), "--out", str(tmp_path / "o1"),
                         "--workers", "1"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "quarantined" in ok.stdout and "too_long" in ok.stdout
    (tmp_path / "allbad").mkdir()
    (tmp_path / "allbad" / "m.csv").write_text("audio,text\nnope.wav,你好\n")
    bad = subprocess.run([sys.executable, "-m", "asr_eval", "ingest", str(tmp_path / "allbad" / "m.csv"),
                          "--out", str(tmp_path / "o2"), "--workers", "1"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "nothing could be ingested" in bad.stderr
    nosrc = subprocess.run([sys.executable, "-m", "asr_eval", "ingest", str(tmp_path / "absent"), "--out",
                            str(tmp_path / "o3")], capture_output=True, text=True, env=env)
    assert nosrc.returncode != 0 and "does not exist" in nosrc.stderr and "Traceback" not in nosrc.stderr


# ───────────── shards: idempotence, resume, readers ─────────────


def _many(root: Path, n: int) -> Path:
    lines = ["file_name,text,split,speaker"]
    for i in range(n):
        write_audio(root / f"u{i:03d}.flac", 0.5 + (i % 5) * 0.1, 16000, seed=i)
        lines.append(f"u{i:03d}.flac,句{i},{'test' if i % 3 == 0 else 'train'},spk{i % 4}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def test_idempotent_rerun(tmp_path):
    src = _many(tmp_path / "src", 25)
    s1 = _ingest(src, tmp_path / "out", max_rows=10)
    idx1 = read_index(tmp_path / "out")
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("shard-*.parquet")}
    s2 = _ingest(src, tmp_path / "out", max_rows=10)
    assert (s1.n_ingested, s2.n_ingested, s1.shards) == (25, 25, 3)
    assert read_index(tmp_path / "out")["shards"] == idx1["shards"]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("shard-*.parquet")} == mtimes
    n = duckdb.sql(f"SELECT count(*), count(DISTINCT utt_id) FROM '{tmp_path / 'out'}/*.parquet'").fetchall()
    assert n == [(25, 25)]


def test_different_options_refuse_to_mix(tmp_path):
    src = _many(tmp_path / "src", 4)
    _ingest(src, tmp_path / "out", max_rows=10)
    with pytest.raises(AsrEvalError, match="different"):
        _ingest(src, tmp_path / "out", max_rows=2)


def test_sigkill_midway_then_resume_gives_exact_rows(tmp_path):
    src = _many(tmp_path / "src", 60)
    ref = _ingest(src, tmp_path / "ref", max_rows=5)
    script = (
        "import sys, time\n"
        "import asr_eval.shards as S\n"
        "from asr_eval.corpus import open_source\n"
        "orig = S.process_item\n"
        "def slow(*a):\n    time.sleep(0.05)\n    return orig(*a)\n"
        "S.process_item = slow\n"
        f"S.ingest(open_source({str(src)!r}), {str(tmp_path / 'out')!r}, S.IngestOptions(workers=1, max_rows=5, window=4), progress=False)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", script])
    out = tmp_path / "out"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("shard-*.parquet"))) < 3:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (out / "index.json").exists(), "killed before the end"
    assert 3 <= len(list(out.glob("shard-*.parquet"))) < ref.shards
    s = _ingest(src, out, max_rows=5)
    assert s.n_ingested == 60
    a = duckdb.sql(f"SELECT utt_id, split, audio_sha256 FROM '{out}/*.parquet' ORDER BY utt_id").fetchall()
    b = duckdb.sql(f"SELECT utt_id, split, audio_sha256 FROM '{tmp_path / 'ref'}/*.parquet' ORDER BY utt_id").fetchall()
    assert a == b and len(a) == 60
    assert [s["sha256"] for s in read_index(out)["shards"]] == [s["sha256"] for s in read_index(tmp_path / "ref")["shards"]]
    assert not list(out.glob(".*tmp*"))


def test_shards_bounded_and_readable(tmp_path):
    src = _many(tmp_path / "src", 12)
    s = _ingest(src, tmp_path / "out", max_rows=5)
    assert s.shards == 3
    files = sorted((tmp_path / "out").glob("shard-*.parquet"))
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [5, 5, 2]
    # DuckDB, as is
    rows = duckdb.sql(f"SELECT split, count(*) FROM '{tmp_path / 'out'}/*.parquet' GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [("test", 4), ("train", 8)]
    # datasets, as is
    import datasets

    ds = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    assert len(ds) == 12 and set(ds.column_names) >= {"utt_id", "audio", "text", "speaker"}
    # our reader: decoded 16 kHz float batches
    batches = list(iter_batches(tmp_path / "out", split="test", batch_size=3))
    assert [len(b) for b in batches] == [3, 1]
    first = batches[0][0]
    assert first["audio"].dtype == np.float32 and len(first["audio"]) == round(first["duration_s"] * 16000)
    assert set(load_audio(tmp_path / "out", ["u000", "u007"])) == {"u000", "u007"}
    idx = read_index(tmp_path / "out")
    assert idx["schema_version"] == 2 and idx["n_utterances"] == 12 and idx["splits"] == {"test": 4, "train": 8}


@pytest.mark.integration
def test_bundled_demo_corpus_ingests_cleanly(tmp_path):
    from conftest import DEMO_CORPUS

    if not (DEMO_CORPUS / "metadata.csv").exists():
        pytest.skip("bundled demo corpus not generated yet")
    s = ingest(open_source(str(DEMO_CORPUS)), tmp_path / "demo", IngestOptions(workers=2), progress=False)
    assert s.n_quarantined == 0 and s.n_ingested == s.n_items
    assert {"train", "test"} <= set(s.by_split)


def test_repo_has_no_stray_shards():
    assert not list((REPO / "datasets_local").glob("**/shard-*.parquet"))


def test_a_column_named_like_a_derived_slice_is_renamed(tmp_path):
    """`duration_bucket` and `contaminated` are slices the store derives itself; an ingested column of
    that name would mix its values into them — it becomes `duration_bucket_2` / `contaminated_2`."""
    src = tmp_path / "src"
    for i in range(2):
        write_audio(src / f"u{i}.wav", 1.0, seed=i)
    (src / "metadata.csv").write_text("file_name,text,duration_bucket,contaminated,accent\n"
                                      "u0.wav,你好,short,yes,north\nu1.wav,再见,long,no,south\n")
    ingest(open_source(str(src)), tmp_path / "c", IngestOptions(workers=1), progress=False)
    idx = read_index(tmp_path / "c")
    assert idx["slice_columns"] == ["accent", "contaminated_2", "duration_bucket_2"]
    from asr_eval.store import connect
    from asr_eval.store.load import load_corpus

    con = connect(tmp_path / "s.duckdb")
    load_corpus(con, tmp_path / "c")
    got = con.execute("SELECT attr, value FROM utterance_attrs WHERE attr LIKE 'duration_bucket%' "
                      "ORDER BY attr, value").fetchall()
    con.close()
    assert got == [("duration_bucket", "0-2s"), ("duration_bucket", "0-2s"),
                   ("duration_bucket_2", "long"), ("duration_bucket_2", "short")]
