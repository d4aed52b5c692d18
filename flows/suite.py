"""Flow `suite`: the standard Mandarin test sets under a folder, scored with several models.

Thin tasks over ``asr_eval.suite``: discover the public corpora (AISHELL-1/2, WenetSpeech,
KeSpeech, MagicData-RAMC, THCHS-30, aidatatang_200zh, Common Voice) → one ingest task per corpus
(its test splits, cached) → one scoring task per test set (``score_models``: parts resume) → the
protocol re-scoring and the model × test-set table (a table artifact). Missing corpora are listed,
not errors.
"""

from __future__ import annotations

import os

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from flows._common import BUNDLED, DEFAULT_DB

SUITE_ROOT = os.environ.get("ASR_EVAL_SUITE_ROOT", "/data/zh-test-sets")


def _found(layout: str, path: str, variant: str | None):
    from pathlib import Path

    from asr_eval.corpus.registry import test_sets
    from asr_eval.suite import Found

    return Found(layout, Path(path), variant, tuple(t for t in test_sets(layout) if t.variant in (None, variant)))


def _test_set(key: str):
    from asr_eval.corpus.registry import test_sets

    return next(t for t in test_sets() if t.key == key)


@task
def ingest_task(layout: str, path: str, variant: str | None, keys: list[str], work: str) -> dict[str, int | str]:
    """Ingest one found corpus's test splits (cached); the corpus dir and utterances per split."""
    from pathlib import Path

    from asr_eval.corpus_handle import open_corpus
    from asr_eval.suite.run import ingest_found

    corpus_dir = ingest_found(_found(layout, path, variant), [_test_set(k) for k in keys], Path(work), progress=False)
    return {"dir": corpus_dir, **{f"n:{k}": v for k, v in open_corpus(corpus_dir).splits.items()}}


@task
def score_task(corpus_dir: str, key: str, specs: list[dict], db: str, options: dict) -> list[str]:
    from asr_eval.scoring.parts import RunSpec
    from asr_eval.suite import SuiteOptions
    from asr_eval.suite.run import score_test_set

    return score_test_set(corpus_dir, _test_set(key), [RunSpec(**s) for s in specs], db,
                          SuiteOptions(**{**options, "sets": tuple(options["sets"])}), progress=False)


@task
def finish_task(db: str, run_ids: list[str], keys: list[str], normalizer: str, n_boot: int) -> list[dict]:
    from asr_eval.suite.run import finish

    _, cells = finish(db, run_ids, keys, normalizer, n_boot)
    return [{"test set": c.test_set, "model": c.model, "n": c.n,
             "CER %": None if c.cer is None else round(100 * c.cer, 2),
             "CER lo": None if c.lo is None else round(100 * c.lo, 2),
             "CER hi": None if c.hi is None else round(100 * c.hi, 2), "run_id": c.run_id} for c in cells]


@flow(name="suite", log_prints=True)
def suite_flow(root: str = SUITE_ROOT, models: list[str] | None = None, db: str = DEFAULT_DB, work: str | None = None,
               sets: list[str] | None = None, engine: str = "transformers", compute_type: str = "auto",
               preprocessing: str = "pad-audio", recipe: str = "greedy", device: str = "auto",
               batch_size: int | None = None, normalizer: str = "zh-v1", n_boot: int = 1000) -> list[dict]:
    """Score MODELS on every standard Mandarin test set found under ROOT (as downloaded): the model ×
    test-set table (CER % with 95 % intervals); our numbers beside the published ones are in the report."""
    from dataclasses import asdict
    from pathlib import Path

    from asr_eval.suite import SuiteOptions, discover, missing
    from asr_eval.suite.run import chosen, suite_specs

    options = SuiteOptions(engine, compute_type, preprocessing, recipe, device, batch_size, normalizer, n_boot,
                           sets=tuple(sets or ()))
    specs = [s.to_dict() for s in suite_specs(models or [BUNDLED], options)]
    work = work or str(Path(db).parent / "suite")
    found = discover(root)
    print(f"found: {', '.join(f'{f.name} ({f.path})' for f in found) or 'no standard test set'}")
    print(f"not found: {', '.join(t.key for t in missing(found)) or 'none'}")
    run_ids: list[str] = []
    keys: list[str] = []
    for f in found:
        tsets = chosen(f, options.sets)
        if not tsets:
            continue
        ing = ingest_task(f.layout, str(f.path), f.variant, [t.key for t in tsets], work)
        for t in tsets:
            n = ing.get(f"n:{t.split}", 0)
            if not n:
                print(f"{t.key}: no utterance ingested from {f.path} (see {ing['dir']}/quarantine.jsonl)")
                continue
            keys.append(t.key)
            run_ids += score_task(ing["dir"], t.key, specs, db, asdict(options))
    table = finish_task(db, run_ids, keys, normalizer, n_boot)
    if table:
        create_table_artifact(key="suite", table=table, description=f"standard test sets under {root}")
    for row in table:
        print(f"{row['test set']} · {row['model']}: CER {row['CER %']} % [{row['CER lo']}–{row['CER hi']}] (n={row['n']})")
    return table
