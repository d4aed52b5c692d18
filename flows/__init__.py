"""Prefect flows: thin wrappers over the asr_eval library (no business logic here)."""

import os

# The library's progress lines (logger ``asr_eval``: done/total, rate, ETA of scoring, fine-tuning,
# conversions) go to each run's logs — the Prefect UI and the console — like the flows' own prints.
# Read by Prefect when it sets up logging, so set before the first flow runs.
_extra = [x for x in os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").split(",") if x.strip()]
if "asr_eval" not in _extra:
    os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join([*_extra, "asr_eval"])
# Outside a flow run (the library used directly in the same process) those lines stay local.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
