"""Ingest benchmark: our ingest vs the seed's feature-caching path, same corpus, one run.

    .venv/bin/python bench/bench_ingest.py [--hours 10] [--baseline-minutes 20] [--format mp3]

Corpus: a fixture of real-sounding clips (tones + noise, 2–8 s, 48 kHz MP3 like Common Voice,
or 16 kHz WAV) repeated through a manifest to ``--hours`` of audio.

Baseline (the seed): ``cast_column("audio", Audio(sampling_rate=16000))`` then ``map()``
computing ``WhisperFeatureExtractor`` ``input_features`` and storing them. datasets 5 decodes
Audio through torchcodec, which fails with the CPU torch, so the baseline decodes in its
``map()`` with soundfile + soxr (the same work Audio decoding does) and then extracts features;
bytes are the Arrow cache written by ``save_to_disk``. The baseline runs on a subset
(``--baseline-minutes``) because its output is ~1 MB per utterance; rates are per audio hour.

Peak RSS is measured for the whole ingest process tree (main + decoder processes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_corpus(root: Path, hours: float, fmt: str, n_unique: int = 40) -> tuple[Path, float]:
    rng = np.random.default_rng(0)
    sr = 48000 if fmt == "mp3" else 16000
    clips = []
    for i in range(n_unique):
        dur = float(rng.uniform(2, 8))
        t = np.arange(int(dur * sr)) / sr
        f0 = 120 + 80 * np.sin(2 * np.pi * 0.7 * t)  # a gliding "voice"
        x = 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / sr) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
        x += 0.02 * rng.standard_normal(len(t))
        p = root / "clips" / f"c{i:03d}.{fmt}"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, x.astype(np.float32), sr)
        clips.append((p.name, dur))
    lines = ["file_name,text,split,speaker"]
    total, i = 0.0, 0
    while total < hours * 3600:
        name, dur = clips[i % n_unique]
        lines.append(f"clips/{name},第{i}句测试,{'test' if i % 10 == 0 else 'train'},spk{i % 50}")
        total += dur
        i += 1
    # distinct ids for repeated files: audiofolder ids default to the file stem, so give an id column
    lines = [lines[0].replace("file_name", "file_name,utt_id")] + [
        ln.replace(",", f",u{k:07d},", 1) for k, ln in enumerate(lines[1:])
    ]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root, total


class PeakRSS:
    """Samples the RSS of this process and its children every 50 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                rss = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
            except psutil.Error:
                rss = 0
            self.peak = max(self.peak, rss)
            time.sleep(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def run_ours(src: Path, out: Path, workers: int) -> dict:
    from asr_eval.corpus import open_source
    from asr_eval.shards import IngestOptions, ingest

    with PeakRSS() as rss:
        t0 = time.perf_counter()
        s = ingest(open_source(str(src)), out, IngestOptions(workers=workers), progress=False)
        wall = time.perf_counter() - t0
    audio_s = s.hours * 3600
    return {"n": s.n_ingested, "audio_h": s.hours, "wall_s": wall, "x_realtime": audio_s / wall,
            "x_realtime_per_core": audio_s / wall / workers, "bytes": dir_bytes(out),
            "bytes_per_audio_hour": dir_bytes(out) / s.hours, "peak_rss_mb": rss.peak / 2**20, "workers": workers}


def run_seed(src: Path, out: Path, minutes: float) -> dict:
    import datasets
    import soxr
    from transformers import WhisperFeatureExtractor

    rows = (src / "metadata.csv").read_text().splitlines()[1:]
    files, total = [], 0.0
    for ln in rows:
        rel = ln.split(",")[0]
        if total >= minutes * 60:
            break
        info = sf.info(src / rel)
        files.append(str(src / rel))
        total += info.duration
    fe = WhisperFeatureExtractor(feature_size=80)
    ds = datasets.Dataset.from_dict({"audio": files}).cast_column("audio", datasets.Audio(sampling_rate=16000, decode=False))

    def prepare(batch):
        x, sr = sf.read(batch["audio"]["path"], dtype="float32")
        if x.ndim == 2:
            x = x.mean(axis=1)
        x = soxr.resample(x, sr, 16000)
        batch["input_features"] = fe(x, sampling_rate=16000).input_features[0]
        return batch

    with PeakRSS() as rss:
        t0 = time.perf_counter()
        ds = ds.map(prepare, remove_columns=["audio"], num_proc=None)
        ds.save_to_disk(str(out))
        wall = time.perf_counter() - t0
    b = dir_bytes(out)
    return {"n": len(files), "audio_h": total / 3600, "wall_s": wall, "x_realtime": total / wall,
            "x_realtime_per_core": total / wall, "bytes": b, "bytes_per_audio_hour": b / (total / 3600),
            "peak_rss_mb": rss.peak / 2**20, "workers": 1}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=10.0)
    ap.add_argument("--baseline-minutes", type=float, default=20.0)
    ap.add_argument("--format", default="mp3", choices=["mp3", "wav", "flac"])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    try:
        src, total = make_corpus(tmp / "src", args.hours, args.format)
        ours = run_ours(src, tmp / "ours", args.workers)
        seed = run_seed(src, tmp / "seed", args.baseline_minutes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = {
        "corpus": {"hours": total / 3600, "format": args.format, "utterances": ours["n"]},
        "ours": ours, "seed": seed,
        "ratios": {
            "speed_per_core_ours_over_seed": ours["x_realtime_per_core"] / seed["x_realtime_per_core"],
            "bytes_per_hour_seed_over_ours": seed["bytes_per_audio_hour"] / ours["bytes_per_audio_hour"],
        },
        "targets": {"x_realtime_per_core>=300": ours["x_realtime_per_core"] >= 300,
                    "bytes_ratio>=10": seed["bytes_per_audio_hour"] / ours["bytes_per_audio_hour"] >= 10,
                    "peak_rss<1.5GB": ours["peak_rss_mb"] < 1536},
    }
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
