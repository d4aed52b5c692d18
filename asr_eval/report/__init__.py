"""The HTML comparison report: DuckDB queries → Jinja2 templates → one self-contained file.

``build_report(db, out, ReportOptions(...))`` writes the report and returns a ``ReportResult``;
``render(con, options)`` returns the HTML without writing it. Aggregation happens in SQL
(``queries``), chart geometry in ``charts`` (drawn as inline SVG by the templates), embedded
audio in ``audio``. Templates autoescape everything; a Content-Security-Policy allows only the
report's own script (by hash) and no network access.
"""

from asr_eval.report.build import (
    NO_DIFF,
    ReportOptions,
    ReportResult,
    build_report,
    headline_markdown,
    render,
    significance,
)
from asr_eval.report.select import RunInfo, Selection, select

__all__ = ["NO_DIFF", "ReportOptions", "ReportResult", "RunInfo", "Selection", "build_report",
           "headline_markdown", "render", "select", "significance"]
