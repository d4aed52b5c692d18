"""The ``models`` row of a loaded model (one place; scoring and fine-tuning export both use it)."""

from __future__ import annotations

import json
from pathlib import Path


def model_row(lm, **lineage) -> dict:
    """The ``models`` row of a loaded model. A checkpoint exported by ``asr-eval finetune``
    carries its lineage file, so scoring it into a fresh store keeps base/corpus/run/step."""
    f = Path(lm.spec.path or "") / "asr_eval_lineage.json"
    if not lineage and lm.spec.path and f.is_file():
        saved = json.loads(f.read_text(encoding="utf-8"))
        lineage = {k: saved.get(k) for k in ("base_model_id", "corpus_id", "training_run_id", "step",
                                             "selection_split")}
    return {"model_id": lm.model_id, "name": lm.spec.name, "source": lm.spec.source, "path": lm.spec.path,
            "revision": lm.revision, "num_mel_bins": lm.num_mel_bins, "n_params": lm.n_params,
            "config": lm.config_dict(), **lineage}
