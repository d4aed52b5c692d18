"""Scoring core: CER/MER/WER with alignments, per-class breakdown, pathology flags, bootstrap
confidence intervals, paired bootstrap and sign test, and an `evaluate`-compatible CER module."""

from pathlib import Path

from asr_eval.metrics.align import CLASS_NAMES, mer_tokens
from asr_eval.metrics.flags import FLAGS, LONG_FORM_FLAGS, hallucination_phrases, long_form_flags, pathology_flags
from asr_eval.metrics.score import COLUMNS, LongForm, UtteranceScore, score_many, score_pair
from asr_eval.metrics.stats import (
    PairedResult,
    RateCI,
    bootstrap_ci,
    bootstrap_ci_by_slice,
    macro_rate,
    paired_bootstrap,
    pooled_rate,
    sign_test,
    verdict,
)


def evaluate_metric_path() -> str:
    """Directory of the `evaluate` metric module shipped in the package:
    ``evaluate.load(evaluate_metric_path())`` works offline and returns {"cer": ...}."""
    return str(Path(__file__).resolve().parent / "asr_eval_cer")


__all__ = [
    "CLASS_NAMES", "COLUMNS", "FLAGS", "LONG_FORM_FLAGS", "LongForm", "PairedResult", "RateCI", "UtteranceScore", "bootstrap_ci",
    "bootstrap_ci_by_slice", "evaluate_metric_path", "hallucination_phrases", "long_form_flags", "macro_rate", "mer_tokens",
    "paired_bootstrap", "pathology_flags", "pooled_rate", "score_many", "score_pair", "sign_test", "verdict",
]
