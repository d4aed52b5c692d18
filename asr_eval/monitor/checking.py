"""`check_run`: what ``asr-eval check-training`` does, as a library call — read the run (and
baseline), find paired per-utterance scores in the store, apply the rules, store the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from asr_eval.monitor.curve import TrainingCurve
from asr_eval.monitor.readers import load_curve
from asr_eval.monitor.rules import Alert, PairedErrors, RuleConfig, check
from asr_eval.monitor.store import paired_errors_from_store, save_alerts, save_run
from asr_eval.store import DEFAULT_DB, connect


@dataclass
class CheckResult:
    curve: TrainingCurve
    baseline: TrainingCurve | None
    alerts: list[Alert]
    paired: PairedErrors | None = None
    notes: list[str] = field(default_factory=list)   # what could not be checked, and why
    stored: bool = False


def check_run(run: str | Path, baseline: str | Path | None = None, db: str | Path = DEFAULT_DB,
              config: RuleConfig | None = None, zero_shot_cer: float | None = None,
              store: bool = True) -> CheckResult:
    """Check one training run. ``run``/``baseline``: a run dir, trainer_state.json, TensorBoard
    dir, or a training_run_id/name in the store. With ``store`` the runs' curves and the alerts
    are written to ``db`` (this process is then the store's single writer); without it the
    store is only read, if it exists."""
    db = Path(db)
    con = connect(db) if store else (connect(db, read_only=True) if db.exists() else None)
    notes: list[str] = []
    try:
        curve = load_curve(run, con)
        baseline = baseline if baseline is not None else curve.meta.get("baseline_run_id")
        base = load_curve(baseline, con) if baseline is not None else None
        paired = None
        if base is not None:
            paired = paired_errors_from_store(con, curve.run_id, base.run_id) if con is not None else None
            if paired is None:
                notes.append(f"final {curve.metric.upper()} not tested with the paired bootstrap: the store has no "
                             f"per-utterance scores of both runs' final checkpoints on the same corpus split "
                             f"(score them with `asr-eval score`)")
        alerts = check(curve, config, base, zero_shot_cer, paired)
        if store:
            for c, ref in ((curve, run), (base, baseline)):
                if c is not None and Path(ref).exists():  # runs read from the store are there already
                    save_run(con, c, baseline_run_id=base.run_id if c is curve and base else None)
            save_alerts(con, curve.run_id, alerts, base.run_id if base else None)
    finally:
        if con is not None:
            con.close()
    return CheckResult(curve, base, alerts, paired, notes, stored=store)
