"""asr-eval CER as a Hugging Face ``evaluate`` metric that loads offline.

    import evaluate
    from asr_eval.metrics import evaluate_metric_path
    cer = evaluate.load(evaluate_metric_path())
    cer.compute(predictions=["今天天气很好"], references=["今天天氣真好"])  # {'cer': 0.1666..., ...}

Same numbers as ``asr_eval.metrics.score_many``: both sides normalized with a profile
(default zh-v1), pooled over the batch (Σ errors / Σ reference characters); an empty or
missing prediction counts as all deletions.
"""

import datasets
import evaluate
import numpy as np

from asr_eval.metrics import pooled_rate, score_many

_CITATION = "asr-eval (this package): CER/MER with a named, versioned normalizer profile."
_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: hypotheses (str; None or '' = no output).
    references: references (str).
    normalizer: normalizer profile name (default 'zh-v1'; see asr_eval.text.list_profiles()).
Returns:
    cer: pooled character error rate; mer: pooled mixed error rate; substitutions, deletions,
    insertions, ref_chars: CER counts; normalizer, normalizer_hash: the profile that produced them.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AsrEvalCer(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, normalizer="zh-v1"):
        from asr_eval.text import get_profile

        prof = get_profile(normalizer)
        t = score_many(list(references), list(predictions), prof, with_alignment=False, workers=1)

        def col(name):
            return np.asarray(t.column(name).to_numpy(), dtype=np.int64)

        cer_err = col("cer_s") + col("cer_d") + col("cer_i")
        mer_err = col("mer_s") + col("mer_d") + col("mer_i")
        return {
            "cer": pooled_rate(cer_err, col("cer_n")),
            "mer": pooled_rate(mer_err, col("mer_n")),
            "substitutions": int(col("cer_s").sum()),
            "deletions": int(col("cer_d").sum()),
            "insertions": int(col("cer_i").sum()),
            "ref_chars": int(col("cer_n").sum()),
            "normalizer": prof.name,
            "normalizer_hash": prof.rules_hash,
        }
