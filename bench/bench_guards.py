"""Hallucination-guard benchmark, one run, same recordings, same machine: what each streaming guard
does on the silence/noise stress set and what it costs on the same speech without the stretches.

    .venv/bin/python bench/bench_guards.py [--configs off,default,silence-rule,vad-gate,prompt-age,repeats]
        [--engine ctranslate2:int8] [--chunk-s 1] [--ids long_001,...] [--json out.json] [--work DIR]

The corpus is ``datasets_local/demo_zh/make_stress.py`` (10 sources: each a ``plain`` excerpt and
its ``stress`` copy with a silent pause, a noise-only stretch and trailing silence inserted),
ingested ``--long-form``; ``variant`` is a slice. Through ``asr_eval.streaming.evaluate
.stream_models`` — the path of ``asr-eval stream`` — with the bundled whisper-base: the offline
``vad`` run, then LocalAgreement-2 at ``--chunk-s`` under each guard configuration:

* ``off``: no hallucination guard (the loop guard stays: it predates them);
* ``default``: every guard at its default (``asr_eval.streaming.guards``);
* ``silence-rule`` / ``vad-gate`` / ``prompt-age`` / ``repeats``: ``off`` plus that guard alone.

Per configuration and variant: CER, ΔCER against ``off`` and against the offline run (paired over
the variant's recordings, bootstrap 95 % interval — 10 recordings: below the minimum evidence, so
read the interval as a range, not a verdict), characters inserted in silence and repeated
insertions (``asr_eval.metrics.hallucination``), latency median (unaware clock), decode calls and
compute per audio second.
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

from bench_stream import _f  # noqa: E402  (the number format of the streaming tables)

OFF = {"vad_gate": False, "no_speech_threshold": None, "logprob_threshold": None, "prompt_max_age_s": None,
       "drop_repeats": False}
CONFIGS = {
    "off": OFF,
    "default": {},
    "silence-rule": {**OFF, "no_speech_threshold": 0.6, "logprob_threshold": -1.0},
    "vad-gate": {**OFF, "vad_gate": True},
    "prompt-age": {**OFF, "prompt_max_age_s": 10.0},
    "repeats": {**OFF, "drop_repeats": True},
}
VARIANTS = ("plain", "stress")


def _q(con, sql: str, params: list) -> list[dict]:
    cur = con.execute(sql, params)
    return [dict(zip([d[0] for d in cur.description], r)) for r in cur.fetchall()]


def _delta(con, a: str, b: str, variant: str) -> dict | None:
    """b − a on the variant's recordings (CER, paired), from the stored comparison."""
    rows = _q(con, "SELECT run_a, delta, delta_lo, delta_hi, n FROM comparisons WHERE normalizer = 'zh-v1' AND "
                   "metric = 'cer' AND slice_attr = 'variant' AND slice_value = ? AND "
                   "((run_a = ? AND run_b = ?) OR (run_a = ? AND run_b = ?))", [variant, a, b, b, a])
    if not rows:
        return None
    r = rows[0]
    sign = 1 if r["run_a"] == a else -1  # stored as run_b − run_a
    lo, hi = sorted((sign * r["delta_lo"], sign * r["delta_hi"]))
    return {"delta": sign * r["delta"], "lo": lo, "hi": hi, "n": r["n"]}


def run(configs: list[str], engine: str, ct: str, chunk_s: float, ids: list[str] | None, work: Path) -> dict:
    from bench_longform import ingest_long
    from make_stress import build

    from asr_eval.scoring import expand_specs
    from asr_eval.streaming.evaluate import stream_models
    from asr_eval.streaming.run import stream_axis

    corpus, db = work / "corpus", work / "bench.duckdb"
    ingest_long(build(work / "src", ids=ids, verify=ids is None).parent, corpus)
    bases = expand_specs(["bundled:whisper-base"], engine, ct, device="cpu")
    out: dict = {"engine": engine, "compute_type": ct, "chunk_s": chunk_s, "configs": {}}
    run_ids: dict[str, str] = {}
    offline = None
    for name in configs:
        t0 = time.perf_counter()
        runs = stream_models(corpus, bases, [stream_axis("local-agreement", chunk_s, **CONFIGS[name])], db,
                             n_boot=1000, progress=False)
        run_ids[name], offline = runs.streams[0], runs.offline[0]
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    out["configs"] = summarize(db, run_ids, offline)
    return out


def summarize(db: Path, run_ids: dict[str, str], offline: str) -> dict:
    """Per configuration (and the offline run) and variant: the numbers of the module docstring, read
    from the store (after comparing each configuration with ``off``, paired per slice)."""
    from asr_eval.store import connect

    if "off" in run_ids:  # the writer compares the runs of one call only
        from asr_eval.scoring.analysis import compare_runs

        con = connect(db)
        try:
            for name, rid in run_ids.items():
                if name != "off":
                    compare_runs(con, run_ids["off"], rid, "zh-v1", n_boot=1000)
        finally:
            con.close()
    configs: dict = {}
    con = connect(db, read_only=True)
    try:
        for name, rid in [("offline vad", offline)] + list(run_ids.items()):
            per = {}
            for v in VARIANTS:
                cer = _q(con, "SELECT cer, n FROM slice_metrics WHERE run_id = ? AND normalizer = 'zh-v1' AND "
                              "slice_attr = 'variant' AND slice_value = ?", [rid, v])
                hal = _q(con, "SELECT inserted, inserted_in_silence, repeated_insertions, silence_s FROM "
                              "hallucination_slices WHERE run_id = ? AND normalizer = 'zh-v1' AND "
                              "slice_attr = 'variant' AND slice_value = ?", [rid, v])
                st = _q(con, "SELECT latency_median_s_unaware AS lat, decode_calls, compute_per_audio_s FROM "
                             "stream_slices WHERE run_id = ? AND normalizer = 'zh-v1' AND slice_attr = 'variant' "
                             "AND slice_value = ?", [rid, v])
                per[v] = {"cer": cer[0]["cer"] if cer else None, "n": cer[0]["n"] if cer else None,
                          **(hal[0] if hal else {}), **(st[0] if st else {}),
                          "vs_off": None if name in ("off", "offline vad") or "off" not in run_ids
                          else _delta(con, run_ids["off"], rid, v),
                          "vs_offline": None if rid == offline else _delta(con, offline, rid, v)}
            configs[name] = {"run_id": rid, "params": CONFIGS.get(name), "variants": per}
    finally:
        con.close()
    return configs


def _d(x) -> str:
    if not x:
        return "—"
    return f"{100 * x['delta']:+.2f} [{100 * x['lo']:+.2f}, {100 * x['hi']:+.2f}]"


def table(res: dict) -> str:
    lines = [f"\n{res['engine']} {res['compute_type']}, local-agreement {res['chunk_s']:g} s:", "",
             "| guards | variant | CER % | ΔCER vs off (pts) [95% CI] | ΔCER vs offline (pts) [95% CI] | "
             "inserted in silence | repeated insertions | latency median (s) | decode calls | compute s per s |",
             "|" + "---|" * 10]
    for name, c in res["configs"].items():
        for v, r in c["variants"].items():
            lines.append(f"| {name} | {v} | {_f(r['cer'], pct=True)} | {_d(r.get('vs_off'))} | "
                         f"{_d(r.get('vs_offline'))} | {r.get('inserted_in_silence', '—')} | "
                         f"{r.get('repeated_insertions', '—')} | {_f(r.get('lat'))} | {r.get('decode_calls', '—')} | "
                         f"{_f(r.get('compute_per_audio_s'))} |")
    return "\n".join(lines)


def main() -> None:
    from machine import cpu_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--engine", default="ctranslate2:int8")
    ap.add_argument("--chunk-s", type=float, default=1.0)
    ap.add_argument("--ids", default=None, help="stress-set sources (default: all 10)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--work", type=Path, help="keep the corpus and the store here (e.g. to build a report: "
                                               "asr-eval report --db WORK/bench.duckdb)")
    a = ap.parse_args()
    names = [c for c in a.configs.split(",") if c]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown configuration(s) {sorted(unknown)}; choose from {', '.join(CONFIGS)}")
    engine, ct = a.engine.split(":", 1)
    info = cpu_info()
    print(f"machine: {info}", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        res = run(names, engine, ct, a.chunk_s, a.ids.split(",") if a.ids else None, work)
    res |= {"machine": info, "machine_after": cpu_info(), "wall_s": round(time.perf_counter() - t0)}
    print(table(res), flush=True)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
