"""Bundled long-form demo set: ~20 recordings of 1-4 minutes made from the demo corpus's
test-split utterances (neural voice), deterministic, generated into a cache folder.

Each recording concatenates distinct test utterances with pauses of varying length (a
``pauses`` profile: short or long), some recordings get a silence-only stretch of 30-60 s
(``silence_s``), and each gets a background noise (``noise``: clean / white / pink at a fixed
level). The manifest ``manifest.jsonl`` gives the whole reference (the utterances' texts in
order, joined by a space) and its segment times, so it ingests with

    asr-eval ingest CACHE/demo_zh_long-v1/manifest.jsonl --long-form --out reports/corpora/demo_zh_long

Nothing is committed but this script and ``longform.sha256``: the content hash (manifest text
and 16-bit PCM of every recording) a build must reproduce. ``python make_longform.py [OUT]``
builds (or verifies an existing build) and prints the folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
VERSION = "v1"
SR = 16_000
N_RECORDINGS = 20
SEED = 20261124
EXPECTED_HASH_FILE = HERE / "longform.sha256"
NOISES = ("clean", "white", "pink")
NOISE_RMS = {"clean": 0.0, "white": 0.004, "pink": 0.006}


def default_dir() -> Path:
    root = Path(os.environ.get("ASR_EVAL_CACHE") or Path.home() / ".cache" / "asr-eval").expanduser()
    return root / f"demo_zh_long-{VERSION}"


def _sources() -> list[dict]:
    with open(HERE / "metadata.csv", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test" and r["voice"] == "neural"]
    return sorted(rows, key=lambda r: r["utt_id"])


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "clean" or n == 0:
        return np.zeros(n, np.float32)
    w = rng.standard_normal(n)
    if kind == "pink":  # 1/f power: scale the spectrum by 1/sqrt(f)
        spec = np.fft.rfft(w)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        w = np.fft.irfft(spec / np.sqrt(f), n)
    w *= NOISE_RMS[kind] / max(float(np.sqrt(np.mean(w ** 2))), 1e-12)
    return w.astype(np.float32)


def plan(n: int = N_RECORDINGS, seed: int = SEED) -> list[dict]:
    """What each recording holds (no audio): utterances, pauses, silence, noise, target length."""
    rng = np.random.default_rng(seed)
    src = _sources()
    out = []
    for k in range(n):
        target = float(rng.uniform(60.0, 240.0))
        profile = "long" if k % 2 else "short"
        noise = NOISES[k % 3]
        silence = float(round(rng.uniform(30.0, 60.0), 1)) if k % 4 == 1 else 0.0
        order = rng.permutation(len(src))
        items, t = [], 0.0
        for i in order:
            if t >= max(target - silence, 40.0):
                break
            pause = float(rng.uniform(0.15, 0.8)) if profile == "short" else (
                float(rng.uniform(4.0, 9.0)) if rng.random() < 0.15 else float(rng.uniform(0.6, 3.0)))
            items.append((src[i], round(pause, 3)))
            t += float(src[i]["duration_s"]) + pause
        silence_at = int(rng.integers(1, max(2, len(items) - 1))) if silence else -1
        out.append({"id": f"long_{k + 1:03d}", "profile": profile, "noise": noise, "silence_s": silence,
                    "silence_at": silence_at, "items": items, "noise_seed": int(rng.integers(2**31))})
    return out


def _render(rec: dict) -> tuple[np.ndarray, list[list]]:
    """The recording's samples and its segments [[start, end, text], ...]."""
    lead = 0.5
    pieces, segs, t = [np.zeros(int(lead * SR), np.float32)], [], lead
    for j, (row, pause) in enumerate(rec["items"]):
        if j == rec["silence_at"]:
            pieces.append(np.zeros(int(rec["silence_s"] * SR), np.float32))
            t += rec["silence_s"]
        audio, sr = sf.read(HERE / row["file_name"], dtype="float32")
        assert sr == SR and audio.ndim == 1, row["file_name"]
        segs.append([round(t, 3), round(t + len(audio) / SR, 3), row["text"]])
        pieces += [audio, np.zeros(int(pause * SR), np.float32)]
        t += len(audio) / SR + int(pause * SR) / SR
    x = np.concatenate(pieces)
    x = x + _noise(rec["noise"], len(x), np.random.default_rng(rec["noise_seed"]))
    return np.clip(x, -1.0, 1.0).astype(np.float32), segs


def content_hash(folder: Path) -> str:
    """sha256 over the manifest text and each recording's 16-bit PCM (codec-independent)."""
    h = hashlib.sha256()
    manifest = (folder / "manifest.jsonl").read_bytes()
    h.update(manifest)
    for line in manifest.decode("utf-8").splitlines():
        pcm, _ = sf.read(folder / json.loads(line)["audio_filepath"], dtype="int16")
        h.update(pcm.tobytes())
    return h.hexdigest()


def expected_hash() -> str:
    return EXPECTED_HASH_FILE.read_text().split()[0]


def build(out_dir: str | Path | None = None, n: int = N_RECORDINGS, verify: bool = True) -> Path:
    """Generate the set into ``out_dir`` (default: the cache) unless a verified build is there."""
    out = Path(out_dir) if out_dir else default_dir()
    stamp = out / "stamp.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("n") == n:
        return out
    (out / "audio").mkdir(parents=True, exist_ok=True)
    lines = []
    for rec in plan(n):
        x, segs = _render(rec)
        rel = f"audio/{rec['id']}.flac"
        sf.write(out / rel, x, SR, format="FLAC", subtype="PCM_16")
        lines.append({"id": rec["id"], "audio_filepath": rel, "text": " ".join(s[2] for s in segs),
                      "duration": round(len(x) / SR, 3), "split": "test", "segments": segs,
                      "noise": rec["noise"], "pauses": rec["profile"],
                      "has_silence": "yes" if rec["silence_s"] else "no"})
    (out / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines),
                                          encoding="utf-8")
    digest = content_hash(out)
    if verify and n == N_RECORDINGS and digest != expected_hash():
        raise RuntimeError(f"long-form demo set in {out} has content hash {digest}, expected {expected_hash()} "
                           f"({EXPECTED_HASH_FILE}); the generator or its inputs changed")
    stamp.write_text(json.dumps({"n": n, "sha256": digest}))
    return out


def subset(ids: list[str], out_dir: str | Path, src: str | Path | None = None, until_s: float | None = None) -> Path:
    """A folder with the manifest rows of ``ids`` (in the given order) and their FLACs (copied:
    ingest keeps audio paths inside the manifest's folder), built from ``src`` (default: the
    cached, verified full set, built first if needed). Returns the manifest path.

    ``until_s``: keep only each recording's first ``until_s`` seconds — an excerpt named
    ``<id>-<until_s>s`` whose reference is the segments that end before the cut. The cut must lie
    in a pause (a segment it would split is an error naming it), so the reference stays exact."""
    import shutil

    src = Path(src) if src else build()
    rows = {r["id"]: r for r in map(json.loads, (src / "manifest.jsonl").read_text(encoding="utf-8").splitlines())}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise ValueError(f"no recording(s) {missing} in {src / 'manifest.jsonl'} (ids are long_001 … long_{len(rows):03d})")
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in ids:
        row = rows[i]
        if until_s is None or until_s >= row["duration"]:
            shutil.copyfile(src / row["audio_filepath"], out / row["audio_filepath"])
            lines.append(row)
            continue
        row = _excerpt(row, src / row["audio_filepath"], out, until_s)
        lines.append(row)
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8")
    return manifest


def _excerpt(row: dict, audio_path: Path, out: Path, until_s: float) -> dict:
    """The manifest row of ``row``'s first ``until_s`` seconds, its FLAC written under ``out``."""
    split = [s for s in row["segments"] if s[0] < until_s < s[1]]
    if split:
        raise ValueError(f"{row['id']}: cutting at {until_s} s would split the segment {split[0]}; "
                         "cut in a pause (between two segments' times)")
    kept = [s for s in row["segments"] if s[1] <= until_s]
    if not kept:
        raise ValueError(f"{row['id']}: no speech segment ends before {until_s} s; cut later")
    audio, sr = sf.read(audio_path, dtype="int16")
    stem = f"{row['id']}-{until_s:g}s"
    rel = f"audio/{stem}.flac"
    sf.write(out / rel, audio[: int(round(until_s * sr))], sr, format="FLAC", subtype="PCM_16")
    return {**row, "id": stem, "audio_filepath": rel, "text": " ".join(s[2] for s in kept),
            "duration": round(min(until_s, len(audio) / sr), 3), "segments": kept}


if __name__ == "__main__":
    folder = build(sys.argv[1] if len(sys.argv) > 1 else None, verify="--no-verify" not in sys.argv)
    print(folder)
