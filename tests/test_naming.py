"""Display names for models: short and readable in tables and the report, full path kept."""

from __future__ import annotations

import json

import pytest

from asr_eval.models.naming import display_name
from asr_eval.store.labels import model_display


@pytest.mark.parametrize("name,source,path,lineage,want", [
    ("/abs/path/runs/demo-ft/best", "local", "/abs/path/runs/demo-ft/best", {"step": 24}, "demo-ft/best (step 24)"),
    ("runs/demo-ft/final", "local", "/home/u/x/runs/demo-ft/final", {"step": 0}, "demo-ft/final (step 0)"),
    ("../ckpts/my-model", "local", "/data/ckpts/my-model", {}, "ckpts/my-model"),
    ("/m", "local", "/m", None, "m"),
    ("ct2:/abs/runs/demo-ft/best", "ct2", "/home/u/.cache/asr_eval/ct2/3f9a1c", {"step": 24},
     "ct2:demo-ft/best (step 24)"),
    ("openai/whisper-small", "hub", "/home/u/.cache/huggingface/hub/models--openai--whisper-small/snapshots/abc",
     {}, "openai/whisper-small"),
    ("bundled:whisper-base", "bundled", "/site-packages/whisper_base", {}, "bundled:whisper-base"),
])
def test_display_name(name, source, path, lineage, want):
    assert display_name(name, source, path, lineage) == want


def test_stored_display_name_wins_and_fallback_is_the_same_rule():
    assert model_display("/a/b/runs/x/best", "local", "x/best (step 3)", 3) == "x/best (step 3)"
    assert model_display("/a/b/runs/x/best", "local", None, 3) == "x/best (step 3)"
    assert model_display("openai/whisper-small", "hub", None, None) == "openai/whisper-small"


def test_model_row_of_an_exported_checkpoint_carries_its_display_name(tmp_path):
    from asr_eval import models
    from asr_eval.models.record import LINEAGE_FILE, model_row
    from asr_eval.store import connect
    from asr_eval.store.load import register_model

    ckpt = models.build_tiny_whisper(tmp_path / "runs" / "demo-ft" / "best", num_mel_bins=80, seed=0)
    (ckpt / LINEAGE_FILE).write_text(json.dumps({"base_model_id": "b", "corpus_id": "c",
                                                 "training_run_id": "demo-ft-1", "step": 24}))
    row = model_row(models.load(str(ckpt), device="cpu"))
    assert row["display_name"] == "demo-ft/best (step 24)" and row["path"] == str(ckpt.resolve())
    con = connect(tmp_path / "s.duckdb")
    register_model(con, row)
    assert con.execute("SELECT display_name, path, step FROM models").fetchall() == [
        ("demo-ft/best (step 24)", str(ckpt.resolve()), 24)]
    con.close()
