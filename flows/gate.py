"""Flow `gate`: the ship gate — is the candidate run no worse than the baseline by more than a margin?

A thin wrapper over ``asr_eval.gate.evaluate_gate`` (the single DuckDB writer stores the decision in
the ``gates`` table). The flow's return value is the decision; a FAIL or INCONCLUSIVE also marks the
flow run failed when ``fail_run`` is true, so a Prefect automation can stop a release.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows._common import DEFAULT_DB


@task
def gate_task(db: str, baseline: str, candidate: str, margin: float, metric: str, slices: list[str] | None,
              normalizer: str, n_boot: int) -> dict:
    from asr_eval.gate import evaluate_gate
    from asr_eval.store import connect

    con = connect(db)
    try:
        res = evaluate_gate(con, baseline, candidate, margin, metric, slices, normalizer, n_boot)
    finally:
        con.close()
    return {"gate_id": res.gate_id, "decision": res.decision, "exit_code": res.exit_code, "summary": res.summary,
            "baseline_run": res.baseline_run, "candidate_run": res.candidate_run,
            "slices": [{"slice": s.label, "n": s.n, "delta_pts": round(100 * s.delta, 3), "hi_pts": round(100 * s.hi, 3),
                        "status": s.status} for s in res.slices]}


@flow(name="gate", log_prints=True)
def gate_flow(baseline: str, candidate: str, margin: float = 0.5, metric: str = "cer",
              slices: list[str] | None = None, db: str = DEFAULT_DB, normalizer: str = "zh-v1",
              n_boot: int = 2000, fail_run: bool = False) -> dict:
    """Ship gate of CANDIDATE against BASELINE (run references, ``asr_eval.store.runs``: full or short run
    ids, unique id prefixes, or model names): PASS / FAIL / INCONCLUSIVE."""
    out = gate_task(db, baseline, candidate, margin, metric, slices, normalizer, n_boot)
    lines = [f"**{out['decision']}** — {out['summary']}", "", "| slice | n | Δ pts | upper 95% | status |",
             "|---|---:|---:|---:|---|"]
    lines += [f"| {s['slice']} | {s['n']} | {s['delta_pts']:+.2f} | {s['hi_pts']:+.2f} | {s['status']} |"
              for s in out["slices"]]
    create_markdown_artifact(key="ship-gate", markdown="\n".join(lines), description=out["gate_id"])
    print(f"{out['decision']}: {out['summary']}")
    if fail_run and out["decision"] != "PASS":
        raise RuntimeError(f"ship gate {out['decision']}: {out['summary']}")
    return out
