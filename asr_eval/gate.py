"""The ship gate: is the candidate no worse than the baseline by more than a margin?

A non-inferiority decision on the stored hypotheses of two runs on the same utterances
(``asr-eval gate``, the Prefect flow ``gate``, CI pipelines through the exit code):

* **PASS** (exit 0) — the upper bound of the paired 95 % interval of candidate − baseline is
  below ``margin`` points overall *and* on every slice with sufficient data. Requiring every
  slice is an intersection–union test (Berger 1982): the gate passes only if each per-slice
  null "the candidate is worse by ≥ margin" is rejected, and the overall false-PASS rate is
  at most the per-test level (2.5 % one-sided, the 95 % interval's upper bound) — no
  multiplicity adjustment is needed, adding slices only makes a PASS harder.
* **FAIL** (exit 1) — on some slice (or overall) the candidate is worse by *more than* the margin,
  shown by a one-sided bootstrap test of "difference ≤ margin" whose p-values are Holm-adjusted
  over all the slices the gate examined: a FAIL is not a false alarm from testing many slices.
  The slices are named with their numbers.
* **INCONCLUSIVE** (exit 3) — neither: the data cannot tell (intervals straddle the margin, or the
  whole run has too little data). More utterances, or a larger margin, are the ways out.

Slices below the minimum evidence (``MIN_UTTS`` utterances, ``MIN_REF_CHARS`` reference
characters) are listed but cannot block a PASS or cause a FAIL. Intervals resample speakers
when speakers are known (``resampling_for``). Every decision is stored in the ``gates`` table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import duckdb
import numpy as np

from asr_eval.errors import AsrEvalError
from asr_eval.metrics.stats import (
    DEFAULT_ADJUSTMENT, MIN_REF_CHARS, MIN_UTTS, Evidence, adjust_pvalues, bootstrap_p_greater, n_boot_for,
    paired_replicates, pooled_rate, resampling_for,
)
from asr_eval.provenance import stable_hash
from asr_eval.slices import ALL_ATTR, available_slices, paired_slices, slice_label
from asr_eval.store.runs import resolve_pair
from asr_eval.store.tx import replace_rows

DECISIONS = {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}  # decision -> exit code
METRICS = ("cer", "mer")
ALPHA_ONE_SIDED = 0.025  # the upper bound of a two-sided 95 % interval


@dataclass(frozen=True)
class GateSlice:
    """One slice of the gate: candidate − baseline (positive: candidate worse), in rate units."""

    attr: str
    value: str
    n: int
    ref_chars: int
    reliable: bool
    rate_baseline: float
    rate_candidate: float
    delta: float
    lo: float
    hi: float
    p_worse: float | None  # one-sided p of "difference <= margin" (None: not tested)
    p_worse_adj: float | None
    status: str  # 'within' (hi < margin) | 'worse' (worse by more than the margin) | 'undecided' | 'insufficient'
    ci_method: str
    n_blocks: int
    n_nonfinite: int

    @property
    def label(self) -> str:
        return slice_label(self.attr, self.value)


@dataclass(frozen=True)
class GateResult:
    gate_id: str
    baseline_run: str
    candidate_run: str
    normalizer: str
    metric: str
    margin: float  # points
    decision: str
    summary: str
    slices: list[GateSlice] = field(default_factory=list)
    n_boot: int = 0
    created_at: datetime | None = None

    @property
    def exit_code(self) -> int:
        return DECISIONS[self.decision]

    @property
    def overall(self) -> GateSlice:
        return next(s for s in self.slices if s.attr == ALL_ATTR)


# ───────────────────────── the decision ─────────────────────────


def _ensure_scored(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str) -> None:
    if not con.execute("SELECT 1 FROM utterance_scores WHERE run_id = ? AND normalizer = ? LIMIT 1",
                       [run_id, normalizer]).fetchall():
        from asr_eval.scoring import score_run

        score_run(con, run_id, normalizer)


def evaluate_gate(con: duckdb.DuckDBPyConnection, baseline: str, candidate: str, margin: float = 0.5,
                  metric: str = "cer", slices: Sequence[str] | None = None, normalizer: str = "zh-v1",
                  n_boot: int = 2000, seed: int = 0, min_utts: int = MIN_UTTS, min_ref_chars: int = MIN_REF_CHARS,
                  ci_method: str = "auto", store: bool = True) -> GateResult:
    """Decide PASS / FAIL / INCONCLUSIVE for ``candidate`` against ``baseline`` (run references:
    ``asr_eval.store.runs`` — full or short ids, prefixes, model names) with a non-inferiority ``margin`` in points of ``metric``; stores the decision."""
    from asr_eval.text import get_profile

    if metric not in METRICS:
        raise AsrEvalError(f"--metric {metric!r} is not gated; choose one of {', '.join(METRICS)}")
    if not (margin >= 0 and math.isfinite(margin)):
        raise AsrEvalError(f"--margin {margin} must be a finite number of points ≥ 0 (e.g. 0.5)")
    prof = get_profile(normalizer)
    base, cand = resolve_pair(con, baseline, candidate)
    for r in (base, cand):
        _ensure_scored(con, r, prof.name)
    cid = con.execute("SELECT corpus_id FROM eval_runs WHERE run_id = ?", [base]).fetchall()[0][0]
    attrs = list(slices) if slices is not None else available_slices(con, cid)
    known = set(available_slices(con, cid)) | {"speaker"}
    unknown = [a for a in attrs if a not in known and a != ALL_ATTR]
    if unknown:
        raise AsrEvalError(f"--slices {', '.join(unknown)}: not slice columns of corpus {cid} "
                           f"(it has {', '.join(sorted(known)) or 'none'})")
    groups = [ps for attr in [None, *[a for a in attrs if a != ALL_ATTR]]
              for ps in paired_slices(con, base, cand, prof.name, attr, metric)]
    if not groups:
        raise AsrEvalError(f"runs {base} and {cand} share no scored utterances under normalizer {prof.name}")
    bound = margin / 100
    ev = [Evidence(len(g.utt_ids), int(g.n_ref.sum()), min_utts, min_ref_chars) for g in groups]
    tested = [i for i, e in enumerate(ev) if e.reliable]
    boots = n_boot_for(n_boot, len(tested), ALPHA_ONE_SIDED, sides=1)
    raw = np.full(len(groups), np.nan)
    parts = []
    for i, g in enumerate(groups):
        rs = resampling_for(g.speakers, ci_method)
        delta, reps, units = paired_replicates(g.err_a, g.err_b, g.n_ref, boots, seed, rs.groups)
        ok = reps[np.isfinite(reps)]
        lo, hi = (np.quantile(ok, [ALPHA_ONE_SIDED, 1 - ALPHA_ONE_SIDED]).tolist() if ok.size
                  else (float("nan"), float("nan")))
        if ev[i].reliable:
            raw[i] = bootstrap_p_greater(reps, bound)
        parts.append((g, delta, float(lo), float(hi), rs.method, units, int((~np.isfinite(reps)).sum())))
    adj = adjust_pvalues(raw, DEFAULT_ADJUSTMENT)
    out = []
    for i, (g, delta, lo, hi, method, units, nonfinite) in enumerate(parts):
        if not ev[i].reliable:
            status = "insufficient"
        elif adj[i] < ALPHA_ONE_SIDED:
            status = "worse"
        elif hi < bound:
            status = "within"
        else:
            status = "undecided"
        out.append(GateSlice(
            g.attr, g.value, len(g.utt_ids), int(g.n_ref.sum()), ev[i].reliable, pooled_rate(g.err_a, g.n_ref),
            pooled_rate(g.err_b, g.n_ref), delta, lo, hi, None if math.isnan(raw[i]) else float(raw[i]),
            None if math.isnan(adj[i]) else float(adj[i]), status, method, units, nonfinite))
    decision, summary = _decide(out, margin, metric)
    created = datetime.now(UTC).replace(tzinfo=None)
    gid = "gate-" + stable_hash([base, cand, prof.name, metric, margin, attrs, created.isoformat()], 12)
    res = GateResult(gid, base, cand, prof.name, metric, margin, decision, summary, out, boots, created)
    if store:
        store_gate(con, res)
    return res


def _decide(sl: list[GateSlice], margin: float, metric: str) -> tuple[str, str]:
    m = metric.upper()
    overall = next(s for s in sl if s.attr == ALL_ATTR)
    worse = [s for s in sl if s.status == "worse"]
    if worse:
        named = "; ".join(f"{s.label}: {100 * s.delta:+.2f} points {m} (95% CI {100 * s.lo:+.2f} to {100 * s.hi:+.2f}, "
                          f"adjusted p = {s.p_worse_adj:.2g}, n = {s.n})" for s in worse)
        return "FAIL", f"candidate is worse than the baseline by more than {margin:g} points {m} on {named}"
    if not overall.reliable:
        return "INCONCLUSIVE", (f"too little data to decide: {overall.n} utterances and {overall.ref_chars} reference "
                                f"characters overall (needs ≥ {MIN_UTTS} and ≥ {MIN_REF_CHARS})")
    open_ = [s for s in sl if s.status == "undecided"]
    thin = sum(s.status == "insufficient" for s in sl)
    checked = sum(s.reliable for s in sl)
    tail = f"; {thin} slice{'s' if thin != 1 else ''} with insufficient data not gated" if thin else ""
    if not open_:
        return "PASS", (f"candidate − baseline is below +{margin:g} points {m} overall "
                        f"({100 * overall.delta:+.2f}, upper 95% bound {100 * overall.hi:+.2f}) and on all "
                        f"{checked - 1} slices with sufficient data{tail}")
    named = "; ".join(f"{s.label}: {100 * s.delta:+.2f} (upper bound {100 * s.hi:+.2f}, n = {s.n})" for s in open_[:8])
    more = f" and {len(open_) - 8} more" if len(open_) > 8 else ""
    return "INCONCLUSIVE", (f"cannot show the candidate is within +{margin:g} points {m} on {named}{more} — "
                            f"and cannot show it is worse{tail}")


def store_gate(con: duckdb.DuckDBPyConnection, res: GateResult) -> None:
    details = {"n_boot": res.n_boot, "alpha_one_sided": ALPHA_ONE_SIDED, "adj_method": DEFAULT_ADJUSTMENT,
               "slices": [{k: _finite(v) for k, v in asdict(s).items()} for s in res.slices]}
    replace_rows(con, "gates", "gate_id = ?", [res.gate_id], [{
        "gate_id": res.gate_id, "baseline_run": res.baseline_run, "candidate_run": res.candidate_run,
        "normalizer": res.normalizer, "metric": res.metric, "margin": float(res.margin), "decision": res.decision,
        "summary": res.summary, "details": json.dumps(details, default=_json_default),
        "created_at": res.created_at}])


def _finite(v):
    """JSON-safe: NaN/inf → null, numpy scalars → Python."""
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _json_default(v):
    return str(v)


def stored_gates(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str] | None = None) -> list[dict]:
    """Stored gate decisions (newest first), optionally only those between ``run_ids``."""
    cur = con.execute("""
        SELECT gate_id, baseline_run, candidate_run, normalizer, metric, margin, decision, summary,
               details::VARCHAR AS details, created_at
        FROM gates ORDER BY created_at DESC, gate_id""")
    cols = [d[0] for d in cur.description]
    found = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    if run_ids is not None:
        keep = set(run_ids)
        found = [g for g in found if g["baseline_run"] in keep and g["candidate_run"] in keep]
    for g in found:
        g["details"] = json.loads(g["details"]) if g["details"] else {}
    return found
