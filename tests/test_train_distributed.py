"""Fine-tuning under torchrun: 2 CPU processes (gloo) run the real ``asr-eval finetune`` on a tiny
random Whisper and a 3-shard tiny corpus; ``tests/train_dist_worker.py`` records, per rank, the
utterances of every batch it built and a hash of the weights after every step.

Two launches of the same command (the tests marked slow). In the first the weights turn NaN after
step 4, so step 5's loss is NaN and the live monitor — on rank 0 — stops the run; both ranks stop
and save checkpoint-5. The diverged checkpoint is deleted (what one does after a divergence) and
the same command run again: it resumes from checkpoint-3, one step into epoch 1, on both ranks,
finishes at step 6 and registers the run. The other tests check the rank helpers and the
launcher without a launch.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import duckdb  # noqa: E402
import pytest  # noqa: E402
from test_train import _make_corpus  # noqa: E402

from asr_eval import models  # noqa: E402
from asr_eval.errors import AsrEvalError  # noqa: E402
from asr_eval.text import get_profile  # noqa: E402
from asr_eval.train import BlockShuffleSampler, LabelEncoder, ShardSpeechDataset, read_run  # noqa: E402
from asr_eval.train import distributed as dist  # noqa: E402
from asr_eval.train.launch import launch, torchrun_command  # noqa: E402

WORKER = str(Path(__file__).with_name("train_dist_worker.py"))
N, B = 2, 2                      # processes, per-process batch: a global batch of 4 of the 8 train utterances
STEPS, SAVE, POISON = 6, 3, 4    # 2 steps per epoch; checkpoint-3 is one step into epoch 1; NaN loss at step 5
LAUNCH_TIMEOUT_S = 300           # a rank left waiting at a collective fails the test instead of hanging it


def _launch(args: list[str], trace: Path, **env: str) -> subprocess.CompletedProcess:
    trace.mkdir(parents=True)
    env = {**os.environ, "TRACE_DIR": str(trace), "ASR_EVAL_PROGRESS": "log", "ASR_EVAL_PROGRESS_INTERVAL": "1e-9",
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    return subprocess.run(torchrun_command(N, [WORKER, *args]), check=False, env=env, capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT_S)


def _trace(trace: Path, rank: int) -> tuple[list[list[str]], dict[int, str]]:
    """(batches in the order this rank built them, {step: weights hash})."""
    batches, steps = [], {}
    for line in (trace / f"rank-{rank}.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "batch" in r:
            batches.append(r["batch"])
        else:
            assert r["step"] not in steps
            steps[r["step"]] = r["sha256"]
    return batches, steps


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    corpus = _make_corpus(root)  # 8 train utterances in 2 row groups over 3 shards, 4 test
    tiny = models.build_tiny_whisper(root / "tiny", num_mel_bins=80, seed=0, encoder_layers=1, decoder_layers=1,
                                     encoder_attention_heads=2, decoder_attention_heads=2)  # half the tiny: faster
    out, db = root / "run", root / "store.duckdb"
    args = ["finetune", "--corpus", str(corpus), "--base", str(tiny), "--out", str(out), "--db", str(db),
            "--max-steps", str(STEPS), "--eval-steps", str(SAVE), "--batch-size", str(B), "--warmup-steps", "0",
            "--lr", "1e-3", "--max-eval-samples", "3", "--max-new-tokens", "6", "--eval-split", "test"]
    stopped = _launch(args, root / "trace-stopped", POISON_AT=str(POISON))
    seen = {"record": read_run(out), "checkpoint-5": sorted(p.name for p in (out / "checkpoint-5").iterdir()),
            "alerts": (out / "live_alerts.jsonl").read_text().splitlines()}
    shutil.rmtree(out / "checkpoint-5")  # the diverged one: resume from the last good checkpoint
    resumed = _launch(args, root / "trace-resumed")
    return {"root": root, "corpus": corpus, "tiny": tiny, "out": out, "db": db,
            "stopped": stopped, "resumed": resumed, "after_stop": seen}


def _expected_batches(corpus: Path, tiny: Path) -> tuple[set[str], callable]:
    proc = models.load(str(tiny), device="cpu").processor
    ds = ShardSpeechDataset(corpus, "train", LabelEncoder(proc.tokenizer, get_profile("zh-train-v1")))
    per_epoch = len(ds) // (N * B)
    assert per_epoch * N * B == len(ds) == 8

    def batch(step: int, rank: int, epoch: int | None = None) -> list[str]:
        """What rank ``rank`` must train on at ``step`` (1-based): per-process batch k·N + rank of the
        sampler's order for the step's epoch, the order being the same on every rank."""
        e, j = divmod(step - 1, per_epoch)
        s = BlockShuffleSampler(ds.groups(), block=ds.cache_row_groups, seed=0)
        s.set_epoch(e if epoch is None else epoch)
        order = list(s)
        k = j * N + rank
        return [ds.utt_ids[i] for i in order[k * B:(k + 1) * B]]

    return set(ds.utt_ids), batch


@pytest.mark.slow
def test_both_launches_exit_cleanly(ddp):
    for name in ("stopped", "resumed"):
        p = ddp[name]
        assert p.returncode == 0, f"{name}: {p.stdout[-3000:]}\n{p.stderr[-6000:]}"


@pytest.mark.slow
def test_a_stop_decided_on_rank_0_stops_every_rank(ddp):
    """NaN weights after step 4 make step 5's loss NaN; the live monitor (rank 0) stops the run and
    rank 1 stops with it, at the same step, and both save (else one would wait forever)."""
    for rank in range(N):
        assert sorted(_trace(ddp["root"] / "trace-stopped", rank)[1]) == [1, 2, 3, 4, 5]
    seen = ddp["after_stop"]
    run = seen["record"]
    assert (run["status"], run["final_step"], run["stopped_by"]["step"]) == ("stopped", 5, 5)
    assert run["stopped_by"]["severity"] == "critical" and len(seen["alerts"]) >= 1
    assert {f"rng_state_{r}.pth" for r in range(N)} <= set(seen["checkpoint-5"])  # both ranks saved
    log = ddp["stopped"].stdout + ddp["stopped"].stderr
    assert log.count(f"training run {run['training_run_id']} — stopped") == 1


@pytest.mark.slow
def test_each_rank_trains_on_its_own_half_of_every_global_batch_across_the_resume(ddp):
    train_ids, expected = _expected_batches(ddp["corpus"], ddp["tiny"])
    # The resumed launch restarts one step into epoch 1: it must take up epoch 1's order, not epoch 0's.
    assert any(expected(4, r) != expected(4, r, epoch=0) for r in range(N))
    for name, steps in (("stopped", range(1, 6)), ("resumed", range(SAVE + 1, STEPS + 1))):
        seen = {}
        for rank in range(N):
            batches, hashes = _trace(ddp["root"] / f"trace-{name}", rank)
            assert sorted(hashes) == list(steps), (name, rank)
            train = [b for b in batches if set(b) <= train_ids]
            assert all(set(b) <= train_ids or not set(b) & train_ids for b in batches)  # eval batches: test split
            # accelerate's loader builds one batch ahead: at most one built batch was not trained on
            assert len(steps) <= len(train) <= len(steps) + 1, (name, rank, train)
            seen[rank] = dict(zip(steps, train, strict=False))
        for step in steps:
            got = [seen[r][step] for r in range(N)]
            assert got == [expected(step, r) for r in range(N)], (name, step)
            assert not set(got[0]) & set(got[1])  # disjoint halves of the global batch


@pytest.mark.slow
def test_weights_are_identical_on_both_ranks_and_equal_the_final_export(ddp):
    from safetensors.torch import load_file
    from train_dist_worker import weights_sha256

    hashes = {}
    for name in ("stopped", "resumed"):
        h0, h1 = (_trace(ddp["root"] / f"trace-{name}", r)[1] for r in range(N))
        assert h0 == h1 and h0, name
        hashes[name] = h0
    # Resumed from checkpoint-3, step 4 ends with the very weights of the first launch (poisoned after it).
    assert hashes["resumed"][4] == hashes["stopped"][4]
    final = load_file(str(ddp["out"] / "final" / "model.safetensors"))
    assert weights_sha256(final) == hashes["resumed"][STEPS]


def _stream(run_dir: Path) -> list[list[dict]]:
    """The loss stream split into the segments each launch appended (each starts with a meta line)."""
    segs: list[list[dict]] = []
    for line in (run_dir / "loss_stream.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == "meta":
            segs.append([])
        segs[-1].append(r)
    return segs


@pytest.mark.slow
def test_rank_0_alone_writes_the_stream_the_record_and_the_summary(ddp):
    out = ddp["out"]
    stopped, resumed = _stream(out)  # one meta line per launch, not one per rank
    for seg, train_steps, eval_steps, status in ((stopped, [1, 2, 3, 4, 5], [0, SAVE], "stopped"),
                                                 (resumed, [4, 5, 6], [STEPS], "finished")):
        assert [r["step"] for r in seg if r["kind"] == "train"] == train_steps
        assert [r["step"] for r in seg if r["kind"] == "eval"] == eval_steps
        assert [r["status"] for r in seg if r["kind"] == "end"] == [status]
    loss = [{r["step"]: float(r["loss"]) for r in seg if r["kind"] == "train"} for seg in (stopped, resumed)]
    assert loss[1][4] == loss[0][4] and loss[0][5] != loss[0][5]  # the same step 4; the first step 5 was NaN
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one writer per launch
    preds = [json.loads(x)["utt_id"] for x in (out / "eval_predictions" / "step-0.jsonl").read_text().splitlines()]
    assert len(preds) == len(set(preds)) == 3
    sums = json.loads((out / "checkpoint-6" / "asr_eval_checksums.json").read_text())
    assert {f"rng_state_{r}.pth" for r in range(N)} <= set(sums)  # hashed after every rank saved its part
    run = read_run(out)
    assert (run["status"], run["world_size"], run["final_step"], run["stopped_by"]) == ("finished", N, STEPS, None)
    assert run["resumed_from"] == [str(out / f"checkpoint-{SAVE}")]
    log = ddp["resumed"].stdout + ddp["resumed"].stderr
    assert log.count(f"training run {run['training_run_id']} — finished") == 1
    assert log.count("fine-tuning: started") == 1 and log.count(f"evaluating at step {STEPS}: started") == 1
    assert log.count("resumed from") == 1


@pytest.mark.slow
def test_the_registered_model_loads_and_scores(ddp, tmp_path, monkeypatch):
    from asr_eval.scoring import expand_specs, score_models

    monkeypatch.setenv("ASR_EVAL_CACHE", str(tmp_path / "cache"))
    run, db = read_run(ddp["out"]), ddp["db"]
    specs = expand_specs([str(ddp["out"] / "final")], "transformers", "float32", "pad-audio", device="cpu",
                         batch_size=4, max_new_tokens=6)
    (run_id,) = score_models(ddp["corpus"], specs, db, split="test", n_boot=20, progress=False)
    con = duckdb.connect(str(db), read_only=True)
    models_rows = con.execute("SELECT model_id, step FROM models WHERE training_run_id = ? ORDER BY step",
                              [run["training_run_id"]]).fetchall()
    status = con.execute("SELECT status FROM training_runs WHERE training_run_id = ?",
                         [run["training_run_id"]]).fetchall()
    log = con.execute("SELECT kind, count(*) FROM training_log WHERE training_run_id = ? GROUP BY kind ORDER BY kind",
                      [run["training_run_id"]]).fetchall()
    scored = con.execute("SELECT r.model_id, s.n FROM eval_runs r JOIN slice_metrics s ON s.run_id = r.run_id "
                         "AND s.slice_attr = '_all' WHERE r.run_id = ?", [run_id]).fetchall()
    con.close()
    assert (run["final"]["model_id"], STEPS) in models_rows and status == [("finished",)]
    assert log == [("eval", 3), ("train", STEPS)]  # steps 4, 5 re-run after the stop are stored once
    assert scored == [(run["final"]["model_id"], 4)]


# ───────────────────────────── without a launch ─────────────────────────────


def test_rank_helpers_are_no_ops_in_one_process(monkeypatch):
    for k in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(k, raising=False)
    assert (dist.world_size(), dist.rank(), dist.is_main(), dist.active()) == (1, 0, True, False)
    assert dist.on_main(lambda: 42) == 42 and dist.gather("x") == ["x"] and dist.any_rank(True) is True
    dist.require_same("same", "anything", "no fix needed")
    dist.barrier()
    with pytest.raises(AsrEvalError, match="damaged"):
        dist.on_main(lambda: (_ for _ in ()).throw(AsrEvalError("damaged")))
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "3")
    assert (dist.launched_world_size(), dist.rank(), dist.is_main()) == (8, 3, False)  # before joining the group


def test_precision_is_ours_not_accelerate_launch_s(monkeypatch, tmp_path):
    """`accelerate launch --mixed_precision fp16` exports ACCELERATE_MIXED_PRECISION; an fp32 run
    must stay fp32 (and say so truthfully in its record)."""
    from asr_eval.train.finetune import FinetuneConfig, training_args

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    args = training_args(FinetuneConfig(max_steps=2), tmp_path, False, "fp32", False, eval_on_start=False)
    assert args.mixed_precision == "no" and not args.fp16


def test_launch_refuses_bad_process_counts_and_nesting(monkeypatch, tmp_path):
    from asr_eval.train.finetune import FinetuneConfig

    with pytest.raises(AsrEvalError, match="nproc_per_node 0 must be ≥ 1"):
        launch("c", "b", tmp_path, FinetuneConfig(), 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(AsrEvalError, match="already one of a torchrun"):
        launch("c", "b", tmp_path, FinetuneConfig(), 2)
    cmd = torchrun_command(4, ["-m", "asr_eval.train.launch", "spec.json"], master_port=29999)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[3:] == ["--nnodes", "1", "--nproc-per-node", "4", "--master-addr", "127.0.0.1", "--master-port",
                       "29999", "-m", "asr_eval.train.launch", "spec.json"]



def test_launch_entry_reports_a_user_error_to_the_caller(tmp_path):
    """What each process of ``launch`` runs (``python -m asr_eval.train.launch SPEC``), here in one
    process: the spec's finetune fails on the missing corpus, rank 0 writes the message where
    ``launch`` reads it back (and raises it as the AsrEvalError a single process raises)."""
    from asr_eval.train.finetune import FinetuneConfig, finetune
    from asr_eval.train.launch import main

    missing, err = tmp_path / "no-corpus", tmp_path / "spec.error"
    with pytest.raises(AsrEvalError) as single:
        finetune(missing, "bundled:whisper-base", tmp_path / "one", FinetuneConfig())
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"corpus": str(missing), "base": "bundled:whisper-base", "out": str(tmp_path / "two"),
                                "config": {"device": "cpu"}, "error_file": str(err)}))
    assert main([str(spec)]) == 2
    assert err.read_text() == str(single.value) and str(missing) in err.read_text()
