"""The quick demo's source: the bundled demo corpus with its whole train split and a fixed,
stratified sample of its test split.

On CPU every utterance costs one 30 s encoder window whatever its length (~1 s on a 2-core AVX2
machine with CTranslate2), and the demo scores the test split twice (zero-shot, then the
fine-tuned checkpoint), so the test split's size is most of the demo's scoring time. The sample is
drawn in two stages: the voices in proportion, except that each gets at least ``MIN_PER_VOICE``
utterances (the robotic voice's sentences are short: 24 of them are the fewest that reach the 200
reference characters a verdict needs); then within each voice the noise strata in proportion (at
least one utterance per stratum; ties go to the larger stratum). Drawn with a fixed seed, in corpus
order — the same utterances on every machine. ``asr-eval demo --full`` scores all 150.

    python datasets_local/demo_zh/quick.py OUT_DIR [N_TEST]
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STRATA = ("voice", "noise")
MIN_PER_VOICE = 24


def allocate(sizes: dict[tuple, int], n: int) -> dict[tuple, int]:
    """Proportional allocation of ``n`` draws over strata (largest shortfall against the quota
    first), at least one per stratum when ``n`` allows, never more than a stratum holds."""
    total = sum(sizes.values())
    if not 0 < n <= total:
        raise ValueError(f"a sample of {n} from {total} utterances")
    quota = {k: n * v / total for k, v in sizes.items()}
    floor = 1 if n >= len(sizes) else 0
    got = {k: min(v, max(floor, int(quota[k]))) for k, v in sizes.items()}
    while sum(got.values()) < n:  # the largest shortfall against its quota gets the next draw
        k = max((k for k in got if got[k] < sizes[k]), key=lambda k: (quota[k] - got[k], sizes[k], k))
        got[k] += 1
    while sum(got.values()) > n:  # the minimum of one per stratum overshot: take where most over quota
        k = max((k for k in got if got[k] > 1), key=lambda k: (got[k] - quota[k], k))
        got[k] -= 1
    return got


def voice_sizes(sizes: dict[str, int], n: int, minimum: int = MIN_PER_VOICE) -> dict[str, int]:
    """``allocate`` over the voices, each raised to ``minimum`` (or all it has) at the expense of the
    voices above it, largest first."""
    got = allocate(sizes, n)
    for v in sorted(got):
        need = min(minimum, sizes[v]) - got[v]
        while need > 0:
            donor = max((k for k in got if got[k] > min(minimum, sizes[k])), key=lambda k: (got[k], k), default=None)
            if donor is None:
                raise ValueError(f"a sample of {n} cannot give every voice {minimum} utterances")
            got[donor] -= 1
            got[v] += 1
            need -= 1
    return got


def sample_test(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    """``n`` test rows: per voice ``voice_sizes``, within a voice its noise strata in proportion; in
    corpus order."""
    test = [r for r in rows if r["split"] == "test"]
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(test):
        groups[tuple(r[c] for c in STRATA)].append(i)
    voices: dict[str, int] = defaultdict(int)
    for k, v in groups.items():
        voices[k[0]] += len(v)
    take: dict[tuple, int] = {}
    for voice, m in voice_sizes(dict(voices), n).items():
        take.update(allocate({k: len(v) for k, v in groups.items() if k[0] == voice}, m))
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for k in sorted(groups):
        keep.update(int(i) for i in rng.choice(groups[k], take[k], replace=False))
    return [r for i, r in enumerate(test) if i in keep]


def quick_source(out_dir: str | Path, n_test: int = 100, seed: int = 0, src: str | Path = HERE) -> Path:
    """Write ``out_dir/metadata.csv`` (audiofolder layout, absolute audio paths into ``src``): every
    non-test row of ``src`` plus ``n_test`` sampled test rows. Returns ``out_dir``."""
    src, out = Path(src).resolve(), Path(out_dir)
    with (src / "metadata.csv").open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = list(reader.fieldnames or []), list(reader)
    chosen = {r["utt_id"] for r in sample_test(rows, n_test, seed)}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "metadata.csv.tmp"
    with tmp.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            if r["split"] != "test" or r["utt_id"] in chosen:
                w.writerow({**r, "file_name": str(src / r["file_name"])})
    tmp.replace(out / "metadata.csv")
    return out


if __name__ == "__main__":
    print(quick_source(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100))
