"""The report's data, aggregated in DuckDB: every number on the page comes from one of these queries.

Stored results are preferred (``slice_metrics`` / ``comparisons`` hold the scorer's bootstrap
intervals). Where the store lacks a row the report still needs — a slice column the scorer was not
asked for, a pair of runs never compared, WER's interval — it is computed here in SQL from
``utterance_scores`` with a normal-approximation (delta-method) interval for a pooled ratio and
marked as such (``Rate.method == 'normal'``), so no table is silently missing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import duckdb

from asr_eval.report.select import Selection, as_dict, rows
from asr_eval.metrics.stats import Evidence, stored_reliable
from asr_eval.slices import (  # noqa: F401  (the one slice definition)
    ALL_ATTR, ALL_VALUE, MISSING_VALUE, available_slices, membership_sql, stored_comparisons, stored_slice_metrics,
)

Z95 = 1.959963984540054
CLASSES = (("zh", "Mandarin"), ("en", "English"), ("num", "Number"), ("other", "Other"))
OPS = ("S", "D", "I")


def _slices(attrs: Sequence[str] | None = None) -> str:
    """Slice membership in long form — the one definition in ``asr_eval.slices``."""
    return membership_sql(attrs)


def _attrs(sql: str, attrs: Sequence[str]) -> dict[str, list[str]]:
    """The ``$attrs`` binding, only where the membership relation reads it (speaker or the whole
    set alone does not, and DuckDB refuses a parameter the statement lacks)."""
    return {"attrs": list(attrs)} if "$attrs" in sql else {}


@dataclass(frozen=True)
class Rate:
    """A pooled error rate (fraction) with its 95% interval; method says where the interval came from."""

    value: float | None
    lo: float | None = None
    hi: float | None = None
    method: str = ""  # 'bootstrap' (stored by the scorer) | 'normal' (computed here) | '' (none)


@dataclass(frozen=True)
class RunTotals:
    """Whole-run totals of one scored run (one pass over utterance_scores)."""

    run_id: str
    n: int
    hours: float | None
    cer: Rate
    mer: Rate
    wer: Rate
    n_chars: int
    subs: int
    dels: int
    ins: int
    classes: dict[str, tuple[int, int]]  # class key -> (reference tokens, errors)
    n_empty_ref: int
    n_flagged: int
    n_err_utts: int  # utterances with at least one character error
    reliable: bool = True  # enough evidence (min_utts, min_ref_chars) for the run's interval to mean something


@dataclass(frozen=True)
class SliceRow:
    run_id: str
    attr: str
    value: str
    n: int
    hours: float | None
    cer: Rate
    mer: Rate
    wer: float | None
    ref_chars: int = 0
    reliable: bool = True  # enough evidence (min_utts, min_ref_chars) for its interval to mean something
    ci_method: str = ""  # 'utterance' | 'speaker-block' (stored) | 'normal' (computed here)
    n_blocks: int | None = None
    n_nonfinite: int | None = None


@dataclass(frozen=True)
class PairDiff:
    """Paired CER difference b − a on the utterances both runs scored (negative: b is better)."""

    run_a: str
    run_b: str
    attr: str
    value: str
    n: int
    rate_a: float | None
    rate_b: float | None
    delta: float | None
    lo: float | None
    hi: float | None
    p_b_better: float | None
    sign_test_p: float | None
    stored_verdict: str | None
    method: str  # 'bootstrap' (stored by the scorer) | 'normal' (computed here)
    metric: str = "cer"
    ref_chars: int = 0
    reliable: bool = True
    p_raw: float | None = None
    p_adj: float | None = None
    adj_method: str | None = None
    family_size: int | None = None
    mde: float | None = None  # half-width of the paired interval
    ci_method: str = ""  # 'utterance' | 'speaker-block' | 'normal'
    n_nonfinite: int | None = None

    def flipped(self) -> PairDiff:
        """The same comparison seen as a − b. Its verdict is re-derived from the numbers (``verdict``),
        never copied, so A and B in the words name the right runs."""
        neg = (lambda v: None if v is None else -v)
        return replace(self, run_a=self.run_b, run_b=self.run_a, rate_a=self.rate_b, rate_b=self.rate_a,
                       delta=neg(self.delta), lo=neg(self.hi), hi=neg(self.lo),
                       p_b_better=None if self.p_b_better is None else 1.0 - self.p_b_better,
                       stored_verdict=None)

    @property
    def significant(self) -> bool:
        """A difference is claimed only with enough evidence, an interval excluding 0 and (when
        stored) a multiplicity-adjusted p below 0.05."""
        if not self.reliable or self.lo is None or self.hi is None:
            return False
        if any(math.isnan(v) for v in (self.lo, self.hi)) or self.lo <= 0 <= self.hi:
            return False
        return self.p_adj is None or not math.isfinite(self.p_adj) or self.p_adj < 0.05

    @property
    def verdict(self) -> str:
        """The comparison in words (A = run_a, B = run_b), derived from this orientation's numbers;
        a thin one (``reliable`` false) says "insufficient data (n = …)" whatever its numbers."""
        from asr_eval.metrics.stats import insufficient, verdict

        if not self.reliable:
            own = Evidence(self.n, self.ref_chars)
            if not own.enough and self.ref_chars:
                return own.describe()
            if self.stored_verdict and self.stored_verdict.startswith("insufficient data"):
                return self.stored_verdict  # the scorer's words (no A/B in them, so any orientation)
            return insufficient(self.n) + (": a run compared has too little data on this slice" if own.enough else "")
        if self.delta is None or self.lo is None or self.hi is None or math.isnan(self.delta):
            return "no interval"
        return verdict(self.delta, self.lo, self.hi, metric=self.metric.upper(), p_adj=self.p_adj,
                       adj_method=self.adj_method, family_size=self.family_size)


@dataclass(frozen=True)
class Confusion:
    op: str
    ref: str
    hyp: str
    count: int


@dataclass(frozen=True)
class WorstUtt:
    run_id: str
    rank: int
    utt_id: str
    corpus_id: str
    duration_s: float | None
    ref_raw: str | None
    hyp_raw: str | None
    ref_norm: str | None
    hyp_norm: str | None
    n: int
    subs: int
    dels: int
    ins: int
    cer: float | None
    alignment: list[tuple[str, str, str]]
    flags: tuple[str, ...]
    ref_segments: list[list] | None = None  # long-form: the reference's [[start, end, text], ...]


@dataclass(frozen=True)
class Series:
    """One metric of one training run, step-ordered; lo/hi are the min/max envelope when downsampled."""

    steps: list[float]
    values: list[float]
    lo: list[float] = field(default_factory=list)
    hi: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class TrainingRun:
    training_run_id: str
    name: str | None
    source: str | None
    base_model_id: str | None
    corpus_id: str | None
    baseline_run_id: str | None
    status: str | None
    params: dict[str, Any]
    started_at: str | None
    finished_at: str | None
    n_train: int
    n_eval: int
    series: dict[str, Series]  # 'loss' | 'eval_loss' | 'grad_norm' | 'cer'
    nonfinite: list[tuple[int, str]]  # (step, 'loss' | 'grad_norm')
    downsampled: bool


@dataclass(frozen=True)
class Alert:
    alert_id: str
    training_run_id: str
    baseline_run_id: str | None
    rule: str
    severity: str
    step: int | None
    metric: str | None
    value: float | None
    threshold: float | None
    message: str


# ───────────────────────────── SQL building blocks ─────────────────────────────


def sums_sql(p: str, err: str, n: str) -> str:
    """Aggregates from which a pooled ratio Σerr/Σn and its delta-method variance follow."""
    e, m = f"({err})::DOUBLE", f"({n})::DOUBLE"
    return (f"sum({e}) AS {p}_e, sum({m}) AS {p}_n, sum({e}*{e}) AS {p}_ee, "
            f"sum({e}*{m}) AS {p}_en, sum({m}*{m}) AS {p}_nn")


def ratio_sql(p: str, clamp: bool = True) -> str:
    """Pooled ratio with a 95% normal-approximation interval (ratio estimator, cluster = utterance)."""
    r = f"({p}_e / nullif({p}_n, 0))"
    var = (f"(cnt::DOUBLE / nullif(cnt - 1, 0)) * greatest({p}_ee - 2*{r}*{p}_en + {r}*{r}*{p}_nn, 0)"
           f" / nullif({p}_n*{p}_n, 0)")
    half = f"{Z95} * sqrt({var})"
    lo = f"greatest({r} - {half}, 0)" if clamp else f"{r} - {half}"
    return f"{r} AS {p}, {lo} AS {p}_lo, {r} + {half} AS {p}_hi"


def _err(prefix: str, alias: str = "") -> str:
    a = f"{alias}." if alias else ""
    return f"{a}{prefix}_s + {a}{prefix}_d + {a}{prefix}_i"


def _rate(row: dict[str, Any], p: str, method: str) -> Rate:
    v = row.get(p)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return Rate(None)
    return Rate(v, row.get(f"{p}_lo"), row.get(f"{p}_hi"), method if row.get(f"{p}_lo") is not None else "")


def _params(sel: Selection, **extra: Any) -> dict[str, Any]:
    return {"runs": sel.run_ids, "norm": sel.normalizer, **extra}


# ───────────────────────────── headline / totals ─────────────────────────────


def run_totals(con: duckdb.DuckDBPyConnection, sel: Selection) -> dict[str, RunTotals]:
    """Per-run totals: rates (stored bootstrap CI when present), S/D/I, per-class counts, flags."""
    if not sel.runs:
        return {}
    class_sums = ", ".join(f"sum({k}_n) AS {k}_n, sum({k}_err) AS {k}_err" for k, _ in CLASSES)
    sql = f"""
    WITH agg AS (
      SELECT run_id, count(*) AS cnt, {sums_sql('cer', _err('cer'), 'cer_n')}, {sums_sql('mer', _err('mer'), 'mer_n')},
             {sums_sql('wer', _err('wer'), 'wer_n')}, sum(cer_s) AS subs, sum(cer_d) AS dels, sum(cer_i) AS ins,
             {class_sums}, count(*) FILTER (WHERE empty_ref) AS n_empty_ref,
             count(*) FILTER (WHERE len(flags) > 0) AS n_flagged,
             count(*) FILTER (WHERE cer_s + cer_d + cer_i > 0) AS n_err_utts
      FROM utterance_scores WHERE normalizer = $norm AND run_id IN (SELECT unnest($runs)) GROUP BY run_id),
    rt AS (SELECT *, {ratio_sql('cer')}, {ratio_sql('mer')}, {ratio_sql('wer')} FROM agg)
    SELECT rt.*, sm.hours AS sm_hours, sm.cer AS sm_cer, sm.cer_lo AS sm_cer_lo, sm.cer_hi AS sm_cer_hi,
           sm.mer AS sm_mer, sm.mer_lo AS sm_mer_lo, sm.mer_hi AS sm_mer_hi, sm.reliable AS sm_reliable, r.audio_s
    FROM rt
    LEFT JOIN slice_metrics sm ON sm.run_id = rt.run_id AND sm.normalizer = $norm AND sm.slice_attr = '{ALL_ATTR}'
    LEFT JOIN eval_runs r ON r.run_id = rt.run_id
    """
    out: dict[str, RunTotals] = {}
    for row in rows(con, sql, _params(sel)):
        stored = row["sm_cer"] is not None
        hours = row["sm_hours"] if row["sm_hours"] is not None else (
            row["audio_s"] / 3600 if row["audio_s"] is not None else None)
        out[row["run_id"]] = RunTotals(
            run_id=row["run_id"], n=int(row["cnt"]), hours=hours,
            cer=Rate(row["sm_cer"], row["sm_cer_lo"], row["sm_cer_hi"], "bootstrap") if stored
            else _rate(row, "cer", "normal"),
            mer=Rate(row["sm_mer"], row["sm_mer_lo"], row["sm_mer_hi"], "bootstrap") if row["sm_mer"] is not None
            else _rate(row, "mer", "normal"),
            wer=_rate(row, "wer", "normal"),
            n_chars=int(row["cer_n"] or 0), subs=int(row["subs"] or 0), dels=int(row["dels"] or 0),
            ins=int(row["ins"] or 0),
            classes={k: (int(row[f"{k}_n"] or 0), int(row[f"{k}_err"] or 0)) for k, _ in CLASSES},
            n_empty_ref=int(row["n_empty_ref"]), n_flagged=int(row["n_flagged"]), n_err_utts=int(row["n_err_utts"]),
            reliable=_reliable({"reliable": row["sm_reliable"], "n": row["cnt"], "ref_chars": row["cer_n"]}),
        )
    return out


# ───────────────────────────── slices ─────────────────────────────


def slice_attrs(con: duckdb.DuckDBPyConnection, sel: Selection) -> dict[str, list[str]]:
    """Slice columns per corpus: the scorer's default slices (same rule) plus any slice it stored."""
    stored = rows(con, f"""
        SELECT DISTINCT r.corpus_id, sm.slice_attr AS attr FROM slice_metrics sm JOIN eval_runs r USING (run_id)
        WHERE sm.run_id IN (SELECT unnest($runs)) AND sm.normalizer = $norm AND sm.slice_attr <> '{ALL_ATTR}'""",
                  _params(sel))
    out: dict[str, list[str]] = {}
    for cid, _ in sel.corpora:
        found = set(available_slices(con, cid)) | {r["attr"] for r in stored if r["corpus_id"] == cid}
        out[cid] = sorted(found)
    return out


def slice_rows(con: duckdb.DuckDBPyConnection, sel: Selection,
               attrs: dict[str, list[str]]) -> list[SliceRow]:
    """Per-slice rates for every run and slice column; stored rows first, SQL-computed for the rest."""
    if not sel.runs:
        return []
    stored = stored_slice_metrics(con, sel.run_ids, sel.normalizer, include_all=False)
    out = [SliceRow(r["run_id"], r["slice_attr"], r["slice_value"], int(r["n"] or 0), r["hours"],
                    _rate(r, "cer", "bootstrap"), _rate(r, "mer", "bootstrap"), r["wer"],
                    int(r["ref_chars"] if r["ref_chars"] is not None else r["cer_n"] or 0),
                    _reliable(r), r["ci_method"] or "", r["n_blocks"], r["n_nonfinite"]) for r in stored]
    have = {(r.run_id, r.attr) for r in out}
    for run in sel.runs:
        missing = [a for a in attrs.get(run.corpus_id, []) if (run.run_id, a) not in have]
        if missing:
            out += _computed_slices(con, sel, run.run_id, run.corpus_id, missing)
    return out


def _computed_slices(con: duckdb.DuckDBPyConnection, sel: Selection, run_id: str, corpus_id: str,
                     attrs: list[str]) -> list[SliceRow]:
    sql = f"""
    WITH agg AS (
      SELECT sl.attr, sl.value, count(*) AS cnt, sum(u.duration_s) / 3600 AS hours,
             {sums_sql('cer', _err('cer', 's'), 's.cer_n')}, {sums_sql('mer', _err('mer', 's'), 's.mer_n')},
             sum({_err('wer', 's')})::DOUBLE / nullif(sum(s.wer_n), 0) AS wer
      FROM utterance_scores s
      JOIN {_slices(attrs)} sl ON sl.corpus_id = $corpus AND sl.utt_id = s.utt_id
      LEFT JOIN utterances u ON u.corpus_id = $corpus AND u.utt_id = s.utt_id
      WHERE s.run_id = $run AND s.normalizer = $norm
      GROUP BY sl.attr, sl.value)
    SELECT *, {ratio_sql('cer')}, {ratio_sql('mer')} FROM agg"""
    found = rows(con, sql, {"run": run_id, "corpus": corpus_id, "norm": sel.normalizer, **_attrs(sql, attrs)})
    return [SliceRow(run_id, r["attr"], r["value"], int(r["cnt"]), r["hours"], _rate(r, "cer", "normal"),
                     _rate(r, "mer", "normal"), r["wer"], int(r["cer_n"] or 0),
                     Evidence(int(r["cnt"]), int(r["cer_n"] or 0)).reliable, "normal") for r in found]


def _reliable(r: dict[str, Any]) -> bool:
    """Stored verdict of the scorer; rows from before issue 12 (NULL) are judged by the default rule
    (``metrics.stats.stored_reliable``)."""
    chars = r.get("ref_chars") if r.get("ref_chars") is not None else r.get("cer_n")
    return stored_reliable(r.get("reliable"), r.get("n"), chars)


Sides = dict[tuple[str, str, str], bool]  # (run_id, slice attr, slice value) -> that number is reliable


def side_evidence(totals: dict[str, RunTotals], srows: Sequence[SliceRow]) -> Sides:
    """Whether each run's own number on each slice has enough evidence: the sides of the paired
    differences (``pair_diffs``: a pair is thin when either side is)."""
    out: Sides = {(t.run_id, ALL_ATTR, ALL_VALUE): t.reliable for t in totals.values()}
    out.update({(r.run_id, r.attr, r.value): r.reliable for r in srows})
    return out


def _with_sides(d: PairDiff, sides: Sides | None) -> PairDiff:
    ok = not sides or all(sides.get((run, d.attr, d.value), True) for run in (d.run_a, d.run_b))
    return d if ok or not d.reliable else replace(d, reliable=False)


# ───────────────────────────── paired differences ─────────────────────────────


def pair_diffs(con: duckdb.DuckDBPyConnection, sel: Selection,
               attrs: dict[str, list[str]], sides: Sides | None = None) -> list[PairDiff]:
    """CER differences for every pair of runs on the same corpus, oriented as (earlier run, later run).
    With ``sides`` (``side_evidence``), a difference is also thin when either run's own number on
    the slice is."""
    if len(sel.runs) < 2:
        return []
    stored = stored_comparisons(con, sel.run_ids, sel.normalizer, metric="cer")
    order = {r.run_id: i for i, r in enumerate(sel.runs)}
    out: list[PairDiff] = []
    for r in stored:
        ref_chars = int(r["ref_chars"] or 0)
        d = PairDiff(r["run_a"], r["run_b"], r["slice_attr"], r["slice_value"], int(r["n"] or 0), r["rate_a"],
                     r["rate_b"], r["delta"], r["delta_lo"], r["delta_hi"], r["p_b_better"], r["sign_test_p"],
                     r["verdict"], "bootstrap", metric=r["metric"], ref_chars=ref_chars,
                     reliable=bool(r["reliable"]), p_raw=r["p_raw"],  # NULL (old rows) judged by stored_comparisons
                     p_adj=r["p_adj"], adj_method=r["adj_method"], family_size=r["family_size"], mde=r["mde"],
                     ci_method=r["ci_method"] or "", n_nonfinite=r["n_nonfinite"])
        out.append(d if order[d.run_a] < order[d.run_b] else d.flipped())
    have = {(d.run_a, d.run_b, d.attr) for d in out}
    for corpus_id, _ in sel.corpora:
        runs = sel.runs_of(corpus_id)
        for i, a in enumerate(runs):
            for b in runs[i + 1:]:
                missing = [x for x in [ALL_ATTR, *attrs.get(corpus_id, [])] if (a.run_id, b.run_id, x) not in have]
                if missing:
                    out += _computed_pairs(con, sel, a.run_id, b.run_id, corpus_id, missing)
    return [_with_sides(d, sides) for d in out]


def _computed_pairs(con: duckdb.DuckDBPyConnection, sel: Selection, run_a: str, run_b: str, corpus_id: str,
                    attrs: list[str]) -> list[PairDiff]:
    sql = f"""
    WITH p AS (
      SELECT a.utt_id, a.cer_n AS n, {_err('cer', 'a')} AS ea, {_err('cer', 'b')} AS eb
      FROM utterance_scores a
      JOIN utterance_scores b ON b.utt_id = a.utt_id AND b.run_id = $b AND b.normalizer = $norm
      WHERE a.run_id = $a AND a.normalizer = $norm),
    agg AS (
      SELECT sl.attr, sl.value, count(*) AS cnt, sum(n) AS ref_chars, sum(ea)::DOUBLE / nullif(sum(n), 0) AS rate_a,
             sum(eb)::DOUBLE / nullif(sum(n), 0) AS rate_b, {sums_sql('d', 'eb - ea', 'n')}
      FROM p JOIN {_slices(attrs)} sl ON sl.corpus_id = $corpus AND sl.utt_id = p.utt_id
      GROUP BY sl.attr, sl.value)
    SELECT *, {ratio_sql('d', clamp=False)} FROM agg"""
    found = rows(con, sql, {"a": run_a, "b": run_b, "corpus": corpus_id, "norm": sel.normalizer,
                            **_attrs(sql, attrs)})
    return [PairDiff(run_a, run_b, r["attr"], r["value"], int(r["cnt"]), r["rate_a"], r["rate_b"], r["d"],
                     r["d_lo"], r["d_hi"], None, None, None, "normal", ref_chars=int(r["ref_chars"] or 0),
                     reliable=Evidence(int(r["cnt"]), int(r["ref_chars"] or 0)).reliable,
                     mde=None if r["d_lo"] is None or r["d_hi"] is None else (r["d_hi"] - r["d_lo"]) / 2,
                     ci_method="normal") for r in found]


# ───────────────────────────── error analysis ─────────────────────────────


def flag_counts(con: duckdb.DuckDBPyConnection, sel: Selection) -> list[dict[str, Any]]:
    """Utterances per (run, slice, pathology flag); slice '_all'/'all' is the whole run."""
    if not sel.runs:
        return []
    return rows(con, f"""
        WITH f AS (
          SELECT s.run_id, r.corpus_id, s.utt_id, unnest(list_distinct(s.flags)) AS flag
          FROM utterance_scores s JOIN eval_runs r USING (run_id)
          WHERE s.normalizer = $norm AND s.run_id IN (SELECT unnest($runs)) AND len(s.flags) > 0)
        SELECT f.run_id, sl.attr, sl.value, f.flag, count(*) AS n
        FROM f JOIN {_slices()} sl ON sl.corpus_id = f.corpus_id AND sl.utt_id = f.utt_id
        GROUP BY ALL ORDER BY f.run_id, sl.attr, sl.value, f.flag""", _params(sel))


def confusions(con: duckdb.DuckDBPyConnection, sel: Selection, top: int,
               stride: dict[str, int] | None = None) -> dict[str, dict[str, list[Confusion]]]:
    """Most frequent substitution pairs, deleted and inserted units per run, on MER units as the
    error taxonomy groups them (``metrics.taxonomy.unit_edits``: a Latin word and what replaced it
    is one pair, ``hello → 哈喽``), from the stored normalized texts.

    ``stride[run] = k > 1`` counts only utterances with ``hash(utt_id) % k = 0``: a deterministic
    1-in-k sample that bounds the work on very large runs (the ranking of frequent pairs holds)."""
    from collections import Counter

    from asr_eval.metrics.taxonomy import unit_edits

    if not sel.runs:
        return {}
    ks = [max(1, (stride or {}).get(r, 1)) for r in sel.run_ids]
    cur = con.execute("""
        WITH st AS (SELECT unnest($runs) AS run_id, unnest($ks) AS k)
        SELECT s.run_id, s.ref_norm, s.hyp_norm
        FROM utterance_scores s JOIN st USING (run_id)
        WHERE s.normalizer = $norm AND s.cer_s + s.cer_d + s.cer_i > 0 AND (st.k = 1 OR hash(s.utt_id) % st.k = 0)""",
        _params(sel, ks=ks))
    counts: dict[str, Counter[tuple[str, str, str]]] = {r: Counter() for r in sel.run_ids}
    while batch := cur.fetchmany(10_000):
        for run_id, ref, hyp in batch:
            counts[run_id].update(unit_edits(ref or "", hyp or ""))
    out: dict[str, dict[str, list[Confusion]]] = {r.run_id: {op: [] for op in OPS} for r in sel.runs}
    for run_id, c in counts.items():
        for (op, ref, hyp), n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0][1], kv[0][2])):
            if len(out[run_id][op]) < top:
                out[run_id][op].append(Confusion(op, ref, hyp, n))
    return out


def _alignment(raw: Any) -> list[tuple[str, str, str]]:
    if raw is None:
        return []
    items = json.loads(raw) if isinstance(raw, str) else raw
    return [(str(op).upper(), "" if ref is None else str(ref), "" if hyp is None else str(hyp))
            for op, ref, hyp, *_ in items]


def worst_utterances(con: duckdb.DuckDBPyConnection, sel: Selection, top: int) -> dict[str, list[WorstUtt]]:
    """The ``top`` utterances with the highest CER per run (ties: more errors first, then utt_id), with raw texts."""
    out: dict[str, list[WorstUtt]] = {r.run_id: [] for r in sel.runs}
    if top <= 0:
        return out
    for run in sel.runs:  # one ORDER BY … LIMIT per run: a top-N scan, far cheaper than a window over all rows
        found = rows(con, f"""
            WITH w AS (
              SELECT utt_id, ({_err('cer')})::DOUBLE / greatest(cer_n, 1) AS cer,
                     row_number() OVER (ORDER BY cer DESC, {_err('cer')} DESC, utt_id) AS rank
              FROM (SELECT * FROM utterance_scores WHERE run_id = $run AND normalizer = $norm
                    ORDER BY ({_err('cer')})::DOUBLE / greatest(cer_n, 1) DESC, {_err('cer')} DESC, utt_id
                    LIMIT $top))
            SELECT w.rank, w.cer, w.utt_id, s.ref_norm, s.hyp_norm, s.cer_n, s.cer_s, s.cer_d, s.cer_i,
                   s.alignment::VARCHAR AS alignment, s.flags, u.text AS ref_raw, u.duration_s, h.hyp_raw,
                   u.segments::VARCHAR AS ref_segments
            FROM w JOIN utterance_scores s ON s.run_id = $run AND s.normalizer = $norm AND s.utt_id = w.utt_id
            LEFT JOIN utterances u ON u.corpus_id = $corpus AND u.utt_id = w.utt_id
            LEFT JOIN hypotheses h ON h.run_id = $run AND h.utt_id = w.utt_id
            ORDER BY w.rank""", {"run": run.run_id, "norm": sel.normalizer, "top": top, "corpus": run.corpus_id})
        out[run.run_id] = [WorstUtt(
            run_id=run.run_id, rank=int(r["rank"]), utt_id=r["utt_id"], corpus_id=run.corpus_id,
            duration_s=r["duration_s"], ref_raw=r["ref_raw"], hyp_raw=r["hyp_raw"], ref_norm=r["ref_norm"],
            hyp_norm=r["hyp_norm"], n=int(r["cer_n"] or 0), subs=int(r["cer_s"] or 0), dels=int(r["cer_d"] or 0),
            ins=int(r["cer_i"] or 0), cer=r["cer"], alignment=_alignment(r["alignment"]),
            flags=tuple(r["flags"] or ()),
            ref_segments=json.loads(r["ref_segments"]) if r["ref_segments"] else None,
        ) for r in found]
    return out


# ───────────────────────────── training ─────────────────────────────


def training_run_ids(con: duckdb.DuckDBPyConnection, sel: Selection, explicit: bool) -> list[str]:
    """Training runs to show: all of them, or (when runs were chosen) those behind the chosen models."""
    if not explicit:
        return [r[0] for r in con.execute(
            "SELECT training_run_id FROM training_runs ORDER BY started_at NULLS LAST, training_run_id").fetchall()]
    return sorted({r.training_run_id for r in sel.runs if r.training_run_id})


def training_runs(con: duckdb.DuckDBPyConnection, ids: Sequence[str], max_points: int) -> dict[str, TrainingRun]:
    """Training runs (and the baselines they name) with their curves, downsampled in SQL when long."""
    base = rows(con, "SELECT baseline_run_id FROM training_runs WHERE training_run_id IN (SELECT unnest($ids)) "
                     "AND baseline_run_id IS NOT NULL", {"ids": list(ids)})
    want = list(dict.fromkeys([*ids, *(b["baseline_run_id"] for b in base)]))
    meta = rows(con, """
        SELECT t.training_run_id, t.name, t.source, t.base_model_id, t.corpus_id, t.baseline_run_id, t.status,
               t.params::VARCHAR AS params, t.started_at::VARCHAR AS started_at,
               t.finished_at::VARCHAR AS finished_at,
               count(*) FILTER (WHERE l.kind = 'train') AS n_train, count(*) FILTER (WHERE l.kind = 'eval') AS n_eval,
               min(l.step) AS first_step, max(l.step) AS last_step
        FROM training_runs t LEFT JOIN training_log l USING (training_run_id)
        WHERE t.training_run_id IN (SELECT unnest($ids)) GROUP BY ALL""", {"ids": want})
    out: dict[str, TrainingRun] = {}
    for m in meta:
        tid = m["training_run_id"]
        span = (m["last_step"] - m["first_step"] + 1) if m["last_step"] is not None else 0
        # Bucket by step range, not row count: logging intervals differ between runs.
        width = math.ceil(span / max_points) if max(m["n_train"], m["n_eval"]) > max_points else 1
        series, down = _curves(con, tid, max(1, width))
        nonfinite = [(int(r[0]), r[1]) for r in con.execute("""
            SELECT step, metric FROM (
              SELECT step, 'loss' AS metric FROM training_log WHERE training_run_id = $t AND NOT isfinite(loss)
              UNION ALL
              SELECT step, 'grad_norm' FROM training_log WHERE training_run_id = $t AND NOT isfinite(grad_norm))
            ORDER BY step LIMIT 200""", {"t": tid}).fetchall()]
        out[tid] = TrainingRun(
            training_run_id=tid, name=m["name"], source=m["source"], base_model_id=m["base_model_id"],
            corpus_id=m["corpus_id"], baseline_run_id=m["baseline_run_id"], status=m["status"],
            params=as_dict(m["params"]), started_at=m["started_at"],
            finished_at=m["finished_at"], n_train=int(m["n_train"]), n_eval=int(m["n_eval"]), series=series,
            nonfinite=nonfinite, downsampled=down)
    return out


_CURVES = (("loss", "train", "loss"), ("grad_norm", "train", "grad_norm"), ("eval_loss", "eval", "loss"),
           ("cer", "eval", "cer"))


def _curves(con: duckdb.DuckDBPyConnection, tid: str, width: int) -> tuple[dict[str, Series], bool]:
    """Finite points of each curve; with width > 1, step buckets of that width (mean, min, max)."""
    parts = " UNION ALL ".join(
        f"SELECT '{name}' AS curve, step, {col}::DOUBLE AS v FROM training_log "
        f"WHERE training_run_id = $t AND kind = '{kind}' AND isfinite({col})"
        for name, kind, col in _CURVES)
    found = con.execute(f"""
        SELECT curve, avg(step) AS step, avg(v) AS v, min(v) AS lo, max(v) AS hi
        FROM ({parts}) GROUP BY curve, step // $w ORDER BY curve, 2""", {"t": tid, "w": width}).fetchall()
    acc: dict[str, tuple[list[float], ...]] = {name: ([], [], [], []) for name, _, _ in _CURVES}
    for curve, step, v, lo, hi in found:
        for lst, x in zip(acc[curve], (step, v, lo, hi), strict=True):
            lst.append(x)
    down = width > 1
    return {k: Series(s, v, lo if down else [], hi if down else []) for k, (s, v, lo, hi) in acc.items() if s}, down


SEVERITY_ORDER = ("critical", "regression", "warning", "info")


def alerts(con: duckdb.DuckDBPyConnection, ids: Iterable[str]) -> list[Alert]:
    found = rows(con, """
        SELECT alert_id, training_run_id, baseline_run_id, rule, severity, step, metric, value, threshold, message
        FROM alerts WHERE training_run_id IN (SELECT unnest($ids))
        ORDER BY training_run_id, coalesce(list_position($sev, lower(severity)), 99), step NULLS LAST, alert_id""",
        {"ids": list(ids), "sev": list(SEVERITY_ORDER)})
    return [Alert(**r) for r in found]
