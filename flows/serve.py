"""Serve every deployment from this process: `python -m flows.serve` (what `make serve` runs).

Deployments (name = FLOW/DEPLOYMENT):
  ingest/default, score/default, finetune/default, check-training/default, report/default,
  pipeline/default — the demo (asr-eval demo): the bundled demo corpus and bundled:whisper-base, offline;
  pipeline/demo-full — the full-size demo (asr-eval demo --full);
  stream/default — streaming (asr-eval stream): local-agreement at 1 s, bundled:whisper-base on
  ctranslate2, against its offline vad run, on the long-form demo corpus the demo ingests;
  gate/default — the ship gate of the demo's fine-tuned checkpoint (runs/demo-ft/best) against
  bundled:whisper-base, margin 0.5 points CER (pass other runs — full or short ids, prefixes — or
  model names at run time);
  suite/default — the standard Mandarin test sets found under $ASR_EVAL_SUITE_ROOT (default
  /data/zh-test-sets), bundled:whisper-base (pass --param models='["openai/whisper-large-v3"]');
  score/large-v2-vs-v3 and pipeline/commonvoice-large — example parameters for
  openai/whisper-large-v2 and -v3 on your own Common Voice folder (edit the paths, or pass
  --param corpus=… at run time).
"""

from __future__ import annotations

import os

from prefect import serve

from flows._common import BUNDLED, REPORTS, RUNS
from flows.check_training import check_training_flow
from flows.finetune import finetune_flow
from flows.gate import gate_flow
from flows.ingest import ingest_flow
from flows.pipeline import DEMO_FULL, DEMO_QUICK, pipeline_flow
from flows.report import report_flow
from flows.score import score_flow
from flows.stream import stream_flow
from flows.suite import SUITE_ROOT, suite_flow

CV_FOLDER = os.environ.get("ASR_EVAL_CV_FOLDER", "/data/cv-corpus-zh-CN")
LARGE = ["openai/whisper-large-v2", "openai/whisper-large-v3"]


def deployments() -> list:
    return [
        ingest_flow.to_deployment(name="default"),
        score_flow.to_deployment(name="default"),
        score_flow.to_deployment(
            name="large-v2-vs-v3",
            parameters={"corpus": str(REPORTS / "corpora" / "cv_zh"), "models": LARGE, "split": "test",
                        "slices": ["accents", "gender", "age", "duration_bucket"]},
            description="large-v2 vs large-v3 on an ingested Common Voice zh-CN test split",
        ),
        finetune_flow.to_deployment(name="default"),
        check_training_flow.to_deployment(name="default"),
        report_flow.to_deployment(name="default"),
        stream_flow.to_deployment(name="default",
                                  description="Streaming: local-agreement at 1 s vs offline (latency, flicker, ΔCER)"),
        suite_flow.to_deployment(
            name="default", parameters={"root": SUITE_ROOT, "models": [BUNDLED]},
            description="Standard Mandarin test sets found under a folder × models: one table, published results beside"),
        gate_flow.to_deployment(
            name="default",
            parameters={"baseline": BUNDLED, "candidate": str(RUNS / "demo-ft" / "best"), "margin": 0.5},
            description="Ship gate: the demo fine-tune against bundled:whisper-base (PASS / FAIL / INCONCLUSIVE)",
        ),
        pipeline_flow.to_deployment(name="default", parameters=DEMO_QUICK,
                                    description="The demo (asr-eval demo): a report in minutes on 2 CPU cores"),
        pipeline_flow.to_deployment(name="demo-full", parameters=DEMO_FULL,
                                    description="The full-size demo (asr-eval demo --full): all 150 test utterances"),
        pipeline_flow.to_deployment(
            name="commonvoice-large",
            parameters={"source": CV_FOLDER, "corpus": str(REPORTS / "corpora" / "cv_zh"),
                        "baseline_models": LARGE, "base_model": "openai/whisper-large-v3",
                        "split_map": ["train+dev=train"], "max_steps": 2000, "batch_size": 16},
            description="Common Voice zh-CN: score large-v2/v3, fine-tune large-v3, compare (needs a GPU)",
        ),
    ]


if __name__ == "__main__":
    serve(*deployments())
