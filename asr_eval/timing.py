"""Wall time per step of a pipeline (the demo prints the table at the end of every run).

    timer = StepTimer()
    with timer.step("zero-shot score"):
        ...
    print(timer.table())

The table is plain text (it goes to terminals, CI logs and Prefect's log view alike) and
``records()`` gives the same rows as data (written beside the report as JSON).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime


@dataclass
class StepTime:
    name: str
    started_at: str          # ISO time, UTC
    seconds: float
    status: str = "ok"       # ok | failed


@dataclass
class StepTimer:
    """Times named steps in order; a failed step is recorded as such before the error propagates."""

    clock: Callable[[], float] = time.perf_counter
    steps: list[StepTime] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        now = self.clock()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        status = "failed"
        try:
            yield
            status = "ok"
        finally:
            self.steps.append(StepTime(name, started, self.clock() - now, status))

    def total(self) -> float:
        """Seconds of all finished steps."""
        return sum(s.seconds for s in self.steps)

    def records(self) -> list[dict]:
        return [asdict(s) for s in self.steps]

    def table(self, title: str = "time per step") -> str:
        """Step, wall time, share of the total, cumulative time — aligned plain text."""
        total = self.total()
        rows = [("step", "wall", "share", "cumulative")]
        cum = 0.0
        for s in self.steps:
            cum += s.seconds
            share = f"{100 * s.seconds / total:.0f} %" if total > 0 else "—"
            rows.append((s.name + ("  (failed)" if s.status != "ok" else ""), _mmss(s.seconds), share, _mmss(cum)))
        rows.append(("total", _mmss(total), "100 %" if total > 0 else "—", ""))
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [title]
        for k, r in enumerate(rows):
            lines.append(f"  {r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]:>{w[3]}}".rstrip())
            if k == 0 or k == len(rows) - 2:
                lines.append("  " + "-" * (sum(w) + 6))
        return "\n".join(lines)


def _mmss(s: float) -> str:
    s = max(0.0, s)
    return f"{int(s // 60)}:{s % 60:04.1f}"
