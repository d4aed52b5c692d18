"""Report view of the standard Mandarin test sets (issue 29): each selected run on a public test set
beside the published results for the same model, re-scored under the closest protocol we have to
the source's, with the protocol differences that could explain the gap (``asr_eval.suite.compare``).

``standard_view`` returns the per-test-set views for ``templates/_standard.html.j2``, or None when
no selected run is on a standard test set (the section is left out).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from asr_eval.suite.compare import TestSetView, comparisons


def standard_view(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str = "zh-v1") -> list[TestSetView] | None:
    if not run_ids:
        return None
    return comparisons(con, run_ids, normalizer) or None
