"""Flow `pipeline`: ingest → score the baseline models → fine-tune → score the checkpoint
(paired against the baselines) → check-training → long-form comparison → report. The run fails
(red) when check-training finds a critical divergence or a regression — after the report is
written.

The long-form step takes a few recordings of the generated long-form demo set
(``datasets_local/demo_zh/make_longform.py``), ingests them with ``long_form`` and scores the base
model with the three long-form strategies side by side (one run each, compared pairwise), then
streams the same recordings once (local-agreement, 1 s chunks: the ``stream`` flow) against the
offline vad run; the report shows them as a second corpus, with its Streaming section."""

from __future__ import annotations

import json
import time
from pathlib import Path

from prefect import flow

from asr_eval.progress import fmt_duration
from asr_eval.timing import StepTime, StepTimer
from flows._common import BUNDLED, DEFAULT_DB, DEMO_CORPUS, DEMO_LONG_CORPUS, DEMO_SOURCE, PROJECT, REPORTS, RUNS
from flows.check_training import TrainingRegression, check_training_flow
from flows.finetune import finetune_flow
from flows.ingest import ingest_flow
from flows.report import report_flow
from flows.score import score_flow
from flows.stream import stream_flow


DEMO_LONG_IDS = ["long_008"]  # 69 s, white noise, long pauses (long_006 adds a 39 s silent stretch; slower)
# The demo keeps its first 41 s (10 sentences, then 2 s of noise; the cut in a pause): two 30-s windows
# for the strategies, and a streaming step that costs ~1.5 s of compute per audio second on a 2-core
# AVX2 VM (docs/demo.md). A 33 s cut (a second window of 3 s of noise) was slower: sequential decoding
# retried that window at every fallback temperature (43 s instead of 8).
DEMO_LONG_UNTIL_S = 41.0
DEMO_LONG_EXCERPT_CORPUS = str(REPORTS / "corpora" / "demo_zh_long_excerpt")
DEMO_QUICK_CORPUS = str(REPORTS / "corpora" / "demo_zh_quick")

# `asr-eval demo` and the pipeline/default deployment: under 12 min with the install on a 2-core AVX2 VM
# (docs/demo.md has the profile behind these choices). 60 of the 150 test utterances (36 neural + 24
# robotic, noise strata in proportion within each voice — the robotic voice's short sentences need 24
# to pass the 200-reference-character minimum for a verdict), 12 full fine-tuning steps at 5e-5 (the
# encoder must adapt to the synthetic voices: freezing it, or its lower half, left CER far higher for
# the same time), evaluations at steps 0 and 12 on 12 of the carved dev utterances.
DEMO_QUICK: dict = {"demo_test_sample": 60, "corpus": DEMO_QUICK_CORPUS, "run_name": "demo-ft",
                    "max_steps": 12, "learning_rate": 5e-5, "warmup_steps": 2, "eval_steps": 12,
                    "max_eval_samples": 12}
# `asr-eval demo --full`: all 150 test utterances, 24 steps at 2e-5 (about 13 min instead of 9 on the same VM).
DEMO_FULL: dict = {"demo_test_sample": None, "corpus": DEMO_CORPUS, "run_name": "demo-ft-full",
                   "max_steps": 24, "learning_rate": 2e-5, "warmup_steps": 4, "eval_steps": 12}


@flow(name="long-form-demo", log_prints=True)
def long_form_flow(ids: list[str], corpus: str = DEMO_LONG_CORPUS, model: str = BUNDLED,
                   strategies: str = "sequential,chunked,vad", engine: str = "transformers", db: str = DEFAULT_DB,
                   device: str = "auto", stream_policy: str | None = "local-agreement",
                   stream_chunk_s: float = 1.0, stream_engine: str = "ctranslate2",
                   until_s: float | None = None) -> list[str]:
    """Generate (or reuse) the long-form demo set, ingest the recordings ``ids`` as long-form
    items and score ``model`` with each strategy (one run per strategy, compared pairwise); then,
    unless ``stream_policy`` is None, one streaming run at ``stream_chunk_s`` on ``stream_engine``
    (ctranslate2: the deployment engine, real-time capable at 1 s chunks on a 2-core CPU where
    transformers is not — bench/README.md) compared with the offline vad run of the same engine.
    ``until_s``: use only each recording's first ``until_s`` seconds (``make_longform.subset``)."""
    import sys

    sys.path.insert(0, str(PROJECT / "datasets_local" / "demo_zh"))
    from make_longform import subset

    manifest = subset(ids, Path(corpus).with_name(Path(corpus).name + "_src"), until_s=until_s)
    ingest_flow(source=str(manifest), out=corpus, long_form=True, workers=1)  # a few files: no process pool
    runs = score_flow(corpus=corpus, models=[model], db=db, device=device, engine=engine, strategy=strategies)
    if stream_policy:
        streamed = stream_flow(corpus=corpus, models=[model], policies=[stream_policy], chunk_sizes=[stream_chunk_s],
                               engine=stream_engine, db=db, device=device)
        runs += streamed["streams"]
    return runs


def demo_sample_source(source: str, n_test: int, out_dir: Path) -> str:
    """The bundled demo corpus with a fixed stratified sample of ``n_test`` test utterances."""
    if Path(source).resolve() != Path(DEMO_SOURCE).resolve():
        raise ValueError(f"demo_test_sample samples the bundled demo corpus ({DEMO_SOURCE}), not {source}; "
                         "leave it unset (None) for other sources")
    import sys

    sys.path.insert(0, str(PROJECT / "datasets_local" / "demo_zh"))
    from quick import quick_source

    path = str(quick_source(out_dir, n_test))
    print(f"demo: {n_test} of the test utterances (stratified by voice × noise, fixed seed) → {path}")
    return path


@flow(name="pipeline", log_prints=True)
def pipeline_flow(source: str = DEMO_SOURCE, corpus: str = DEMO_CORPUS, baseline_models: list[str] | None = None,
                  base_model: str = BUNDLED, run_name: str = "demo-ft", split_map: list[str] | None = None,
                  max_steps: int = 24, learning_rate: float = 2e-5, batch_size: int = 4, eval_steps: int = 12,
                  warmup_steps: int = 4, demo_test_sample: int | None = None,
                  max_eval_samples: int | None = 40, baseline_run: str | None = None, db: str = DEFAULT_DB,
                  report: str = str(REPORTS / "report.html"), device: str = "auto",
                  ray_address: str | None = None, skip_finetune: bool = False,
                  long_form_ids: list[str] | None = None, long_form_strategies: str = "sequential,chunked,vad",
                  long_form_engine: str = "transformers", long_form_corpus: str = DEMO_LONG_EXCERPT_CORPUS,
                  long_form_until_s: float | None = DEMO_LONG_UNTIL_S,
                  engine: str = "ctranslate2", zero_shot_engines: str = "ctranslate2",
                  started_at: float | None = None) -> dict:
    """End to end on SOURCE. Defaults: the bundled demo corpus and bundled:whisper-base, offline.
    ``long_form_ids``: recordings of the long-form demo set compared across ``long_form_strategies``
    with ``base_model`` (default: the first 41 s of long_008, ``long_form_until_s``; ``[]`` skips the
    step). ``zero_shot_engines``: the
    baselines are scored on each; with two (``ctranslate2,transformers``: same weights, same
    preprocessing) the report's engine-parity section shows what the engine alone changes (one more
    pass over the test split, so not by default); ``engine`` scores the fine-tuned checkpoint
    against the baselines (ctranslate2 by default, the deployment engine: same transcripts as
    transformers under the same preprocessing; 2.3× its speed on an AVX-512 CPU, on par on an
    AVX2 one — bench/README.md). ``started_at`` (epoch seconds, e.g. when the CLI started): the
    time before the flow ran is the first row of the per-step timing table printed at the end
    (also written as ``pipeline_timings.json`` beside the report). When steps follow the zero-shot
    score, the report is written right after it and rewritten at the end. ``demo_test_sample``: with the
    bundled demo SOURCE, ingest its train split and a fixed stratified sample of this many test
    utterances (``datasets_local/demo_zh/quick.py``; the demo's presets are ``DEMO_QUICK`` and
    ``DEMO_FULL``)."""
    baseline_models = baseline_models or [base_model]
    ids = DEMO_LONG_IDS if long_form_ids is None else long_form_ids
    timer = StepTimer()
    if started_at is not None:  # the caller's start (CLI start-up, Prefect's temporary server) as step 0
        timer.steps.append(StepTime("start-up (imports, Prefect server)", "", max(0.0, time.time() - started_at)))
    with timer.step("ingest"):
        name = None
        if demo_test_sample is not None:  # named after the corpus folder, not the sample's source folder
            source = demo_sample_source(source, demo_test_sample, Path(corpus).with_name(Path(corpus).name + "_src"))
            name = Path(corpus).name
        ingest_flow(source=source, out=corpus, split_map=split_map, name=name)
    with timer.step("zero-shot score"):
        zero_shot = score_flow(corpus=corpus, models=baseline_models, db=db, device=device, ray_address=ray_address,
                               engine=zero_shot_engines)
    result: dict = {"baseline_runs": zero_shot}
    if not skip_finetune or ids:  # more to come: show the baseline now, rewrite the report at the end
        with timer.step("first report (zero-shot)"):
            first = report_flow(db=db, out=report)
        print(f"report ready at {first} ({fmt_duration(timer.total())} after start); "
              + ("fine-tuning continues" if not skip_finetune else "the long-form step continues")
              + ", the report will be rewritten")
    alerts: list[dict] = []
    if not skip_finetune:
        out = str(RUNS / run_name)
        with timer.step("fine-tune"):
            ft = finetune_flow(corpus=corpus, base=base_model, out=out, db=db, max_steps=max_steps,
                               learning_rate=learning_rate, batch_size=batch_size, eval_steps=eval_steps,
                               warmup_steps=warmup_steps,
                               max_eval_samples=max_eval_samples, baseline_run=baseline_run, device=device)
        # Baseline parts already exist, so only the checkpoint is transcribed; scoring them
        # together gives the paired baseline-vs-checkpoint comparisons.
        with timer.step("score the checkpoint"):
            runs = score_flow(corpus=corpus, models=baseline_models + [ft["best_dir"]], db=db, device=device,
                              ray_address=ray_address, engine=engine)
        result.update(finetune=ft, runs=runs)
        with timer.step("check-training"):
            alerts = check_training_flow(run=out, baseline=baseline_run, db=db, zero_shot_cer=ft["zero_shot_cer"],
                                         fail_on_alert=False)
    if ids:
        with timer.step("long-form strategies"):
            result["long_form_runs"] = long_form_flow(ids, long_form_corpus, base_model, long_form_strategies,
                                                      long_form_engine, db, device, until_s=long_form_until_s)
    with timer.step("report"):
        result["report"] = report_flow(db=db, out=report)
    result["db"] = str(Path(db).resolve())
    result["timings"] = timer.records()
    Path(report).with_name("pipeline_timings.json").write_text(json.dumps(timer.records(), indent=1) + "\n")
    print(timer.table(f"time per step (total {fmt_duration(timer.total())})"))
    print(f"report: {result['report']}\nstore:  {result['db']}")
    blocking = [a for a in alerts if a["blocking"]]
    if blocking:
        raise TrainingRegression(f"check-training: {len(blocking)} blocking alert(s): "
                                 + "; ".join(a["message"] for a in blocking))
    return result
