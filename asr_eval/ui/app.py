"""The gradio app (``asr-eval ui``): three tabs wired to ``transcribe``, ``live`` and ``browse``.

Thin by design: every handler turns widget values into a library call and its result (or its
``AsrEvalError``) into widget values. User errors become a message in the page (a status line and
a toast), never a traceback, and the server keeps serving.
"""

from __future__ import annotations

import html
import itertools
import logging
import time
from pathlib import Path
from typing import Any

import gradio as gr

from asr_eval.errors import AsrEvalError
from asr_eval.ui import render
from asr_eval.ui.browse import SLICE_HEADERS, list_runs, run_view, slice_table
from asr_eval.ui.live import (
    CHUNK_SIZES,
    DEFAULT_CHUNK_S,
    DEFAULT_POLICY,
    LiveConfig,
    LiveSession,
    new_session,
    pcm,
)
from asr_eval.ui.models import (
    BUNDLED_MODEL,
    DEFAULT_MAX_ENGINES,
    EngineCache,
    model_choices,
)
from asr_eval.ui.transcribe import DEFAULT_STRATEGY, MAX_UPLOAD_S, Config, compare

log = logging.getLogger(__name__)
N_CONFIGS = 3
LATE_BLOCK_S = 1.5  # a microphone block this soon after "stop" belongs to the finished recording
STREAM_EVERY_S = 0.5
# Live on a CPU: local-agreement re-decodes the whole buffer every chunk. On the 2-core AVX2 VM (bench_stream.py,
# 2026-12-07) at 1 s chunks only ctranslate2 int8 kept up (0.97 s of compute per audio second; float32 1.27,
# OpenVINO float32 1.09), with a 6.9 s median latency; at 2 s chunks ctranslate2 float32 keeps up (0.70) with a
# lower latency (4.5 s) and transcripts identical to transformers (int8 changes 21/60 there): the default.
LIVE_CPU_COMPUTE, LIVE_CPU_CHUNK_S = "float32", 2.0
# system fonts only: the app must work offline (gradio's default theme fetches Google Fonts)
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "Noto Sans CJK SC", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])


def _s(x: Any) -> str:
    return "" if x is None else str(x)


def _say(msg: str) -> str:
    """A user error as a status line (and a toast)."""
    gr.Warning(html.escape(msg), duration=15)
    return f"**error:** {msg}"


def _options(device: str) -> dict[str, Any]:
    """Names offered by the pickers, from the registries (``asr-eval engines``)."""
    from asr_eval.engines import ENGINES, PREPROCESSING, RECIPES, engine_names
    from asr_eval.engines.base import load_plugins
    from asr_eval.longform import STRATEGIES, make_strategy
    from asr_eval.models.loading import pick_device
    from asr_eval.streaming import POLICIES, make_policy
    from asr_eval.text import DEFAULT_PROFILE, list_profiles

    load_plugins()
    make_strategy(DEFAULT_STRATEGY)  # registers the built-in strategies
    make_policy(DEFAULT_POLICY)  # … and policies
    kind = "cuda" if pick_device(device).startswith("cuda") else "cpu"
    return {"engines": engine_names(), "recipes": list(RECIPES), "preprocessing": list(PREPROCESSING),
            "strategies": sorted(STRATEGIES), "policies": sorted(POLICIES), "profiles": list_profiles(),
            "profile": DEFAULT_PROFILE, "kind": kind,
            "compute": {n: ["auto", *e.compute_types.get(kind, ())] for n, e in ENGINES.items()}}


def _config_widgets(opts: dict[str, Any], models: list[tuple[str, str]], prefix: str, engine: str,
                    extra: list[Any] | None = None, compute: str = "auto") -> list[Any]:
    """Model, engine, compute type, recipe, preprocessing pickers (compute types follow the engine);
    stacked in a column, or in two rows (with ``extra`` widgets built by the caller) when given ``extra``."""
    def make():
        model = gr.Dropdown(models, value=BUNDLED_MODEL, allow_custom_value=True, label="model", min_width=280,
                            info="from the store, or type a folder, ct2:FOLDER or a hub id", elem_id=f"{prefix}-model")
        eng = gr.Dropdown(opts["engines"], value=engine, label="engine", elem_id=f"{prefix}-engine")
        ct = gr.Dropdown(opts["compute"].get(engine, ["auto"]), value=compute, label="compute type",
                         elem_id=f"{prefix}-compute")
        return model, eng, ct

    def make2():
        rec = gr.Dropdown(opts["recipes"], value="greedy", label="decode recipe", elem_id=f"{prefix}-recipe")
        pre = gr.Radio(opts["preprocessing"], value="pad-audio", label="preprocessing", elem_id=f"{prefix}-pre")
        return rec, pre

    if extra is None:
        (model, eng, ct), (rec, pre) = make(), make2()
    else:
        with gr.Row():
            model, eng, ct = make()
        with gr.Row():
            rec, pre = make2()
            for w in extra:
                w.render()
    eng.input(lambda e: gr.update(choices=opts["compute"].get(e, ["auto"]), value="auto"), eng, ct)
    return [model, eng, ct, rec, pre]


def build_app(db: str | Path, device: str = "auto", max_engines: int = DEFAULT_MAX_ENGINES,
              max_audio_s: float = MAX_UPLOAD_S, cache: EngineCache | None = None) -> gr.Blocks:
    """The app over store ``db`` (read-only, opened per request). ``cache`` holds the loaded
    engines (a new bounded one by default)."""
    db = Path(db)
    cache = cache or EngineCache(max_engines)
    opts = _options(device)
    choices, _ = model_choices(db)
    models = [(c.label, c.value) for c in choices]

    with gr.Blocks(title="asr-eval", analytics_enabled=False) as demo:
        demo.asr_eval_cache = cache  # for tests and the CLI
        gr.Markdown(f"## asr-eval — Mandarin Whisper, side by side\nStore: `{db}` (read-only) · device `{device}`")
        with gr.Tabs():
            # ───────────── 1. transcribe & compare ─────────────
            with gr.Tab("Transcribe & compare", id="transcribe", elem_id="tab-transcribe"):
                with gr.Row():
                    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="tr-audio",
                                     label=f"recording: upload or record (over 30 s: long-form, up to {max_audio_s:.0f} s)")
                    with gr.Column():
                        reference = gr.Textbox(label="reference text (optional: CER and diff)", lines=2,
                                               elem_id="tr-ref")
                        with gr.Row():
                            normalizer = gr.Dropdown(opts["profiles"], value=opts["profile"],
                                                     label="normalizer profile", elem_id="tr-norm")
                            strategy = gr.Dropdown(opts["strategies"], value=DEFAULT_STRATEGY, elem_id="tr-strategy",
                                                   label="long-form strategy (recordings over 30 s)")
                        run = gr.Button("Transcribe", variant="primary", elem_id="tr-run")
                tr_status = gr.Markdown(elem_id="tr-status")
                cfg_inputs, cfg_outputs, model_pickers = [], [], []
                with gr.Row(equal_height=False):
                    for k in range(N_CONFIGS):
                        with gr.Column(variant="panel"):
                            on = gr.Checkbox(value=k == 0, label=f"configuration {k + 1}", elem_id=f"cfg{k + 1}-on")
                            w = _config_widgets(opts, models, f"cfg{k + 1}", "transformers" if k == 1 else "ctranslate2")
                            info = gr.Markdown(elem_id=f"cfg{k + 1}-info")
                            text = gr.Textbox(label="transcript", lines=3, interactive=False, elem_id=f"cfg{k + 1}-text")
                            diff = gr.HTML(elem_id=f"cfg{k + 1}-diff")
                            cfg_inputs += [on, *w]
                            cfg_outputs += [info, text, diff]
                            model_pickers.append(w[0])

            requests = itertools.count(1)

            def on_transcribe(path, ref, norm, strat, *values, progress=gr.Progress()):  # noqa: B008 (gradio's idiom)
                n = next(requests)
                rows = [values[i:i + 6] for i in range(0, len(values), 6)]
                enabled = [(k, Config(*map(_s, r[1:]))) for k, r in enumerate(rows) if r[0]]
                empty = ["", "", ""] * N_CONFIGS
                try:
                    results = compare(cache, [c for _, c in enabled], path, strat, ref, norm, device, max_audio_s,
                                      progress=lambda f, d: progress(f, desc=d))
                except AsrEvalError as exc:
                    return [f"#{n} · {_say(str(exc))}", *empty]
                out = ["", *["*(not enabled)*", "", ""] * N_CONFIGS]
                for (k, _), res in zip(enabled, results, strict=True):
                    if res.error:
                        gr.Warning(html.escape(f"configuration {k + 1}: {res.error}"), duration=15)
                    out[1 + 3 * k:4 + 3 * k] = [res.summary(), res.text,
                                                render.diff_html(res.alignment) if res.alignment else ""]
                ok = sum(r.error is None for r in results)
                out[0] = f"#{n} · {ok} of {len(results)} configuration(s) transcribed {results[0].audio_s:.1f} s of audio."
                return out

            run.click(on_transcribe, [audio, reference, normalizer, strategy, *cfg_inputs], [tr_status, *cfg_outputs],
                      concurrency_limit=1)

            # ───────────── 2. live ─────────────
            with gr.Tab("Live", id="live", elem_id="tab-live"):
                gr.Markdown("Speak: the committed text (never retracted) grows as you talk, the tentative tail "
                            "(grey) may still change. Settings apply to the next recording.")
                policy = gr.Dropdown(opts["policies"], value=DEFAULT_POLICY, label="streaming policy",
                                     elem_id="live-policy", render=False)
                chunk = gr.Dropdown(list(CHUNK_SIZES), label="chunk size (s)",
                                    value=LIVE_CPU_CHUNK_S if opts["kind"] == "cpu" else DEFAULT_CHUNK_S,
                                    elem_id="live-chunk", render=False)
                with gr.Group():
                    lw = _config_widgets(opts, models, "live", "ctranslate2", extra=[policy, chunk],
                                         compute=LIVE_CPU_COMPUTE if opts["kind"] == "cpu" else "auto")
                model_pickers.append(lw[0])
                mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="microphone",
                               elem_id="live-mic",  # no live waveform: drawing it costs the browser a core
                               waveform_options=gr.WaveformOptions(show_recording_waveform=False))
                live_text = gr.HTML(render.live_html("", ""), elem_id="live-text")
                live_stats = gr.Markdown(elem_id="live-stats")
                session = gr.State(None, delete_callback=lambda s: s.close() if isinstance(s, LiveSession) else None)

            def on_block(data, sess, *settings):
                if isinstance(sess, LiveSession) and sess.finished:
                    if time.monotonic() - sess.finished_at < LATE_BLOCK_S:  # the last block of a stopped recording
                        v = sess.view()
                        return sess, render.live_html(v.committed, v.tentative), v.stats()
                    sess = None
                if sess is None:
                    cfg = LiveConfig(*map(_s, settings[:5]), policy=_s(settings[5]), chunk_s=float(settings[6] or DEFAULT_CHUNK_S))
                    sess = new_session(cache, cfg, device)
                if (block := pcm(data)) is not None:
                    sess.push(*block)
                v = sess.view()
                return sess, render.live_html(v.committed, v.tentative), v.stats()

            def on_stop(sess):
                if not isinstance(sess, LiveSession):
                    return render.live_html("", ""), "*nothing recorded*"
                v = sess.finish(settle_s=0.3)
                if v.error:
                    gr.Warning(html.escape(v.error), duration=15)
                return render.live_html(v.committed, v.tentative), v.stats()

            live_settings = [*lw, policy, chunk]
            mic.stream(on_block, [mic, session, *live_settings], [session, live_text, live_stats],
                       stream_every=STREAM_EVERY_S, time_limit=3600, concurrency_limit=None, show_progress="hidden")
            mic.stop_recording(on_stop, [session], [live_text, live_stats], show_progress="minimal")

            # ───────────── 3. browse a run ─────────────
            with gr.Tab("Browse a run", id="browse", elem_id="tab-browse"):
                with gr.Row():
                    run_pick = gr.Dropdown([], label="stored run", scale=4, elem_id="br-run")
                    norm_pick = gr.Dropdown([], label="normalizer (default: the run's)", elem_id="br-norm")
                    worst_n = gr.Slider(1, 50, value=10, step=1, label="worst utterances", elem_id="br-n")
                    refresh = gr.Button("Refresh", elem_id="br-refresh")
                br_status = gr.Markdown(elem_id="br-status")
                slices = gr.Dataframe(headers=SLICE_HEADERS, interactive=False, wrap=True, elem_id="br-slices",
                                      label="per-slice metrics (stored; † too little evidence for an interval)")
                worst = gr.HTML(elem_id="br-worst")

            def show(run_id, norm, n):
                empty = [[None] * len(SLICE_HEADERS)]
                if not run_id:
                    return "*no run chosen*", gr.update(), empty, ""
                try:
                    v = run_view(db, run_id, norm or None, int(n))
                except AsrEvalError as exc:
                    return _say(str(exc)), gr.update(), empty, ""
                head = f"**{v.label}** · `{v.run_id}` · normalizer `{v.normalizer}`"
                notes = "".join(f"\n\n*note:* {x}" for x in v.notes)
                table = slice_table(v.slices) or empty
                body = render.worst_html(v.worst, v.audio) if v.worst else render.message_html("no worst utterances")
                return head + notes, gr.update(choices=list(v.normalizers), value=v.normalizer), table, body

            def reload(current):
                """Models and runs as the store holds them now (on page load and on Refresh)."""
                found, note = model_choices(db)
                pairs = [(c.label, c.value) for c in found]
                try:
                    runs = [r.as_pair() for r in list_runs(db)]
                    status = "" if runs else "*the store holds no runs yet: score one with `asr-eval score`*"
                except AsrEvalError as exc:
                    runs, status = [], f"**store not readable:** {exc}"
                ids = [r for _, r in runs]
                pick = current if current in ids else (ids[0] if ids else None)
                if note and not status:
                    status = f"*{note}*"
                return [*(gr.update(choices=pairs) for _ in model_pickers), gr.update(choices=runs, value=pick),
                        status, pick]

            picked = gr.State(None)
            reload_out = [*model_pickers, run_pick, br_status, picked]
            show_out = [br_status, norm_pick, slices, worst]
            refresh.click(reload, [run_pick], reload_out).then(show, [picked, norm_pick, worst_n], show_out)
            demo.load(reload, [run_pick], reload_out).then(show, [picked, norm_pick, worst_n], show_out)
            run_pick.input(lambda r, n: show(r, None, n), [run_pick, worst_n], show_out)
            norm_pick.input(show, [run_pick, norm_pick, worst_n], show_out)
            worst_n.release(show, [run_pick, norm_pick, worst_n], show_out)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
           prevent_thread_lock: bool = False, quiet: bool = False, max_file_size: str = "200mb"):
    """Serve ``demo`` on ``host:port`` (never a public share link unless ``share``)."""
    return demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=prevent_thread_lock,
                       quiet=quiet, show_error=False, max_file_size=max_file_size, ssr_mode=False, theme=THEME,
                       css=render.css(), footer_links=[], inbrowser=False)
