"""The web app's library layer (no browser, no real model): transcripts through the scorer's own path,
CER and diff from the metrics module, the bounded engine cache, user errors as messages, live
streaming glue, and read-only store queries."""

from __future__ import annotations

import csv
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from conftest import DEMO_CORPUS, write_audio

from asr_eval.audio import decode_flac
from asr_eval.errors import AsrEvalError
from asr_eval.ui import render
from asr_eval.ui.models import BUNDLED_MODEL, EngineCache, model_choices
from asr_eval.ui.transcribe import (
    Config,
    compare,
    load_clip,
    score_text,
    transcribe_clip,
)

SR = 16_000


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random Whisper with 32 decoder positions (random weights rarely stop early, so every
    decode runs to its cap: 8 tokens with the recipe below, 28 for long-form pieces)."""
    from asr_eval.models.tiny import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny"), max_target_positions=32)


@pytest.fixture(scope="module", autouse=True)
def short_recipes():
    """Recipes as a plugin registers them: greedy and beam5 capped at 8 new tokens (the tiny model's limit)."""
    from asr_eval.engines.recipes import RECIPES, register_recipe

    for name in ("greedy", "beam5"):
        register_recipe(RECIPES[name].with_options(name=f"{name}-8", max_new_tokens=8))
    yield
    for name in ("greedy-8", "beam5-8"):
        RECIPES.pop(name, None)


@pytest.fixture(scope="module")
def cache():
    return EngineCache(3)


def _demo_wav(path, n=1):
    """``n`` demo test utterances (clean, neural voice) as one 16 kHz WAV; returns (path, texts)."""
    with open(DEMO_CORPUS / "metadata.csv", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test" and r["noise"] == "clean"][:n]
    audio = [sf.read(DEMO_CORPUS / r["file_name"], dtype="float32")[0] for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.concatenate(audio), SR, subtype="PCM_16")
    return path, [r["text"] for r in rows]


# ───────────────────────────── transcribe ─────────────────────────────


def test_clip_is_exactly_what_ingest_stores(tmp_path):
    from asr_eval.corpus import open_source
    from asr_eval.corpus_handle import open_corpus
    from asr_eval.shards import IngestOptions, ingest

    wav, texts = _demo_wav(tmp_path / "src" / "a.wav")
    (tmp_path / "src" / "metadata.csv").write_text(f"file_name,text,split\na.wav,{texts[0]},test\n", encoding="utf-8")
    ingest(open_source(str(tmp_path / "src")), tmp_path / "corpus", IngestOptions(workers=1), progress=False)
    corpus = open_corpus(tmp_path / "corpus")
    (row,) = list(corpus.iter_rows(corpus.shards[0], None, columns=["audio", "duration_s"]))
    clip = load_clip(wav)
    assert clip.flac == row["audio"] and clip.duration_s == row["duration_s"] and not clip.long


@pytest.mark.parametrize("recipe,pre", [("greedy-8", "pad-audio"), ("greedy-8", "pad-features"), ("beam5-8", "pad-audio")])
def test_page_transcript_equals_the_engine_through_the_same_recipe_and_preprocessing(tmp_path, tiny_dir, cache,
                                                                                     recipe, pre):
    from asr_eval.engines import create_engine, get_recipe

    clip = load_clip(_demo_wav(tmp_path / "a.wav")[0])
    res = transcribe_clip(cache, Config(str(tiny_dir), "transformers", "auto", recipe, pre), clip, device="cpu")
    engine = create_engine("transformers", str(tiny_dir), device="cpu")
    want = engine.transcribe([decode_flac(clip.flac)], get_recipe(recipe), pre).texts[0]
    assert res.text == want and res.error is None and res.strategy == "short"
    assert res.proc_s > 0 and res.rtfx == pytest.approx(clip.duration_s / res.proc_s)


def test_page_transcript_equals_the_stored_hypothesis_of_asr_eval_score(tmp_path, tiny_dir, cache):
    """The same file through `asr-eval score` (ingest → shards → score) and through the page."""
    from asr_eval.corpus import open_source
    from asr_eval.scoring import expand_specs, score_models
    from asr_eval.shards import IngestOptions, ingest
    from asr_eval.store import connect

    wav, texts = _demo_wav(tmp_path / "src" / "a.wav", 2)
    (tmp_path / "src" / "metadata.csv").write_text(f"file_name,text,split\na.wav,{''.join(texts)},test\n",
                                                   encoding="utf-8")
    ingest(open_source(str(tmp_path / "src")), tmp_path / "corpus", IngestOptions(workers=1), progress=False)
    spec = expand_specs([str(tiny_dir)], "transformers", device="cpu", preprocessing="pad-features", recipes="greedy-8")
    (run,) = score_models(tmp_path / "corpus", spec, tmp_path / "s.duckdb", progress=False, n_boot=10)
    con = connect(tmp_path / "s.duckdb", read_only=True)
    stored = con.execute("SELECT hyp_raw FROM hypotheses WHERE run_id = ?", [run]).fetchone()[0]
    con.close()
    (res,) = compare(cache, [Config(str(tiny_dir), "transformers", "auto", "greedy-8", "pad-features")], str(wav),
                     device="cpu")
    assert res.text == stored


def test_long_recording_goes_through_the_chosen_strategy_like_score(tmp_path, tiny_dir, cache):
    from asr_eval.engines import get_recipe
    from asr_eval.longform import make_strategy, short_transcriber

    x = np.concatenate([sf.read(_demo_wav(tmp_path / "a.wav", 8)[0], dtype="float32")[0]] * 2)
    sf.write(tmp_path / "long.wav", x, SR, subtype="PCM_16")
    clip = load_clip(tmp_path / "long.wav")
    assert clip.long and clip.duration_s > 30
    res = transcribe_clip(cache, Config(str(tiny_dir), "transformers", recipe="greedy-8"), clip, "chunked", device="cpu")
    engine, _ = cache.get(str(tiny_dir), "transformers", device="cpu")
    st, recipe = make_strategy("chunked"), get_recipe("greedy-8")
    short = short_transcriber(engine, recipe, "pad-audio", engine.suggest_batch_size(recipe), st.piece_max_new_tokens)
    assert res.strategy == "chunked" and res.text == st.transcribe(engine, decode_flac(clip.flac), recipe, short).text


def test_cer_and_diff_are_the_metrics_modules():
    from asr_eval.metrics import score_pair

    ref, hyp = "今天天气很好。", "今天天汽很好啊"
    s = score_text(ref, hyp, "zh-v1")
    want = score_pair(ref, hyp, "zh-v1")
    assert (s.cer, s.alignment) == (want.cer, want.alignment) and (s.cer_s, s.cer_i) == (1, 1)
    page = render.diff_html(want.alignment)
    assert page.count('class="tok S" title') == 1 and page.count('class="tok I" title') == 1 and page.count('class="tok ="') == 5
    assert '<span class="r">气</span>' in page and '<span class="h">汽</span>' in page
    assert render.diff_html([("S", "<", "&")]).count("&lt;") == 1  # escaped
    # the report's own stylesheet rules, scoped to the app's container
    assert ".asr-report .tok.S { background: #fef3c7; }" in render.css()


def test_reference_gives_cer_in_the_result(tmp_path, tiny_dir, cache):
    from asr_eval.metrics import score_pair

    wav, texts = _demo_wav(tmp_path / "a.wav")
    (res,) = compare(cache, [Config(str(tiny_dir), "transformers", recipe="greedy-8")], str(wav), reference=texts[0],
                     normalizer="zh-v1", device="cpu")
    want = score_pair(texts[0], res.text, "zh-v1")
    assert res.cer == want.cer and res.alignment == want.alignment and f"CER {100 * want.cer:.2f} %" in res.summary()


# ───────────────────────────── the engine cache ─────────────────────────────


def test_engine_cache_reuses_and_evicts_least_recently_used(tiny_dir, tmp_path):
    made = []

    def fake(engine, model, device, compute_type):
        made.append((engine, model, compute_type))
        return object()

    c = EngineCache(2, create=fake)
    a, _ = c.get(str(tiny_dir), "transformers", "auto", "cpu")
    a2, load_a2 = c.get(str(tiny_dir), "transformers", "float32", "cpu")  # auto = float32 on a CPU: one engine
    assert a is a2 and load_a2 == 0.0 and c.loads == 1 and c.hits == 1
    (tmp_path / "link").symlink_to(tiny_dir)
    assert c.get(str(tmp_path / "link"), "transformers", "auto", "cpu")[0] is a  # the same folder, canonical
    b, _ = c.get(str(tiny_dir), "ctranslate2", "int8", "cpu")
    c.get(str(tiny_dir), "transformers", "auto", "cpu")  # a is now the most recently used
    c.get(str(tiny_dir), "ctranslate2", "float32", "cpu")  # evicts b
    assert c.loads == 3 and c.evicted == [(str(tiny_dir.resolve()), "ctranslate2", "int8", "cpu")]
    assert len(c.keys()) == 2 and c.get(str(tiny_dir), "transformers", "auto", "cpu")[0] is a
    assert c.get(str(tiny_dir), "ctranslate2", "int8", "cpu")[0] is not b and c.loads == 4  # reloaded
    with pytest.raises(AsrEvalError, match="at least one"):
        EngineCache(0)


def test_a_second_request_does_not_reload_the_model(tmp_path, tiny_dir):
    c = EngineCache(3)
    clip = load_clip(write_audio(tmp_path / "t.wav", 1.0))
    first = transcribe_clip(c, Config(str(tiny_dir), "transformers", recipe="greedy-8"), clip, device="cpu")
    second = transcribe_clip(c, Config(str(tiny_dir), "transformers", recipe="beam5-8"), clip, device="cpu")
    assert first.load_s > 0 and second.load_s == 0.0 and c.loads == 1 and "model cached" in second.summary()


# ───────────────────────────── user errors ─────────────────────────────


def test_bad_audio_is_a_message_naming_the_problem(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(range(256)) * 4)
    with pytest.raises(AsrEvalError, match="bad.wav is not audio that can be decoded|bad.wav is cut short"):
        load_clip(tmp_path / "bad.wav")
    with pytest.raises(AsrEvalError, match="not audio that can be decoded"):
        load_clip(b"\x00\x01 not audio at all" * 50)
    good = write_audio(tmp_path / "t.wav", 2.0).read_bytes()
    (tmp_path / "cut.wav").write_bytes(good[: len(good) // 2])
    with pytest.raises(AsrEvalError, match="cut short or corrupt"):
        load_clip(tmp_path / "cut.wav")
    sf.write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    with pytest.raises(AsrEvalError, match="silent.wav is silent"):
        load_clip(tmp_path / "silent.wav")
    with pytest.raises(AsrEvalError, match="shorter than 0.1 s"):
        load_clip(write_audio(tmp_path / "short.wav", 0.05))
    with pytest.raises(AsrEvalError, match="longer than this app's cap of 35 s"):
        load_clip(write_audio(tmp_path / "long.wav", 40.0), max_s=35)
    with pytest.raises(AsrEvalError, match="no audio"):
        load_clip(None)


def test_a_bad_configuration_is_its_own_error_and_the_others_still_run(tmp_path, tiny_dir, cache):
    wav = write_audio(tmp_path / "t.wav", 1.0)
    res = compare(cache, [Config("no/such/model/anywhere"), Config(str(tiny_dir), "transformers", recipe="greedy-8"),
                          Config(str(tiny_dir), "nosuchengine"), Config(str(tiny_dir), recipe="nosuchrecipe"),
                          Config("")], wav, device="cpu")
    assert "no such folder" in res[0].error and res[1].error is None and res[1].text == res[1].text.strip()
    assert "unknown engine 'nosuchengine'" in res[2].error and "unknown decode recipe" in res[3].error
    assert "no model chosen" in res[4].error and res[0].summary().startswith("**error:**")
    with pytest.raises(AsrEvalError, match="unknown normalizer profile"):
        compare(cache, [Config(str(tiny_dir), "transformers")], wav, reference="你好", normalizer="nope")
    with pytest.raises(AsrEvalError, match="no configuration enabled"):
        compare(cache, [], wav)
    with pytest.raises(AsrEvalError, match="unknown long-form strategy"):
        Config(str(tiny_dir), "transformers").spec("nosuchstrategy")


# ───────────────────────────── live ─────────────────────────────


def test_live_session_feeds_the_live_stream_without_dropping_audio():
    from test_streaming_policies import Script, clock_audio, unguarded

    from asr_eval.streaming import simulate
    from asr_eval.streaming.live import LiveStream
    from asr_eval.ui.live import LiveSession

    hyps = ["今天", "今天天气", "今天天汽很", "今天天气很好", "今天天气很好啊", "今天天气很好啊"]
    audio = clock_audio(5.5)
    ref = simulate(unguarded("local-agreement"), audio, Script(list(hyps)), 1.0)
    script = Script(list(hyps))

    def slow(prompt):  # a decoder slower than the blocks arrive: the handler must not wait for it
        run = script(prompt)
        return lambda audios: (time.sleep(0.02), run(audios))[1]

    sess = LiveSession(lambda: LiveStream(unguarded("local-agreement"), slow, 1.0), "test")
    t0 = time.perf_counter()
    for i in range(0, len(audio), 800):
        sess.push(audio[i:i + 800], SR)
    assert time.perf_counter() - t0 < 0.5  # pushing never decodes
    v = sess.finish()
    assert v.done and v.error is None and v.committed == ref.text and v.tentative == ""
    assert v.audio_s == pytest.approx(5.5) and v.received_s == pytest.approx(5.5) and v.backlog_s == 0
    assert [(e.text, e.tentative) for e in sess.stream.state.emissions] == [(e.text, e.tentative) for e in ref.emissions]
    sess.push(audio[:100], SR)  # after the end: ignored
    assert sess.view().received_s == pytest.approx(5.5) and "finished" in v.stats()


def test_live_session_on_a_model_equals_the_live_stream_it_wraps(tiny_dir, cache):
    from asr_eval.engines import get_recipe
    from asr_eval.streaming import engine_transcribers, make_policy
    from asr_eval.streaming.live import LiveStream
    from asr_eval.ui.live import LiveConfig, new_session

    t = np.arange(int(48_000 * 2.5)) / 48_000
    pcm = (0.3 * np.sin(2 * np.pi * 300 * t) * 32767).astype(np.int16)  # browser-like: int16 at 48 kHz
    cfg = LiveConfig(str(tiny_dir), "transformers", recipe="greedy-8", policy="hold-k", chunk_s=1.0)
    sess = new_session(cache, cfg, "cpu")
    engine, _ = cache.get(str(tiny_dir), "transformers", device="cpu")
    direct = LiveStream(make_policy("hold-k"), engine_transcribers(engine, get_recipe("greedy-8"), "pad-audio"), 1.0)
    for i in range(0, len(pcm), 24_000):
        sess.push(pcm[i:i + 24_000], 48_000)
        direct.feed(pcm[i:i + 24_000], 48_000)
    v = sess.finish()
    direct.finish()
    assert v.error is None and v.committed == direct.state.committed and v.audio_s == pytest.approx(2.5, abs=0.01)


def test_live_session_reports_a_bad_configuration(cache):
    from asr_eval.ui.live import LiveConfig, new_session

    sess = new_session(cache, LiveConfig("no/such/model/x"), "cpu")
    sess.push(np.zeros(1600, np.int16), 16_000)
    v = sess.finish(timeout=30)
    assert "no such folder" in v.error and v.stats().startswith("**error:**")
    v = new_session(cache, LiveConfig(BUNDLED_MODEL, policy="nope"), "cpu").finish(timeout=30)
    assert "unknown streaming policy 'nope'" in v.error


# ───────────────────────────── browse ─────────────────────────────


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from report_fixtures import build_scored_store

    return build_scored_store(tmp_path_factory.mktemp("store"), n_utts=12)


def test_runs_are_listed_with_their_labels(store):
    from asr_eval.store import connect
    from asr_eval.store.labels import run_labels
    from asr_eval.ui.browse import list_runs

    runs = list_runs(store.db)
    con = connect(store.db, read_only=True)
    labels = run_labels(con, list(store.run_ids.values()))
    con.close()
    assert sorted(r.run_id for r in runs) == sorted(store.run_ids.values())
    for r in runs:
        assert r.label.startswith(labels[r.run_id] + " — ") and "12 scored" in r.label and r.run_id in r.label


def test_run_view_is_the_stored_slices_and_the_reports_worst_utterances(store):
    from report_fixtures import XSS_SCRIPT

    from asr_eval.report import queries
    from asr_eval.report.select import select
    from asr_eval.slices import stored_slice_metrics
    from asr_eval.store import connect
    from asr_eval.ui.browse import run_view, slice_table

    run = store.run_ids["whisper-a"]
    v = run_view(store.db, run, worst_n=5)
    con = connect(store.db, read_only=True)
    want_slices = stored_slice_metrics(con, [run], "zh-v1")
    want_worst = queries.worst_utterances(con, select(con, runs=[run]), 5)[run]
    con.close()
    assert v.normalizer == "zh-v1" and v.slices == want_slices and v.slices[0]["slice_attr"] == "_all"
    assert [x["u"].utt_id for x in v.worst["utts"]] == [u.utt_id for u in want_worst]
    assert len(v.audio.uris) == 5 and not v.audio.missing  # audio read from the corpus shards
    page = render.worst_html(v.worst, v.audio)
    assert page.count("<audio controls") == 5 and page.count('src="data:audio/flac;base64,') == 5
    if any(x["u"].hyp_raw == XSS_SCRIPT for x in v.worst["utts"]):
        assert XSS_SCRIPT not in page and "&lt;script&gt;" in page
    rows = slice_table(v.slices)
    # 12 utterances are below the minimum evidence: the CER alone, marked †, no interval
    assert rows[0][:3] == ["_all", "all", 12] and rows[0][4] == f"{100 * v.slices[0]['cer']:.2f} †"
    assert rows[0][5] == "—" and rows[0][6].endswith(" †") and rows[0][-1] == "no †"


def test_store_problems_are_messages(store, tmp_path):
    import duckdb

    from asr_eval.store import connect
    from asr_eval.ui.browse import list_runs, run_view

    with pytest.raises(AsrEvalError, match="no store at"):
        list_runs(tmp_path / "missing.duckdb")
    duckdb.connect(str(tmp_path / "other.duckdb")).close()
    with pytest.raises(AsrEvalError, match="not an asr-eval store"):
        list_runs(tmp_path / "other.duckdb")
    with pytest.raises(AsrEvalError, match="unknown run 'nope'"):
        run_view(store.db, "nope")
    with pytest.raises(AsrEvalError, match="no run chosen"):
        run_view(store.db, "")
    # a writer in another process holds the file: DuckDB refuses readers too
    code = ("import sys, time; from asr_eval.store import connect; c = connect(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(store.db)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(AsrEvalError, match="cannot open store"):
            list_runs(store.db)
        choices, note = model_choices(store.db)
        assert [c.value for c in choices] == [BUNDLED_MODEL] and "cannot open store" in note
    finally:
        p.kill()
        p.wait()
    # a writer in this process: DuckDB's error is a message too
    con = connect(store.db)
    try:
        with pytest.raises(AsrEvalError, match="cannot open store"):
            list_runs(store.db)
    finally:
        con.close()
    assert len(list_runs(store.db)) == 2  # and readable again once the writer has gone


def test_model_choices_list_fine_tunes_with_their_lineage(tmp_path):
    from asr_eval.store import connect
    from asr_eval.store.load import register_model

    con = connect(tmp_path / "s.duckdb")
    register_model(con, {"model_id": "bundled:whisper-base@abc", "name": BUNDLED_MODEL, "source": "bundled"})
    register_model(con, {"model_id": "/runs/demo-ft/best@def", "name": "/runs/demo-ft/best", "source": "local",
                         "base_model_id": "bundled:whisper-base@abc", "training_run_id": "demo-ft", "step": 12})
    register_model(con, {"model_id": "imp@1", "name": "other-system", "source": "import"})
    con.close()
    choices, note = model_choices(tmp_path / "s.duckdb")
    assert note is None and [c.value for c in choices] == [BUNDLED_MODEL, "/runs/demo-ft/best"]
    assert choices[1].label == "demo-ft/best — fine-tuned from bundled:whisper-base, run demo-ft, step 12"
    choices, note = model_choices(tmp_path / "missing.duckdb")
    assert [c.value for c in choices] == [BUNDLED_MODEL] and "no store at" in note


# ───────────────────────────── the command ─────────────────────────────


def test_ui_command_needs_gradio_and_says_how_to_install_it(monkeypatch):
    import importlib.util

    from asr_eval.cli import ui

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    with pytest.raises(AsrEvalError, match=r"pip install -e '\.\[ui\]'.*make ui"):
        ui.require_gradio()


def test_ui_command_help_and_app_build(tmp_path):
    pytest.importorskip("gradio")
    out = subprocess.run([sys.executable, "-m", "asr_eval", "ui", "--help"], capture_output=True, text=True, check=False,
                         timeout=120)
    assert out.returncode == 0 and "--port" in out.stdout and "--db" in out.stdout and "--host" in out.stdout
    from asr_eval.ui.app import build_app

    demo = build_app(tmp_path / "missing.duckdb", device="cpu")  # no store yet: the app still builds
    assert demo.asr_eval_cache.max_engines == 3
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"tr-audio", "tr-run", "cfg3-model", "live-mic", "live-text", "br-run", "br-slices", "br-worst"} <= ids
