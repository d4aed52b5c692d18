"""Scoring without a model: normalize + align stored hypotheses (``score_run``), pooled rates
per slice with bootstrap CIs (``slice_metrics``), paired A/B comparisons (``compare_runs``), and
rescoring under another normalizer. Reads the store, writes through ``store.tx``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa

from asr_eval.errors import AsrEvalError
from asr_eval.store.tx import replace_rows

MAX_AUTO_SLICE_VALUES = 50  # columns with more distinct values (ids, sentences) are not default slices


def score_run(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str = "zh-v1") -> int:
    """Normalize + align every utterance of a run. A missing hypothesis scores as all deletions."""
    from asr_eval.metrics import score_many
    from asr_eval.text import get_profile

    prof = get_profile(normalizer)
    t = con.sql(
        """
        SELECT u.utt_id, u.text AS ref, h.hyp_raw AS hyp
        FROM eval_runs r
        JOIN utterances u ON u.corpus_id = r.corpus_id AND (r.split IS NULL OR u.split = r.split)
        LEFT JOIN hypotheses h ON h.run_id = r.run_id AND h.utt_id = u.utt_id
        WHERE r.run_id = ? ORDER BY u.utt_id
        """, params=[run_id]).to_arrow_table()
    if t.num_rows == 0:
        raise AsrEvalError(f"run {run_id} has no utterances to score (unknown run id or empty split)")
    scores = score_many(t.column("ref").to_pylist(), t.column("hyp").to_pylist(), prof, with_alignment=True)
    n = t.num_rows
    scores = scores.add_column(0, "run_id", pa.array([run_id] * n, pa.string()))
    scores = scores.add_column(1, "utt_id", t.column("utt_id"))
    scores = scores.add_column(2, "normalizer", pa.array([prof.name] * n, pa.string()))
    scores = scores.add_column(3, "normalizer_hash", pa.array([prof.rules_hash] * n, pa.string()))
    replace_rows(con, "utterance_scores", "run_id = ? AND normalizer = ?", [run_id, prof.name], scores)
    return n


def available_slices(con: duckdb.DuckDBPyConnection, corpus_id: str) -> list[str]:
    """Slice attributes worth a table by default: few distinct values."""
    rows = con.execute(
        "SELECT attr, count(DISTINCT value) FROM utterance_attrs WHERE corpus_id = ? GROUP BY attr ORDER BY attr",
        [corpus_id]).fetchall()
    return [a for a, k in rows if 1 <= k <= MAX_AUTO_SLICE_VALUES]


def _run_arrays(con, run_id: str, normalizer: str, attr: str | None) -> pa.Table:
    if attr is None or attr == "speaker":
        val = "'all'" if attr is None else "coalesce(u.speaker, '(none)')"
        return con.sql(
            f"""SELECT s.utt_id, {val} AS value, u.duration_s, u.speaker,
                   s.cer_s + s.cer_d + s.cer_i AS cer_e, s.cer_n, s.mer_s + s.mer_d + s.mer_i AS mer_e, s.mer_n,
                   s.wer_s + s.wer_d + s.wer_i AS wer_e, s.wer_n, s.cer_s, s.cer_d, s.cer_i
                FROM utterance_scores s JOIN eval_runs r ON r.run_id = s.run_id
                JOIN utterances u ON u.corpus_id = r.corpus_id AND u.utt_id = s.utt_id
                WHERE s.run_id = ? AND s.normalizer = ? ORDER BY s.utt_id""", params=[run_id, normalizer]).to_arrow_table()
    return con.sql(
        """SELECT s.utt_id, coalesce(a.value, '(none)') AS value, u.duration_s, u.speaker,
               s.cer_s + s.cer_d + s.cer_i AS cer_e, s.cer_n, s.mer_s + s.mer_d + s.mer_i AS mer_e, s.mer_n,
               s.wer_s + s.wer_d + s.wer_i AS wer_e, s.wer_n, s.cer_s, s.cer_d, s.cer_i
            FROM utterance_scores s JOIN eval_runs r ON r.run_id = s.run_id
            JOIN utterances u ON u.corpus_id = r.corpus_id AND u.utt_id = s.utt_id
            LEFT JOIN utterance_attrs a ON a.corpus_id = r.corpus_id AND a.utt_id = s.utt_id AND a.attr = ?
            WHERE s.run_id = ? AND s.normalizer = ? ORDER BY s.utt_id""", params=[attr, run_id, normalizer]).to_arrow_table()


def _codes(values: list) -> tuple[np.ndarray, list[str]]:
    labels = sorted(set(values), key=lambda v: (_num_key(v), v))
    lut = {v: i for i, v in enumerate(labels)}
    return np.array([lut[v] for v in values], dtype=np.int64), labels


def _num_key(v: str) -> float:
    try:
        return float(v.split("-")[0].rstrip("s").lstrip("<>"))
    except (ValueError, AttributeError):
        return float("inf")


def _groups(speakers: list) -> np.ndarray:
    codes, _ = _codes([s or "(none)" for s in speakers])
    return codes


def slice_metrics(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str = "zh-v1",
                  slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                  block_by_speaker: bool = False) -> int:
    """Pooled CER/MER/WER with bootstrap 95% CIs for the whole run ('_all') and every slice."""
    from asr_eval.metrics import bootstrap_ci_by_slice
    from asr_eval.text import get_profile

    prof = get_profile(normalizer)
    cid = con.execute("SELECT corpus_id FROM eval_runs WHERE run_id = ?", [run_id]).fetchall()[0][0]
    attrs: list[str | None] = [None] + list(slices if slices is not None else available_slices(con, cid))
    out = []
    for attr in attrs:
        t = _run_arrays(con, run_id, prof.name, attr)
        if t.num_rows == 0:
            continue
        codes, labels = _codes(t.column("value").to_pylist())
        groups = _groups(t.column("speaker").to_pylist()) if block_by_speaker else None
        arr = {c: np.asarray(t.column(c).to_numpy(zero_copy_only=False), dtype=np.int64)
               for c in ("cer_e", "cer_n", "mer_e", "mer_n", "wer_e", "wer_n", "cer_s", "cer_d", "cer_i")}
        dur = np.asarray(t.column("duration_s").to_numpy(zero_copy_only=False), dtype=np.float64)
        cer = bootstrap_ci_by_slice(arr["cer_e"], arr["cer_n"], codes, len(labels), n_boot=n_boot, seed=seed, groups=groups)
        mer = bootstrap_ci_by_slice(arr["mer_e"], arr["mer_n"], codes, len(labels), n_boot=n_boot, seed=seed, groups=groups)
        for k, label in enumerate(labels):
            m = codes == k
            wer_n = int(arr["wer_n"][m].sum())
            out.append({
                "run_id": run_id, "normalizer": prof.name, "normalizer_hash": prof.rules_hash,
                "slice_attr": attr or "_all", "slice_value": str(label), "n": int(m.sum()),
                "hours": float(dur[m].sum() / 3600),
                "cer": cer[k].rate, "cer_lo": cer[k].lo, "cer_hi": cer[k].hi,
                "mer": mer[k].rate, "mer_lo": mer[k].lo, "mer_hi": mer[k].hi,
                "wer": float(arr["wer_e"][m].sum() / wer_n) if wer_n else None,
                "cer_s": int(arr["cer_s"][m].sum()), "cer_d": int(arr["cer_d"][m].sum()),
                "cer_i": int(arr["cer_i"][m].sum()), "cer_n": int(arr["cer_n"][m].sum()),
                "n_boot": n_boot, "ci_method": "speaker-block" if block_by_speaker else "utterance",
            })
    return replace_rows(con, "slice_metrics", "run_id = ? AND normalizer = ?", [run_id, prof.name], out)


def compare_runs(con: duckdb.DuckDBPyConnection, run_a: str, run_b: str, normalizer: str = "zh-v1",
                 slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                 block_by_speaker: bool = False) -> int:
    """Paired bootstrap (Bisani & Ney 2004) + sign test of run_b against run_a, on the
    utterances both scored, for the whole run and every slice; CER and MER."""
    from asr_eval.metrics import paired_bootstrap
    from asr_eval.text import get_profile

    prof = get_profile(normalizer)
    cids = {r[0] for r in con.execute("SELECT corpus_id FROM eval_runs WHERE run_id IN (?, ?)", [run_a, run_b]).fetchall()}
    if len(cids) != 1:
        raise AsrEvalError(f"runs {run_a} and {run_b} are on different corpora; a paired test needs the same utterances")
    cid = cids.pop()
    attrs: list[str | None] = [None] + list(slices if slices is not None else available_slices(con, cid))
    out = []
    for attr in attrs:
        ta = _run_arrays(con, run_a, prof.name, attr)
        tb = _run_arrays(con, run_b, prof.name, attr)
        common = sorted(set(ta.column("utt_id").to_pylist()) & set(tb.column("utt_id").to_pylist()))
        if not common:
            continue
        ia = {u: i for i, u in enumerate(ta.column("utt_id").to_pylist())}
        ib = {u: i for i, u in enumerate(tb.column("utt_id").to_pylist())}
        sel_a = np.array([ia[u] for u in common])
        sel_b = np.array([ib[u] for u in common])
        values = np.array(ta.column("value").to_pylist(), dtype=object)[sel_a]
        speakers = np.array(ta.column("speaker").to_pylist(), dtype=object)[sel_a]
        for metric in ("cer", "mer"):
            ea = np.asarray(ta.column(f"{metric}_e").to_numpy(zero_copy_only=False), np.int64)[sel_a]
            eb = np.asarray(tb.column(f"{metric}_e").to_numpy(zero_copy_only=False), np.int64)[sel_b]
            n = np.asarray(ta.column(f"{metric}_n").to_numpy(zero_copy_only=False), np.int64)[sel_a]
            for label in sorted(set(values), key=lambda v: (_num_key(v), v)):
                m = values == label
                groups = _groups(list(speakers[m])) if block_by_speaker else None
                r = paired_bootstrap(ea[m], eb[m], n[m], n_boot=n_boot, seed=seed, groups=groups)
                out.append({
                    "run_a": run_a, "run_b": run_b, "normalizer": prof.name, "metric": metric,
                    "slice_attr": attr or "_all", "slice_value": str(label), "n": int(m.sum()),
                    "rate_a": r.rate_a, "rate_b": r.rate_b, "delta": r.delta, "delta_lo": r.lo, "delta_hi": r.hi,
                    "p_b_better": r.p_b_better, "sign_test_p": r.sign_test_p, "verdict": r.verdict,
                })
    return replace_rows(con, "comparisons", "run_a = ? AND run_b = ? AND normalizer = ?",
                         [run_a, run_b, prof.name], out)


def analyse(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str = "zh-v1",
            slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
            block_by_speaker: bool = False) -> None:
    """Score, slice and compare a set of runs of one corpus (every pair, first run as A)."""
    for r in run_ids:
        score_run(con, r, normalizer)
        slice_metrics(con, r, normalizer, slices, n_boot, seed, block_by_speaker)
    for a, b in itertools.combinations(run_ids, 2):
        compare_runs(con, a, b, normalizer, slices, n_boot, seed, block_by_speaker)


def rescore(con: duckdb.DuckDBPyConnection, normalizer: str, run_ids: Sequence[str] | None = None,
            slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0) -> list[str]:
    """Re-normalize and rescore stored hypotheses — no inference. Runs are grouped by corpus
    and split so comparisons stay paired."""
    rows = con.execute("SELECT run_id, corpus_id, split FROM eval_runs WHERE status = 'done' ORDER BY started_at").fetchall()
    if run_ids:
        missing = set(run_ids) - {r[0] for r in rows}
        if missing:
            raise AsrEvalError(f"unknown run ids {sorted(missing)}; see `asr-eval runs`")
        rows = [r for r in rows if r[0] in set(run_ids)]
    groups: dict[tuple, list[str]] = {}
    for run_id, cid, split in rows:
        groups.setdefault((cid, split), []).append(run_id)
    for ids in groups.values():
        analyse(con, ids, normalizer, slices, n_boot, seed)
    return [r[0] for r in rows]
