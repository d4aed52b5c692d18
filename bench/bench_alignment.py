"""Forced-alignment reference timing (``asr_eval.streaming.timing``) against known times, on the
long-form demo set (``datasets_local/demo_zh/make_longform.py``).

    .venv/bin/python bench/bench_alignment.py [--ids long_001,...|all] [--compute-type float32] [--json out.json]

Each recording's segments are aligned one by one (``align_segments``, margin 0.5 s) with the
bundled whisper-base, and the *unclamped* first-character start and last-character end of each
segment are compared with two references:

- **segment bounds** (every segment): the manifest's exact segment times. They are the source
  utterance files' extents, and every demo utterance carries 0.10-0.35 s of padding (digital
  silence, ``make_corpus.render``) on each side of its trimmed speech, so even a perfect aligner
  is off by that padding here.
- **speech bounds** (segments whose source utterance is clean): the source file's first and last
  non-zero samples, i.e. the trimmed speech (``make_corpus.trim``: −45 dB from the peak, plus
  ≤ 40 ms), placed at the segment's start. Noisy source utterances have noise over their padding,
  so they have no exact speech bounds and are left out of this comparison.

Printed: per reference, the share of segments whose start / end / both lie within 0.3 s, and the
median and p90 absolute error of starts and ends (and the signed median: > 0 = aligned later).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "datasets_local" / "demo_zh"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOLERANCE_S = 0.3


def speech_bounds(rec_id: str, segments: list[list]) -> list[tuple[float, float] | None]:
    """Per segment: the exact speech start/end (seconds in the recording) of a clean source
    utterance, None for a noisy one (module docstring)."""
    from make_longform import HERE, plan

    (rec,) = [r for r in plan() if r["id"] == rec_id]
    out: list[tuple[float, float] | None] = []
    for (row, _), (a, _b, text) in zip(rec["items"], segments, strict=True):
        assert row["text"] == text, (rec_id, text)
        if row["noise"] != "clean":
            out.append(None)
            continue
        pcm, sr = sf.read(HERE / row["file_name"], dtype="int16")
        nz = np.flatnonzero(pcm)
        out.append((a + nz[0] / sr, a + (nz[-1] + 1) / sr))
    return out


def measure(ids: list[str] | None = None, aligner=None, folder: Path | None = None) -> list[dict]:
    """One row per segment of the recordings ``ids`` (all when None): its known segment and
    speech bounds and the aligned (unclamped) first start / last end."""
    from make_longform import build

    from asr_eval.streaming.timing import align_segments, ct2_aligner

    aligner = aligner or ct2_aligner()
    src = folder or build()
    recs = [json.loads(x) for x in (src / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = []
    for r in recs:
        if ids is not None and r["id"] not in ids:
            continue
        x, sr = sf.read(src / r["audio_filepath"], dtype="float32")
        assert sr == 16_000
        speech = speech_bounds(r["id"], r["segments"])
        for (a, b, _), sp, al in zip(r["segments"], speech, align_segments(x, r["segments"], aligner, 0.5),
                                     strict=True):
            rows.append({"id": r["id"], "noise": r["noise"], "pauses": r["pauses"], "seg": (a, b), "speech": sp,
                         "aligned": (al.first_start_s, al.last_end_s) if al.aligned else None,
                         "fallback": al.fallback})
    return rows


def summarize(rows: list[dict], ref: str) -> dict:
    """Boundary errors against ``ref`` ('seg' or 'speech') over the rows that have it."""
    use = [r for r in rows if r[ref] is not None and r["aligned"] is not None]
    ds = np.array([r["aligned"][0] - r[ref][0] for r in use])
    de = np.array([r["aligned"][1] - r[ref][1] for r in use])
    if not len(use):
        return {"n": 0}
    ok_s, ok_e = np.abs(ds) <= TOLERANCE_S, np.abs(de) <= TOLERANCE_S
    return {"n": len(use), "start_within": float(ok_s.mean()), "end_within": float(ok_e.mean()),
            "both_within": float((ok_s & ok_e).mean()),
            "start_abs_median": float(np.median(np.abs(ds))), "start_abs_p90": float(np.percentile(np.abs(ds), 90)),
            "end_abs_median": float(np.median(np.abs(de))), "end_abs_p90": float(np.percentile(np.abs(de), 90)),
            "start_signed_median": float(np.median(ds)), "end_signed_median": float(np.median(de)),
            "unaligned": sum(r["aligned"] is None for r in rows)}


def line(name: str, s: dict) -> str:
    if not s["n"]:
        return f"{name}: no segments"
    return (f"{name}: n={s['n']}  within {TOLERANCE_S} s: start {s['start_within']:.1%}, end {s['end_within']:.1%}, "
            f"both {s['both_within']:.1%} | start |err| median {s['start_abs_median']:.3f} s, p90 "
            f"{s['start_abs_p90']:.3f} s (signed median {s['start_signed_median']:+.3f}) | end |err| median "
            f"{s['end_abs_median']:.3f} s, p90 {s['end_abs_p90']:.3f} s (signed median {s['end_signed_median']:+.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", default="all", help="comma-separated recording ids (long_001 …) or 'all'")
    ap.add_argument("--compute-type", default="float32")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from machine import cpu_info

    from asr_eval.streaming.timing import ct2_aligner

    ids = None if args.ids == "all" else [i.strip() for i in args.ids.split(",") if i.strip()]
    aligner = ct2_aligner(compute_type=args.compute_type)
    t0 = time.perf_counter()
    rows = measure(ids, aligner)
    wall = time.perf_counter() - t0
    out: dict = {"machine": cpu_info(), "aligner": aligner.key, "recordings": len({r["id"] for r in rows}),
                 "segments": len(rows), "wall_s": round(wall, 1), "s_per_segment": round(wall / len(rows), 3)}
    print(f"{aligner.key}: {out['recordings']} recordings, {len(rows)} segments, {wall:.0f} s "
          f"({out['s_per_segment']} s per segment)")
    for ref, name in (("seg", "vs segment bounds (all segments)"), ("speech", "vs speech bounds (clean sources)")):
        out[ref] = summarize(rows, ref)
        print(line(name, out[ref]))
        for key in ("noise", "pauses"):
            for v in sorted({r[key] for r in rows}):
                s = summarize([r for r in rows if r[key] == v], ref)
                out[f"{ref}_{key}_{v}"] = s
                print("    " + line(f"{key}={v}", s))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "bench"))
    main()
