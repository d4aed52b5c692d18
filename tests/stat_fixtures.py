"""Hand-built stores for the statistics of issue 12: utterances with known references, slices and
speakers, and runs whose hypotheses carry an exact number of substitutions per utterance."""

from __future__ import annotations

import json
from pathlib import Path

from asr_eval.store import connect
from asr_eval.store.load import register_model, upsert_eval_run

REF = "你好世界我们今天去看"  # ten characters the zh-v1 normalizer leaves as they are
WRONG = "了"


def hyp_with_errors(k: int, ref: str = REF) -> str:
    """The reference with its first k characters substituted: exactly k character errors."""
    return WRONG * k + ref[k:]


def make_store(db: Path, utts: list[dict], runs: dict[str, dict[str, int]], corpus_id: str = "c@1",
               split: str = "test", models: dict[str, str] | None = None, scored: bool = True):
    """utts: [{"utt_id", "speaker" (optional), "attrs": {attr: value}}]; runs: run_id -> {utt_id: errors}.
    Returns an open read-write connection (runs scored with zh-v1 unless ``scored`` is false)."""
    con = connect(db)
    attrs = sorted({a for u in utts for a in u.get("attrs", {})})
    con.execute("INSERT INTO corpora (corpus_id, name, path, index_sha256, n_utts, hours, splits, slice_columns, source) "
                "VALUES (?, 'c', '/nonexistent', '1', ?, 0.1, ?, ?, '{}')",
                [corpus_id, len(utts), json.dumps({split: len(utts)}), json.dumps(attrs)])
    con.executemany("INSERT INTO utterances (corpus_id, utt_id, split, duration_s, speaker, text) VALUES (?, ?, ?, 3.0, ?, ?)",
                    [[corpus_id, u["utt_id"], split, u.get("speaker"), u.get("text", REF)] for u in utts])
    rows = [[corpus_id, u["utt_id"], a, u.get("attrs", {}).get(a)] for u in utts for a in attrs]
    if rows:
        con.executemany("INSERT INTO utterance_attrs VALUES (?, ?, ?, ?)", rows)
    for i, (run_id, errs) in enumerate(runs.items()):
        model = (models or {}).get(run_id, f"model-{run_id}")
        register_model(con, {"model_id": model, "name": model, "source": "local"})
        upsert_eval_run(con, {"run_id": run_id, "corpus_id": corpus_id, "split": split, "model_id": model,
                              "status": "done", "finished_at": f"2026-01-01 00:00:{i:02d}"})
        texts = {u["utt_id"]: u.get("text", REF) for u in utts}
        if errs:
            con.executemany("INSERT INTO hypotheses (run_id, utt_id, hyp_raw) VALUES (?, ?, ?)",
                            [[run_id, u, hyp_with_errors(k, texts[u])] for u, k in errs.items()])
    if scored:
        from asr_eval.scoring import score_run

        for run_id in runs:
            score_run(con, run_id, "zh-v1")
    return con
