"""Fine-tuning: labels, dataset, sampler, collator, CER metrics, and real tiny-Whisper runs end
to end (checkpoints, export, pipeline, registry lineage, resume, live stop, 128 mel bins)."""

from __future__ import annotations

import json
import math
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import write_audio  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from asr_eval import models  # noqa: E402
from asr_eval.corpus import open_source  # noqa: E402
from asr_eval.errors import AsrEvalError  # noqa: E402
from asr_eval.shards import IngestOptions, ingest  # noqa: E402
from asr_eval.store.load import corpus_id_for  # noqa: E402
from asr_eval.text import get_profile  # noqa: E402
from asr_eval.train import (  # noqa: E402
    BlockShuffleSampler, FinetuneConfig, LabelEncoder, ShardSpeechDataset, SpeechSeq2SeqCollator, finetune, read_run,
)
from asr_eval.train.finetune import cer_metrics, last_complete_checkpoint, make_compute_metrics  # noqa: E402

TEXTS = ["今天天气很好", "我们去北京", "你好世界", "這是一個測試", "学习中文很有意思", "请关上门"]
PREFIX = ["<|startoftranscript|>", "<|zh|>", "<|transcribe|>", "<|notimestamps|>"]


def _make_corpus(root: Path, n_train: int = 8, n_test: int = 4, max_rows: int = 5) -> Path:
    src = root / "src"
    lines = ["file_name,text,split"]
    for i in range(n_train + n_test):
        write_audio(src / f"u{i:02d}.wav", 0.5 + 0.1 * (i % 4), 16000, freq=180.0 + 30 * i, seed=i)
        lines.append(f"u{i:02d}.wav,{TEXTS[i % len(TEXTS)]},{'train' if i < n_train else 'test'}")
    (src / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = root / "corpus"
    ingest(open_source(str(src)), out, IngestOptions(workers=1, max_rows=max_rows), progress=False)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _make_corpus(tmp_path_factory.mktemp("train_corpus"))


@pytest.fixture(scope="module")
def tiny80(tmp_path_factory) -> Path:
    return models.build_tiny_whisper(tmp_path_factory.mktemp("tiny80") / "m", num_mel_bins=80, seed=0)


@pytest.fixture(scope="module")
def tiny128(tmp_path_factory) -> Path:
    return models.build_tiny_whisper(tmp_path_factory.mktemp("tiny128") / "m", num_mel_bins=128, seed=0)


@pytest.fixture(scope="module")
def processor80(tiny80):
    return models.load(str(tiny80), device="cpu").processor


def _cfg(**kw) -> FinetuneConfig:
    """A run small enough for CI: 4 steps of 4 utterances, evaluations at 0, 2, 4 on 3 utterances."""
    base = dict(max_steps=4, eval_steps=2, batch_size=4, warmup_steps=0, learning_rate=1e-3, max_new_tokens=6,
                max_eval_samples=3, tensorboard=False, live_monitor=False, eval_split="test")
    return FinetuneConfig(**{**base, **kw})


# ───────────────────────────── labels ─────────────────────────────


def test_labels_have_the_zh_transcribe_prefix_and_simplified_script(processor80):
    tok = processor80.tokenizer
    enc = LabelEncoder(tok, get_profile("zh-train-v1"))
    prefix = tok.convert_tokens_to_ids(PREFIX)
    assert enc.prefix_ids == prefix
    trad, simp = enc.encode_many(["這是一個測試", "这是一个测试"])
    assert trad == simp  # Traditional → Simplified before tokenizing: the model learns one script
    assert trad[:4] == prefix and trad[-1] == tok.convert_tokens_to_ids("<|endoftext|>")
    assert tok.decode(trad[4:-1]) == "这是一个测试"


def test_label_encoder_rejects_a_tokenizer_without_files(processor80):
    class OneToken:
        def __len__(self):
            return 1

    with pytest.raises(AsrEvalError, match="has 1 tokens"):
        LabelEncoder(OneToken(), get_profile("zh-train-v1"))


# ───────────────────────────── collator ─────────────────────────────


def test_collator_pads_with_minus_100_and_strips_the_start_token(processor80):
    sot = 50258
    coll = SpeechSeq2SeqCollator(processor80.feature_extractor, decoder_start_token_id=sot)
    a = np.zeros(8000, np.float32)
    batch = coll([{"audio": a, "labels": [sot, 50260, 50359, 50363, 11, 12, 50257]},
                  {"audio": a[:4000], "labels": [sot, 50260, 50359, 50363, 13, 50257]}])
    assert batch["labels"].tolist() == [[50260, 50359, 50363, 11, 12, 50257],
                                        [50260, 50359, 50363, 13, 50257, -100]]
    assert tuple(batch["input_features"].shape) == (2, 80, 3000)  # log-mel, padded to 30 s
    # Not every row starts with the start token: nothing is stripped.
    mixed = coll([{"audio": a, "labels": [sot, 5, 50257]}, {"audio": a, "labels": [6, 50257]}])
    assert mixed["labels"].tolist() == [[sot, 5, 50257], [6, 50257, -100]]


def test_model_shift_puts_the_start_token_back_once(processor80, tiny80):
    from transformers.models.whisper.modeling_whisper import shift_tokens_right

    labels = torch.tensor([[50260, 50359, 50363, 11, 50257, -100]])
    dec = shift_tokens_right(labels, 50257, 50258)
    assert dec.tolist() == [[50258, 50260, 50359, 50363, 11, 50257]]


# ───────────────────────────── dataset and sampler ─────────────────────────────


def test_dataset_reads_one_split_lazily(corpus, processor80):
    enc = LabelEncoder(processor80.tokenizer, get_profile("zh-train-v1"))
    ds = ShardSpeechDataset(corpus, "train", enc)
    assert len(ds) == 8 and ds.utt_ids == [f"u{i:02d}" for i in range(8)]
    assert len(ds.groups()) == 2  # 5 + 3 train rows over shards of 5 rows (test rows share shard 2)
    item = ds[3]
    assert item["audio"].dtype == np.float32 and len(item["audio"]) == int(16000 * 0.8)
    assert item["labels"] == enc.encode_many([TEXTS[3]])[0]
    assert ds.texts[3] == "這是一個測試"  # raw reference kept for CER
    assert len(ds._cache) == 1
    sub = ShardSpeechDataset(corpus, "train", enc, max_samples=3, seed=1)
    assert len(sub) == 3 and sub.utt_ids == sorted(sub.utt_ids)
    assert ShardSpeechDataset(corpus, "train", enc, max_samples=3, seed=1).utt_ids == sub.utt_ids
    capped = ShardSpeechDataset(corpus, "train", enc, max_label_tokens=9)
    # 学习中文很有意思 is longer than 9 tokens with prefix and EOT: dropped, counted.
    assert capped.dropped.too_long_labels >= 1 and len(capped) == 8 - capped.dropped.too_long_labels
    with pytest.raises(AsrEvalError, match="no utterances in split 'dev'"):
        ShardSpeechDataset(corpus, "dev", enc)


def test_block_shuffle_sampler_is_a_deterministic_grouped_permutation():
    groups = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    s = BlockShuffleSampler(groups, block=2, seed=7)
    order = list(s)
    assert sorted(order) == list(range(10)) and len(s) == 10
    assert list(BlockShuffleSampler(groups, block=2, seed=7)) == order  # same seed, same epoch
    owner = {i: g for g, items in enumerate(groups) for i in items}
    first = order[:len(groups[owner[order[0]]]) + 3]
    # The first window holds exactly two row groups; their items are not interleaved with others.
    window_groups = {owner[i] for i in order if owner[i] in {owner[j] for j in first}}
    n_first = sum(len(groups[g]) for g in window_groups)
    assert len(window_groups) == 2 and {owner[i] for i in order[:n_first]} == window_groups
    epochs = set()
    for e in range(4):
        s.set_epoch(e)
        epochs.add(tuple(s))
    assert len(epochs) > 1


# ───────────────────────────── metrics ─────────────────────────────


def test_cer_metrics_are_character_counts_not_word_error_rate():
    m = cer_metrics(["今天天气很好", "你好世界"], ["今天天很好", "你好世界啊"], get_profile("zh-v1"))
    # one deletion (气) over 6 chars, one insertion (啊) over 4 chars: pooled 2 / 10
    assert (m["cer_s"], m["cer_d"], m["cer_i"], m["cer_n"]) == (0, 1, 1, 10)
    assert m["cer"] == pytest.approx(0.2)


def test_compute_metrics_decodes_generated_ids_padded_with_minus_100(corpus, processor80, tmp_path):
    tok = processor80.tokenizer
    enc = LabelEncoder(tok, get_profile("zh-train-v1"))
    ds = ShardSpeechDataset(corpus, "test", enc, max_samples=2)
    ids = [enc.encode_many([t])[0] for t in ds.texts]
    ids[1] = ids[1][:5] + [tok.eos_token_id]  # second hypothesis: only its first text token
    width = max(map(len, ids))
    pred = np.full((2, width), -100)
    for r, row in enumerate(ids):
        pred[r, :len(row)] = row

    class P:
        predictions, label_ids = pred, None

    m = make_compute_metrics(tok, ds, get_profile("zh-v1"), tmp_path, step=lambda: 7)(P())
    ref1 = get_profile("zh-v1").normalize(ds.texts[1])
    hyp1 = tok.decode(ids[1], skip_special_tokens=True)
    assert m["cer_n"] == len(get_profile("zh-v1").normalize(ds.texts[0])) + len(ref1)
    assert m["cer_s"] + m["cer_d"] + m["cer_i"] == len(ref1) - len(hyp1) > 0
    rows = [json.loads(x) for x in (tmp_path / "step-7.jsonl").read_text().splitlines()]
    assert [r["utt_id"] for r in rows] == ds.utt_ids and rows[0]["hyp"] == tok.decode(ids[0], skip_special_tokens=True)


@pytest.mark.parametrize("device, precision, want", [
    ("cpu", "auto", (False, "fp32")),
    ("cpu", "fp32", (False, "fp32")),
    ("cpu", "bf16", "needs a CUDA GPU"),
    ("cpu", "int8", "not one of"),
    ("cuda:1", "auto", "CUDA_VISIBLE_DEVICES"),
])
def test_resolve_device(device, precision, want):
    from asr_eval.train.finetune import resolve_device

    if isinstance(want, str):
        with pytest.raises(AsrEvalError, match=want):
            resolve_device(device, precision)
    else:
        assert resolve_device(device, precision) == want


# ───────────────────────────── end to end ─────────────────────────────


class CrashAt(TrainerCallback):
    """Simulates a crash (after the step-2 checkpoint) to test resuming."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise RuntimeError("simulated crash")


class PoisonAt(TrainerCallback):
    """Makes the weights NaN after a step, so the next loss is NaN (for the live monitor)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step == self.step:
            with torch.no_grad():
                model.proj_out.weight.fill_(float("nan"))


def _train_losses(run_dir: Path) -> dict[int, float]:
    out = {}
    for line in (run_dir / "loss_stream.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == "train":
            out[r["step"]] = float(r["loss"])
    return out


@pytest.fixture(scope="module")
def run80(corpus, tiny80, tmp_path_factory):
    """The shared tiny run, with progress on as in a CI log: stdout and stderr are a file, not a
    terminal (``make demo > demo.log 2>&1``). The progress lines are kept in ``PROGRESS_LINES``,
    everything a person would read (stdout, stderr, the lines) in ``OUTPUT``."""
    import contextlib
    import io
    import logging

    from transformers.utils import logging as hf_logging

    from asr_eval.progress import LOGGER_NAME

    out = io.StringIO()

    class Keep(logging.Handler):
        def emit(self, record):
            PROGRESS_LINES.append(record.getMessage())
            out.write(record.getMessage() + "\n")

    root = tmp_path_factory.mktemp("run80")
    db = root / "store.duckdb"
    handler, log = Keep(), logging.getLogger(LOGGER_NAME)
    log.addHandler(handler)
    keys = ("ASR_EVAL_PROGRESS", "ASR_EVAL_PROGRESS_INTERVAL", "HF_HUB_DISABLE_PROGRESS_BARS")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(ASR_EVAL_PROGRESS="auto", ASR_EVAL_PROGRESS_INTERVAL="1e-9")  # a line per step
    os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    hf_logging.enable_progress_bar()  # as in a fresh process: the run itself must turn the tqdm bars off
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            res = finetune(corpus, str(tiny80), root / "run", _cfg(tensorboard=True), db=db, progress=True)
    finally:
        log.removeHandler(handler)
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    OUTPUT.append(out.getvalue())
    return res, db


PROGRESS_LINES: list[str] = []
OUTPUT: list[str] = []


def test_finetune_logs_steps_and_evaluations_when_not_on_a_terminal(run80):
    """Training steps and each evaluation's utterances as log lines (done/total, time, ETA); the
    Trainer's own bars are off."""
    train = [ln for ln in PROGRESS_LINES if ln.startswith("fine-tuning:")]
    assert train[0] == "fine-tuning: started, 4 steps"
    assert [ln.split(" steps")[0] for ln in train[1:]] == [f"fine-tuning: {k}/4" for k in (1, 2, 3, 4)]
    assert "ETA" in train[1] and train[-1].startswith("fine-tuning: 4/4 steps (100 %)") and "done in" in train[-1]
    for step in (0, 2, 4):  # 3 evaluation utterances, one batch
        ev = [ln for ln in PROGRESS_LINES if ln.startswith(f"evaluating at step {step}:")]
        assert ev[0] == f"evaluating at step {step}: started, 3 utterances"
        assert ev[-1].startswith(f"evaluating at step {step}: 3/3 utterances (100 %)") and "done in" in ev[-1]


def test_finetune_output_off_a_terminal_is_clean_lines(run80):
    """Written to a file, a fine-tune prints our lines only: no tqdm fragments (hub/transformers
    "Loading weights", "Writing model shards", the Trainer's bars), no Trainer dict lines; each step
    line carries its loss, grad-norm and learning rate, each evaluation its CER as NN.NN %."""
    res, _ = run80
    text = OUTPUT[0]
    assert text.strip()
    for fragment in ("it/s]", "s/it]", "%|", "Loading weights", "Writing model shards"):
        assert fragment not in text, fragment
    assert not re.search(r"\{'(loss|eval_loss|train_runtime)'|'grad_norm':", text)  # no dict lines
    steps = [ln for ln in text.splitlines() if ln.startswith("fine-tuning: 2/4 steps")]
    assert len(steps) == 1 and re.search(r" — loss \d+\.\d{4}, grad-norm \d+\.\d{2}, lr \d\.\d{2}e-\d{2}$", steps[0])
    assert re.search(r"^fine-tuning: 4/4 steps \(100 %\).* — mean loss \d+\.\d{4}$", text, re.M)
    zero = [ln for ln in text.splitlines() if ln.startswith("evaluating at step 0: 3/3")]
    m = re.search(r" — CER (\d+\.\d{2}) % \(S (\d+) · D (\d+) · I (\d+) of (\d+)\), eval loss \d+\.\d{4}$", zero[0])
    assert m and float(m[1]) == round(100 * res.zero_shot_cer, 2)
    assert (int(m[2]) + int(m[3]) + int(m[4])) / int(m[5]) == pytest.approx(res.zero_shot_cer)
    assert not re.search(r"CER \d\.\d{3}", text)  # never a raw fraction


def test_finetune_end_to_end_checkpoints_and_run_record(run80, corpus):
    res, _ = run80
    out = res.out_dir
    assert res.status == "finished" and res.final_step == 4
    assert (out / "checkpoint-4" / "optimizer.pt").is_file()
    for d in (res.best_dir, res.final_dir):
        names = {p.name for p in d.iterdir()}
        assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
        assert not names & {"optimizer.pt", "scheduler.pt", "trainer_state.json"}
        gc = json.loads((d / "generation_config.json").read_text())
        assert (gc["language"], gc["task"], gc["max_new_tokens"]) == ("zh", "transcribe", 6)
    hist = {e["step"]: e for e in res.eval_history}
    assert sorted(hist) == [0, 2, 4]  # step 0 = the base model's zero-shot CER
    assert res.zero_shot_cer == hist[0]["cer"]
    assert res.best_cer == min(hist[2]["cer"], hist[4]["cer"]) and hist[res.best_step]["cer"] == res.best_cer
    for e in hist.values():  # CER, with its counts, not WER
        assert e["cer"] == pytest.approx((e["cer_s"] + e["cer_d"] + e["cer_i"]) / e["cer_n"])
    run = read_run(out)
    assert run["status"] == "finished" and run["training_run_id"] == res.training_run_id
    assert run["corpus_id"] == corpus_id_for(corpus) == res.corpus_id
    assert run["best"]["step"] == res.best_step and run["n_train"] == 8 and run["n_eval"] == 3
    assert _train_losses(out).keys() == {1, 2, 3, 4}
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(json.loads(x)["step"] for x in (out / "loss_stream.jsonl").read_text().splitlines()
                  if json.loads(x)["kind"] == "eval") == [0, 2, 4]


def test_finetune_registers_models_with_lineage(run80):
    res, db = run80
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT model_id, base_model_id, corpus_id, training_run_id, step FROM models "
                       "WHERE training_run_id IS NOT NULL ORDER BY step").fetchall()
    names = con.execute("SELECT step, display_name, path FROM models WHERE training_run_id IS NOT NULL").fetchall()
    base = con.execute("SELECT model_id FROM models WHERE model_id = ?", [res.base_model_id]).fetchall()
    runs = con.execute("SELECT base_model_id, corpus_id, status FROM training_runs WHERE training_run_id = ?",
                       [res.training_run_id]).fetchall()
    log = con.execute("SELECT kind, count(*) FROM training_log WHERE training_run_id = ? GROUP BY kind ORDER BY kind",
                      [res.training_run_id]).fetchall()
    corpora = con.execute("SELECT corpus_id FROM corpora").fetchall()
    con.close()
    want = {(res.model_ids["best"], res.best_step), (res.model_ids["final"], 4)}
    assert {(r[0], r[4]) for r in rows} == want
    assert all(r[1:4] == (res.base_model_id, res.corpus_id, res.training_run_id) for r in rows)
    assert base and corpora == [(res.corpus_id,)]
    assert runs == [(res.base_model_id, res.corpus_id, "finished")]
    assert log == [("eval", 3), ("train", 4)]
    # Readable names (run dir / best|final + step); the full path stays in `path`.
    for step, disp, path in names:
        assert disp in (f"run/best (step {step})", f"run/final (step {step})") and path.endswith(disp.split(" ")[0])


def test_exported_models_load_in_a_transformers_pipeline(run80):
    from transformers import pipeline

    res, _ = run80
    audio = np.sin(2 * np.pi * 220 * np.arange(16000) / 16000).astype(np.float32) * 0.3
    for d in (res.best_dir, res.final_dir):
        asr = pipeline("automatic-speech-recognition", model=str(d), device="cpu")
        assert asr.task == "automatic-speech-recognition"  # the seed saved a 'summarization' pipeline
        out = asr({"raw": audio, "sampling_rate": 16000})
        assert isinstance(out["text"], str)


def test_exported_model_scores_on_both_engines_and_keeps_lineage(run80, corpus, tmp_path, monkeypatch):
    """A fine-tuned export converts to CTranslate2 and scores on both engines, one model id, lineage
    kept, trained with pad-audio (recorded) — and a pad-features run of it is a different run."""
    from asr_eval.scoring import expand_specs, score_models

    monkeypatch.setenv("ASR_EVAL_CACHE", str(tmp_path / "cache"))
    res, db = run80
    specs = expand_specs([str(res.final_dir)], "transformers,ctranslate2", "float32", "pad-audio,pad-features",
                         device="cpu", batch_size=4, max_new_tokens=6)
    run_ids = score_models(corpus, specs, db, split="test", n_boot=20, progress=False)
    assert len(set(run_ids)) == 4
    con = duckdb.connect(str(db), read_only=True)
    got = con.execute("SELECT DISTINCT r.model_id, m.training_run_id, m.step, m.train_preprocessing, s.n FROM eval_runs r "
                      "JOIN models m USING (model_id) JOIN slice_metrics s ON s.run_id = r.run_id AND s.slice_attr = '_all' "
                      f"WHERE r.run_id IN ({', '.join('?' * 4)})", run_ids).fetchall()
    axes = con.execute(f"SELECT engine, preprocessing FROM eval_runs WHERE run_id IN ({', '.join('?' * 4)}) ORDER BY 1, 2",
                       run_ids).fetchall()
    con.close()
    assert got == [(res.model_ids["final"], res.training_run_id, 4, "pad-audio", 4)]
    assert axes == [("ctranslate2", "pad-audio"), ("ctranslate2", "pad-features"),
                    ("transformers", "pad-audio"), ("transformers", "pad-features")]


def test_resume_after_a_crash_continues_from_the_last_checkpoint(corpus, tiny80, run80, tmp_path, monkeypatch):
    import transformers.trainer

    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(corpus, str(tiny80), out, _cfg(), progress=False, callbacks=[CrashAt(3)])
    assert read_run(out)["status"] == "failed" and last_complete_checkpoint(out).name == "checkpoint-2"
    logged: list[str] = []
    real_warning = transformers.trainer.logger.warning
    monkeypatch.setattr(transformers.trainer.logger, "warning", lambda msg, *a, **k: (logged.append(str(msg)),
                                                                                       real_warning(msg, *a, **k)))
    tied: list[bool] = []

    class TiedAfterResume(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kw):
            tied.append(model.proj_out.weight is model.model.decoder.embed_tokens.weight)

    res = finetune(corpus, str(tiny80), out, _cfg(), progress=False, callbacks=[TiedAfterResume()])
    # The tied output projection is not reported as a missing key, and is tied after loading.
    assert not [m for m in logged if "missing keys" in m], logged
    assert tied and all(tied)
    assert res.status == "finished" and res.resumed_from == str(out / "checkpoint-2")
    assert res.training_run_id == read_run(out)["training_run_id"]
    # Same seed, same data order, restored optimizer/RNG: the resumed steps match an uninterrupted run.
    ref = _train_losses(run80[0].out_dir)
    got = _train_losses(out)
    assert got.keys() == {1, 2, 3, 4}
    for step in (3, 4):
        assert got[step] == pytest.approx(ref[step], rel=1e-5)
    assert read_run(out)["resumed_from"] == [str(out / "checkpoint-2")]


def test_refuses_an_out_dir_of_another_run(corpus, tiny128, run80):
    with pytest.raises(AsrEvalError, match="use another --out"):
        finetune(corpus, str(tiny128), run80[0].out_dir, _cfg(), progress=False)


def test_live_monitor_stops_a_diverged_run_and_keeps_its_final_state(corpus, tiny80, tmp_path):
    cfg = _cfg(max_steps=6, eval_steps=4, live_monitor=True, eval_on_start=False)
    res = finetune(corpus, str(tiny80), tmp_path / "run", cfg, progress=False, callbacks=[PoisonAt(2)])
    assert res.status == "stopped" and res.final_step == 3
    assert (res.final_dir / "model.safetensors").is_file()
    run = read_run(res.out_dir)
    assert (run["stopped_by"]["severity"], run["stopped_by"]["step"]) == ("critical", 3)
    assert math.isnan(_train_losses(res.out_dir)[3])  # the raw stream keeps the NaN


def test_128_mel_base_with_activation_checkpointing_through_the_cli(corpus, tiny128, tmp_path):
    from typer.testing import CliRunner

    from asr_eval.cli import _register_commands, app

    _register_commands()
    out, db = tmp_path / "run128", tmp_path / "s.duckdb"
    r = CliRunner().invoke(app, [
        "finetune", "--corpus", str(corpus), "--base", str(tiny128), "--out", str(out), "--max-steps", "2",
        "--eval-steps", "2", "--batch-size", "4", "--warmup-steps", "0", "--lr", "1e-3", "--max-eval-samples", "2",
        "--max-new-tokens", "4", "--no-eval-on-start", "--no-live-monitor", "--gradient-checkpointing",
        "--db", str(db)])
    assert r.exit_code == 0, r.output
    assert "best" in r.output and "final" in r.output
    cfg = json.loads((out / "final" / "config.json").read_text())
    fe = json.loads((out / "final" / "processor_config.json").read_text())["feature_extractor"]
    assert cfg["num_mel_bins"] == 128 and fe["feature_size"] == 128
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT DISTINCT num_mel_bins, step FROM models WHERE training_run_id IS NOT NULL").fetchall()
    assert rows == [(128, 2)]
    con.close()


def test_eval_step_encodes_once_and_matches_seq2seq_trainer(corpus, tiny80, tmp_path):
    from transformers import Seq2SeqTrainer

    from asr_eval.train.finetune import _ShardTrainer, training_args

    lm = models.load(str(tiny80), device="cpu", max_new_tokens=5)
    ds = ShardSpeechDataset(corpus, "test", LabelEncoder(lm.processor.tokenizer, get_profile("zh-train-v1")))
    coll = SpeechSeq2SeqCollator(lm.processor.feature_extractor, lm.model.config.decoder_start_token_id)
    batch = coll([ds[i] for i in range(3)])
    args = training_args(_cfg(), tmp_path, use_cuda=False, precision="fp32", progress=False, eval_on_start=False)
    calls = []
    hook = lm.model.get_encoder().register_forward_hook(lambda *a: calls.append(1))
    out = {}
    for cls in (Seq2SeqTrainer, _ShardTrainer):
        calls.clear()
        tr = cls(model=lm.model, args=args, eval_dataset=ds, data_collator=coll, processing_class=lm.processor)
        tr._gen_kwargs = {}
        out[cls] = (tr.prediction_step(lm.model, dict(batch), prediction_loss_only=False), len(calls))
    hook.remove()
    (ref, n_ref), (got, n_got) = out[Seq2SeqTrainer], out[_ShardTrainer]
    assert (n_ref, n_got) == (2, 1)
    assert got[0].item() == pytest.approx(ref[0].item(), rel=1e-6)
    assert torch.equal(got[1], ref[1]) and torch.equal(got[2], ref[2])


def test_resume_from_a_damaged_checkpoint_is_a_clear_error(corpus, tiny80, tmp_path):
    from asr_eval.train.finetune import CHECKSUMS_FILE

    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(corpus, str(tiny80), out, _cfg(eval_on_start=False), progress=False, callbacks=[CrashAt(3)])
    ckpt = out / "checkpoint-2"
    sums = json.loads((ckpt / CHECKSUMS_FILE).read_text())
    assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= set(sums)
    weights = ckpt / "model.safetensors"
    good = weights.read_bytes()
    # Truncated: safetensors refuses to open it.
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(AsrEvalError) as e:
        finetune(corpus, str(tiny80), out, _cfg(eval_on_start=False), progress=False)
    msg = str(e.value)
    assert f"checkpoint {ckpt} is damaged: model.safetensors does not open" in msg
    assert f"delete {ckpt} to resume from the start" in msg
    # One byte flipped inside a tensor (the header still parses): the saved SHA-256 catches it.
    flipped = bytearray(good)
    flipped[-10] ^= 0xFF
    weights.write_bytes(bytes(flipped))
    with pytest.raises(AsrEvalError, match=r"model.safetensors has SHA-256 .* but was saved with"):
        finetune(corpus, str(tiny80), out, _cfg(eval_on_start=False), progress=False)
    # The fix the message names works: without the damaged checkpoint the run starts over and finishes.
    import shutil

    shutil.rmtree(ckpt)
    res = finetune(corpus, str(tiny80), out, _cfg(eval_on_start=False), progress=False)
    assert res.status == "finished" and res.resumed_from is None and res.final_step == 4


def test_warmup_is_a_fraction_by_default_and_too_long_warmup_warns(corpus, tiny80, tmp_path):
    from asr_eval.train.finetune import WarmupWarning, training_args, warmup_step_count, warmup_warning

    assert FinetuneConfig().warmup_steps == 0.05
    assert warmup_step_count(FinetuneConfig(max_steps=1000)) == 50
    assert warmup_step_count(FinetuneConfig(max_steps=12)) == 1  # ceil(0.6)
    assert warmup_step_count(FinetuneConfig(max_steps=12, warmup_steps=4)) == 4
    assert warmup_warning(FinetuneConfig(max_steps=1000)) is None
    msg = warmup_warning(FinetuneConfig(max_steps=12, warmup_steps=50, learning_rate=1e-5))
    assert msg.startswith("warm-up is 50 steps but the run is 12 steps") and "2.4e-06" in msg
    args = training_args(FinetuneConfig(max_steps=12), tmp_path, False, "fp32", False, eval_on_start=False)
    assert args.warmup_steps == 1
    with pytest.raises(AsrEvalError, match="must be ≥ 0"):
        warmup_step_count(FinetuneConfig(warmup_steps=-1))
    with pytest.warns(WarmupWarning, match="warm-up is 4 steps but the run is 4 steps"):
        finetune(corpus, str(tiny80), tmp_path / "run", _cfg(warmup_steps=4, max_steps=4, eval_steps=4,
                                                              eval_on_start=False), progress=False)


# ───────────────────────────── selection split (issue 12) ─────────────────────────────


def test_carve_dev_is_seeded_by_speaker_and_capped():
    from asr_eval.train.selection import carve_dev

    rows = [(f"u{i:03d}", f"s{i % 20}") for i in range(200)]  # 20 speakers × 10 utterances
    ids, by = carve_dev(rows, fraction=0.1, cap=500, seed=0)
    assert by == "speaker" and len(ids) == 20 and ids == carve_dev(rows, 0.1, 500, 0)[0]
    speakers = {f"s{int(u[1:]) % 20}" for u in ids}
    assert len(speakers) == 2  # two whole speakers: no voice is in both train and dev
    assert ids != carve_dev(rows, 0.1, 500, 1)[0]
    assert len(carve_dev(rows, 0.5, 30, 0)[0]) == 30  # the cap
    anon = [(f"u{i:03d}", None) for i in range(50)]
    ids, by = carve_dev(anon, 0.1, 500, 0)
    assert by == "utterance" and len(ids) == 5
    with pytest.raises(AsrEvalError, match="too few to carve"):
        carve_dev([("u0", None)])


def test_finetune_without_a_dev_split_carves_one_and_never_trains_on_it(corpus, tiny80, tmp_path):
    from asr_eval.train.selection import SELECTION_FILE, _split_rows, carve_dev

    class Seen(TrainerCallback):
        train_ids: list[str] = []
        eval_ids: list[str] = []

        def on_train_begin(self, args, state, control, train_dataloader=None, **kw):
            Seen.train_ids = list(train_dataloader.dataset.utt_ids)

    res = finetune(corpus, str(tiny80), tmp_path / "run", _cfg(eval_split="auto", max_steps=2, eval_steps=2),
                   db=tmp_path / "s.duckdb", progress=False, callbacks=[Seen()])
    want, by = carve_dev(_split_rows(corpus, "train"), 0.1, 500, 0)  # ceil(0.1 × 8) = 1 utterance
    assert len(want) == 1 and by == "utterance"
    saved = json.loads((res.out_dir / SELECTION_FILE).read_text())
    assert saved["utt_ids"] == want and saved["label"] == "train:dev-carve" and saved["carved"] is True
    assert res.selection["label"] == "train:dev-carve" and res.n_train == 7 and res.n_eval == 1
    assert len(Seen.train_ids) == 7 and not set(Seen.train_ids) & set(want)
    run = read_run(res.out_dir)
    assert run["selection_split"] == "train:dev-carve" and run["eval_split"] == "train:dev-carve"
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    sel = {r[0] for r in con.execute("SELECT selection_split FROM models WHERE training_run_id IS NOT NULL").fetchall()}
    con.close()
    assert sel == {"train:dev-carve"}
    lineage = json.loads((res.best_dir / "asr_eval_lineage.json").read_text())
    assert lineage["selection_split"] == "train:dev-carve"
    with pytest.raises(AsrEvalError, match="the training split"):
        finetune(corpus, str(tiny80), tmp_path / "run2", _cfg(eval_split="train"), progress=False)


def test_freeze_encoder_layers_freezes_the_stem_and_the_lower_layers_only(tiny80):
    from asr_eval.train.finetune import prepare_model

    m = models.load(str(tiny80), device="cpu", dtype="float32").model
    enc = m.get_encoder()
    n = len(enc.layers)
    prepare_model(m, _cfg(freeze_encoder_layers=1))
    frozen = {name for name, p in m.named_parameters() if not p.requires_grad}
    want = {f"model.encoder.{name}" for mod in ("conv1", "conv2", "embed_positions", "layers.0")
            for name, _ in [(f"{mod}.{k}", v) for k, v in enc.get_submodule(mod).named_parameters()]}
    assert frozen == want and n >= 2  # layer 1 and above, the final layer norm and the decoder train
    with pytest.raises(AsrEvalError, match=f"has {n} layers"):
        prepare_model(models.load(str(tiny80), device="cpu", dtype="float32").model, _cfg(freeze_encoder_layers=n + 1))
