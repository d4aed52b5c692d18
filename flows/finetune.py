"""Flow `finetune`: fine-tune a Whisper base on a corpus (library: asr_eval.train.finetune),
then register the checkpoints and the loss stream in DuckDB (the single writer step), which also
checks its training texts against the split it will be scored on (asr_eval.contamination).
With nproc_per_node > 1 the training step runs in that many processes (torchrun, one per GPU;
asr_eval.train.launch) and the flow stays one process: it registers once, after they finish."""

from __future__ import annotations

from dataclasses import asdict, fields

from prefect import flow, task

from asr_eval.errors import AsrEvalError
from asr_eval.progress import fmt_pct
from asr_eval.store import connect
from asr_eval.train.distributed import launched_world_size
from asr_eval.train.export import register_finetune
from asr_eval.train.finetune import FinetuneConfig, finetune
from asr_eval.train.launch import launch
from flows._common import BUNDLED, DEFAULT_DB, DEMO_CORPUS, RUNS


@task
def finetune_task(corpus: str, base: str, out: str, config: dict, nproc_per_node: int = 1) -> dict:
    if nproc_per_node > 1:
        res = launch(corpus, base, out, FinetuneConfig(**config), nproc_per_node)
    else:
        res = finetune(corpus, base, out, FinetuneConfig(**config), db=None, progress=True)
    d = asdict(res)
    return {k: (str(v) if k.endswith("dir") else v) for k, v in d.items()}


@task(retries=2, retry_delay_seconds=3)  # the store may be briefly held by another writer
def register_task(out: str, db: str) -> list[str]:
    con = connect(db)
    try:
        return register_finetune(con, out)
    finally:
        con.close()


@task
def contamination_task(model_ids: list[str], db: str) -> list[dict]:
    """The lineage contamination check stored at registration (training texts vs the scored split)."""
    from asr_eval.contamination import lineage

    con = connect(db, read_only=True)
    try:
        return [{k: (str(v) if k == "checked_at" else v) for k, v in r.items()} for r in lineage(con, model_ids)]
    finally:
        con.close()


def config_from(**kw) -> dict:
    """Keep only FinetuneConfig fields that were given (None = library default)."""
    names = {f.name for f in fields(FinetuneConfig)}
    return {k: v for k, v in kw.items() if k in names and v is not None}


@flow(name="finetune", log_prints=True)
def finetune_flow(corpus: str = DEMO_CORPUS, base: str = BUNDLED, out: str = str(RUNS / "demo-ft"),
                  db: str = DEFAULT_DB, max_steps: int = 24, learning_rate: float = 2e-5, batch_size: int = 4,
                  grad_accum: int = 1, eval_steps: int = 12, warmup_steps: int = 4,
                  max_eval_samples: int | None = 40, max_new_tokens: int = 64, train_split: str = "train",
                  eval_split: str = "auto", baseline_run: str | None = None, device: str = "auto",
                  seed: int = 0, nproc_per_node: int = 1) -> dict:
    """Fine-tune BASE on CORPUS into OUT; best/final checkpoints registered with lineage.
    The defaults are a short demo run that fits 2 CPU cores in a few minutes.
    nproc_per_node: training processes on this machine (one per GPU), started by the flow itself."""
    if launched_world_size() > 1:
        raise AsrEvalError("the finetune flow was started by torchrun/accelerate launch: every process would run "
                           "the flow and register the run; start it once and pass nproc_per_node=N instead")
    cfg = config_from(max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
                      grad_accum=grad_accum, eval_steps=eval_steps, warmup_steps=warmup_steps,
                      max_eval_samples=max_eval_samples, max_new_tokens=max_new_tokens,
                      train_split=train_split, eval_split=eval_split, baseline_run=baseline_run,
                      device=device, seed=seed)
    res = finetune_task(corpus, base, out, cfg, nproc_per_node)
    res["registered"] = register_task(out, db)
    res["contamination"] = contamination_task(res["registered"], db)
    for c in res["contamination"][:1]:
        bad = c["n_exact"] + c["n_overlap"]
        print(f"contamination: {bad} of {c['n_utts']} utterances of {c['corpus_id']} [{c['eval_split']}] occur in the "
              f"training texts ({c['n_exact']} exact, {c['n_overlap']} overlap)"
              + ("; scores on that split are optimistic — read them on the slice contaminated=clean" if bad else ""))
    print(f"fine-tune {res['training_run_id']}: status {res['status']}, zero-shot CER {fmt_pct(res['zero_shot_cer'])}, "
          f"best CER {fmt_pct(res['best_cer'])} at step {res['best_step']}, final CER {fmt_pct(res['final_cer'])}")
    return res
