"""Flow `check-training`: divergence / overfitting / regression rules over a training run
(library: asr_eval.monitor.check_run). The flow FAILS (red) on critical or regression alerts."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from asr_eval.monitor.checking import check_run
from flows._common import DEFAULT_DB, RUNS


class TrainingRegression(RuntimeError):
    """Raised so Prefect marks the run failed when a blocking alert is found."""


@task
def check_task(run: str, baseline: str | None, db: str, zero_shot_cer: float | None) -> list[dict]:
    res = check_run(run, baseline, db=db, zero_shot_cer=zero_shot_cer, store=True)
    return [{"rule": a.rule, "severity": a.severity, "step": a.step, "metric": a.metric, "message": a.message,
             "blocking": a.blocking} for a in res.alerts]


@flow(name="check-training", log_prints=True)
def check_training_flow(run: str = str(RUNS / "demo-ft"), baseline: str | None = None, db: str = DEFAULT_DB,
                        zero_shot_cer: float | None = None, fail_on_alert: bool = True) -> list[dict]:
    """Check RUN (run dir, trainer_state.json, TensorBoard dir or stored run id) against BASELINE."""
    alerts = check_task(run, baseline, db, zero_shot_cer)
    create_table_artifact(key="training-alerts", table=alerts or [{"result": "no alerts"}],
                          description=f"check-training {run}" + (f" vs {baseline}" if baseline else ""))
    for a in alerts:
        print(f"[{a['severity']}] {a['rule']} at step {a['step']}: {a['message']}")
    blocking = [a for a in alerts if a["blocking"]]
    if blocking and fail_on_alert:
        raise TrainingRegression(f"{len(blocking)} blocking alert(s): " + "; ".join(a["message"] for a in blocking))
    return alerts
