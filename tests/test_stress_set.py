"""The silence/noise stress set (datasets_local/demo_zh/make_stress.py) on two of its sources:
segment shifts, inserted stretches outside speech, speech samples untouched, reproducible hash."""

from __future__ import annotations

import json
import sys

import numpy as np
import soundfile as sf
from conftest import DEMO_CORPUS

sys.path.insert(0, str(DEMO_CORPUS))
import make_stress
from make_longform import SR, content_hash

IDS = ["long_007", "long_008"]  # clean background + white stretch; white background + pink stretch (fast to render)


def test_stress_pairs_shift_segments_insert_outside_speech_and_reproduce(tmp_path):
    manifest = make_stress.build(tmp_path / "a", ids=IDS)
    rows = {r["id"]: r for r in map(json.loads, manifest.read_text(encoding="utf-8").splitlines())}
    assert list(rows) == ["long_007_plain", "long_007_stress", "long_008_plain", "long_008_stress"]
    # golden: seeded by the source number alone, so these are the full set's rows too
    assert rows["long_007_stress"]["inserted"] == [[5.983, 11.938, "pause"], [20.033, 24.591, "noise"],
                                                   [32.32, 43.011, "trailing"]]
    assert (rows["long_007_plain"]["duration"], rows["long_007_stress"]["duration"]) == (21.807, 43.011)
    assert round(21.807 + 5.955 + 4.558 + 10.691, 3) == 43.011  # plain + pause + noise + trailing lengths above

    for src in IDS:
        plain, stress = rows[f"{src}_plain"], rows[f"{src}_stress"]
        assert (plain["variant"], stress["variant"], plain["source"], stress["source"]) == ("plain", "stress", src, src)
        assert plain["text"] == stress["text"] == " ".join(s[2] for s in plain["segments"])
        assert plain["inserted"] == [] and plain["segments"][-1][1] <= make_stress.EXCERPT_S
        assert len(plain["segments"]) >= make_stress.MIN_SEGMENTS
        ins = stress["inserted"]
        assert sorted(k for _, _, k in ins) == ["noise", "pause", "trailing"] and ins == sorted(ins)
        lengths = {k: round(b - a, 3) for a, b, k in ins}
        assert 5 <= lengths["pause"] <= 8 and 3 <= lengths["noise"] <= 6 and 10 <= lengths["trailing"] <= 14
        assert ins[-1][2] == "trailing" and ins[-1][1] == stress["duration"]
        assert stress["duration"] == round(plain["duration"] + sum(lengths.values()), 3)
        for (a0, b0, t0), (a1, b1, t1) in zip(plain["segments"], stress["segments"], strict=True):
            before = sum(b - a for a, b, _ in ins if b <= a1)  # stretches inserted before this segment
            assert (round(a0 + before, 3), round(b0 + before, 3), t0) == (a1, b1, t1)
            assert all(b <= a1 or a >= b1 for a, b, _ in ins), (src, a1, b1)  # no stretch overlaps speech

        x0, _ = sf.read(tmp_path / "a" / plain["audio_filepath"], dtype="int16")
        x1, _ = sf.read(tmp_path / "a" / stress["audio_filepath"], dtype="int16")
        assert (len(x0), len(x1)) == (round(plain["duration"] * SR), round(stress["duration"] * SR))
        for (a0, b0, _), (a1, b1, _) in zip(plain["segments"], stress["segments"], strict=True):
            assert np.array_equal(x0[round(a0 * SR):round(b0 * SR)], x1[round(a1 * SR):round(b1 * SR)])
        keep = np.ones(len(x1), bool)  # removing the stretches gives back the plain excerpt exactly
        for a, b, _ in ins:
            keep[round(a * SR):round(b * SR)] = False
        assert np.array_equal(x1[keep], x0)
        loud = {k: float(np.sqrt(np.mean((x1[round(a * SR):round(b * SR)] / 32768.0) ** 2))) for a, b, k in ins}
        if plain["noise"] == "clean":  # a clean recording's pause and tail are digital zero
            assert loud["pause"] == loud["trailing"] == 0.0
        assert 0.02 <= loud["noise"] <= 0.055 and np.abs(x1).max() < 32767

    again = make_stress.build(tmp_path / "b", ids=IDS)
    assert again.read_bytes() == manifest.read_bytes()
    assert content_hash(tmp_path / "b") == content_hash(tmp_path / "a")
