"""Streaming benchmark, one run, same recordings, same machine: what streaming costs against
offline decoding, and which setting keeps up in real time here.

    .venv/bin/python bench/bench_stream.py [--ids long_008,long_009] [--engines ctranslate2:int8,transformers:float32]
        [--chunks 0.5,1,2] [--json out.json]

For each engine × compute type: the offline ``vad`` long-form run (the baseline), LocalAgreement-2
at each chunk size, and vad-segment (at 1 s chunks) — all through ``asr_eval.streaming.evaluate
.stream_models``, the path of ``asr-eval stream``, on a subset of the long-form demo set with the
bundled whisper-base. Reported per streaming run: CER, ΔCER against the offline run with its
paired interval (over recordings; with a few recordings the interval is wide or absent — the
minimum-evidence rule), latency median/p90 on both clocks, first-emission median, flicker,
decode calls, compute seconds per audio second and whether the computation-aware lag stayed
bounded (real time). The machine (CPU, ISA, load) is recorded: the aware clock is measured wall
time, so run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "datasets_local" / "demo_zh"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ASR_EVAL_PROGRESS", "off")

DEFAULT_IDS = "long_008,long_009"  # 2.3 min: white noise + long pauses, pink noise + short pauses


def run(ids: list[str], engines: list[tuple[str, str]], chunks: list[float], work: Path) -> dict:
    from bench_longform import ingest_long
    from make_longform import subset

    from asr_eval.scoring import expand_specs
    from asr_eval.store import connect
    from asr_eval.streaming.evaluate import stream_models, stream_summary
    from asr_eval.streaming.run import expand_axes, stream_axis

    corpus, db = work / "corpus", work / "bench.duckdb"
    ingest_long(subset(ids, work / "src").parent, corpus)
    axes = expand_axes(["local-agreement"], chunks) + [stream_axis("vad-segment", 1.0)]
    out: dict = {"runs": []}
    for engine, ct in engines:
        t0 = time.perf_counter()
        bases = expand_specs(["bundled:whisper-base"], engine, ct, device="cpu")
        runs = stream_models(corpus, bases, axes, db, n_boot=1000, progress=False)
        wall = time.perf_counter() - t0
        con = connect(db, read_only=True)
        try:
            rows = stream_summary(con, runs.streams, "zh-v1", runs.offline_of)
            off = runs.offline[0]
            offline = con.execute("SELECT s.cer, s.cer_lo, s.cer_hi, r.rtfx, r.audio_s FROM slice_metrics s "
                                  "JOIN eval_runs r USING (run_id) WHERE run_id = ? AND slice_attr = '_all'",
                                  [off]).fetchall()[0]
        finally:
            con.close()
        out["runs"].append({"engine": engine, "compute_type": ct, "wall_s": round(wall, 1), "offline_run": off,
                            "offline_cer": offline[0], "offline_rtfx": offline[3], "audio_s": offline[4],
                            "streams": rows})
        print(table(out["runs"][-1]), flush=True)
    return out


def _f(x, d=2, pct=False):
    return "—" if x is None else f"{100 * x:.{d}f}" if pct else f"{x:.{d}f}"


def table(r: dict) -> str:
    lines = [f"\n{r['engine']} {r['compute_type']}: offline vad CER {_f(r['offline_cer'], pct=True)} % "
             f"(RTFx {_f(r['offline_rtfx'], 1)}), {r['audio_s']:.0f} s of audio, all runs {r['wall_s']:.0f} s:", "",
             "| policy | chunk s | CER % | ΔCER vs offline (pts) [95% CI] | latency med / p90 unaware (s) | "
             "latency med / p90 aware (s) | first emission med (s) | flicker % | decode calls | compute s per s "
             "| real time |", "|" + "---|" * 11]
    for s in r["streams"]:
        ci = ("" if s["delta_cer_lo"] is None or s["delta_cer_lo"] == s["delta_cer_hi"]
              else f" [{_f(s['delta_cer_lo'], pct=True)}, {_f(s['delta_cer_hi'], pct=True)}]")
        lines.append(
            f"| {s['policy']} | {s['chunk_s']:g} | {_f(s['cer'], pct=True)} | {_f(s['delta_cer'], pct=True)}{ci} | "
            f"{_f(s['latency_median_s']['unaware'])} / {_f(s['latency_p90_s']['unaware'])} | "
            f"{_f(s['latency_median_s']['aware'])} / {_f(s['latency_p90_s']['aware'])} | "
            f"{_f(s['first_emission_median_s']['unaware'])} | {_f(s['flicker'], 1, pct=True)} | {s['decode_calls']} | "
            f"{_f(s['compute_per_audio_s'])} | {'yes' if s['real_time'] else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    from machine import cpu_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ids", default=DEFAULT_IDS)
    ap.add_argument("--engines", default="ctranslate2:int8,transformers:float32")
    ap.add_argument("--chunks", default="0.5,1,2")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    engines = [tuple(e.split(":", 1)) for e in a.engines.split(",")]
    info = cpu_info()
    print(f"machine: {info}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        res = run(a.ids.split(","), engines, [float(c) for c in a.chunks.split(",")], Path(tmp))
    res |= {"machine": info, "machine_after": cpu_info(), "ids": a.ids}
    if a.json:
        a.json.write_text(json.dumps(res, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
