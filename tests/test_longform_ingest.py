"""Long-form ingest: --long-form recordings, Kaldi --recording-level, manifests of recordings,
the shard ``segments`` column, and bounded memory for long recordings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
from conftest import REPO, write_audio

from asr_eval import audio as A
from asr_eval.corpus import open_source
from asr_eval.shards import SCHEMA_VERSION, IngestOptions, ingest
from asr_eval.corpus_handle import load_audio, read_index, read_metadata, read_quarantine
from asr_eval.store import connect
from asr_eval.store.load import _segments_json, load_corpus


def _ingest(src, out, layout=None, recording_level=False, **kw):
    opts = IngestOptions(workers=1, **kw)
    return ingest(open_source(str(src), layout, recording_level=recording_level), out, opts, progress=False)


def _manifest(root: Path) -> Path:
    write_audio(root / "short.wav", 2.0, 16000)
    write_audio(root / "mid.wav", 31.0, 8000, seed=1)
    write_audio(root / "long.flac", 95.0, 44100, 2, seed=2)
    rows = [{"audio_filepath": "short.wav", "text": "短的", "duration": 2.0},
            {"audio_filepath": "mid.wav", "text": "中等长度", "duration": 31.0},
            {"audio_filepath": "long.flac", "text": "第一句 第二句", "duration": 95.0,
             "segments": [[50.0, 90.0, "第二句"], [1.0, 40.0, "第一句"]]}]
    p = root / "test.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return p


def test_long_form_keeps_recordings_flagged_and_short_items_unchanged(tmp_path):
    src = _manifest(tmp_path / "src")
    plain = _ingest(src, tmp_path / "plain")
    assert plain.n_ingested == 1 and plain.quarantine_by_reason == {"too_long": 2}

    s = _ingest(src, tmp_path / "lf", long_form=True)
    assert s.n_ingested == 3 and s.n_quarantined == 0
    rows = {r["utt_id"]: r for r in read_metadata(tmp_path / "lf").to_pylist()}
    assert rows["short"]["qc_flags"] == [] and rows["short"]["segments"] is None
    assert rows["mid"]["qc_flags"] == ["long_form"]
    assert rows["long"]["qc_flags"] == ["long_form"]
    assert rows["long"]["duration_s"] == pytest.approx(95.0, abs=1e-3)
    # segments are kept in time order; the text is the whole transcript as written
    assert rows["long"]["segments"] == [{"start": 1.0, "end": 40.0, "text": "第一句"},
                                        {"start": 50.0, "end": 90.0, "text": "第二句"}]
    assert rows["long"]["text"] == "第一句 第二句"
    assert read_index(tmp_path / "lf")["schema_version"] == SCHEMA_VERSION == 2
    # the block-streamed FLAC holds the same samples as decoding the whole file at once
    streamed = load_audio(tmp_path / "lf", ["long"])["long"]
    whole = A.load(src.parent / "long.flac").samples
    assert len(streamed) == len(whole) == 95 * 16000
    assert np.abs(streamed - np.clip(whole, -1, 1)).max() <= 1.0 / 32768 + 1e-7
    # short items are byte-identical to a plain ingest
    plain_short = load_audio(tmp_path / "plain", ["short"])["short"]
    assert np.array_equal(plain_short, load_audio(tmp_path / "lf", ["short"])["short"])


def test_long_form_cap_quarantines_longer_recordings(tmp_path):
    src = _manifest(tmp_path / "src")
    s = _ingest(src, tmp_path / "lf", long_form=True, max_long_s=60.0)
    assert s.n_ingested == 2 and s.quarantine_by_reason == {"too_long": 1}
    q = read_quarantine(tmp_path / "lf")[0]
    assert q["utt_id"] == "long" and "95.0s > 60s" in q["detail"]


def test_nemo_recording_rows_and_bad_segments(tmp_path):
    root = tmp_path / "src"
    write_audio(root / "rec.wav", 40.0)
    rows = [{"audio_filepath": "rec.wav", "text": "整段", "duration": 40.0},
            {"audio_filepath": "rec.wav", "id": "bad", "text": "坏的", "duration": 40.0, "segments": [[3, 1, "x"]]}]
    p = root / "m.json"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    s = _ingest(p, tmp_path / "out", long_form=True)
    assert s.n_ingested == 1 and s.quarantine_by_reason == {"bad_row": 1}
    assert "start 3.0 and end 1.0" in read_quarantine(tmp_path / "out")[0]["detail"]
    (r,) = read_metadata(tmp_path / "out").to_pylist()
    assert r["utt_id"] == "rec" and r["duration_s"] == pytest.approx(40.0) and r["qc_flags"] == ["long_form"]


def _kaldi(d: Path) -> Path:
    write_audio(d / "wav" / "rec1.wav", 40.0, 8000)
    write_audio(d / "wav" / "rec2.flac", 12.0, 16000, seed=3)
    write_audio(d / "wav" / "rec3.wav", 5.0, 16000, seed=4)
    (d / "wav.scp").write_text("rec1 wav/rec1.wav\nrec2 wav/rec2.flac\nrec3 wav/rec3.wav\n")
    # listed out of time order on purpose; rec3's second segment has no transcript
    (d / "segments").write_text("a2 rec1 20.5 38.0\na1 rec1 1.0 10.0\nb1 rec2 0.5 11.0\n"
                                "a3 rec1 11.0 19.0\nc1 rec3 0 2\nc2 rec3 2 4\n")
    (d / "text").write_text("a1 今天 天气\na2 很好\na3 我们 出去\nb1 再见\nc1 有\n")
    (d / "utt2spk").write_text("a1 s1\na2 s2\na3 s1\nb1 s3\nc1 s4\nc2 s4\n")
    return d


def test_kaldi_recording_level_one_item_per_recording_with_times(tmp_path):
    d = _kaldi(tmp_path / "kaldi")
    seg_level = _ingest(d, tmp_path / "seg")
    assert seg_level.n_ingested == 5  # today's behaviour is unchanged

    s = _ingest(d, tmp_path / "rec", recording_level=True, long_form=True)
    assert s.n_ingested == 2 and s.quarantine_by_reason == {"bad_row": 1}
    q = read_quarantine(tmp_path / "rec")[0]
    assert q["utt_id"] == "rec3" and "['c2']" in q["detail"]
    rows = {r["utt_id"]: r for r in read_metadata(tmp_path / "rec").to_pylist()}
    assert rows["rec1"]["text"] == "今天 天气 我们 出去 很好"  # time order, not file order
    assert [(x["start"], x["end"], x["text"]) for x in rows["rec1"]["segments"]] == [
        (1.0, 10.0, "今天 天气"), (11.0, 19.0, "我们 出去"), (20.5, 38.0, "很好")]
    assert rows["rec1"]["duration_s"] == pytest.approx(40.0, abs=1e-3) and rows["rec1"]["qc_flags"] == ["long_form"]
    assert rows["rec1"]["speaker"] is None and rows["rec1"]["n_speakers"] == "2"
    assert rows["rec2"]["speaker"] == "s3" and rows["rec2"]["qc_flags"] == []  # 12 s: a short item

    con = connect(tmp_path / "s.duckdb")
    cid = load_corpus(con, tmp_path / "rec")
    segs = dict(con.execute("SELECT utt_id, segments FROM utterances WHERE corpus_id = ?", [cid]).fetchall())
    assert json.loads(segs["rec1"]) == [[1.0, 10.0, "今天 天气"], [11.0, 19.0, "我们 出去"], [20.5, 38.0, "很好"]]
    buckets = dict(con.execute("SELECT utt_id, value FROM utterance_attrs WHERE attr = 'duration_bucket'").fetchall())
    assert buckets == {"rec1": "30s-2min", "rec2": "10-20s"}
    con.close()


def test_recording_level_only_for_kaldi_and_schema_1_shards_have_no_segments(tmp_path):
    from asr_eval.errors import AsrEvalError

    src = _manifest(tmp_path / "src")
    with pytest.raises(AsrEvalError, match=r"--recording-level applies to sources with segment times \(wenetspeech, magicdata-ramc, kaldi\)"):
        open_source(str(src), recording_level=True)
    v1 = pa.table({"utt_id": ["a", "b"], "duration_s": [1.0, 2.0]})
    assert _segments_json(v1) == [None, None]


def test_cli_recording_level(tmp_path):
    d = _kaldi(tmp_path / "kaldi")
    r = subprocess.run([sys.executable, "-m", "asr_eval", "ingest", str(d), "--out", str(tmp_path / "o"),
                        "--recording-level", "--workers", "1"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert sorted(read_metadata(tmp_path / "o").column("utt_id").to_pylist()) == ["rec1", "rec2"]


_PEAK = """
import resource, sys
from asr_eval.corpus import open_source
from asr_eval.shards import IngestOptions, ingest
ingest(open_source(sys.argv[1]), sys.argv[2], IngestOptions(workers=1, long_form=True), progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def _peak_mb(manifest: Path, out: Path) -> int:
    r = subprocess.run([sys.executable, "-c", _PEAK, str(manifest), str(out)], capture_output=True, text=True,
                       cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


def test_long_recording_ingests_with_bounded_memory(tmp_path):
    """A 12-minute 48 kHz stereo recording is 265 MB as one float32 array (and more for the
    first decode in float64 of some paths); streamed, the ingest process must stay within
    150 MB of the same process ingesting a 1-second file."""
    minutes, sr = 12, 48000
    big = tmp_path / "big.flac"
    rng = np.random.default_rng(0)
    with sf.SoundFile(big, "w", sr, 2, format="FLAC", subtype="PCM_16") as f:
        for k in range(minutes * 2):  # 30 s blocks
            t = (np.arange(30 * sr) + k * 30 * sr) / sr
            x = 0.2 * np.sin(2 * np.pi * 300 * t) + 0.001 * rng.standard_normal(len(t))
            f.write(np.stack([x, x], axis=1).astype(np.float32))
    write_audio(tmp_path / "small.wav", 1.0)
    for name, audio in (("small", "small.wav"), ("big", "big.flac")):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"audio_filepath": audio, "text": "测试"}) + "\n")
    base = _peak_mb(tmp_path / "small.jsonl", tmp_path / "o1")
    peak = _peak_mb(tmp_path / "big.jsonl", tmp_path / "o2")
    (r,) = read_metadata(tmp_path / "o2").to_pylist()
    assert r["duration_s"] == pytest.approx(minutes * 60, abs=1e-3) and r["qc_flags"] == ["long_form"]
    print(f"peak RSS: {base} MB (1 s file), {peak} MB ({minutes} min)")
    assert peak - base < 150, (base, peak)
