"""Decode recipes on the whole demo test split, one run: what temperature fallback (and beam search,
and the Simplified-Chinese prompt) do to the robotic-voice repetition loops and to CER.

    .venv/bin/python bench/bench_recipes.py [--engine ctranslate2] [--compute-type int8] [--json out.json]

Scores through the real pipeline (``score_models`` into a temporary store), then reads per-voice
CER, the number of hypotheses cut off at max_new_tokens (runaway loops), fallbacks fired, and the
paired CER difference of each recipe against greedy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEMO = Path(__file__).resolve().parent.parent / "datasets_local" / "demo_zh"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", default="ctranslate2")
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--recipes", default="greedy,fallback,beam5,prompt-simplified")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import duckdb

    from asr_eval.corpus import open_source
    from asr_eval.scoring import expand_specs, score_models
    from asr_eval.shards import IngestOptions, ingest

    tmp = Path(tempfile.mkdtemp(prefix="bench_recipes_"))
    corpus = tmp / "corpus"
    ingest(open_source(str(DEMO)), corpus, IngestOptions(workers=1), progress=False)
    specs = expand_specs(["bundled:whisper-base"], args.engine, args.compute_type, "pad-audio", args.recipes, "cpu")
    db = tmp / "s.duckdb"
    runs = score_models(corpus, specs, db, split="test", slices=["voice"], n_boot=1000, progress=False)
    con = duckdb.connect(str(db), read_only=True)
    out = {"engine": f"{args.engine} {args.compute_type}", "recipes": {}}
    for spec, run in zip(specs, runs):
        name = spec.recipe["name"]
        rows = con.execute("SELECT slice_attr, slice_value, n, cer, cer_lo, cer_hi FROM slice_metrics "
                           "WHERE run_id = ? AND normalizer = 'zh-v1' ORDER BY 1, 2", [run]).fetchall()
        cut, fb, n_fb, rtfx = con.execute(
            "SELECT count(*) FILTER (WHERE h.cut_off), sum(h.n_fallbacks), count(*) FILTER (WHERE h.n_fallbacks > 0), "
            "any_value(r.rtfx) FROM hypotheses h JOIN eval_runs r USING (run_id) WHERE run_id = ?", [run]).fetchone()
        d = con.execute("SELECT delta, delta_lo, delta_hi FROM comparisons WHERE run_a = ? AND run_b = ? AND "
                        "metric = 'cer' AND slice_attr = '_all'", [runs[0], run]).fetchone()
        out["recipes"][name] = {
            "cer_pct": {f"{a}={v}" if a != "_all" else "all": [n, round(100 * c, 2), round(100 * lo, 2), round(100 * hi, 2)]
                        for a, v, n, c, lo, hi in rows},
            "cut_off_at_max_new_tokens": cut, "fallback_redecodes": int(fb or 0), "utterances_with_fallback": n_fb,
            "rtfx": round(rtfx, 2), "delta_cer_vs_greedy_pct": None if d is None else [round(100 * x, 2) for x in d],
        }
    con.close()
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
