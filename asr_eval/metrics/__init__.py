"""Scoring core: CER/MER/WER with alignments, per-class breakdown, pathology flags, bootstrap
confidence intervals, paired bootstrap and sign test, and an `evaluate`-compatible CER module."""

from pathlib import Path

from asr_eval.metrics.align import CLASS_NAMES, mer_tokens
from asr_eval.metrics.flags import FLAGS, LONG_FORM_FLAGS, hallucination_phrases, long_form_flags, pathology_flags
from asr_eval.metrics.score import COLUMNS, LongForm, UtteranceScore, score_many, score_pair
from asr_eval.metrics.stats import (
    ADJUSTMENTS,
    DEFAULT_ADJUSTMENT,
    MIN_REF_CHARS,
    MIN_SPEAKER_BLOCKS,
    MIN_SPEAKER_SHARE,
    MIN_UTTS,
    Evidence,
    PairedResult,
    RateCI,
    Resampling,
    adjust_pvalues,
    benjamini_hochberg,
    bootstrap_ci,
    bootstrap_ci_by_slice,
    bootstrap_p,
    bootstrap_p_greater,
    holm,
    macro_rate,
    mde_text,
    n_boot_for,
    paired_bootstrap,
    paired_replicates,
    pooled_rate,
    resampling_for,
    sign_test,
    speaker_blocks,
    verdict,
)


def evaluate_metric_path() -> str:
    """Directory of the `evaluate` metric module shipped in the package:
    ``evaluate.load(evaluate_metric_path())`` works offline and returns {"cer": ...}."""
    return str(Path(__file__).resolve().parent / "asr_eval_cer")


__all__ = [
    "ADJUSTMENTS", "CLASS_NAMES", "COLUMNS", "DEFAULT_ADJUSTMENT", "FLAGS", "LONG_FORM_FLAGS", "LongForm", "MIN_REF_CHARS", "MIN_SPEAKER_BLOCKS",
    "MIN_SPEAKER_SHARE", "MIN_UTTS", "Evidence", "PairedResult", "RateCI", "Resampling", "UtteranceScore",
    "adjust_pvalues", "benjamini_hochberg", "bootstrap_ci", "bootstrap_ci_by_slice", "bootstrap_p",
    "bootstrap_p_greater", "evaluate_metric_path", "hallucination_phrases", "holm", "long_form_flags", "macro_rate", "mde_text",
    "mer_tokens", "n_boot_for", "paired_bootstrap", "paired_replicates", "pathology_flags", "pooled_rate",
    "resampling_for", "score_many", "score_pair", "sign_test", "speaker_blocks", "verdict",
]
