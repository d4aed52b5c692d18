"""What kind of errors, in the store: the taxonomy of every scored utterance of a run on MER
units (``utterance_errors``; Han characters, Latin words, numbers — ``metrics.taxonomy``), its
substitution pairs (``error_confusions``: ``hello → 哈喽`` is one pair) and, per slice
(``error_slices``; membership from ``asr_eval.slices``), the class counts and shares with the
pinyin error rate and its bootstrap interval — resampled exactly like CER in
``scoring.analysis.slice_metrics`` (``resampling_for`` + ``bootstrap_ci``).

``error_taxonomy`` is called by ``scoring.analysis.analyse`` (so by ``score``, ``rescore`` and the
writer) right after a run's scores and slices; ``error_slices`` alone re-slices (a new slice column,
such as ``contaminated``) without reading the alignments again. Readers at the end serve the CLI
(``asr-eval errors``) and the report.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from asr_eval import slices as slices_mod
from asr_eval.errors import AsrEvalError
from asr_eval.metrics.stats import MIN_REF_CHARS, MIN_UTTS, Evidence, bootstrap_ci, resampling_for
from asr_eval.metrics.taxonomy import ALL_BUCKETS, CLASSES, classify_many, classify_substitution, pinyin_version
from asr_eval.store.tx import insert_arrow, replace_rows, transaction

_UTT_SCHEMA = pa.schema([("run_id", pa.string()), ("utt_id", pa.string()), ("normalizer", pa.string()),
                         ("normalizer_hash", pa.string())]
                        + [(c, pa.int32()) for c in (*ALL_BUCKETS, "py_n", "py_err", "pyt_err")])


def _run_corpus(con: duckdb.DuckDBPyConnection, run_id: str) -> str:
    found = con.execute("SELECT corpus_id FROM eval_runs WHERE run_id = ?", [run_id]).fetchall()
    if not found:
        raise AsrEvalError(f"unknown run {run_id}; see `asr-eval runs`")
    return found[0][0]


def error_taxonomy(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str = "zh-v1",
                   slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0, ci_method: str = "auto",
                   min_utts: int = MIN_UTTS, min_ref_chars: int = MIN_REF_CHARS) -> int:
    """Classify every scored utterance of a run under ``normalizer`` (its stored normalized texts,
    aligned on MER units), store ``utterance_errors`` and ``error_confusions``, then
    ``error_slices``. Returns the number of utterances classified."""
    from asr_eval.text import get_profile

    prof = get_profile(normalizer)
    cur = con.execute("SELECT utt_id, ref_norm, hyp_norm, mer_n, mer_s + mer_d + mer_i FROM utterance_scores "
                      "WHERE run_id = ? AND normalizer = ? ORDER BY utt_id", [run_id, prof.name])
    rows = cur.fetchall()
    classified = iter(classify_many([(r or "", h or "") for _, r, h, _, e in rows if e]))
    cols: dict[str, list] = {c: [] for c in _UTT_SCHEMA.names}
    pairs: Counter[tuple[str, str]] = Counter()
    readings: dict[tuple[str, str], Counter[tuple[str | None, str | None]]] = {}
    for utt, _, _, n, e in rows:
        ue = next(classified) if e else None
        for c, v in (("run_id", run_id), ("utt_id", utt), ("normalizer", prof.name),
                     ("normalizer_hash", prof.rules_hash)):
            cols[c].append(v)
        for b in ALL_BUCKETS:
            cols[b].append(ue.counts[b] if ue else 0)
        cols["py_n"].append(ue.py_n if ue else int(n or 0))
        cols["py_err"].append(ue.py_err if ue else 0)
        cols["pyt_err"].append(ue.pyt_err if ue else 0)
        for c in ue.confusions if ue else ():
            pairs[(c.ref, c.hyp)] += 1
            readings.setdefault((c.ref, c.hyp), Counter())[(c.ref_pinyin, c.hyp_pinyin)] += 1
    conf = []
    for (r, h), k in pairs.items():
        (rp, hp), _ = readings[(r, h)].most_common(1)[0]
        conf.append({"run_id": run_id, "normalizer": prof.name, "ref_tok": r, "hyp_tok": h, "n": k,
                     "ref_pinyin": rp, "hyp_pinyin": hp, "class": classify_substitution(r, h, rp, hp)})
    table = pa.table(cols, schema=_UTT_SCHEMA)
    with transaction(con):
        con.execute("DELETE FROM utterance_errors WHERE run_id = ? AND normalizer = ?", [run_id, prof.name])
        con.execute("DELETE FROM error_confusions WHERE run_id = ? AND normalizer = ?", [run_id, prof.name])
        if table.num_rows:
            insert_arrow(con, "utterance_errors", table)
        if conf:
            insert_arrow(con, "error_confusions", pa.Table.from_pylist(conf))
    error_slices(con, run_id, prof.name, slices, n_boot, seed, ci_method, min_utts, min_ref_chars)
    return table.num_rows


def _per_utt(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    t = con.sql(f"SELECT utt_id, {', '.join((*ALL_BUCKETS, 'py_n', 'py_err', 'pyt_err'))} FROM utterance_errors "
                "WHERE run_id = $run AND normalizer = $norm ORDER BY utt_id",
                params={"run": run_id, "norm": normalizer}).to_arrow_table()
    index = {u: i for i, u in enumerate(t.column("utt_id").to_pylist())}
    arr = {c: np.asarray(t.column(c).to_numpy(zero_copy_only=False), dtype=np.int64) for c in t.column_names[1:]}
    return index, arr


def error_slices(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str = "zh-v1",
                 slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0, ci_method: str = "auto",
                 min_utts: int = MIN_UTTS, min_ref_chars: int = MIN_REF_CHARS) -> int:
    """Pooled class counts, shares of the errors (MER units: the ten buckets sum to MER S + D + I)
    and the pinyin error rates (toneless and with tones, bootstrap 95% CIs) for the whole run and
    every slice of ``slices`` (default: ``asr_eval.slices.available_slices``), from the stored
    ``utterance_errors``."""
    from asr_eval.text import get_profile

    prof = get_profile(normalizer)
    cid = _run_corpus(con, run_id)
    index, arr = _per_utt(con, run_id, prof.name)
    version = pinyin_version()
    attrs = [None] + [a for a in (slices if slices is not None else slices_mod.available_slices(con, cid))
                      if a != slices_mod.ALL_ATTR]
    out = []
    for attr in attrs:
        t = slices_mod.run_slice_table(con, run_id, prof.name, attr)
        keep = [i for i, u in enumerate(t.column("utt_id").to_pylist()) if u in index]
        if not keep:
            continue
        rows = np.array([index[u] for u in np.array(t.column("utt_id").to_pylist(), dtype=object)[keep]], np.int64)
        values = np.array(t.column("value").to_pylist(), dtype=object)[keep]
        speakers = np.array(t.column("speaker").to_pylist(), dtype=object)[keep]
        cer_n = np.asarray(t.column("cer_n").to_numpy(zero_copy_only=False), np.int64)[keep]
        for label in slices_mod.sort_values(values):
            m = values == label
            idx = rows[m]
            rs = resampling_for(list(speakers[m]), ci_method)
            per = bootstrap_ci(arr["py_err"][idx], arr["py_n"][idx], n_boot=n_boot, seed=seed, groups=rs.groups)
            pter = bootstrap_ci(arr["pyt_err"][idx], arr["py_n"][idx], n_boot=n_boot, seed=seed, groups=rs.groups)
            counts = {b: int(arr[b][idx].sum()) for b in ALL_BUCKETS}
            errors = sum(counts.values())  # MER errors
            ref_chars = int(cer_n[m].sum())  # the evidence rule counts characters, like every other table
            out.append({
                "run_id": run_id, "normalizer": prof.name, "normalizer_hash": prof.rules_hash,
                "slice_attr": attr or slices_mod.ALL_ATTR, "slice_value": str(label), "n": int(m.sum()),
                "ref_chars": ref_chars, "ref_units": int(arr["py_n"][idx].sum()), "errors": errors, **counts,
                "shares": json.dumps({b: (counts[b] / errors if errors else None) for b in ALL_BUCKETS}),
                "per": _f(per.rate), "per_lo": _f(per.lo), "per_hi": _f(per.hi),
                "pter": _f(pter.rate), "pter_lo": _f(pter.lo), "pter_hi": _f(pter.hi),
                "n_boot": n_boot, "ci_method": rs.method,
                "reliable": Evidence(int(m.sum()), ref_chars, min_utts, min_ref_chars).reliable,
                "pinyin_version": version,
            })
    return replace_rows(con, "error_slices", "run_id = ? AND normalizer = ?", [run_id, prof.name], out)


def _f(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


# ───────────────────────────── readers ─────────────────────────────


def has_error_tables(con: duckdb.DuckDBPyConnection) -> bool:
    """False for a store that predates the taxonomy tables (opened read-only, not migrated)."""
    from asr_eval.store.schema import ERROR_TABLES

    have = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    return all(t in have for t in ERROR_TABLES)


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def stored_error_slices(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str,
                        include_all: bool = True) -> list[dict[str, Any]]:
    """Stored ``error_slices`` rows (shares parsed), ``_all`` first, slices in order, runs in the given order."""
    rows = _dicts(con.execute(f"""
        SELECT * FROM error_slices WHERE normalizer = $norm AND run_id IN (SELECT unnest($runs))
        {'' if include_all else f"AND slice_attr <> '{slices_mod.ALL_ATTR}'"}""",
                              {"norm": normalizer, "runs": list(run_ids)}))
    for r in rows:
        r["shares"] = json.loads(r["shares"]) if isinstance(r["shares"], str) else (r["shares"] or {})
    order = {r: i for i, r in enumerate(run_ids)}
    return sorted(rows, key=lambda r: (r["slice_attr"] != slices_mod.ALL_ATTR, r["slice_attr"],
                                       slices_mod.value_key(r["slice_value"]), order.get(r["run_id"], 0)))


def top_confusions(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str, k: int = 15) -> list[dict[str, Any]]:
    """The ``k`` most frequent substitution pairs of a run, on MER units (``hello → 哈喽``; ties: by
    reference, then hypothesis)."""
    return _dicts(con.execute(
        "SELECT ref_tok, hyp_tok, n, ref_pinyin, hyp_pinyin, class FROM error_confusions "
        "WHERE run_id = ? AND normalizer = ? ORDER BY n DESC, ref_tok, hyp_tok LIMIT ?", [run_id, normalizer, k]))


def confusion_changes(con: duckdb.DuckDBPyConnection, run_a: str, run_b: str, normalizer: str,
                      k: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Substitution pairs whose count changed most from ``run_a`` to ``run_b`` (e.g. a base model and
    its fine-tune): ``fixed`` (fewer in b, largest drop first) and ``introduced`` (more in b)."""
    rows = _dicts(con.execute("""
        SELECT coalesce(a.ref_tok, b.ref_tok) AS ref_tok, coalesce(a.hyp_tok, b.hyp_tok) AS hyp_tok,
               coalesce(a.n, 0) AS n_a, coalesce(b.n, 0) AS n_b, coalesce(b.n, 0) - coalesce(a.n, 0) AS delta,
               coalesce(a.ref_pinyin, b.ref_pinyin) AS ref_pinyin, coalesce(a.hyp_pinyin, b.hyp_pinyin) AS hyp_pinyin,
               coalesce(a.class, b.class) AS class
        FROM (SELECT * FROM error_confusions WHERE run_id = $a AND normalizer = $norm) a
        FULL OUTER JOIN (SELECT * FROM error_confusions WHERE run_id = $b AND normalizer = $norm) b
          ON a.ref_tok = b.ref_tok AND a.hyp_tok = b.hyp_tok
        WHERE coalesce(b.n, 0) <> coalesce(a.n, 0)""", {"a": run_a, "b": run_b, "norm": normalizer}))
    fixed = sorted((r for r in rows if r["delta"] < 0), key=lambda r: (r["delta"], r["ref_tok"], r["hyp_tok"]))
    introduced = sorted((r for r in rows if r["delta"] > 0), key=lambda r: (-r["delta"], r["ref_tok"], r["hyp_tok"]))
    return {"fixed": fixed[:k], "introduced": introduced[:k]}


def run_summary(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str) -> dict[str, Any] | None:
    """The whole-run row: per class count and share (keys ``CLASSES``), the remaining deletions and
    insertions, the errors they sum to (MER units) over the reference units (``mer``: the run's
    MER), reference characters (the evidence), and both pinyin error rates with intervals."""
    found = [r for r in stored_error_slices(con, [run_id], normalizer) if r["slice_attr"] == slices_mod.ALL_ATTR]
    if not found:
        return None
    r = found[0]
    return {
        "run_id": run_id, "normalizer": normalizer, "n": r["n"], "ref_chars": r["ref_chars"],
        "ref_units": r["ref_units"], "errors": r["errors"],
        "mer": r["errors"] / r["ref_units"] if r["ref_units"] else None,
        "classes": {c: {"count": r[c], "share": r["shares"].get(c)} for c in CLASSES},
        "unclassified": {b: {"count": r[b], "share": r["shares"].get(b)} for b in ALL_BUCKETS if b not in CLASSES},
        # a thin run (``reliable`` false) keeps its point estimates; its intervals are null
        "pinyin_error_rate": {"toneless": r["per"], "toneless_ci": [r["per_lo"], r["per_hi"]] if r["reliable"] else None,
                              "tones": r["pter"], "tones_ci": [r["pter_lo"], r["pter_hi"]] if r["reliable"] else None,
                              "ci_method": r["ci_method"], "reliable": r["reliable"]},
        "pinyin_version": r["pinyin_version"],
    }
