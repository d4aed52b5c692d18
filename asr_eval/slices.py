"""THE definition of slice membership — the one place that says which slice an utterance is in.

Scoring (per-slice intervals, comparisons, the gate), the CLI tables, the HTML report and the
exports all read slices through this module:

* ``membership_sql(attrs)`` — slice membership in long form ``(corpus_id, utt_id, attr, value)``:
  every column of ``utterance_attrs`` (ingested slice columns and the derived ``duration_bucket``),
  the ``speaker`` column, and the whole corpus as the pseudo-slice ``_all`` / ``all``. A missing
  value is the slice ``(none)`` — a real slice (utterances nobody labelled), shown like any other.
* ``duration_bucket`` — the derived duration slice, computed once when a corpus is loaded.
* ``contaminated`` — the derived train/test contamination slice (``asr_eval.contamination``): for a
  corpus with any stored check, each utterance's worst flag over every training source checked
  (``exact`` > ``overlap`` > ``clean``; ``(none)`` where no check covered it).
* ``available_slices`` — which slice columns get a table by default (few distinct values).
* ``sort_values`` / ``slice_label`` — how slices are ordered and named everywhere.
* ``stored_slice_metrics`` / ``stored_comparisons`` — the one reader of the stored per-slice rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np

ALL_ATTR, ALL_VALUE = "_all", "all"  # the whole run, stored as slice_attr '_all' / slice_value 'all'
MISSING_VALUE = "(none)"  # an utterance without a value for the attribute
SPEAKER_ATTR = "speaker"  # a column of `utterances`, offered as a slice like the ingested columns
DURATION_ATTR = "duration_bucket"
CONTAMINATED_ATTR = "contaminated"  # derived from the `contamination` table (asr_eval.contamination)
# slice names the store makes itself: an ingested column of the same name is renamed (``name_2``)
DERIVED_ATTRS = (ALL_ATTR, SPEAKER_ATTR, DURATION_ATTR, CONTAMINATED_ATTR)
CONTAMINATION_FLAGS = ("exact", "overlap", "clean")  # worst first
MAX_AUTO_SLICE_VALUES = 50  # columns with more distinct values (ids, sentences) are not default slices

# Derived slice: duration buckets (upper bounds in seconds, label).
# Recordings kept by ``ingest --long-form`` fall in the last four.
DURATION_BUCKETS: tuple[tuple[float, str], ...] = (
    (2.0, "0-2s"), (5.0, "2-5s"), (10.0, "5-10s"), (20.0, "10-20s"), (30.0, "20-30s"),
    (120.0, "30s-2min"), (600.0, "2-10min"), (3600.0, "10-60min"), (float("inf"), ">1h"),
)


def duration_bucket(seconds: float) -> str:
    for upper, label in DURATION_BUCKETS:
        if seconds < upper:
            return label
    return DURATION_BUCKETS[-1][1]


def _contamination_sql() -> str:
    """The ``contaminated`` slice: the worst flag of an utterance over every stored check, for the
    utterances of corpora that have been checked at all."""
    worst = " ".join(f"WHEN '{f}' THEN {len(CONTAMINATION_FLAGS) - i}" for i, f in enumerate(CONTAMINATION_FLAGS))
    back = " ".join(f"WHEN {len(CONTAMINATION_FLAGS) - i} THEN '{f}'" for i, f in enumerate(CONTAMINATION_FLAGS))
    return (f"SELECT u.corpus_id, u.utt_id, '{CONTAMINATED_ATTR}' AS attr, coalesce(c.flag, '{MISSING_VALUE}') AS value "
            "FROM utterances u SEMI JOIN (SELECT DISTINCT corpus_id FROM contamination) k ON k.corpus_id = u.corpus_id "
            f"LEFT JOIN (SELECT corpus_id, utt_id, CASE max(CASE flag {worst} ELSE 0 END) {back} END AS flag "
            "FROM contamination GROUP BY corpus_id, utt_id) c ON c.corpus_id = u.corpus_id AND c.utt_id = u.utt_id")


def membership_sql(attrs: Sequence[str] | None = None) -> str:
    """A parenthesised SQL relation (corpus_id, utt_id, attr, value) of slice membership. With
    ``attrs`` the caller binds the list as ``$attrs`` and only the needed branches are read (the
    others would each cost a full scan)."""
    want = None if attrs is None else set(attrs)
    parts = []
    if want is None or CONTAMINATED_ATTR in want:  # with attrs, $attrs is referenced: callers always bind it
        parts.append(_contamination_sql() + ("" if want is None else
                                             f" WHERE '{CONTAMINATED_ATTR}' IN (SELECT unnest($attrs))"))
    if want is None or want - {SPEAKER_ATTR, ALL_ATTR, CONTAMINATED_ATTR}:
        parts.append(f"SELECT corpus_id, utt_id, attr, coalesce(value, '{MISSING_VALUE}') AS value FROM utterance_attrs"
                     + ("" if want is None else " WHERE attr IN (SELECT unnest($attrs))"))
    if want is None or SPEAKER_ATTR in want:
        parts.append(f"SELECT corpus_id, utt_id, '{SPEAKER_ATTR}' AS attr, coalesce(speaker, '{MISSING_VALUE}') AS value "
                     "FROM utterances")
    if want is None or ALL_ATTR in want:
        parts.append(f"SELECT corpus_id, utt_id, '{ALL_ATTR}' AS attr, '{ALL_VALUE}' AS value FROM utterances")
    return "(" + " UNION ALL ".join(parts) + ")"


def available_slices(con: duckdb.DuckDBPyConnection, corpus_id: str) -> list[str]:
    """Slice attributes worth a table by default: columns with 1..MAX_AUTO_SLICE_VALUES values, and
    ``contaminated`` once the corpus has been checked for contamination."""
    rows = con.execute(
        "SELECT attr, count(DISTINCT value) FROM utterance_attrs WHERE corpus_id = ? GROUP BY attr ORDER BY attr",
        [corpus_id]).fetchall()
    out = [a for a, k in rows if 1 <= k <= MAX_AUTO_SLICE_VALUES]
    checked = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'contamination'"
                          ).fetchall()[0][0] and con.execute(
        "SELECT 1 FROM contamination WHERE corpus_id = ? LIMIT 1", [corpus_id]).fetchall()
    return sorted([*out, CONTAMINATED_ATTR]) if checked and CONTAMINATED_ATTR not in out else out


def value_key(v: Any) -> tuple[float, str]:
    """Sort key of slice values: numeric-looking values ('0-2s', '10-20s', '>30s', '3') by number,
    then the rest alphabetically; '(none)' last."""
    s = str(v)
    if s == MISSING_VALUE:
        return (float("inf"), "\uffff")
    try:
        return (float(s.split("-")[0].rstrip("s").lstrip("<>")), s)
    except ValueError:
        return (float("inf"), s)


def sort_values(values: Iterable[Any]) -> list[str]:
    return sorted({str(v) for v in values}, key=value_key)


def slice_label(attr: str, value: str) -> str:
    """'all' for the whole run, else 'attr=value'."""
    return ALL_VALUE if attr == ALL_ATTR else f"{attr}={value}"


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


SLICE_METRIC_COLUMNS = (
    "run_id", "normalizer", "normalizer_hash", "slice_attr", "slice_value", "n", "hours", "cer", "cer_lo", "cer_hi",
    "mer", "mer_lo", "mer_hi", "wer", "cer_s", "cer_d", "cer_i", "cer_n", "n_boot", "ci_method", "ref_chars",
    "reliable", "n_blocks", "n_nonfinite")

COMPARISON_COLUMNS = (
    "run_a", "run_b", "normalizer", "metric", "slice_attr", "slice_value", "n", "rate_a", "rate_b", "delta",
    "delta_lo", "delta_hi", "p_b_better", "sign_test_p", "verdict", "p_raw", "p_adj", "adj_method", "family_size",
    "reliable", "mde", "ci_method", "n_nonfinite", "ref_chars")


def stored_slice_metrics(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str,
                         include_all: bool = True) -> list[dict[str, Any]]:
    """Stored ``slice_metrics`` rows of some runs (every column), ``_all`` first, slices in order."""
    found = _rows(con, f"""
        SELECT {', '.join(SLICE_METRIC_COLUMNS)} FROM slice_metrics
        WHERE normalizer = $norm AND run_id IN (SELECT unnest($runs))
          {'' if include_all else f"AND slice_attr <> '{ALL_ATTR}'"}""",
                  {"norm": normalizer, "runs": list(run_ids)})
    _judge(found)
    return sorted(found, key=lambda r: (r["slice_attr"] != ALL_ATTR, r["slice_attr"], value_key(r["slice_value"])))


def _judge(rows: list[dict[str, Any]]) -> None:
    """``reliable`` of rows stored before the minimum-evidence rule (NULL), judged now by the rule."""
    from asr_eval.metrics.stats import stored_reliable

    for r in rows:
        if r["reliable"] is None:
            chars = r["ref_chars"] if r["ref_chars"] is not None else r.get("cer_n")
            r["reliable"] = stored_reliable(None, r["n"], chars)


def stored_comparisons(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str,
                       metric: str | None = None) -> list[dict[str, Any]]:
    """Stored ``comparisons`` rows between runs of ``run_ids`` (both sides in the set)."""
    found = _rows(con, f"""
        SELECT {', '.join(COMPARISON_COLUMNS)} FROM comparisons
        WHERE normalizer = $norm AND run_a IN (SELECT unnest($runs)) AND run_b IN (SELECT unnest($runs))
          {'' if metric is None else 'AND metric = $metric'}""",
                  {"norm": normalizer, "runs": list(run_ids), **({} if metric is None else {"metric": metric})})
    _judge(found)
    return sorted(found, key=lambda r: (r["metric"], r["slice_attr"] != ALL_ATTR, r["slice_attr"],
                                        value_key(r["slice_value"]), r["run_a"], r["run_b"]))


def run_slice_table(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str, attr: str | None):
    """One run's scored utterances with their slice value for ``attr`` (None / '_all': the whole
    run), as an Arrow table ordered by utt_id: utt_id, value, duration_s, speaker, and per-utterance
    error counts and reference lengths (cer_e/cer_n, mer_e/mer_n, wer_e/wer_n, cer_s/d/i)."""
    attr = attr or ALL_ATTR
    members = membership_sql([attr])
    params = {"attr": attr, "run": run_id, "norm": normalizer, **({"attrs": [attr]} if "$attrs" in members else {})}
    return con.sql(
        f"""SELECT s.utt_id, sl.value, u.duration_s, u.speaker,
               s.cer_s + s.cer_d + s.cer_i AS cer_e, s.cer_n, s.mer_s + s.mer_d + s.mer_i AS mer_e, s.mer_n,
               s.wer_s + s.wer_d + s.wer_i AS wer_e, s.wer_n, s.cer_s, s.cer_d, s.cer_i
            FROM utterance_scores s JOIN eval_runs r ON r.run_id = s.run_id
            JOIN utterances u ON u.corpus_id = r.corpus_id AND u.utt_id = s.utt_id
            JOIN {members} sl ON sl.corpus_id = r.corpus_id AND sl.utt_id = s.utt_id AND sl.attr = $attr
            WHERE s.run_id = $run AND s.normalizer = $norm ORDER BY s.utt_id""",
        params=params).to_arrow_table()


@dataclass(frozen=True)
class PairedSlice:
    """The utterances two runs both scored in one slice, aligned by utt_id."""

    attr: str
    value: str
    utt_ids: list[str]
    speakers: list[str | None]
    err_a: np.ndarray
    err_b: np.ndarray
    n_ref: np.ndarray  # reference tokens of the metric (characters for CER)


def paired_slices(con: duckdb.DuckDBPyConnection, run_a: str, run_b: str, normalizer: str, attr: str | None,
                  metric: str = "cer") -> list[PairedSlice]:
    """Every value of ``attr`` (None: the whole run) with the per-utterance error counts of both
    runs on the utterances both scored, in slice order."""
    ta = run_slice_table(con, run_a, normalizer, attr)
    tb = run_slice_table(con, run_b, normalizer, attr)
    ids_b = {u: i for i, u in enumerate(tb.column("utt_id").to_pylist())}
    ids_a = ta.column("utt_id").to_pylist()
    sel_a = np.array([i for i, u in enumerate(ids_a) if u in ids_b], dtype=np.int64)
    if not sel_a.size:
        return []
    sel_b = np.array([ids_b[ids_a[i]] for i in sel_a], dtype=np.int64)

    def col(t, name, sel):
        return np.asarray(t.column(name).to_numpy(zero_copy_only=False), dtype=np.int64)[sel]

    ea, eb, n = col(ta, f"{metric}_e", sel_a), col(tb, f"{metric}_e", sel_b), col(ta, f"{metric}_n", sel_a)
    values = np.array(ta.column("value").to_pylist(), dtype=object)[sel_a]
    speakers = np.array(ta.column("speaker").to_pylist(), dtype=object)[sel_a]
    utts = np.array(ids_a, dtype=object)[sel_a]
    out = []
    for v in sort_values(values):
        m = values == v
        out.append(PairedSlice(attr or ALL_ATTR, v, list(utts[m]), list(speakers[m]), ea[m], eb[m], n[m]))
    return out
