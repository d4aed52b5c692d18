"""The ``models`` row of a model (one place; scoring and fine-tuning export both use it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from asr_eval.models.naming import display_name

LINEAGE_FILE = "asr_eval_lineage.json"
LINEAGE_KEYS = ("base_model_id", "corpus_id", "training_run_id", "step", "selection_split", "train_preprocessing")


def config_dict(config: Any) -> dict:
    """The architecture config, JSON-able, without load-time details (dtype, versions)."""
    d = config.to_dict()
    for k in ("dtype", "torch_dtype", "transformers_version", "_name_or_path", "architectures"):
        d.pop(k, None)
    return d


def count_params(folder: Path) -> int | None:
    """Parameter count from the safetensors headers (no weights loaded)."""
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover
        return None
    total, seen = 0, False
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for k in st.keys():
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= d
                total += n
                seen = True
    return total if seen else None


def read_lineage(path: str | Path | None) -> dict[str, Any]:
    """The lineage a fine-tuned export carries (``asr-eval finetune`` writes it), else {}."""
    f = Path(path or "") / LINEAGE_FILE
    if not path or not f.is_file():
        return {}
    saved = json.loads(f.read_text(encoding="utf-8"))
    return {k: saved.get(k) for k in LINEAGE_KEYS if saved.get(k) is not None}


def model_row(m: Any, **lineage: Any) -> dict:
    """The ``models`` row of a loaded model or ``ModelFiles``. A checkpoint exported by
    ``asr-eval finetune`` carries its lineage file, so scoring it into a fresh store keeps
    base/corpus/run/step and the split its checkpoint was selected on."""
    lineage = lineage or read_lineage(m.spec.path)
    if lineage.get("training_run_id") and not lineage.get("train_preprocessing"):
        lineage["train_preprocessing"] = "pad-audio"  # Seq2SeqTrainer + WhisperFeatureExtractor
    config = m.model.config if hasattr(m, "model") else m.config
    n_params = getattr(m, "n_params", None)
    if n_params is None:
        n_params = count_params(getattr(m, "folder", None) or Path(m.spec.path or ""))
    return {"model_id": m.model_id, "name": m.spec.name, "source": m.spec.source, "path": m.spec.path,
            "revision": m.revision, "num_mel_bins": config.num_mel_bins, "n_params": n_params,
            "config": config_dict(config),
            "display_name": display_name(m.spec.name, m.spec.source, m.spec.path, lineage), **lineage}
