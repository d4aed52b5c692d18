"""Audio paths as users write them: absolute paths are accepted in every layout, relative paths
resolve against the manifest's folder and are quarantined when they climb out of it, and
--confine-to-root rejects every path outside the root. A run quarantined mostly for one
reason ends with that reason and its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_audio

from asr_eval.corpus import open_source
from asr_eval.shards import IngestOptions, ingest
from asr_eval.corpus_handle import read_metadata, read_quarantine

# item id → how its audio path is written
KINDS = ("abs_out", "abs_in", "rel_in", "rel_escape")
DEFAULT_OK = {"abs_out", "abs_in", "rel_in"}
CONFINED_OK = {"abs_in", "rel_in"}


def _audio(tmp: Path, root: Path, audio_dir: Path) -> dict[str, str]:
    """One real WAV per kind; returns the path string the source will hold for each."""
    elsewhere = tmp / "elsewhere"
    paths = {
        "abs_out": write_audio(elsewhere / "abs_out.wav", 0.5, seed=1),
        "abs_in": write_audio(audio_dir / "abs_in.wav", 0.5, seed=2),
        "rel_in": write_audio(audio_dir / "rel_in.wav", 0.5, seed=3),
        "rel_escape": write_audio(elsewhere / "rel_escape.wav", 0.5, seed=4),
    }
    return {
        "abs_out": str(paths["abs_out"].resolve()),
        "abs_in": str(paths["abs_in"].resolve()),
        "rel_in": os.path.relpath(paths["rel_in"], audio_dir if audio_dir.name == "clips" else root),
        "rel_escape": os.path.relpath(paths["rel_escape"], audio_dir if audio_dir.name == "clips" else root),
    }


def _csv(tmp: Path) -> Path:
    root = tmp / "corpus"
    p = _audio(tmp, root, root / "audio")
    (root / "manifest.csv").write_text("utt_id,audio,text\n" + "".join(f"{k},{p[k]},你好\n" for k in KINDS))
    return root / "manifest.csv"


def _tsv(tmp: Path) -> Path:
    root = tmp / "corpus"
    p = _audio(tmp, root, root / "audio")
    (root / "list.tsv").write_text("utt_id\tpath\tsentence\n" + "".join(f"{k}\t{p[k]}\t你好\n" for k in KINDS))
    return root / "list.tsv"


def _nemo(tmp: Path) -> Path:
    root = tmp / "corpus"
    p = _audio(tmp, root, root / "audio")
    lines = [json.dumps({"audio_filepath": p[k], "text": "你好", "duration": 0.5, "utt_id": k}) for k in KINDS]
    (root / "train_manifest.json").write_text("\n".join(lines) + "\n")
    return root / "train_manifest.json"


def _kaldi(tmp: Path) -> Path:
    root = tmp / "corpus"
    p = _audio(tmp, root, root / "audio")
    (root / "wav.scp").write_text("".join(f"{k} {p[k]}\n" for k in KINDS))
    (root / "text").write_text("".join(f"{k} 你好\n" for k in KINDS))
    return root


def _audiofolder(tmp: Path) -> Path:
    root = tmp / "corpus"
    p = _audio(tmp, root, root / "audio")
    (root / "metadata.csv").write_text("utt_id,file_name,text\n" + "".join(f"{k},{p[k]},你好\n" for k in KINDS))
    return root


def _commonvoice(tmp: Path) -> Path:
    root = tmp / "corpus"
    p = _audio(tmp, root, root / "clips")
    (root / "test.tsv").write_text("client_id\tpath\tsentence\n" + "".join(f"c\t{p[k]}\t你好\n" for k in KINDS))
    return root


LAYOUTS = {"csv": _csv, "tsv": _tsv, "nemo": _nemo, "kaldi": _kaldi, "audiofolder": _audiofolder,
           "commonvoice": _commonvoice}


def _ids(rows: list[dict]) -> set[str]:
    # Common Voice ids are the clip path without extension (e.g. '_.._elsewhere_rel_escape')
    return {next(k for k in KINDS if r["utt_id"].endswith(k)) for r in rows}


@pytest.mark.parametrize("confine", [False, True], ids=["default", "confine"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_absolute_relative_and_escaping_paths(tmp_path, layout, confine):
    src = LAYOUTS[layout](tmp_path)
    s = ingest(open_source(str(src), confine_to_root=confine), tmp_path / "out", IngestOptions(workers=1),
               progress=False)
    want = CONFINED_OK if confine else DEFAULT_OK
    assert _ids(read_metadata(tmp_path / "out").to_pylist()) == want
    q = read_quarantine(tmp_path / "out")
    assert _ids(q) == set(KINDS) - want
    assert {r["reason"] for r in q} == {"path_escape"}
    assert (s.n_items, s.n_ingested, s.n_quarantined) == (4, len(want), 4 - len(want))
    esc = next(r for r in q if r["utt_id"].endswith("rel_escape"))
    assert "climbs out of the manifest's folder" in esc["detail"] or "--confine-to-root is on" in esc["detail"]
    if confine:
        out = next(r for r in q if r["utt_id"].endswith("abs_out"))
        assert "--confine-to-root is on" in out["detail"]


def test_symlinked_audio_folder_inside_the_root_is_followed_unless_confined(tmp_path):
    data = tmp_path / "big_disk" / "audio"
    write_audio(data / "a.wav", 0.5)
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "audio").symlink_to(data, target_is_directory=True)
    (root / "m.csv").write_text("audio,text\naudio/a.wav,你好\n")
    s = ingest(open_source(str(root / "m.csv")), tmp_path / "o1", IngestOptions(workers=1), progress=False)
    assert s.n_ingested == 1
    s = ingest(open_source(str(root / "m.csv"), confine_to_root=True), tmp_path / "o2", IngestOptions(workers=1),
               progress=False)
    assert (s.n_ingested, s.quarantine_by_reason) == (0, {"path_escape": 1})


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr_eval", "ingest", *args, "--workers", "1"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120)


def test_nemo_with_absolute_paths_ingests_and_confined_run_names_the_fix(tmp_path):
    audio = tmp_path / "wavs"
    lines = [json.dumps({"audio_filepath": str(write_audio(audio / f"u{i}.wav", 0.5, seed=i)), "text": "你好",
                         "duration": 0.5}) for i in range(5)]
    man = tmp_path / "manifests" / "test.json"
    man.parent.mkdir()
    man.write_text("\n".join(lines) + "\n")
    ok = _cli(str(man), "--out", str(tmp_path / "o1"))
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "o1" / "index.json").read_text())["n_utterances"] == 5
    bad = _cli(str(man), "--out", str(tmp_path / "o2"), "--confine-to-root")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "nothing could be ingested" in bad.stderr
    assert "most items (5 of 5) were quarantined as path_escape" in bad.stderr
    assert "drop --confine-to-root" in bad.stderr
    old = _cli(str(man), "--out", str(tmp_path / "o3"), "--allow-outside-root")  # deprecated, still accepted
    assert old.returncode == 0 and "deprecated" in old.stderr


def test_mostly_quarantined_run_warns_with_the_reason_and_fix(tmp_path):
    root = tmp_path / "c"
    write_audio(root / "a.wav", 0.5)
    rows = ["a.wav,你好"] + [f"missing{i}.wav,你好" for i in range(3)]
    (root / "m.csv").write_text("audio,text\n" + "\n".join(rows) + "\n")
    r = _cli(str(root / "m.csv"), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "most items (3 of 4) were quarantined as missing_file" in r.stderr
    assert "relative to the manifest's folder" in r.stderr
    # Half or fewer: no such warning.
    (root / "m.csv").write_text("audio,text\na.wav,你好\nmissing.wav,你好\n")
    r = _cli(str(root / "m.csv"), "--out", str(tmp_path / "o2"))
    assert r.returncode == 0 and "most items" not in r.stderr


def test_every_reason_has_a_fix():
    from asr_eval.audio import REASON_FIX, Reason, dominant_reason

    assert set(REASON_FIX) == set(Reason)
    assert dominant_reason({"too_long": 3, "silent": 1}, 4) == ("too_long", 3, REASON_FIX[Reason.TOO_LONG])
    assert dominant_reason({"too_long": 2, "silent": 1}, 4) is None
