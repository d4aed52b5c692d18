"""Flow `report`: the self-contained HTML report (library: asr_eval.report.build_report),
published as a Prefect artifact with the headline table."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from asr_eval.report import ReportOptions, build_report
from flows._common import DEFAULT_DB, REPORTS


@task
def report_task(db: str, out: str, runs: list[str], corpora: list[str], title: str) -> dict:
    res = build_report(db, out, ReportOptions(runs=tuple(runs), corpora=tuple(corpora), title=title))
    return {"path": str(res.path), "size_bytes": res.size_bytes, "headline_markdown": res.headline_markdown,
            "empty_sections": list(res.empty_sections)}


@flow(name="report", log_prints=True)
def report_flow(db: str = DEFAULT_DB, out: str = str(REPORTS / "report.html"), runs: list[str] | None = None,
                corpora: list[str] | None = None, title: str = "ASR evaluation report") -> str:
    """Build OUT from DB (every run unless RUNS/CORPORA narrow it; RUNS are run references,
    ``asr_eval.store.runs``: full or short ids, unique id prefixes, or models — every run of each)."""
    res = report_task(db, out, runs or [], corpora or [], title)
    path = Path(res["path"]).resolve()
    create_link_artifact(key="report", link=path.as_uri(), link_text=path.name, description="HTML report")
    create_markdown_artifact(key="report-headline", markdown=res["headline_markdown"] or "no scored runs",
                             description="Headline: models × corpora")
    print(f"report: {path} ({res['size_bytes'] / 1e6:.1f} MB)")
    return str(path)
