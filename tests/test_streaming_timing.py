"""Reference timing for streaming latency (``asr_eval.streaming.timing``): the byte-offset
character↔token mapping, token times from a DTW path, clamping and the uniform fallback, the
per-corpus cache, and forced alignment with the bundled whisper-base against known times on the
long-form demo set."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
from conftest import DEMO_CORPUS, REPO

from asr_eval.streaming.metrics import ReferenceTiming, uniform_reference
from asr_eval.streaming.timing import (
    AlignmentError,
    align_segments,
    char_times,
    char_token_spans,
    corpus_timing,
    reference_timing,
    timing_cache_path,
    token_bytes,
    token_times,
)

SR = 16_000


# ───────────── tokens → characters ─────────────


def test_a_character_split_over_two_tokens_spans_both():
    jin, tian, hao = ("今".encode(), "天".encode(), "好".encode())
    pieces = [jin[:2], jin[2:] + tian, hao]  # 今 = tokens 0-1, 天 inside token 1, 好 = token 2
    assert char_token_spans("今天好", pieces) == [(0, 1), (1, 1), (2, 2)]
    # starts with the token of its first byte, ends with the token of its last byte
    times = [(0.0, 0.2), (0.2, 0.5), (0.5, 0.7)]
    assert char_times("今天好", pieces, times) == [(0.0, 0.5), (0.2, 0.5), (0.5, 0.7)]


def test_a_token_holding_two_characters_gives_both_its_times():
    pieces = ["很好".encode(), "吃".encode()]
    assert char_token_spans("很好吃", pieces) == [(0, 0), (0, 0), (1, 1)]
    assert char_times("很好吃", pieces, [(1.0, 1.4), (1.4, 1.6)]) == [(1.0, 1.4), (1.0, 1.4), (1.4, 1.6)]


def test_latin_letters_and_spaces_map_byte_by_byte():
    pieces = [b"\xe6\x88\x91", b" he", b"llo", b" cm"]  # 我 hello cm
    assert char_token_spans("我 hello cm", pieces) == [
        (0, 0), (1, 1), (1, 1), (1, 1), (2, 2), (2, 2), (2, 2), (3, 3), (3, 3), (3, 3)]


def test_tokens_that_do_not_spell_the_text_are_an_error():
    with pytest.raises(AlignmentError, match="not the text"):
        char_token_spans("你好", ["你".encode()])


def test_byte_level_symbols_decode_to_their_bytes():
    # vocabulary strings as the Whisper tokenizer shows them: 'Ġ' is a space, 'ä»Ĭå¤©' is 今天
    assert token_bytes(["ä»Ĭå¤©", "Ġhello", "å¤", "©"]) == ["今天".encode(), b" hello", b"\xe5\xa4", b"\xa9"]
    with pytest.raises(AlignmentError, match="byte-level"):
        token_bytes(["\u4eca"])


def _path(rows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A DTW path from (row, first frame) steps: each row holds its frames up to the next row's first."""
    path = []
    for (r, f0), (_, f1) in zip(rows, rows[1:] + [(None, rows[-1][1] + 5)]):
        path += [(r, f) for f in range(f0, max(f1, f0 + 1))]  # a row entered on the next row's frame: one step
    return path


def test_token_times_from_a_dtw_path():
    # tokens 0, 1, 2 and <|endoftext|> first reached at frames 0, 30, 40, 52 (20 ms each)
    times = token_times(_path([(0, 0), (1, 30), (2, 40), (3, 52)]), 3)
    # the first token's start is its end (0.6 s) minus the median of the others' durations (0.2, 0.24)
    np.testing.assert_allclose(times, [(0.6 - 0.22, 0.6), (0.6, 0.8), (0.8, 1.04)])
    assert token_times(_path([(0, 0), (1, 10)]), 1) == [(0.0, 0.2)]  # alone: the path's start
    # a token entered on the same frame as the previous one lasts 0 s
    assert token_times(_path([(0, 0), (1, 10), (2, 10), (3, 20)]), 3)[1] == (0.2, 0.2)
    with pytest.raises(AlignmentError, match="does not visit"):
        token_times(_path([(0, 0), (2, 10)]), 2)


# ───────────── clamping, monotonicity, fallback ─────────────


class ScriptedAligner:
    """Gives each character of the text the (start, end) listed for it, relative to the window."""

    key = "scripted"

    def __init__(self, script: dict[str, list[tuple[float, float]]]):
        self.script, self.calls = script, []

    def align(self, audio: np.ndarray, text: str) -> list[tuple[float, float]]:
        self.calls.append((len(audio) / SR, text))
        if text not in self.script:
            raise AlignmentError(f"no script for {text!r}")
        return self.script[text]


def test_times_are_clamped_into_the_segment_and_made_non_decreasing():
    audio = np.zeros(10 * SR, np.float32)
    segs = [[1.0, 3.0, "你好，世界！"], [5.0, 6.0, "Hi all 12"]]  # normalized: 你好世界 / hi all十二
    al = ScriptedAligner({
        # window 0.5-3.5 s: 你 starts before the segment, 好 ends before 你, 界 ends after the segment
        "你好世界": [(0.1, 0.9), (0.6, 0.8), (1.0, 1.9), (2.0, 3.2)],
        # window 4.5-6.5 s; the space is not a character of the reference
        "hi all十二": [(0.6, 0.7), (0.7, 0.8), (0.8, 0.8), (0.8, 0.9), (0.9, 0.9), (0.9, 1.0), (1.0, 1.3), (1.3, 1.4)],
    })
    seg = align_segments(audio, segs, al, margin_s=0.5)
    assert al.calls == [(3.0, "你好世界"), (2.0, "hi all十二")]
    assert [s.window for s in seg] == [(0.5, 3.5), (4.5, 6.5)]
    assert seg[0].first_start_s == pytest.approx(0.6) and seg[0].last_end_s == pytest.approx(3.7)  # unclamped
    assert seg[1].chars == "hiall十二" and seg[1].ends_s == pytest.approx([5.2, 5.3, 5.4, 5.4, 5.5, 5.8, 5.9])
    rt = reference_timing(audio, segs, 10.0, aligner=al, margin_s=0.5)
    assert rt.chars == "你好世界hiall十二" and rt.segment == [0] * 4 + [1] * 7
    assert rt.end_s == pytest.approx([1.4, 1.4, 2.4, 3.0, 5.2, 5.3, 5.4, 5.4, 5.5, 5.8, 5.9])
    assert rt.onsets_s == pytest.approx([1.0, 5.1])
    assert rt.method == "aligned:scripted"


def test_without_an_aligner_every_segment_is_uniform():
    segs = [[0.5, 2.5, "今天天气很好。"], [3.0, 4.0, "谢谢"]]
    rt = reference_timing(None, segs, 5.0)
    assert rt == uniform_reference(segs) and rt.method == "uniform"
    assert all(not s.aligned and s.fallback == "no aligner" for s in align_segments(None, segs, None))


def test_a_window_over_30_s_an_empty_text_or_an_aligner_error_fall_back_per_segment():
    audio = np.zeros(60 * SR, np.float32)
    segs = [[0.0, 2.0, "你好"], [3.0, 33.0, "很长"], [40.0, 41.0, "！"], [45.0, 46.0, "再见"]]
    al = ScriptedAligner({"你好": [(0.2, 0.6), (0.6, 1.2)]})  # 再见: no script → AlignmentError
    seg = align_segments(audio, segs, al, margin_s=0.5)
    assert [s.fallback for s in seg] == ["", "window of 31.0 s > 30 s", "empty text", "no script for '再见'"]
    rt = reference_timing(audio, segs, 60.0, aligner=al)
    assert rt.method == "mixed:scripted (1/4 aligned)"
    assert rt.end_s == pytest.approx([0.6, 1.2, 18.0, 33.0, 45.5, 46.0])  # the others spread evenly
    assert rt.onsets_s == pytest.approx([0.2, 3.0, 40.0, 45.0])
    # clipped to the recording: a 30.0 s window at the start is still aligned
    assert align_segments(audio[:30 * SR], [[0.2, 29.8, "你好"]], al, 0.5)[0].window == (0.0, 30.0)


def test_no_segments_is_one_whole_recording_segment():
    al = ScriptedAligner({"一二": [(1.0, 2.0), (2.0, 3.0)]})
    rt = reference_timing(np.zeros(4 * SR, np.float32), None, 4.0, aligner=al, text="一二")
    assert al.calls == [(4.0, "一二")]
    assert rt == ReferenceTiming("一二", [2.0, 3.0], [0, 0], [1.0], "aligned:scripted")


# ───────────── the per-corpus cache ─────────────


class EvenAligner:
    """Spreads the characters evenly over the middle half of the window; counts its calls."""

    key = "even-test"

    def __init__(self):
        self.calls = 0

    def align(self, audio: np.ndarray, text: str) -> list[tuple[float, float]]:
        self.calls += 1
        w, n = len(audio) / SR, len(text)
        return [(w / 4 + i * w / 2 / n, w / 4 + (i + 1) * w / 2 / n) for i in range(n)]


@pytest.fixture(scope="module")
def two_recordings(tmp_path_factory):
    """long_006 and long_010 of the long-form demo set (97 s and 96 s), ingested long-form."""
    from asr_eval.corpus import open_source
    from asr_eval.shards import IngestOptions, ingest

    sys.path.insert(0, str(DEMO_CORPUS))
    from make_longform import subset

    tmp = tmp_path_factory.mktemp("timing")
    manifest = subset(["long_006", "long_010"], tmp / "src")
    ingest(open_source(str(manifest)), tmp / "corpus", IngestOptions(workers=1, long_form=True), progress=False)
    return tmp / "corpus"


def test_corpus_timing_is_computed_once_and_read_back_equal(two_recordings):
    al = EvenAligner()
    first = corpus_timing(two_recordings, None, "zh-v1", al, progress=False)
    path = timing_cache_path(two_recordings, "zh-v1", al)
    assert path.parent == two_recordings / "timing" and path.is_file()
    assert sorted(first) == ["long_006", "long_010"] and al.calls == 8 + 8
    assert {t.method for t in first.values()} == {"aligned:even-test"}
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["aligner"] == "even-test" and set(stored["timings"]) == set(first)
    again = corpus_timing(two_recordings, None, "zh-v1", al, progress=False)
    assert again == first and al.calls == 16  # from the cache, no alignment
    # another profile, or no aligner, is another cache file
    assert timing_cache_path(two_recordings, "zh-v1-keepnum", al) != path
    uni = corpus_timing(two_recordings, "test", "zh-v1", None, progress=False)
    assert timing_cache_path(two_recordings, "zh-v1", None).is_file()
    assert {t.method for t in uni.values()} == {"uniform"} and [t.chars for t in uni.values()] == [
        t.chars for t in first.values()]


# ───────────── the real model against known times ─────────────

TEST_RECORDINGS = ["long_006", "long_008", "long_010"]  # pink, white, clean; 31 segments, 17 clean sources


@pytest.mark.integration
def test_bundled_whisper_base_finds_the_known_segment_times():
    """Forced alignment with the bundled whisper-base (CTranslate2 float32) on three long-form demo
    recordings. The known times: every segment's bounds (the source utterance file's extents,
    which pad the speech with 0.10-0.35 s of digital silence on each side), and — for clean
    source utterances — the exact speech bounds (first and last non-zero sample). Measured here:
    start and end within 0.3 s of the speech bounds for 17/17 (|error| median 0.05 s / 0.13 s,
    p90 0.10 s / 0.20 s); all 31 found inside their segment ± 0.3 s. bench/bench_alignment.py
    measures all 20 recordings."""
    from asr_eval.streaming.timing import ct2_aligner

    sys.path.insert(0, str(DEMO_CORPUS))
    sys.path.insert(0, str(REPO / "bench"))
    from bench_alignment import measure, summarize

    al = ct2_aligner()
    tok = al.tokenizer
    text = "今天天气很好 hello 一cm"
    ids = tok.encode(text, add_special_tokens=False)
    assert b"".join(token_bytes(tok.convert_ids_to_tokens(ids))) == text.encode()

    t0 = time.perf_counter()
    rows = measure(TEST_RECORDINGS, al)
    print(f"{len(rows)} segments aligned in {time.perf_counter() - t0:.1f} s")
    assert len(rows) == 31 and all(r["aligned"] for r in rows), [r["fallback"] for r in rows]
    speech = summarize(rows, "speech")
    print(json.dumps({"speech": speech, "seg": summarize(rows, "seg")}, indent=1))
    assert speech["n"] == 17
    assert speech["start_within"] >= 0.9 and speech["end_within"] >= 0.9, speech
    inside = [r["seg"][0] - 0.3 <= r["aligned"][0] < r["aligned"][1] <= r["seg"][1] + 0.3 for r in rows]
    assert np.mean(inside) >= 0.9, inside


@pytest.mark.integration
def test_reference_timing_of_a_real_recording_is_aligned_and_inside_its_segments():
    from asr_eval.streaming.timing import ct2_aligner

    sys.path.insert(0, str(DEMO_CORPUS))
    import soundfile as sf
    from make_longform import build

    src = build()
    row = next(json.loads(x) for x in (src / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
               if json.loads(x)["id"] == "long_010")
    x, _ = sf.read(src / row["audio_filepath"], dtype="float32")
    rt = reference_timing(x, row["segments"], row["duration"], aligner=ct2_aligner())
    assert rt.method == f"aligned:{ct2_aligner().key}" and rt.chars == uniform_reference(row["segments"]).chars
    for k, (a, b, _) in enumerate(row["segments"]):
        ends = [e for e, s in zip(rt.end_s, rt.segment) if s == k]
        assert a <= rt.onsets_s[k] <= ends[0] and ends == sorted(ends) and ends[-1] <= b
