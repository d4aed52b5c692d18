"""`make bench`: every benchmark, results printed as JSON (see bench/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    ["bench_ingest.py", "--hours", "10", "--baseline-minutes", "20"],
    ["bench_rescore.py"],
    ["bench_score.py", "--n", "60"],
    ["bench_recipes.py"],
    ["bench_report.py"],
    ["bench_longform.py", "--rss-limit-s", "300"],
    ["bench_stream.py"],
    ["bench_guards.py", "--configs", "default,off"],
    ["bench_alignment.py"],
    ["bench_decode_speedups.py"],
    ["bench_scale.py", "--n", "64"],
]

if __name__ == "__main__":
    failed = 0
    for args in BENCHES:
        print(f"== {' '.join(args)}", flush=True)
        failed += subprocess.call([sys.executable, str(HERE / args[0]), *args[1:]]) != 0
    sys.exit(1 if failed else 0)
