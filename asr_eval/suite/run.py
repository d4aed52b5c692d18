"""`asr-eval suite`: score models on every standard test set found under a folder.

``run_suite`` = ``discover`` → ingest each corpus's test splits into ``work/corpora/<name>``
(the usual ingest: quarantine, verified shards; a re-run finds them done, a changed source is
re-ingested) → ``score_models`` per test set (the usual runs, slices, intervals, comparisons; parts
resume) → every run re-scored under the scoring protocols the published results for its test set
used (``asr_eval.protocols.compute_protocols``: no inference) → the model × test-set table
(``suite_cells``, read from the store).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asr_eval.corpus import open_source
from asr_eval.corpus.registry import TestSet, test_sets
from asr_eval.errors import AsrEvalError
from asr_eval.suite.discover import Found, discover, missing

Say = Callable[[str], None]


@dataclass(frozen=True)
class SuiteOptions:
    """How to score: the ``asr-eval score`` options a suite passes on (comma-separated lists work
    as there), and which test sets (default: every ``test*`` split; name others by key)."""

    engine: str = "transformers"
    compute_type: str = "auto"
    preprocessing: str = "pad-audio"
    recipe: str = "greedy"
    device: str = "auto"
    batch_size: int | None = None
    normalizer: str = "zh-v1"
    n_boot: int = 1000
    workers: int = 0  # ingest decoder processes (0: one per core)
    sets: tuple[str, ...] = ()  # test set keys; () = every registered test split


@dataclass(frozen=True)
class SuiteCell:
    """One model on one test set (whole-run numbers under the suite's normalizer)."""

    test_set: str
    run_id: str
    model: str  # the run's label (model · options)
    model_name: str  # what the store calls the model (for matching published results)
    n: int
    cer: float | None
    lo: float | None
    hi: float | None
    reliable: bool


@dataclass
class SuiteResult:
    found: list[Found]
    missing: list[TestSet]  # registered, not under the root
    empty: list[str] = field(default_factory=list)  # found corpus, but that split had no utterance
    corpora: dict[str, str] = field(default_factory=dict)  # test set key -> ingested corpus dir
    run_ids: list[str] = field(default_factory=list)
    cells: list[SuiteCell] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)


def chosen(found: Found, sets: Sequence[str]) -> list[TestSet]:
    return [t for t in found.test_sets if (t.key in sets if sets else t.split.startswith("test"))]


def check_sets(sets: Sequence[str]) -> None:
    known = {t.key for t in test_sets()}
    bad = [s for s in sets if s not in known]
    if bad:
        raise AsrEvalError(f"unknown test set(s) {bad}; the standard ones are: {', '.join(sorted(known))}")


def ingest_found(found: Found, tsets: Sequence[TestSet], work: Path, workers: int = 0,
                 progress: bool = True) -> str:
    """Ingest the splits ``tsets`` of one found corpus into ``work/corpora/<name>``; returns the dir."""
    from asr_eval.shards import IngestOptions, ingest

    splits = tuple(dict.fromkeys(t.split for t in tsets))
    reader = open_source(str(found.path), found.layout, split=",".join(splits), cv_tsvs=splits)
    out = work / "corpora" / found.name
    ingest(reader, out, IngestOptions(workers=workers, corpus_name=found.name), progress=progress,
           replace_stale=True)
    return str(out)


def published_protocols(keys: Sequence[str]) -> list[str]:
    """The normalizer profiles that approximate the protocols of the published results on ``keys``."""
    from asr_eval.published import load_published

    return list(dict.fromkeys(r.protocol.asr_eval_profile for r in load_published()
                              if r.test_set in set(keys) and r.protocol.asr_eval_profile))


def suite_specs(models: Sequence[str], options: SuiteOptions) -> list:
    """The run specs of every model (and, for speed options, their baselines); fails before any work."""
    from asr_eval.scoring import expand_specs
    from asr_eval.scoring.parts import with_baselines
    from asr_eval.text import get_profile

    if not models:
        raise AsrEvalError("name at least one model (--model)")
    check_sets(options.sets)
    get_profile(options.normalizer)
    return with_baselines(expand_specs(list(models), options.engine, options.compute_type, options.preprocessing,
                                       options.recipe, options.device, options.batch_size))


def score_test_set(corpus_dir: str, t: TestSet, specs: Sequence, db: str | Path, options: SuiteOptions,
                   progress: bool = True) -> list[str]:
    """Score every spec on one test set's split (``asr-eval score``'s path: parts resume)."""
    from asr_eval.scoring import score_models

    return score_models(corpus_dir, list(specs), db, t.split, None, options.normalizer, None, options.n_boot,
                        progress=progress)


def finish(db: str | Path, run_ids: Sequence[str], keys: Sequence[str], normalizer: str = "zh-v1",
           n_boot: int = 1000) -> tuple[list[str], list[SuiteCell]]:
    """Re-score the runs under the published results' protocols (no inference); the table."""
    from asr_eval.protocols import compute_protocols
    from asr_eval.store import connect

    if not run_ids:
        return [], []
    protocols = list(dict.fromkeys([normalizer, *published_protocols(keys)]))
    con = connect(db)
    try:
        compute_protocols(con, None, protocols, runs=list(run_ids), n_boot=n_boot)
    finally:
        con.close()
    return protocols, suite_cells(db, run_ids, normalizer)


def run_suite(root: str | Path, models: Sequence[str], db: str | Path, work: str | Path | None = None,
              options: SuiteOptions = SuiteOptions(), progress: bool = True, say: Say = print) -> SuiteResult:
    """Find the standard test sets under ``root``, ingest and score ``models`` on each; the table."""
    from asr_eval.corpus_handle import open_corpus

    specs = suite_specs(models, options)
    work = Path(work) if work else Path(db).parent / "suite"
    found = discover(root)
    res = SuiteResult(found=found, missing=missing(found))
    for f in found:
        tsets = chosen(f, options.sets)
        if not tsets:
            continue
        say(f"{f.name}: {f.path} → test sets {', '.join(t.key for t in tsets)}")
        corpus_dir = ingest_found(f, tsets, work, options.workers, progress)
        present = open_corpus(corpus_dir).splits
        for t in tsets:
            if not present.get(t.split):
                res.empty.append(t.key)
                say(f"{t.key}: no utterance of split {t.split!r} was ingested from {f.path} "
                    f"(see {corpus_dir}/quarantine.jsonl)")
                continue
            res.corpora[t.key] = corpus_dir
            say(f"scoring {len(specs)} run(s) on {t.key} ({present[t.split]} utterances)")
            res.run_ids += score_test_set(corpus_dir, t, specs, db, options, progress)
    res.protocols, res.cells = finish(db, res.run_ids, list(res.corpora), options.normalizer, options.n_boot)
    return res


def suite_cells(db: str | Path, run_ids: Sequence[str], normalizer: str = "zh-v1") -> list[SuiteCell]:
    """The whole-run numbers of ``run_ids`` that are on a standard test set (read-only)."""
    from asr_eval.store import connect
    from asr_eval.suite.compare import standard_runs

    con = connect(db, read_only=True)
    try:
        return [SuiteCell(s.test_set.key, s.run_id, s.label, s.model_name, s.n, s.cer, s.lo, s.hi, s.reliable)
                for s in standard_runs(con, run_ids, normalizer)]
    finally:
        con.close()
