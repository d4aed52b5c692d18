"""The standard Mandarin test sets in one command (``asr-eval suite``, flow ``suite``): find the
public corpora under a folder (``discover``), ingest their test splits, score models on each
(``run``), and put our numbers beside the published ones (``compare``)."""

from asr_eval.suite.compare import PublishedPair, StandardRun, TestSetView, comparisons, standard_runs
from asr_eval.suite.discover import Found, discover, missing
from asr_eval.suite.run import SuiteCell, SuiteOptions, SuiteResult, run_suite, suite_cells

__all__ = ["Found", "PublishedPair", "StandardRun", "SuiteCell", "SuiteOptions", "SuiteResult", "TestSetView",
           "comparisons", "discover", "missing", "run_suite", "standard_runs", "suite_cells"]
