"""Scoring, split by concern: ``parts`` (inference → Parquet parts, one per-shard path),
``analysis`` (normalize, align, slice, compare — no model) and ``writer`` (the single DuckDB
writer step that ties them together)."""

from asr_eval.scoring.analysis import (
    MAX_AUTO_SLICE_VALUES, analyse, analyse_with_stored, available_slices, compare_runs, rescore, score_run, slice_metrics,
)
from asr_eval.scoring.parts import (
    RunInfo, RunSpec, default_split, expand_specs, make_run_id, run_shard, shards_for_split, transcribe_corpus, transcribe_shard_part,
)
from asr_eval.scoring.writer import finalize_runs, record_run, score_models, write_runs

__all__ = [
    "MAX_AUTO_SLICE_VALUES", "RunInfo", "RunSpec", "run_shard", "write_runs", "expand_specs", "analyse", "analyse_with_stored", "available_slices", "compare_runs", "default_split",
    "finalize_runs", "make_run_id", "record_run", "rescore", "score_models", "score_run", "shards_for_split",
    "slice_metrics", "transcribe_corpus", "transcribe_shard_part",
]
