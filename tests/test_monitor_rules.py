"""check-training rules on synthetic curves with planted faults (each at a known step), the
seed recipe's own training table, the CLI's exit codes, and alerts in DuckDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from asr_eval.errors import AsrEvalError  # noqa: E402
from asr_eval.monitor import EvalPoint, TrainingCurve, TrainPoint, check, exit_code  # noqa: E402
from asr_eval.monitor.checking import check_run  # noqa: E402
from asr_eval.monitor.readers import load_curve  # noqa: E402
from asr_eval.monitor.rules import PairedErrors, RuleConfig, baseline_final  # noqa: E402
from asr_eval.store import connect  # noqa: E402

ASR_EVAL = [sys.executable, "-m", "asr_eval"]


def make_curve(steps, loss, grad_norm=None, eval_steps=(), eval_loss=(), cer=(), run_id="run", metric="cer",
               **meta) -> TrainingCurve:
    gn = grad_norm if grad_norm is not None else [None] * len(steps)
    train = [TrainPoint(int(s), float(v), None if g is None else float(g), 1e-5) for s, v, g in zip(steps, loss, gn)]
    evals = [EvalPoint(int(s), float(e), None if c is None else float(c)) for s, e, c in zip(eval_steps, eval_loss, cer)]
    return TrainingCurve(run_id, train, evals, metric=metric, meta=meta)


def healthy(n=1000, seed=0, eval_every=100, noise=0.05) -> dict:
    """A noisy but healthy fine-tune: loss and grad norm decay with multiplicative noise, eval
    loss and CER decay smoothly with a little noise."""
    rng = np.random.default_rng(seed)
    s = np.arange(1, n + 1)
    es = s[eval_every - 1::eval_every]
    return dict(
        steps=s,
        loss=(0.3 + 2.5 * np.exp(-s / 150)) * (1 + noise * rng.standard_normal(n)),
        grad_norm=(2 + 6 * np.exp(-s / 100)) * (1 + 2 * noise * rng.standard_normal(n)),
        eval_steps=es,
        eval_loss=(0.35 + 0.6 * np.exp(-es / 300)) * (1 + 0.005 * rng.standard_normal(len(es))),
        cer=(0.12 + 0.2 * np.exp(-es / 300)) * (1 + 0.005 * rng.standard_normal(len(es))),
    )


def keys(alerts):
    return sorted((a.rule, a.metric, a.step, a.severity) for a in alerts)


# ---------------------------------------------------------------- clean

@pytest.mark.parametrize("seed", range(5))
def test_clean_noisy_curve_raises_nothing(seed):
    assert check(make_curve(**healthy(seed=seed))) == []


def test_clean_run_against_a_baseline_of_the_same_recipe_raises_nothing():
    run, base = make_curve(**healthy(seed=1)), make_curve(**healthy(seed=2), run_id="base")
    assert check(run, baseline=base) == []


# ---------------------------------------------------------------- planted faults

def test_nan_is_critical_at_the_first_nonfinite_step():
    h = healthy(n=600)
    h["loss"][436:] = np.nan          # step 437 onward, like the Trainer's sticky NaN accumulator
    h["grad_norm"][436:] = np.nan
    h["eval_loss"][4:] = np.nan       # evals at 500, 600
    h["cer"][4:] = 1.0                # a NaN model transcribes nothing
    alerts = check(make_curve(**h))
    assert keys(alerts) == [
        ("cer_regression", "cer", 500, "regression"), ("cer_regression", "cer", 600, "regression"),
        ("non_finite", "eval_loss", 500, "critical"),
        ("non_finite", "grad_norm", 437, "critical"), ("non_finite", "loss", 437, "critical"),
    ]
    loss_alert = next(a for a in alerts if a.metric == "loss")
    assert f"train loss is nan at step 437 (last finite value {h['loss'][435]:.4g} at step 436)" in loss_alert.message
    assert exit_code(alerts) == 1


def test_inf_loss_recovering_is_two_episodes():
    h = healthy(n=300)
    h["loss"][[99, 199]] = np.inf
    assert keys(check(make_curve(**h))) == [("non_finite", "loss", 100, "critical"),
                                            ("non_finite", "loss", 200, "critical")]


def test_fp16_gradscaler_overflow_skips_are_tolerated_but_a_run_of_them_is_critical():
    h = healthy(n=400)
    h["grad_norm"][[0, 1, 150]] = np.inf           # scaler calibrating / an isolated overflow
    h["grad_norm"][299:304] = np.inf               # 5 in a row: steps 300..304
    fp16 = make_curve(**h, params={"fp16": True})
    assert keys(check(fp16)) == [("non_finite", "grad_norm", 304, "critical")]
    fp32 = make_curve(**h)
    assert [a.step for a in check(fp32)] == [1, 151, 300]


def test_loss_spike_ratio_and_zscore_at_the_planted_step():
    h = healthy()
    h["loss"][599:620] *= 3.0                      # steps 600..620 at 3x
    alerts = check(make_curve(**h))
    # z-score fires on the first spiked step; the ratio rule when ≥2x has held for 3 steps (600, 601, 602)
    assert keys(alerts) == [("loss_spike", "loss", 602, "regression"), ("loss_zscore", "loss", 600, "warning")]
    spike = next(a for a in alerts if a.rule == "loss_spike")
    assert "≥2× for 3 steps in a row (since step 600)" in spike.message


def test_grad_norm_spike_is_a_warning():
    h = healthy()
    h["grad_norm"][299:305] *= 4.0
    assert keys(check(make_curve(**h))) == [("loss_spike", "grad_norm", 302, "warning"),
                                            ("loss_zscore", "grad_norm", 300, "warning")]


def test_spike_shorter_than_min_steps_is_only_a_zscore_warning():
    h = healthy()
    h["loss"][[499, 500]] *= 3.0
    assert keys(check(make_curve(**h))) == [("loss_zscore", "loss", 500, "warning")]
    cfg = RuleConfig(spike_min_steps=2)
    assert ("loss_spike", "loss", 501, "regression") in keys(check(make_curve(**h), cfg))


def _overfit(cer_gain: float) -> TrainingCurve:
    h = healthy()
    el = h["eval_loss"].copy()
    el[5:] = el[4] * 1.05 ** np.arange(1, 6)       # eval loss rises from the eval at step 600 on
    cer = h["cer"].copy()
    cer[5:] = cer[4] * (1 - cer_gain * np.arange(1, 6) / 3)  # relative gain cer_gain by step 800
    return make_curve(**{**h, "eval_loss": el, "cer": cer})


def test_overfitting_without_cer_gain_is_a_regression_at_the_third_rise():
    alerts = check(_overfit(cer_gain=0.0))
    assert keys(alerts) == [("overfitting", "eval_loss", 800, "regression")]
    assert alerts[0].message.startswith("overfitting without CER gain: eval loss rose 3 evaluations in a row")
    assert "over steps 500–800" in alerts[0].message


def test_overfitting_with_cer_gain_is_only_a_warning():
    alerts = check(_overfit(cer_gain=0.05))
    assert keys(alerts) == [("overfitting", "eval_loss", 800, "warning")]
    assert exit_code(alerts) == 0


def test_hf_tutorial_shape_eval_loss_up_wer_down_is_a_warning():
    """The HF Whisper fine-tuning tutorial's shape: validation loss up every eval, WER down."""
    c = make_curve([1000, 2000, 3000, 4000], [0.10, 0.026, 0.0025, 0.0006], None, [1000, 2000, 3000, 4000],
                   [0.31, 0.36, 0.42, 0.47], [36.3, 33.1, 32.6, 32.0], metric="wer")
    alerts = check(c)
    assert keys(alerts) == [("overfitting", "eval_loss", 4000, "warning")]
    assert "WER went 36.3 → 32 (11.8% better" in alerts[0].message


def test_eval_loss_rising_with_train_loss_rising_is_not_overfitting():
    c = make_curve([1000, 2000, 3000, 4000], [0.1, 0.2, 0.3, 0.4], None, [1000, 2000, 3000, 4000],
                   [0.31, 0.36, 0.42, 0.47], [30, 30, 30, 30])
    assert [a.rule for a in check(c)] == []


@pytest.mark.parametrize("cers, zero_shot, expected", [
    # worse than the best earlier evaluation by more than 5%: 0.27 vs best 0.25 is +8%, never recovered
    ([0.30, 0.25, 0.27, 0.28], None, [("cer_regression", "cer", 300, "regression"),
                                      ("cer_regression", "cer", 400, "regression")]),
    # … recovered at step 400 (0.24 ≤ 0.25·1.05): a warning; the best checkpoint is what ships
    ([0.30, 0.25, 0.27, 0.24], None, [("cer_regression", "cer", 300, "warning")]),
    # +4% is inside the tolerance
    ([0.30, 0.25, 0.26, 0.24], None, []),
    # never better than the base model's zero-shot 0.20: every evaluation is a regression
    ([0.30, 0.25, 0.22], 0.20, [("cer_vs_zero_shot", "cer", 100, "regression"),
                                ("cer_vs_zero_shot", "cer", 200, "regression"),
                                ("cer_vs_zero_shot", "cer", 300, "regression")]),
    # the last evaluation beats zero-shot: the earlier ones were only warnings
    ([0.30, 0.25, 0.19], 0.20, [("cer_vs_zero_shot", "cer", 100, "warning"),
                                ("cer_vs_zero_shot", "cer", 200, "warning")]),
])
def test_cer_regression(cers, zero_shot, expected):
    steps = [100 * (i + 1) for i in range(len(cers))]
    c = make_curve(steps, [1.0] * len(cers), None, steps, [0.5 - 0.01 * i for i in range(len(cers))], cers)
    alerts = check(c, zero_shot_cer=zero_shot)
    assert keys(alerts) == expected
    if expected and expected[0][1:] == ("cer", 300, "warning"):
        assert alerts[0].message == ("eval CER 27.00 % at step 300 is +8.0% worse than the best earlier evaluation, "
                                     "25.00 % at step 200 (tolerance 5%); recovered at step 400 (24.00 %)")


def test_baseline_curve_regression_at_the_hand_computed_step():
    """Noise-free: the run equals the baseline until step 399, then its train loss and eval loss
    are 1.6x. Rolling mean of 20: after k+1 elevated steps the ratio is ≈ 1 + 0.6(k+1)/20, first
    above the +10% band at k+1 = 4 (1.12; 3 gives 1.09), i.e. step 403; 5 in a row → step 407.
    The eval at step 400 is already 1.6x, outside the band at once."""
    h = healthy(noise=0.0)
    h["eval_loss"] = 0.35 + 0.6 * np.exp(-h["eval_steps"] / 300)
    h["cer"] = 0.12 + 0.2 * np.exp(-h["eval_steps"] / 300)
    base = make_curve(**h, run_id="base")
    r = {**h, "loss": h["loss"] * np.where(h["steps"] >= 400, 1.6, 1.0),
         "eval_loss": h["eval_loss"] * np.where(h["eval_steps"] >= 400, 1.6, 1.0)}
    alerts = check(make_curve(**r), baseline=base)
    assert keys(alerts) == [("baseline_curve", "eval_loss", 400, "regression"),
                            ("baseline_curve", "loss", 407, "regression")]
    train_alert = next(a for a in alerts if a.metric == "loss")
    assert "vs baseline base's" in train_alert.message and "5 logged steps in a row" in train_alert.message


def test_baseline_cer_band_and_no_extrapolation():
    steps = [100, 200, 300, 400]
    base = make_curve(steps, [1, 1, 1, 1], None, steps[:3], [0.5, 0.5, 0.5], [0.20, 0.18, 0.16], run_id="b")
    run = make_curve(steps, [1, 1, 1, 1], None, steps, [0.5, 0.5, 0.5, 0.5], [0.20, 0.19, 0.16, 0.40])
    # 0.19 vs 0.18 is +5.6% (band 5%) → alert; 0.16 is back in band; step 400 is past the baseline's
    # last eval, so its 0.40 is not compared (no extrapolation)
    got = [a for a in check(run, baseline=base) if a.rule == "baseline_curve"]
    assert keys(got) == [("baseline_curve", "cer", 200, "regression")]
    assert got[0].threshold == pytest.approx(0.18 * 1.05)


def test_baseline_final_paired_bootstrap_regression():
    """300 utterances of 20 chars; baseline makes 1 error each, the run 2 → CER 0.05 vs 0.10."""
    n = np.full(300, 20)
    run = make_curve([1, 2], [1, 1], None, [2], [0.5], [0.10])
    worse = PairedErrors(np.full(300, 2), np.ones(300, int), n)
    [a] = baseline_final(run, worse, RuleConfig(n_boot=2000), "base")
    assert (a.rule, a.severity, a.step) == ("baseline_final", "regression", 2)
    assert a.value == pytest.approx(0.05)
    assert "final CER 10.00 % vs baseline base's 5.00 % on the same 300 utterances" in a.message
    assert "difference +5.00 points" in a.message
    same = PairedErrors(np.ones(300, int), np.ones(300, int), n)
    [b] = baseline_final(run, same, RuleConfig(n_boot=2000), "base")
    assert b.severity == "info" and "no significant difference" in b.message


def test_rule_config_validates():
    with pytest.raises(AsrEvalError, match="spike_ratio"):
        RuleConfig(spike_ratio=1.0)
    with pytest.raises(AsrEvalError, match="zscore_window"):
        RuleConfig(zscore_window=0)


# ---------------------------------------------------------------- the seed's own run

SEED_TABLE = [  # Training Loss, Epoch, Step, Validation Loss, Wer — the seed recipe's results
    (0.5179, 2.02, 1000, 0.3333, 72.9831), (0.1273, 4.04, 2000, 0.3562, 73.9621),
    (0.0163, 6.06, 3000, 0.3790, 73.9708), (0.004, 8.07, 4000, 0.3946, 72.3626),
    (0.025, 11.0, 5000, 0.4019, 72.6772),
]


def write_trainer_state(path: Path, rows=SEED_TABLE) -> Path:
    """A trainer_state.json as transformers writes it (train and eval entries per logged step)."""
    history = []
    for loss, epoch, step, vloss, wer in rows:
        history.append({"epoch": epoch, "learning_rate": 1e-5, "loss": loss, "step": step})
        history.append({"epoch": epoch, "eval_loss": vloss, "eval_runtime": 812.3, "eval_wer": wer, "step": step})
    history.append({"epoch": rows[-1][1], "step": rows[-1][2], "total_flos": 1.0, "train_loss": 0.138,
                    "train_runtime": 9000.0})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"global_step": rows[-1][2], "max_steps": rows[-1][2], "log_history": history,
                                "best_metric": 72.3626, "eval_steps": 1000, "logging_steps": 100}))
    return path


def test_seed_run_is_overfitting_without_cer_gain(tmp_path):
    c = load_curve(write_trainer_state(tmp_path / "whisper-small-zh" / "trainer_state.json"))
    assert (c.source, c.metric, len(c.train), len(c.evals)) == ("trainer_state", "wer", 5, 5)
    alerts = check(c)
    assert keys(alerts) == [("overfitting", "eval_loss", 4000, "regression")]
    assert alerts[0].message == (
        "overfitting without WER gain: eval loss rose 3 evaluations in a row, 0.3333 → 0.3946 (+18.4%) over "
        "steps 1000–4000, while train loss fell 0.5179 → 0.0040; WER went 72.98 → 72.36 (0.9% better; a gain "
        "needs ≥2%)")


# ---------------------------------------------------------------- live == offline

def test_live_callback_records_the_offline_alerts_and_stops_on_critical():
    from asr_eval.monitor.live import LiveMonitorCallback

    h = healthy()
    h["loss"][299:310] *= 3.0
    h["loss"][[150, 420]] = np.nan                 # non-finite points inside the look-back windows
    h["grad_norm"][[151, 152, 153]] = np.inf
    h["loss"][700:] *= 1.3                         # above the baseline from step 701
    el = h["eval_loss"].copy()
    el[5:] = el[4] * 1.05 ** np.arange(1, 6)
    h["eval_loss"] = el
    h["grad_norm"][899:] = np.nan
    curve = make_curve(**h)
    base = make_curve(**healthy(seed=7), run_id="base")
    offline = check(curve, baseline=base)

    live = LiveMonitorCallback(stop_on=(), baseline=base)
    args, control = SimpleNamespace(fp16=False), SimpleNamespace(should_training_stop=False)
    live.on_train_begin(args, None, control)
    evals = {p.step: p for p in curve.evals}
    for p in curve.train:  # the Trainer's order: the step's log, then its evaluation
        state = SimpleNamespace(global_step=p.step, is_world_process_zero=True)
        live.on_log(args, state, control, logs={"loss": p.loss, "grad_norm": p.grad_norm, "learning_rate": 1e-5})
        if p.step in evals:
            e = evals[p.step]
            live.on_evaluate(args, state, control, metrics={"eval_loss": e.loss, "eval_cer": e.cer})
    assert keys(live.alerts) == keys(offline)
    assert {a.rule for a in offline} == {"loss_spike", "loss_zscore", "overfitting", "non_finite", "baseline_curve"}
    assert control.should_training_stop is False  # stop_on=() only records

    stopper = LiveMonitorCallback()
    stopper.on_train_begin(args, None, control)
    for p in curve.train:
        state = SimpleNamespace(global_step=p.step, is_world_process_zero=True)
        stopper.on_log(args, state, control, logs={"loss": p.loss, "grad_norm": p.grad_norm})
        if control.should_training_stop:  # what the Trainer does
            break
    assert (stopper.stopped_by.rule, stopper.stopped_by.metric, stopper.stopped_by.step) == ("non_finite", "loss", 151)
    assert stopper.curve.train[-1].step == 151


# ---------------------------------------------------------------- CLI + store

def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*ASR_EVAL, "check-training", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=120)


def test_cli_seed_run_exits_1_and_stores_alerts(tmp_path):
    state = write_trainer_state(tmp_path / "whisper-small-zh" / "trainer_state.json")
    db = tmp_path / "s.duckdb"
    p = run_cli(str(state.parent), "--db", str(db), cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "overfitting without WER gain" in p.stdout and "1 regression" in p.stdout
    con = connect(db, read_only=True)
    try:
        runs = con.execute("SELECT training_run_id, name, source, status, params FROM training_runs").fetchall()
        assert len(runs) == 1 and runs[0][1:4] == ("whisper-small-zh", "trainer_state", "finished")
        assert json.loads(runs[0][4])["eval_metric"] == "wer"
        rows = con.execute("SELECT kind, count(*), max(cer) FROM training_log GROUP BY kind ORDER BY kind").fetchall()
        assert rows == [("eval", 5, 73.9708), ("train", 5, None)]
        alerts = con.execute("SELECT rule, severity, step, metric, value, threshold FROM alerts").fetchall()
        assert alerts == [("overfitting", "regression", 4000, "eval_loss", 0.3946, 0.3333)]
    finally:
        con.close()
    # idempotent: a re-check replaces the run's rows; by id it reads the store
    run_id = runs[0][0]
    p2 = run_cli(run_id, "--db", str(db), "--overfit-patience", "5", cwd=tmp_path)
    assert p2.returncode == 0, p2.stdout + p2.stderr
    assert "no alerts" in p2.stdout
    con = connect(db, read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM alerts").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM training_log").fetchone()[0] == 10
    finally:
        con.close()


def test_cli_clean_run_exits_0_and_no_store_writes_nothing(tmp_path):
    h = healthy(n=300)
    rows = [(float(h["loss"][s - 1]), s / 100, int(s), float(h["eval_loss"][i]), float(h["cer"][i]))
            for i, s in enumerate(h["eval_steps"][:3])]
    state = write_trainer_state(tmp_path / "ok" / "trainer_state.json", rows)
    db = tmp_path / "none.duckdb"
    p = run_cli(str(state), "--db", str(db), "--no-store", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no alerts → exit 0" in p.stdout
    assert not db.exists()


def test_cli_baseline_regression_and_user_errors(tmp_path):
    base_rows = [(0.5, 1.0, 1000, 0.40, 30.0), (0.3, 2.0, 2000, 0.35, 25.0), (0.2, 3.0, 3000, 0.33, 22.0)]
    run_rows = [(0.5, 1.0, 1000, 0.40, 30.0), (0.3, 2.0, 2000, 0.45, 25.0), (0.2, 3.0, 3000, 0.33, 22.0)]
    base = write_trainer_state(tmp_path / "base" / "trainer_state.json", base_rows)
    run = write_trainer_state(tmp_path / "new" / "checkpoint-3000" / "trainer_state.json", run_rows)
    db = tmp_path / "b.duckdb"
    p = run_cli(str(tmp_path / "new"), "--baseline", str(base.parent), "--db", str(db), cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "baseline_curve" in p.stdout and "paired bootstrap" in p.stdout  # the note: no per-utt scores
    res = check_run(str(run), str(base.parent), db=db)
    assert keys(res.alerts) == [("baseline_curve", "eval_loss", 2000, "regression")]
    con = connect(db, read_only=True)
    try:
        assert con.execute("SELECT baseline_run_id FROM alerts").fetchall() == [(res.baseline.run_id,)]
        assert con.execute("SELECT baseline_run_id FROM training_runs WHERE training_run_id = ?",
                           [res.curve.run_id]).fetchone()[0] == res.baseline.run_id
    finally:
        con.close()
    bad = run_cli("no-such-run", "--db", str(db), cwd=tmp_path)
    assert bad.returncode == 2 and "no training run 'no-such-run' in the store" in bad.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    bad2 = run_cli(str(empty), "--db", str(db), cwd=tmp_path)
    assert bad2.returncode == 2 and "found no loss_stream.jsonl" in bad2.stderr


def test_docs_list_every_rule_setting_with_its_default():
    """docs/monitor.md's settings table is generated from RuleConfig; keep it in step."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "monitor.md").read_text(encoding="utf-8")
    for name, default, help_text in RuleConfig.describe():
        assert f"| `--{name.replace('_', '-')}` | {default} | {help_text} |" in doc, name


def _scored_run(con, training_run_id, step, errs, corpus="c@1", split="test", normalizer="zh-v1"):
    """A fine-tuned checkpoint registered with lineage, one eval run, per-utterance CER counts."""
    model_id, run_id = f"local:{training_run_id}-{step}", f"eval-{training_run_id}-{step}-{split}"
    con.execute("INSERT OR IGNORE INTO models (model_id, name, source, training_run_id, step) VALUES (?, ?, 'local', ?, ?)",
                [model_id, model_id, training_run_id, step])
    con.execute("INSERT INTO eval_runs (run_id, corpus_id, split, model_id, status) VALUES (?, ?, ?, ?, 'done')",
                [run_id, corpus, split, model_id])
    for i, e in enumerate(errs):
        con.execute("INSERT INTO utterance_scores (run_id, utt_id, normalizer, normalizer_hash, cer_n, cer_s, cer_d, "
                    "cer_i) VALUES (?, ?, ?, 'h1', 10, ?, 0, 1)", [run_id, f"u{i:03d}", normalizer, e])
    return run_id


def test_paired_errors_from_store_pairs_the_final_checkpoints(tmp_path):
    from asr_eval.monitor.store import paired_errors_from_store

    con = connect(tmp_path / "p.duckdb")
    try:
        _scored_run(con, "new", 500, [9, 9, 9])            # an earlier checkpoint: ignored
        _scored_run(con, "new", 1000, [2, 3, 4])
        _scored_run(con, "new", 1000, [7, 7, 7], split="dev")   # no baseline on dev: not paired
        _scored_run(con, "base", 800, [1, 1, 1, 5])         # u003 only in the baseline: dropped
        p = paired_errors_from_store(con, "new", "base")
        # errors = S + D + I = cer_s + 1
        assert (p.err_run.tolist(), p.err_baseline.tolist(), p.n_ref.tolist()) == ([3, 4, 5], [2, 2, 2], [10, 10, 10])
        assert p.label == "c@1 test, normalizer zh-v1, eval runs eval-new-1000-test vs eval-base-800-test"
        assert paired_errors_from_store(con, "new", "nobody") is None
    finally:
        con.close()


def test_check_run_final_cer_paired_bootstrap_from_the_store(tmp_path):
    """Both runs' final checkpoints scored on the same 200 utterances: the run makes 1 more
    error on every utterance → CER 0.3 vs 0.2, interval excludes 0 → regression."""
    rows = [(0.5, 1.0, 1000, 0.40, 0.25), (0.3, 2.0, 2000, 0.35, 0.20)]
    run = write_trainer_state(tmp_path / "new" / "trainer_state.json", rows)
    base = write_trainer_state(tmp_path / "base" / "trainer_state.json", rows)
    run_id, base_id = load_curve(run).run_id, load_curve(base).run_id
    db = tmp_path / "f.duckdb"
    con = connect(db)
    try:
        _scored_run(con, run_id, 2000, [2] * 200)
        _scored_run(con, base_id, 2000, [1] * 200)
    finally:
        con.close()
    res = check_run(str(run), str(base), db=db, config=RuleConfig(n_boot=1000))
    assert keys(res.alerts) == [("baseline_final", "cer", 2000, "regression")]
    assert res.alerts[0].value == pytest.approx(0.1) and res.notes == []
    p = run_cli(str(run), "--baseline", str(base), "--db", str(db), "--n-boot", "1000", cwd=tmp_path)
    assert p.returncode == 1 and "excludes 0" in p.stdout


def test_cli_table_numbers_read_as_the_messages_do():
    """check-training's table: our CER in % (the final paired difference in points), any other
    metric — and an HF run's WER, already in percent — as logged."""
    from asr_eval.cli.check_training import _number
    from asr_eval.monitor.curve import TrainingCurve
    from asr_eval.monitor.rules import Alert

    ours, hf = TrainingCurve("r"), TrainingCurve("h", metric="wer", source="trainer_state")
    cer = Alert("cer_vs_zero_shot", "regression", 6, "cer", 0.27, 0.2531, "")
    assert (_number(cer, cer.value, ours), _number(cer, cer.threshold, ours)) == ("27.00 %", "25.31 %")
    final = Alert("baseline_final", "regression", 12, "cer", 0.015, 0.0, "")
    assert (_number(final, final.value, ours), _number(final, None, ours)) == ("+1.50 pts", "")
    wer = Alert("cer_regression", "regression", 6, "wer", 31.5, 30.0, "")
    loss = Alert("loss_spike", "warning", 3, "loss", 2.34567, 1.5, "")
    assert (_number(wer, wer.value, hf), _number(loss, loss.value, ours)) == ("31.5", "2.346")
