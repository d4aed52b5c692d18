"""Long-form strategies: chunk/merge/pack arithmetic, each strategy on a tiny random Whisper and
on the bundled whisper-base, and ``score`` with ``--strategy`` end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
from conftest import DEMO_CORPUS

from asr_eval.errors import AsrEvalError
from asr_eval.engines import get_recipe
from asr_eval.longform import make_strategy, short_transcriber
from asr_eval.longform.base import FRAME, activity
from asr_eval.longform.chunked import chunk_bounds, merge_pair, speech_share
from asr_eval.longform.vad import loud_onset, pack, speech_regions
from asr_eval.metrics import LongForm, score_pair

SR = 16_000


def _recording(n_utts: int = 12, pause_s: float = 1.0, silence_at: int | None = None, silence_s: float = 0.0):
    """Demo test utterances (neural voice) with pauses; returns samples, reference, segments."""
    with open(DEMO_CORPUS / "metadata.csv", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test" and r["voice"] == "neural"
                and r["noise"] == "clean"][:n_utts]
    pieces, segs, t = [np.zeros(SR // 2, np.float32)], [], 0.5
    for k, r in enumerate(rows):
        if k == silence_at:
            pieces.append(np.zeros(int(silence_s * SR), np.float32))
            t += silence_s
        a, _ = sf.read(DEMO_CORPUS / r["file_name"], dtype="float32")
        segs.append([t, t + len(a) / SR, r["text"]])
        pieces += [a, np.zeros(int(pause_s * SR), np.float32)]
        t += len(a) / SR + pause_s
    return np.concatenate(pieces), " ".join(s[2] for s in segs), segs


def test_chunk_bounds_and_merge_on_the_overlap():
    # 30 s chunks, 5 s stride: a new chunk every 20 s; the last ends at the audio's end
    assert chunk_bounds(65 * SR, 30.0, 5.0) == [(0, 30 * SR), (20 * SR, 50 * SR), (40 * SR, 65 * SR)]
    assert chunk_bounds(10 * SR, 30.0, 5.0) == [(0, 10 * SR)]
    # the overlap's common run is cut in its middle: no doubled and no lost words
    left, right = merge_pair("今天天气很好我们出去走走", "我们出去走走吧然后回家", 1 / 3, 1 / 3, 1 / 6, 1 / 6)
    assert left + right == "今天天气很好我们出去走走吧然后回家"
    # nothing in common: each keeps the share of its text whose speech lies before / after the middle
    assert merge_pair("一二三四五六", "七八九十百千", 1 / 3, 1 / 3, 1 / 6, 1 / 6) == ("一二三四五", "八九十百千")
    # an overlap without speech: both texts are kept whole
    assert merge_pair("一二三四五六", "七八九十百千", 0.0, 0.0, 0.0, 0.0) == ("一二三四五六", "七八九十百千")


def test_speech_activity_locates_the_text_of_a_chunk():
    """Speech 0-10 s, digital silence 10-20 s, quiet noise (-70 dBFS) 20-30 s, speech 30-35 s."""
    rng = np.random.default_rng(0)
    tone = lambda s: (0.1 * np.sin(np.arange(int(s * SR)) * 0.05)).astype(np.float32)  # noqa: E731
    x = np.concatenate([tone(10), np.zeros(10 * SR, np.float32),
                        (3e-4 * rng.standard_normal(10 * SR)).astype(np.float32), tone(5)])
    act = activity(x)
    assert act.shape == (35 * 50,) and act[:500].all() and not act[500:1500].any() and act[1500:].all()
    assert speech_share(act, 0, 30 * SR, 20 * SR, 30 * SR) == 0.0  # the chunk's last 10 s hold no speech
    assert speech_share(act, 0, 35 * SR, 30 * SR, 35 * SR) == pytest.approx(5 / 15)
    assert speech_share(act, 10 * SR, 30 * SR, 0, 35 * SR) == 0.0  # no speech at all


def test_vad_packing_respects_the_window_and_the_gap():
    regions = [(0, 2 * SR), (3 * SR, 10 * SR), (11 * SR, 29 * SR), (29 * SR + 8000, 40 * SR), (50 * SR, 52 * SR)]
    assert pack(regions, 30.0, 2.0) == [(0, 29 * SR), (29 * SR + 8000, 40 * SR), (50 * SR, 52 * SR)]
    # a 0.5 s pause still joins (11-40 s is 29 s long); 1 s pauses do not
    assert pack(regions, 30.0, 0.5) == [(0, 2 * SR), (3 * SR, 10 * SR), (11 * SR, 40 * SR), (50 * SR, 52 * SR)]


def test_an_onset_inside_loud_audio_moves_to_where_it_begins():
    act = np.array([0, 0, 1, 1, 1, 1, 0, 1, 1, 1], float)  # 20 ms frames
    assert loud_onset(act, 4 * FRAME + 7) == 2 * FRAME  # inside the loud run 2-5: back to its start
    assert loud_onset(act, 1 * FRAME) == 1 * FRAME  # in a quiet frame: unchanged
    assert loud_onset(act, 9 * FRAME, floor=8 * FRAME) == 8 * FRAME  # never before the previous region
    assert loud_onset(act, 5 * FRAME, lookback_s=0.04) == 3 * FRAME  # at most the lookback


def test_a_moved_onset_never_makes_a_region_longer_than_the_window(monkeypatch):
    """Loud audio throughout; Silero (stubbed) reports 2.0-31.8 s: the start may move back only to
    31.8 - 30 = 1.8 s (not to the loud stretch's 1.0 s minus the pad), and the end stays."""
    import silero_vad

    x = (0.1 * np.sin(np.arange(40 * SR) * 0.05)).astype(np.float32)
    monkeypatch.setattr(silero_vad, "get_speech_timestamps", lambda *a, **k: [{"start": 2 * SR, "end": int(31.8 * SR)}])
    assert speech_regions(x) == [(int(1.8 * SR), int(31.8 * SR))]
    monkeypatch.setattr(silero_vad, "get_speech_timestamps", lambda *a, **k: [{"start": 2 * SR, "end": 10 * SR}])
    assert speech_regions(x) == [(int(0.6 * SR), 10 * SR)]  # 1 s lookback, then the 400 ms pad


def test_silero_finds_the_speech_and_not_the_silent_stretch():
    x, _, segs = _recording(6, pause_s=0.8, silence_at=3, silence_s=20.0)
    regions = speech_regions(x)
    assert 3 <= len(regions) <= 6
    gap = (segs[2][1], segs[3][0])  # the silent stretch
    assert not any(a / SR > gap[0] + 1.0 and b / SR < gap[1] - 1.0 for a, b in regions)
    assert all(b - a <= 30 * SR for a, b in regions)


def test_silero_catches_the_first_word_after_a_digital_silence():
    """Speech, then 20 s of digital silence, then the demo utterance whose audio starts at
    39.6 s: carried across the silence, Silero's state put the onset at 40.22 s (first syllable
    cut); moved back to the start of the loud stretch, the region starts before the word."""
    x, _, segs = _recording(14, pause_s=0.8, silence_at=7, silence_s=20.0)
    after = [a for a, _ in speech_regions(x) if a / SR > segs[6][1] + 1.0]
    onset = np.flatnonzero(np.abs(x[int(segs[7][0] * SR):]) > 0.01)[0] / SR + segs[7][0]
    assert onset == pytest.approx(39.6, abs=0.05)
    assert after[0] / SR < onset


def test_blockwise_log_mel_equals_the_feature_extractor():
    """sequential's features are computed in blocks (bounded memory on hour-long recordings) and
    must equal WhisperFeatureExtractor's whole-signal ones, global clamp included (a silent stretch
    makes the max − 8 clamp bite)."""
    from transformers import WhisperFeatureExtractor

    from asr_eval.longform.sequential import log_mel
    from asr_eval.models.bundled import bundled_whisper_base_dir

    fe = WhisperFeatureExtractor.from_pretrained(bundled_whisper_base_dir())
    for n in (SR * 95 + 37, SR * 31 + 159):  # lengths not a multiple of the hop
        x = (np.random.default_rng(n).standard_normal(n) * 0.05).astype(np.float32)
        x[SR * 10:SR * 25] = 0.0
        ref = fe(x, sampling_rate=SR, return_tensors="pt", return_attention_mask=True, truncation=False,
                 padding="longest")
        ours = log_mel(fe, x, block_frames=1234)  # blocks that do not divide the frame count
        assert tuple(ours.shape) == (80, n // 160) == tuple(ref.input_features.shape[1:])
        assert int(ref.attention_mask.sum()) == n // 160
        assert float((ref.input_features[0] - ours).abs().max()) < 1e-5
        assert float(ours.min()) == pytest.approx(float(ours.max()) - 2.0)  # the clamp fired (8 / 4)


def test_unknown_strategy_and_parameter():
    with pytest.raises(AsrEvalError, match="unknown long-form strategy 'whole'"):
        make_strategy("whole")
    with pytest.raises(AsrEvalError, match="has no parameter"):
        make_strategy("vad", stride_s=3)
    with pytest.raises(AsrEvalError, match="stride_s"):
        make_strategy("chunked", stride_s=20)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from asr_eval.engines import create_engine
    from asr_eval.models.tiny import build_tiny_whisper

    return create_engine("transformers", str(build_tiny_whisper(tmp_path_factory.mktemp("tiny"))), device="cpu")


@pytest.mark.parametrize("name,pieces", [("sequential", None), ("chunked", 3), ("vad", None)])
def test_each_strategy_on_a_tiny_random_whisper(tiny, name, pieces):
    x, _, _ = _recording(14, pause_s=1.5)
    dur = len(x) / SR
    assert 40 < dur < 70
    d = get_recipe("greedy", max_new_tokens=12)
    st = make_strategy(name)
    r = st.transcribe(tiny, x, d, None if name == "sequential" else short_transcriber(tiny, d, batch_size=4))
    assert r.proc_s > 0 and r.n_pieces >= 1
    if pieces:
        assert r.n_pieces == pieces == len(chunk_bounds(len(x), 30.0, 5.0))
    starts = [s[0] for s in r.segments]
    assert starts == sorted(starts) and all(0 <= s[0] <= dur + 30.0 for s in r.segments)  # ≤ one window past
    if name != "sequential":  # a random model's timestamp tokens are arbitrary; cut times are not
        assert all(s[0] <= s[1] <= dur + 0.5 for s in r.segments)
        assert r.text.replace(" ", "") == "".join(s[2] for s in r.segments).replace(" ", "")


@pytest.fixture(scope="module")
def base_engine():
    from asr_eval.engines import create_engine

    return create_engine("transformers", "bundled:whisper-base", device="cpu")


@pytest.mark.integration
@pytest.mark.parametrize("name,bound", [("sequential", 0.15), ("vad", 0.25)])
def test_each_strategy_on_the_bundled_model(base_engine, name, bound):
    """A 61 s recording of 14 clean neural-voice test utterances with a 20 s silent stretch.
    whisper-base scores ~16 % CER on these utterances one by one (docs/demo_corpus.md); measured
    on the whole recording: sequential 8.9 %, vad 17.9 %. Each must stay within the stated bound,
    and none may put text over the silent stretch or drop a window."""
    x, ref, segs = _recording(14, pause_s=0.8, silence_at=7, silence_s=20.0)
    r = make_strategy(name).transcribe(base_engine, x, get_recipe("greedy"), None)  # pieces get the strategy's cap
    s = score_pair(ref, r.text, long_form=LongForm(segs, r.segments))
    assert s.cer < bound, (name, s.cer, r.text)
    assert "text_over_silence" not in s.flags and "dropped_window" not in s.flags


@pytest.mark.integration
def test_chunked_on_the_bundled_model_keeps_both_sides_of_a_silent_overlap(base_engine):
    """Same recording, chunks 0-30, 20-50, 40-61.4 s. The 20-30 s overlap is silent: both texts
    must be kept whole (a time-proportional cut lost "分學生都參加了活動" and "伊里尼等于" here).
    The third chunk starts inside a word (the utterance at 39.6-41.9 s), and whisper-base then
    transcribes only the chunk's last sentence — a known weakness of fixed chunking, which is why
    this strategy's bound is 0.5 (measured 45.5 %; sequential 8.9 %, vad 17.9 %)."""
    x, ref, segs = _recording(14, pause_s=0.8, silence_at=7, silence_s=20.0)
    recipe = get_recipe("greedy")
    r = make_strategy("chunked").transcribe(base_engine, x, recipe, None)
    pieces = short_transcriber(base_engine, recipe, max_new_tokens=440)([x[a:b] for a, b in chunk_bounds(len(x), 30, 5)])
    first, second = (t.strip() for t in pieces.texts[:2])
    assert "活動" in first[-4:] and r.text.startswith(first)  # the whole first chunk
    assert second[:4] in r.text  # the second chunk's beginning
    s = score_pair(ref, r.text, long_form=LongForm(segs, r.segments))
    assert s.cer < 0.5 and "text_over_silence" not in s.flags


def test_score_with_strategies_end_to_end(tmp_path, tiny):
    from asr_eval.corpus import open_source
    from asr_eval.scoring import expand_specs, score_models
    from asr_eval.shards import IngestOptions, ingest
    from asr_eval.store import connect

    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    rows = []
    for k, (n, p) in enumerate([(14, 1.5), (3, 0.5)]):
        x, ref, segs = _recording(n, pause_s=p)
        sf.write(src / "a" / f"r{k}.flac", x, SR)
        rows.append({"audio_filepath": f"a/r{k}.flac", "text": ref, "segments": segs, "split": "test"})
    (src / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    corpus = tmp_path / "corpus"
    s = ingest(open_source(str(src / "manifest.jsonl")), corpus, IngestOptions(workers=1, long_form=True), progress=False)
    assert s.n_ingested == 2
    db = tmp_path / "s.duckdb"
    model = tiny.files.spec.path
    with pytest.raises(AsrEvalError, match="--strategy sequential"):
        score_models(corpus, [model], db, progress=False, n_boot=10)
    specs = expand_specs([model], "transformers,ctranslate2", device="cpu", strategies="chunked,vad",
                         strategy_params={"max_gap_s": 1.0}, max_new_tokens=12)
    runs = score_models(corpus, specs, db, progress=False, n_boot=10)
    with pytest.raises(AsrEvalError, match="no chosen strategy has them"):
        expand_specs([model], strategies="chunked", strategy_params={"max_gap_s": 1.0})
    with pytest.raises(AsrEvalError, match="needs transformers' long-form generate"):
        score_models(corpus, expand_specs([model], "ctranslate2", device="cpu", strategies="sequential",
                                          max_new_tokens=12), db, progress=False, n_boot=10)
    assert len(runs) == 4 and "-chunked-" in runs[0] and "-vad-" in runs[1] and "-chunked-" in runs[2]
    con = connect(db)
    got = con.execute("SELECT engine, strategy, strategy_params FROM eval_runs ORDER BY engine, strategy").fetchall()
    assert [g[:2] for g in got] == [("ctranslate2", "chunked"), ("ctranslate2", "vad"), ("transformers", "chunked"),
                                    ("transformers", "vad")]
    assert json.loads(got[1][2])["max_gap_s"] == 1.0
    hyp = dict(con.execute("SELECT utt_id, segments IS NOT NULL FROM hypotheses WHERE run_id = ?", [runs[0]]).fetchall())
    assert hyp == {"a_r0": True, "a_r1": False}  # a_r1 is 12 s: an utterance, transcribed as one
    assert con.execute("SELECT count(*) FROM utterance_scores").fetchall() == [(8,)]
    con.close()
