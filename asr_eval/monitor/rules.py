"""Divergence and regression rules: pure functions over a `TrainingCurve` returning `Alert`s.

Every rule is *causal*: whether it alerts at step t depends only on points up to t, and it
alerts at the point where its condition first holds (one alert per episode, not per step).
So the same functions serve the offline ``check-training`` and the live callback, and a
planted fault is reported at the step it became detectable. (The CER rules alone look ahead,
only to downgrade a regression a later evaluation recovered from to a warning.)

Severities: ``critical`` (training is broken: stop it), ``regression`` (the run is worse than
it should be: fail CI), ``warning`` (look at it), ``info`` (a result, no problem).
Windows count *logged* points; with ``training_args_overrides()`` that is one per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from asr_eval.errors import AsrEvalError
from asr_eval.monitor.curve import TrainingCurve

SEVERITIES = ("critical", "regression", "warning", "info")
BLOCKING = frozenset({"critical", "regression"})


@dataclass(frozen=True)
class Alert:
    rule: str           # 'non_finite' | 'loss_spike' | 'loss_zscore' | 'overfitting' | 'cer_regression'
    severity: str       # | 'cer_vs_zero_shot' | 'baseline_curve' | 'baseline_final'
    step: int | None
    metric: str         # 'loss' | 'grad_norm' | 'eval_loss' | 'cer' (or 'wer' for HF runs)
    value: float | None
    threshold: float | None
    message: str

    @property
    def blocking(self) -> bool:
        """Critical and regression alerts fail ``check-training`` (exit 1) and so CI."""
        return self.severity in BLOCKING


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RuleConfig:
    """Thresholds of every rule. Field help texts are the documentation: the CLI options
    (``--spike-ratio`` …) and docs/monitor.md are generated from them."""

    min_history: int = _opt(20, "logged steps needed before the spike rules judge a point")
    spike_ratio: float = _opt(2.0, "loss/grad-norm spike: value ≥ this × the rolling mean of the previous "
                                   "--spike-window logged steps")
    spike_window: int = _opt(50, "logged steps in the spike rule's rolling mean")
    spike_min_steps: int = _opt(3, "consecutive logged steps at ≥ --spike-ratio before a spike is reported "
                                   "(single-batch blips are normal)")
    spike_floor: float = _opt(1e-3, "floor of the rolling mean, so a loss near 0 doubling by 0.001 is no spike")
    zscore: float = _opt(6.0, "z-score spike: value more than this many σ above the mean of the previous "
                              "--zscore-window logged steps")
    zscore_window: int = _opt(128, "logged steps in the z-score rule's mean and σ")
    zscore_std_floor: float = _opt(0.05, "σ used is at least this fraction of the mean (a flat, rounded loss "
                                         "has σ≈0)")
    scaler_overflow_steps: int = _opt(5, "fp16 runs only: consecutive non-finite grad norms tolerated as "
                                         "GradScaler overflow skips before it is critical")
    smooth: int = _opt(20, "logged train steps averaged for the train-loss level (overfitting rule, baseline "
                           "curve comparison)")
    overfit_patience: int = _opt(3, "overfitting: eval loss rose this many evaluations in a row …")
    overfit_min_rise: float = _opt(0.05, "… by at least this fraction in total, while the train loss fell")
    cer_min_gain: float = _opt(0.02, "overfitting with a CER relative improvement ≥ this over the same "
                                     "evaluations is a warning, below it a regression")
    cer_tol: float = _opt(0.05, "eval CER worse than the best earlier evaluation by more than this fraction "
                                "→ regression, warning if a later evaluation recovers (eval-set noise floor)")
    zero_shot_tol: float = _opt(0.0, "eval CER worse than the base model's zero-shot CER by more than this "
                                     "fraction → regression (warning if a later evaluation recovers)")
    baseline_band: float = _opt(0.10, "train/eval loss above the baseline run's (same step, interpolated) by "
                                      "more than this fraction → regression")
    baseline_cer_band: float = _opt(0.05, "eval CER above the baseline run's at the same step by more than "
                                          "this fraction → regression")
    baseline_min_steps: int = _opt(5, "consecutive logged train steps outside the band before it counts")
    n_boot: int = _opt(10000, "paired-bootstrap resamples for the final-CER comparison")
    seed: int = _opt(0, "bootstrap seed")

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v < 0 or (f.type == "int" and f.name != "seed" and v < 1):
                raise AsrEvalError(f"rule setting {f.name}={v!r} is out of range: {f.metadata['help']}")
        if self.spike_ratio <= 1:
            raise AsrEvalError(f"rule setting spike_ratio={self.spike_ratio} must be > 1")

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str]]:
        """(name, default, help) of every setting, in declaration order."""
        return [(f.name, f.default, f.metadata["help"]) for f in fields(cls)]


@dataclass(frozen=True)
class PairedErrors:
    """Per-utterance error counts of the run's and the baseline's final evaluations on the
    same utterances (same order), with reference lengths: the paired-bootstrap input."""

    err_run: np.ndarray
    err_baseline: np.ndarray
    n_ref: np.ndarray
    metric: str = "cer"
    label: str = ""     # where they came from, e.g. 'demo_zh@ab12 test, zh-v1'


# ---------------------------------------------------------------- helpers

def _fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return str(x) if not np.isfinite(x) else f"{x:.4g}"


def rate_text(curve: TrainingCurve, x: float) -> str:
    """An error rate as people read it: ``27.00 %`` for our runs (their CER is a fraction), the
    number as logged otherwise (HF's ``eval_wer`` is often percent already)."""
    from asr_eval.progress import fmt_pct

    return fmt_pct(float(x)) if curve.source == "asr-eval" and curve.metric == "cer" else f"{x:.4g}"


def _run_ends(mask: np.ndarray, min_len: int) -> list[int]:
    """Indices where a run of True reaches ``min_len`` (once per run)."""
    out, run = [], 0
    for i, m in enumerate(mask):
        run = run + 1 if m else 0
        if run == min_len:
            out.append(i)
    return out


def _rolling(x: np.ndarray, window: int, include_current: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Causal rolling (mean, std, count) over ``window`` points ending at i (or i-1)."""
    cs = np.concatenate([[0.0], np.cumsum(x)])
    cs2 = np.concatenate([[0.0], np.cumsum(x * x)])
    end = np.arange(len(x)) + (1 if include_current else 0)
    cnt = np.minimum(end, window)
    safe = np.maximum(cnt, 1)
    mean = (cs[end] - cs[end - cnt]) / safe
    var = (cs2[end] - cs2[end - cnt]) / safe - mean * mean
    return mean, np.sqrt(np.maximum(var, 0.0)), cnt


def _finite(steps: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(vals)
    return steps[ok], vals[ok]


# ---------------------------------------------------------------- rules

TRAIN_ADVICE = "training has diverged: lower the learning rate, check the batch at that step"
NON_FINITE_SERIES = (("train", "loss", "loss", "train loss", TRAIN_ADVICE),
                     ("train", "grad_norm", "grad_norm", "grad norm", TRAIN_ADVICE),
                     ("eval", "loss", "eval_loss", "eval loss", "the model's predictions are no longer finite"))


def non_finite(curve: TrainingCurve, cfg: RuleConfig) -> list[Alert]:
    """NaN/inf loss, grad norm or eval loss → critical, at the first step of each episode.
    fp16 runs: a grad norm overflow is what the GradScaler skips, so only a run of
    ``scaler_overflow_steps`` of them is critical (a NaN *loss* always is)."""
    alerts = []
    for kind, attr, metric, label, advice in NON_FINITE_SERIES:
        steps, vals = curve.series(kind, attr)
        bad = ~np.isfinite(vals)
        min_len = cfg.scaler_overflow_steps if attr == "grad_norm" and curve.loss_scaling else 1
        for i in _run_ends(bad, min_len):
            start = i - min_len + 1
            prev = np.flatnonzero(~bad[:start])
            before = (f"last finite value {_fmt(vals[prev[-1]])} at step {steps[prev[-1]]}" if len(prev)
                      else "no finite value before it")
            run = (f", {min_len} steps in a row since step {steps[start]} — more than fp16 GradScaler overflow "
                   "skips" if min_len > 1 else "")
            alerts.append(Alert("non_finite", "critical", int(steps[i]), metric, float(vals[i]), None,
                                f"{label} is {_fmt(vals[i])} at step {steps[i]} ({before}){run}: {advice}"))
    return alerts


def spikes(curve: TrainingCurve, cfg: RuleConfig) -> list[Alert]:
    """Loss and grad-norm spikes: sustained ratio to the rolling mean (``loss_spike``;
    regression for the loss, warning for the grad norm) and single-step z-score
    (``loss_zscore``, warning). Non-finite points are skipped (``non_finite`` reports them)."""
    alerts = []
    for attr, label, sev in (("loss", "train loss", "regression"), ("grad_norm", "grad norm", "warning")):
        steps, x = _finite(*curve.series("train", attr))
        if len(x) <= cfg.min_history:
            continue
        judged = np.arange(len(x)) >= cfg.min_history
        mean, _, cnt = _rolling(x, cfg.spike_window, include_current=False)
        den = np.maximum(mean, cfg.spike_floor)
        ratio = x / den
        for i in _run_ends(judged & (ratio >= cfg.spike_ratio), cfg.spike_min_steps):
            s0 = steps[i - cfg.spike_min_steps + 1]
            alerts.append(Alert("loss_spike", sev, int(steps[i]), attr, float(x[i]), float(cfg.spike_ratio * den[i]),
                                f"{label} {_fmt(x[i])} at step {steps[i]} is {ratio[i]:.1f}× its rolling mean "
                                f"{_fmt(mean[i])} over the previous {cnt[i]} logged steps, ≥{cfg.spike_ratio:g}× for "
                                f"{cfg.spike_min_steps} steps in a row (since step {s0})"))
        mean, std, cnt = _rolling(x, cfg.zscore_window, include_current=False)
        sigma = np.maximum(np.maximum(std, cfg.zscore_std_floor * np.abs(mean)), 1e-12)
        z = (x - mean) / sigma
        for i in _run_ends(judged & (z > cfg.zscore), 1):
            alerts.append(Alert("loss_zscore", "warning", int(steps[i]), attr, float(x[i]),
                                float(mean[i] + cfg.zscore * sigma[i]),
                                f"{label} {_fmt(x[i])} at step {steps[i]} is {z[i]:.1f}σ above the mean "
                                f"{_fmt(mean[i])} (σ {sigma[i]:.3g}) of the previous {cnt[i]} logged steps "
                                f"(limit {cfg.zscore:g}σ)"))
    return alerts


def train_level(curve: TrainingCurve, step: int, window: int, since: int | None = None,
                upto: int | None = None) -> float | None:
    """Mean of the last ``window`` finite train losses logged in (``since``, ``step``] (the
    previous evaluation bounds the window when logging is sparse); with none there, the last
    one before ``step``; before the first train log (a step-0 evaluation of the base model),
    the first ``window`` ones logged by step ``upto`` (so the rule stays causal)."""
    steps, x = _finite(*curve.series("train", "loss"))
    inside = x[(steps > (-1 if since is None else since)) & (steps <= step)][-window:]
    before = x[steps <= step][-1:]
    first = x[steps <= (step if upto is None else upto)][:window]
    x = inside if len(inside) else before if len(before) else first
    return float(x.mean()) if len(x) else None


def overfitting(curve: TrainingCurve, cfg: RuleConfig) -> list[Alert]:
    """Eval loss rising ``overfit_patience`` evaluations in a row (by ≥ ``overfit_min_rise`` in
    total) while the train loss fell. With no CER gain over those evaluations (relative gain
    below ``cer_min_gain``) it is a regression; with one, a warning — a fine-tuned Whisper's
    eval loss often rises as it grows confident while its error rate still falls."""
    M = curve.metric.upper()
    steps, el = _finite(*curve.series("eval", "loss"))
    cer_at = {p.step: p.cer for p in curve.evals if p.cer is not None and np.isfinite(p.cer)}
    since = [None] + [int(x) for x in steps[:-1]]  # each evaluation's train window starts after the last
    alerts, run, episode = [], 0, None
    for k in range(1, len(el)):
        run = run + 1 if el[k] > el[k - 1] else 0
        if run == 0:
            episode = None
        j = k - run
        if run < cfg.overfit_patience or el[k] < el[j] * (1 + cfg.overfit_min_rise):
            continue
        tj = train_level(curve, steps[j], cfg.smooth, since[j], upto=steps[k])
        tk = train_level(curve, steps[k], cfg.smooth, since[k])
        if tj is None or tk is None or not tk < tj:
            continue  # train loss not falling: divergence (spike rules), not overfitting
        cj, ck = cer_at.get(int(steps[j])), cer_at.get(int(steps[k]))
        head = (f"eval loss rose {run} evaluations in a row, {el[j]:.4f} → {el[k]:.4f} "
                f"({el[k] / el[j] - 1:+.1%}) over steps {steps[j]}–{steps[k]}, while train loss fell "
                f"{tj:.4f} → {tk:.4f}")
        if cj is None or ck is None or cj <= 0:
            sev, msg = "regression", f"overfitting: {head} (no {M} logged to tell whether it still helps)"
        else:
            gain = (cj - ck) / cj
            change = f"{M} went {rate_text(curve, cj)} → {rate_text(curve, ck)} ({gain:.1%} better; a gain needs ≥{cfg.cer_min_gain:.0%})"
            if gain >= cfg.cer_min_gain:
                sev, msg = "warning", (f"{head}; but {change}: the model grows confident on its errors while "
                                       f"{M} still improves — keep the best-{M} checkpoint; not a regression")
            else:
                sev, msg = "regression", f"overfitting without {M} gain: {head}; {change}"
        if sev != episode:
            alerts.append(Alert("overfitting", sev, int(steps[k]), "eval_loss", float(el[k]), float(el[j]), msg))
            episode = sev
    return alerts


def cer_regression(curve: TrainingCurve, cfg: RuleConfig, zero_shot_cer: float | None = None) -> list[Alert]:
    """Each evaluation's error rate against the best earlier one (``cer_regression``, beyond
    ``cer_tol``) and against the base model's zero-shot rate (``cer_vs_zero_shot``, beyond
    ``zero_shot_tol``; same scale as the curve: a fraction for our CER, percent for HF's
    ``eval_wer``). A regression is one the run never recovered from: when a later evaluation
    is back within the limit the alert is downgraded to a warning — the best-CER checkpoint is
    what ships. (So the live callback, which has no later evaluations, records regressions.)"""
    M, m = curve.metric.upper(), curve.metric
    steps, c = _finite(*curve.series("eval", "cer"))

    def alert(rule: str, k: int, limit: float, what: str) -> Alert:
        later = np.flatnonzero(c[k + 1:] <= limit)
        tail = (f"; recovered at step {steps[k + 1 + later[0]]} ({rate_text(curve, c[k + 1 + later[0]])})" if len(later)
                else "; not recovered" + (" by the end of the run" if k < len(c) - 1 else " (latest evaluation)"))
        return Alert(rule, "warning" if len(later) else "regression", int(steps[k]), m, float(c[k]), float(limit),
                     f"eval {M} {rate_text(curve, c[k])} at step {steps[k]} is {what}{tail}")

    alerts, best = [], None
    for k in range(len(c)):
        if best is not None and c[k] > c[best] * (1 + cfg.cer_tol):
            alerts.append(alert("cer_regression", k, c[best] * (1 + cfg.cer_tol),
                                f"{c[k] / c[best] - 1:+.1%} worse than the best earlier evaluation, {rate_text(curve, c[best])} "
                                f"at step {steps[best]} (tolerance {cfg.cer_tol:.0%})"))
        if zero_shot_cer is not None and c[k] > zero_shot_cer * (1 + cfg.zero_shot_tol):
            alerts.append(alert("cer_vs_zero_shot", k, zero_shot_cer * (1 + cfg.zero_shot_tol),
                                f"{c[k] / zero_shot_cer - 1:+.1%} worse than the base model's zero-shot {M} "
                                f"{rate_text(curve, zero_shot_cer)} (tolerance {cfg.zero_shot_tol:.0%})"))
        if best is None or c[k] < c[best]:
            best = k
    return alerts


def baseline_curve(curve: TrainingCurve, baseline: TrainingCurve, cfg: RuleConfig) -> list[Alert]:
    """The run's train loss (rolling mean of ``smooth`` steps), eval loss and eval error rate
    against the baseline's, interpolated at the run's steps inside the baseline's step range;
    above the relative band → regression (train loss: for ``baseline_min_steps`` in a row)."""
    M = curve.metric.upper()
    series = [("train", "loss", "loss", "train loss", cfg.baseline_band, cfg.baseline_min_steps, cfg.smooth),
              ("eval", "loss", "eval_loss", "eval loss", cfg.baseline_band, 1, 1)]
    alerts = []
    if baseline.metric == curve.metric:
        series.append(("eval", "cer", curve.metric, f"eval {M}", cfg.baseline_cer_band, 1, 1))
    else:
        alerts.append(Alert("baseline_curve", "info", None, curve.metric, None, None,
                            f"eval error rates not compared: this run logs {curve.metric}, baseline "
                            f"{baseline.run_id} logs {baseline.metric}"))
    for kind, attr, metric, label, band, min_steps, smooth in series:
        rs, rv = _finite(*curve.series(kind, attr))
        bs, bv = _finite(*baseline.series(kind, attr))
        if not len(rv) or not len(bv):
            continue
        rv = _rolling(rv, smooth, include_current=True)[0]
        b = np.interp(rs, bs, _rolling(bv, smooth, include_current=True)[0])
        thr = b + band * np.abs(b)
        out = (rs >= bs[0]) & (rs <= bs[-1]) & (rv > thr)  # no extrapolation past the baseline's steps
        what = f"{label} (mean of last {smooth} logged steps)" if smooth > 1 else label
        num = (lambda x, c: rate_text(c, x)) if attr == "cer" else (lambda x, c: f"{x:.4g}")
        for i in _run_ends(out, min_steps):
            rows = f", {min_steps} logged steps in a row" if min_steps > 1 else ""
            alerts.append(Alert("baseline_curve", "regression", int(rs[i]), metric, float(rv[i]), float(thr[i]),
                                f"{what} {num(rv[i], curve)} at step {rs[i]} is {rv[i] / b[i] - 1:+.1%} vs baseline "
                                f"{baseline.run_id}'s {num(b[i], baseline)} at the same step (band +{band:.0%}{rows})"))
    return alerts


def baseline_final(curve: TrainingCurve, paired: PairedErrors, cfg: RuleConfig, baseline_id: str) -> list[Alert]:
    """Final error rate vs the baseline's on the same utterances: regression when the 95%
    paired-bootstrap interval of (run − baseline) lies above 0; otherwise an info result."""
    from asr_eval.metrics import paired_bootstrap
    from asr_eval.progress import fmt_pct

    M = paired.metric.upper()  # rates from stored error counts: fractions
    r = paired_bootstrap(np.asarray(paired.err_baseline), np.asarray(paired.err_run), np.asarray(paired.n_ref),
                         n_boot=cfg.n_boot, seed=cfg.seed)
    step = curve.evals[-1].step if curve.evals else curve.last_step
    where = f" ({paired.label})" if paired.label else ""
    numbers = (f"final {M} {fmt_pct(r.rate_b)} vs baseline {baseline_id}'s {fmt_pct(r.rate_a)} on the same {r.n} "
               f"utterances{where}: difference {100 * r.delta:+.2f} points, 95% paired-bootstrap interval "
               f"[{100 * r.lo:+.2f}, {100 * r.hi:+.2f}], P(run better) {r.p_b_better:.3f}")
    if r.lo > 0:
        sev, msg = "regression", f"{numbers} — the interval excludes 0: the run is worse than its baseline"
    elif r.hi < 0:
        sev, msg = "info", f"{numbers} — the run is better than its baseline"
    else:
        sev, msg = "info", f"{numbers} — no significant difference on this data"
    return [Alert("baseline_final", sev, step, paired.metric, float(r.delta), 0.0, msg)]


def check(curve: TrainingCurve, config: RuleConfig | None = None, baseline: TrainingCurve | None = None,
          zero_shot_cer: float | None = None, paired: PairedErrors | None = None) -> list[Alert]:
    """All rules over ``curve``; alerts sorted by step, then severity."""
    cfg = config or RuleConfig()
    alerts = non_finite(curve, cfg) + spikes(curve, cfg) + overfitting(curve, cfg)
    alerts += cer_regression(curve, cfg, zero_shot_cer)
    if baseline is not None:
        alerts += baseline_curve(curve, baseline, cfg)
        if paired is not None:
            alerts += baseline_final(curve, paired, cfg, baseline.run_id)
    return sorted(alerts, key=lambda a: (a.step if a.step is not None else -1, SEVERITIES.index(a.severity), a.rule))


def exit_code(alerts: list[Alert]) -> int:
    """1 when any alert is critical or a regression (fails CI), else 0."""
    return int(any(a.blocking for a in alerts))
