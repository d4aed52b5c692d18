"""Silence/noise stress set: paired excerpts of the long-form demo recordings, with and without
stretches where nobody speaks — Whisper's favourite place to invent text.

For each of ``SOURCE_IDS`` (10 recordings of ``make_longform``: 3 clean, 4 white, 3 pink
background) the excerpt is the first whole segments that end at or before ``EXCERPT_S`` (at
least ``MIN_SEGMENTS``), cut at the last one's end plus its following pause (at most
``MAX_TAIL_S``). Two recordings come from it:

* ``long_XXX_plain``: the excerpt as it is (the paired control: CER on speech).
* ``long_XXX_stress``: the same samples with, at the middle of the pauses between two segments
  (never inside speech) and at the end, inserted (seeded, per source):

  - ``pause``: a silent pause of 5-8 s: only the recording's own background noise (kind and
    level ``make_longform.NOISE_RMS``; digital zero for a clean recording);
  - ``noise``: a noise-only stretch of 3-6 s: white or pink noise (alternating by source) at
    rms 0.02-0.05 on top of the background, no speech;
  - ``trailing``: 10-14 s of background noise only after the last segment.

  The segments after an insertion shift by its length (whole milliseconds, so whole samples): the
  speech samples are those of the plain excerpt, sample for sample. Each stress row lists its
  stretches as ``inserted: [[start_s, end_s, kind], ...]`` (``[]`` for plain rows).

Rows carry make_longform's fields (id, audio_filepath, text, duration, split, segments) plus
``variant`` (plain/stress), ``source`` (long_XXX) and ``noise`` (background kind), which become
slice columns at ingest:

    asr-eval ingest CACHE/demo_zh_stress-v1/manifest.jsonl --long-form --out reports/corpora/demo_zh_stress

The source recordings are rendered with ``make_longform.plan``/``_render`` exactly as its
``build()`` writes them (16-bit FLAC), so nothing but this script and ``stress.sha256`` (the
content hash of manifest + 16-bit PCM) is committed. ``python make_stress.py [OUT]`` builds (or
verifies an existing build) and prints the manifest path.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import make_longform as longform
from make_longform import NOISE_RMS, SR, _noise, _render, content_hash, plan

VERSION = "v1"
SEED = 20261207
# long_001 … long_011 without long_010 (only 2 sentences before its 58 s silence): 3 clean, 4 white, 3 pink
SOURCE_IDS = tuple(f"long_{k:03d}" for k in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11))
N_SOURCES = len(SOURCE_IDS)
EXCERPT_S = 22.0  # keep the whole segments that end by then ...
MIN_SEGMENTS = 3  # ... at least this many (two inner pauses to insert into)
MAX_TAIL_S = 0.8  # the excerpt ends this long (at most) after its last segment
PAUSE_S = (5.0, 8.0)  # silent pause: background only
NOISE_S = (3.0, 6.0)  # noise-only stretch, on top of the background
NOISE_STRETCH_RMS = (0.02, 0.05)
NOISE_STRETCH_KINDS = ("pink", "white")  # by source number: odd → white, even → pink
TRAILING_S = (10.0, 14.0)  # background only, after the last segment
EXPECTED_HASH_FILE = HERE / "stress.sha256"


def default_dir() -> Path:
    return longform.default_dir().with_name(f"demo_zh_stress-{VERSION}")


def expected_hash() -> str:
    return EXPECTED_HASH_FILE.read_text().split()[0]


def _source(rid: str) -> tuple[np.ndarray, list[list], str]:
    """The long-form recording ``rid`` as its build stores it: 16-bit PCM, segments, noise kind."""
    recs = {r["id"]: r for r in plan()}
    if rid not in recs:
        raise ValueError(f"no long-form recording {rid!r} (ids are long_001 … long_{len(recs):03d})")
    x, segs = _render(recs[rid])
    buf = io.BytesIO()  # through FLAC PCM_16 as make_longform.build writes it: the same float → int16 rounding
    sf.write(buf, x, SR, format="FLAC", subtype="PCM_16")
    buf.seek(0)
    pcm, _ = sf.read(buf, dtype="int16")
    return pcm, segs, recs[rid]["noise"]


def excerpt(rid: str, segs: list[list], duration_s: float) -> tuple[list[list], float]:
    """The kept segments and the cut time (s, whole ms) of recording ``rid``'s excerpt."""
    kept = []
    for s in segs:
        if s[1] > EXCERPT_S:
            break
        kept.append(s)
    if len(kept) < MIN_SEGMENTS:
        raise ValueError(f"{rid}: only {len(kept)} segment(s) end by {EXCERPT_S} s, need {MIN_SEGMENTS}; "
                         f"pick another source (e.g. one of {', '.join(SOURCE_IDS)})")
    nxt = segs[len(kept)][0] if len(segs) > len(kept) else duration_s
    return kept, round(kept[-1][1] + min(nxt - kept[-1][1], MAX_TAIL_S), 3)


def stretches(rid: str, kept: list[list], cut_s: float) -> list[tuple[int, int, str, float]]:
    """What the stress variant inserts, in time order: (at_ms in the plain excerpt, length_ms, kind,
    rms of the added noise), seeded by the source number alone (a subset builds the same rows)."""
    num = int(rid.rsplit("_", 1)[1])
    rng = np.random.default_rng([SEED, num])
    b_pause, b_noise = (int(b) for b in rng.choice(np.arange(1, len(kept)), size=2, replace=False))
    pause_ms = round(1000 * rng.uniform(*PAUSE_S))
    noise_ms = round(1000 * rng.uniform(*NOISE_S))
    rms = round(float(rng.uniform(*NOISE_STRETCH_RMS)), 4)
    trailing_ms = round(1000 * rng.uniform(*TRAILING_S))

    def mid_ms(b: int) -> int:  # the middle of the pause before kept[b]
        return round(500 * (kept[b - 1][1] + kept[b][0]))

    return sorted([(mid_ms(b_pause), pause_ms, "pause", 0.0), (mid_ms(b_noise), noise_ms, "noise", rms),
                   (round(1000 * cut_s), trailing_ms, "trailing", 0.0)])


def _pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def _chunk(background: str, n: int, kind: str, rms: float, noise_kind: str, rng: np.random.Generator) -> np.ndarray:
    x = _noise(background, n, rng)
    if kind == "noise":
        x = x + _noise(noise_kind, n, rng) * np.float32(rms / NOISE_RMS[noise_kind])
    return _pcm16(x)


def render(rid: str) -> tuple[dict, np.ndarray, dict, np.ndarray]:
    """(plain row, plain PCM, stress row, stress PCM) of source ``rid`` (rows without audio_filepath)."""
    pcm, segs, background = _source(rid)
    kept, cut_s = excerpt(rid, segs, len(pcm) / SR)
    plain = pcm[: round(cut_s * SR)]
    num = int(rid.rsplit("_", 1)[1])
    noise_kind = NOISE_STRETCH_KINDS[num % 2]
    rng = np.random.default_rng([SEED, num, 1])
    events = stretches(rid, kept, cut_s)
    pieces, inserted, pos, shift_ms = [], [], 0, 0
    for at_ms, len_ms, kind, rms in events:
        i = at_ms * SR // 1000
        pieces += [plain[pos:i], _chunk(background, len_ms * SR // 1000, kind, rms, noise_kind, rng)]
        inserted.append([(at_ms + shift_ms) / 1000, (at_ms + shift_ms + len_ms) / 1000, kind])
        pos, shift_ms = i, shift_ms + len_ms
    pieces.append(plain[pos:])
    stress = np.concatenate(pieces)
    moved = []
    for a, b, t in kept:  # a segment moves by the stretches inserted before its start (none is inside one)
        d = sum(n for at, n, _, _ in events if at <= round(1000 * a)) / 1000
        moved.append([round(a + d, 3), round(b + d, 3), t])
    text = " ".join(s[2] for s in kept)
    common = {"text": text, "split": "test"}
    plain_row = {"id": f"{rid}_plain", **common, "duration": round(len(plain) / SR, 3), "segments": kept,
                 "variant": "plain", "source": rid, "noise": background, "inserted": []}
    stress_row = {"id": f"{rid}_stress", **common, "duration": round(len(stress) / SR, 3), "segments": moved,
                  "variant": "stress", "source": rid, "noise": background, "inserted": inserted}
    return plain_row, plain, stress_row, stress


def build(out_dir: str | Path | None = None, ids: list[str] | tuple[str, ...] | None = None,
          verify: bool = True) -> Path:
    """Generate the pairs of ``ids`` (default: all of ``SOURCE_IDS``) into ``out_dir`` (default:
    the cache) unless a build of the same ids is there (the full set's is re-hashed against
    ``stress.sha256``). Returns the manifest path."""
    out = Path(out_dir) if out_dir else default_dir()
    ids = list(ids or SOURCE_IDS)
    full = ids == list(SOURCE_IDS)
    manifest, stamp = out / "manifest.jsonl", out / "stamp.json"
    if (stamp.is_file() and manifest.is_file() and json.loads(stamp.read_text()).get("ids") == ids
            and (not (verify and full) or content_hash(out) == expected_hash())):
        return manifest
    (out / "audio").mkdir(parents=True, exist_ok=True)
    lines = []
    for rid in ids:
        plain_row, plain, stress_row, stress = render(rid)
        for row, pcm in ((plain_row, plain), (stress_row, stress)):
            rel = f"audio/{row['id']}.flac"
            sf.write(out / rel, pcm, SR, format="FLAC", subtype="PCM_16")
            lines.append({"id": row["id"], "audio_filepath": rel, **{k: v for k, v in row.items() if k != "id"}})
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8")
    digest = content_hash(out)
    if verify and full and digest != expected_hash():
        raise RuntimeError(f"stress set in {out} has content hash {digest}, expected {expected_hash()} "
                           f"({EXPECTED_HASH_FILE}); the generator or its inputs (make_longform) changed")
    stamp.write_text(json.dumps({"ids": ids, "sha256": digest}))
    return manifest


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    print(build(args[0] if args else None, verify="--no-verify" not in sys.argv))
