"""Flow `score`: transcribe a corpus with several models, one task per (model, shard),
then the single DuckDB writer scores, slices and compares them.

Locally, tasks run on the flow's task runner (threads). With ``ray_address`` ('auto',
'ray://host:10001', or 'local' for a cluster on this machine) the shards go to Ray tasks through
``asr_eval.scoring.distributed`` — the same per-shard path, URLs only, one GPU per task where GPUs
exist, retried on another node when a node dies — and the flow is the single writer. Workers
only write Parquet parts (to a folder, or to object storage when ``parts`` is a URL).
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from asr_eval.scoring import finalize_runs, shards_for_split, transcribe_shard_part
from asr_eval.store.labels import run_labels
from flows._common import BUNDLED, DEFAULT_DB, DEMO_CORPUS


@task(retries=1, retry_delay_seconds=10)
def transcribe_shard_task(spec: dict, corpus: str, shard: str, split: str | None, parts: str) -> dict:
    return transcribe_shard_part(spec, corpus, shard, split, parts)


@task
def finalize_task(corpus: str, db: str, results: list[dict], normalizer: str, slices: list[str] | None,
                  n_boot: int) -> list[str]:
    return finalize_runs(corpus, db, results, normalizer, slices, n_boot)


def headline(db: str, run_ids: list[str], normalizer: str) -> list[dict]:
    from asr_eval.store import connect

    con = connect(db, read_only=True)
    try:
        labels = run_labels(con, run_ids)
        rows = con.execute(
            f"""SELECT r.run_id, r.run_id, s.n, round(s.hours, 3), round(100 * s.cer, 2), round(100 * s.cer_lo, 2),
                       round(100 * s.cer_hi, 2), round(100 * s.mer, 2), round(r.rtfx, 1), s.reliable
                FROM slice_metrics s JOIN eval_runs r USING (run_id) JOIN models m USING (model_id)
                WHERE s.slice_attr = '_all' AND s.normalizer = ? AND s.run_id IN ({', '.join('?' * len(run_ids))})""",
            [normalizer, *run_ids]).fetchall()
    finally:
        con.close()
    keys = ("model", "run_id", "n", "hours", "CER %", "CER lo", "CER hi", "MER %", "RTFx", "reliable")
    out = [dict(zip(keys, (labels.get(r[0], r[0]), *r[1:]), strict=True)) for r in rows]
    for row in out:  # minimum-evidence rule: a thin run has a point estimate, no interval
        if row["reliable"] is False:
            row["CER lo"] = row["CER hi"] = None
    return out


def headline_line(row: dict) -> str:
    """'model: CER 5.10 % [4.20–6.00] MER … RTFx … (n=…)' (rates in %, 2 decimals, as everywhere a
    person reads them); a run below the minimum evidence shows its point estimate with † and no
    interval, as the tables do."""
    def p(x: float | None) -> str:
        return "—" if x is None else f"{x:.2f}"

    cer = (f"CER {p(row['CER %'])} % † (insufficient data: no interval)" if row["reliable"] is False
           else f"CER {p(row['CER %'])} % [{p(row['CER lo'])}–{p(row['CER hi'])}]")
    return f"{row['model']}: {cer} MER {p(row['MER %'])} % RTFx {row['RTFx']} (n={row['n']})"


def _score(corpus: str, models: list[str], split: str, db: str, parts: str | None, device: str,
           batch_size: int | None, engine: str, compute_type: str, preprocessing: str, recipe: str,
           max_new_tokens: int | None, normalizer: str, slices: list[str] | None, n_boot: int,
           strategy: str = "short", engine_options: list[str] | None = None,
           ray_address: str | None = None, parity: bool = False) -> list[str]:
    from pathlib import Path

    from asr_eval.corpus_handle import open_corpus
    from asr_eval.scoring import expand_specs
    from asr_eval.scoring.parts import with_baselines, with_reference

    sp = open_corpus(corpus).resolve_split(split)
    parts = parts or str(Path(db).parent / "parts")
    specs = with_baselines(expand_specs(models, engine, compute_type, preprocessing, recipe, device, batch_size, 0,
                                        strategies=strategy, engine_options=engine_options or (),
                                        max_new_tokens=max_new_tokens))
    specs = with_reference(specs) if parity else specs
    if ray_address:
        from asr_eval.scoring import score_models

        run_ids = score_models(corpus, specs, db, sp, slices, normalizer, parts, n_boot, ray_address=ray_address)
    else:
        futures = [transcribe_shard_task.submit(s.to_dict(), corpus, sh, sp, parts)
                   for s in specs for sh in shards_for_split(corpus, sp)]
        results = [f.result() for f in futures]
        run_ids = finalize_task(corpus, db, results, normalizer, slices, n_boot)
    table = headline(db, run_ids, normalizer)
    create_table_artifact(key="score-headline", table=table, description=f"{corpus} [{sp or 'all'}], {normalizer}")
    for row in table:
        print(headline_line(row))
    for line in option_verdicts(db, run_ids, normalizer):
        print(line)
    return run_ids


def option_verdicts(db: str, run_ids: list[str], normalizer: str) -> list[str]:
    """'parity B vs A: faithful — transcripts identical on N/N' for each run checked against the reference
    (transformers float32), then 'engine options B vs A: identical on N/N' for each run verified against its
    run without options."""
    from asr_eval.scoring.parity import parity_pairs
    from asr_eval.store import connect

    con = connect(db, read_only=True)
    try:
        pairs = parity_pairs(con, run_ids, normalizer)
        names = run_labels(con, run_ids)
    finally:
        con.close()
    return ([f"parity {names.get(p.run_b, p.run_b)} vs {names.get(p.run_a, p.run_a)}: {' — '.join(p.fidelity)}"
             for p in pairs if p.reference_check]
            + [f"engine options {names.get(p.run_b, p.run_b)} vs {names.get(p.run_a, p.run_a)}: {p.verdict}"
               for p in pairs if p.options_only])


@flow(name="score", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def score_flow(corpus: str = DEMO_CORPUS, models: list[str] | None = None, split: str = "auto",
               db: str = DEFAULT_DB, parts: str | None = None, device: str = "auto", batch_size: int | None = None,
               engine: str = "transformers", compute_type: str = "auto", preprocessing: str = "pad-audio",
               recipe: str = "greedy", max_new_tokens: int | None = None, normalizer: str = "zh-v1",
               slices: list[str] | None = None, n_boot: int = 1000, ray_address: str | None = None,
               strategy: str = "short", engine_options: list[str] | None = None, parity: bool = False) -> list[str]:
    """Score MODELS × ENGINE(s) × RECIPE(s) on CORPUS per slice (CER/MER ± 95% CI, paired A/B) into DB.
    engine, compute_type, preprocessing, recipe and strategy (long-form: sequential, chunked, vad) take
    comma-separated lists, as the CLI does; engine_options takes KEY=VALUE[,VALUE…] items (each run with
    them is verified against the same run without them); parity also scores transformers float32 beside each
    run on another engine or compute type and prints the fidelity verdict."""
    return _score(corpus, models or [BUNDLED], split, db, parts, device, batch_size, engine, compute_type, preprocessing,
                  recipe, max_new_tokens, normalizer, slices, n_boot, strategy, engine_options, ray_address, parity)

