"""Scoring without a model: normalize + align stored hypotheses (``score_run``), pooled rates
per slice with bootstrap CIs (``slice_metrics``), paired A/B comparisons (``compare_runs``), and
rescoring under another normalizer. Reads the store, writes through ``store.tx``."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from asr_eval import slices as slices_mod
from asr_eval.errors import AsrEvalError
from asr_eval.metrics.stats import (
    ADJUSTMENTS, CI_METHODS, DEFAULT_ADJUSTMENT, MIN_REF_CHARS, MIN_UTTS, Evidence, adjust_pvalues, bootstrap_ci, n_boot_for,
    paired_bootstrap, resampling_for, verdict,
)
from asr_eval.slices import MAX_AUTO_SLICE_VALUES  # noqa: F401  (re-exported)
from asr_eval.store.tx import replace_rows


def score_run(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str = "zh-v1") -> int:
    """Normalize + align every utterance of a run. A missing hypothesis scores as all deletions."""
    from asr_eval.metrics import score_many
    from asr_eval.text import get_profile

    prof = get_profile(normalizer)
    t = con.sql(
        """
        SELECT u.utt_id, u.text AS ref, h.hyp_raw AS hyp, u.duration_s, u.segments AS ref_segments,
               h.segments AS hyp_segments
        FROM eval_runs r
        JOIN utterances u ON u.corpus_id = r.corpus_id AND (r.split IS NULL OR u.split = r.split)
        LEFT JOIN hypotheses h ON h.run_id = r.run_id AND h.utt_id = u.utt_id
        WHERE r.run_id = ? ORDER BY u.utt_id
        """, params=[run_id]).to_arrow_table()
    if t.num_rows == 0:
        raise AsrEvalError(f"run {run_id} has no utterances to score (unknown run id or empty split)")
    scores = score_many(t.column("ref").to_pylist(), t.column("hyp").to_pylist(), prof, with_alignment=True,
                        long_form=_long_form(t))
    n = t.num_rows
    scores = scores.add_column(0, "run_id", pa.array([run_id] * n, pa.string()))
    scores = scores.add_column(1, "utt_id", t.column("utt_id"))
    scores = scores.add_column(2, "normalizer", pa.array([prof.name] * n, pa.string()))
    scores = scores.add_column(3, "normalizer_hash", pa.array([prof.rules_hash] * n, pa.string()))
    replace_rows(con, "utterance_scores", "run_id = ? AND normalizer = ?", [run_id, prof.name], scores)
    return n


def _long_form(t: pa.Table) -> list:
    """A ``LongForm`` (with both segment lists) for each recording (> 30 s), None for utterances."""
    import json

    from asr_eval.audio import MAX_DURATION_S
    from asr_eval.metrics import LongForm

    def segs(v):
        return json.loads(v) if isinstance(v, str) else v

    return [LongForm(segs(r), segs(h)) if (d or 0) > MAX_DURATION_S else None
            for d, r, h in zip(t.column("duration_s").to_pylist(), t.column("ref_segments").to_pylist(),
                               t.column("hyp_segments").to_pylist())]


def available_slices(con: duckdb.DuckDBPyConnection, corpus_id: str) -> list[str]:
    """Slice attributes worth a table by default (the rule lives in ``asr_eval.slices``)."""
    return slices_mod.available_slices(con, corpus_id)


def _ints(t: pa.Table, name: str, idx: np.ndarray | None = None) -> np.ndarray:
    a = np.asarray(t.column(name).to_numpy(zero_copy_only=False), dtype=np.int64)
    return a if idx is None else a[idx]


def _attrs(con: duckdb.DuckDBPyConnection, corpus_id: str, slices: Sequence[str] | None) -> list[str | None]:
    return [None] + [a for a in (slices if slices is not None else available_slices(con, corpus_id))
                     if a != slices_mod.ALL_ATTR]


def slice_metrics(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str = "zh-v1",
                  slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                  ci_method: str = "auto", min_utts: int = MIN_UTTS, min_ref_chars: int = MIN_REF_CHARS) -> int:
    """Pooled CER/MER/WER with bootstrap 95% CIs for the whole run ('_all') and every slice.

    Each slice records its evidence (``ref_chars``, ``reliable`` against ``min_utts`` /
    ``min_ref_chars``), how it was resampled (``ci_method``: speaker blocks where speakers are
    known, see ``resampling_for``; ``n_blocks`` units) and how many bootstrap replicates were
    non-finite (``n_nonfinite``, the larger count of the CER and MER intervals)."""
    from asr_eval.text import get_profile

    prof = get_profile(normalizer)
    cid = con.execute("SELECT corpus_id FROM eval_runs WHERE run_id = ?", [run_id]).fetchall()[0][0]
    out = []
    for attr in _attrs(con, cid, slices):
        t = slices_mod.run_slice_table(con, run_id, prof.name, attr)
        if t.num_rows == 0:
            continue
        values = np.array(t.column("value").to_pylist(), dtype=object)
        speakers = np.array(t.column("speaker").to_pylist(), dtype=object)
        arr = {c: _ints(t, c) for c in ("cer_e", "cer_n", "mer_e", "mer_n", "wer_e", "wer_n", "cer_s", "cer_d", "cer_i")}
        dur = np.asarray(t.column("duration_s").to_numpy(zero_copy_only=False), dtype=np.float64)
        for label in slices_mod.sort_values(values):
            m = values == label
            rs = resampling_for(list(speakers[m]), ci_method)
            cer = bootstrap_ci(arr["cer_e"][m], arr["cer_n"][m], n_boot=n_boot, seed=seed, groups=rs.groups)
            mer = bootstrap_ci(arr["mer_e"][m], arr["mer_n"][m], n_boot=n_boot, seed=seed, groups=rs.groups)
            wer_n = int(arr["wer_n"][m].sum())
            ref_chars = int(arr["cer_n"][m].sum())
            out.append({
                "run_id": run_id, "normalizer": prof.name, "normalizer_hash": prof.rules_hash,
                "slice_attr": attr or slices_mod.ALL_ATTR, "slice_value": str(label), "n": int(m.sum()),
                "hours": float(np.nansum(dur[m]) / 3600),
                "cer": cer.rate, "cer_lo": cer.lo, "cer_hi": cer.hi,
                "mer": mer.rate, "mer_lo": mer.lo, "mer_hi": mer.hi,
                "wer": float(arr["wer_e"][m].sum() / wer_n) if wer_n else None,
                "cer_s": int(arr["cer_s"][m].sum()), "cer_d": int(arr["cer_d"][m].sum()),
                "cer_i": int(arr["cer_i"][m].sum()), "cer_n": ref_chars,
                "n_boot": n_boot, "ci_method": rs.method, "ref_chars": ref_chars,
                "reliable": Evidence(int(m.sum()), ref_chars, min_utts, min_ref_chars).reliable,
                "n_blocks": rs.n_blocks, "n_nonfinite": max(cer.n_nonfinite, mer.n_nonfinite),
            })
    return replace_rows(con, "slice_metrics", "run_id = ? AND normalizer = ?", [run_id, prof.name], out)


def compare_runs(con: duckdb.DuckDBPyConnection, run_a: str, run_b: str, normalizer: str = "zh-v1",
                 slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                 ci_method: str = "auto", min_utts: int = MIN_UTTS, min_ref_chars: int = MIN_REF_CHARS,
                 adjust: str = DEFAULT_ADJUSTMENT, alpha: float = 0.05) -> int:
    """Paired bootstrap (Bisani & Ney 2004) + sign test of run_b against run_a, on the
    utterances both scored, for the whole run and every slice; CER and MER.

    One family per (pair, metric, slice attribute): the slices with enough evidence are tested
    (two-sided paired-bootstrap p, ``p_raw``) and their p-values adjusted together (``adjust``:
    Holm by default, or Benjamini–Hochberg; ``p_adj``, ``family_size``); the verdict comes from
    the adjusted decision. Slices below the minimum evidence are not tested: their verdict is
    "insufficient data (n = …)". ``mde`` is the half-width of the paired interval. Replicates are
    raised when a family needs finer p-values (``n_boot_for``)."""
    from asr_eval.text import get_profile

    if adjust not in ADJUSTMENTS:
        raise AsrEvalError(f"unknown multiplicity adjustment {adjust!r}; choose one of {', '.join(ADJUSTMENTS)}")
    prof = get_profile(normalizer)
    cids = {r[0] for r in con.execute("SELECT corpus_id FROM eval_runs WHERE run_id IN (?, ?)", [run_a, run_b]).fetchall()}
    if len(cids) != 1:
        raise AsrEvalError(f"runs {run_a} and {run_b} are on different corpora; a paired test needs the same utterances")
    cid = cids.pop()
    sides = _side_evidence(con, (run_a, run_b), prof.name, min_utts, min_ref_chars)
    out = []
    for attr in _attrs(con, cid, slices):
        for metric in ("cer", "mer"):
            groups = slices_mod.paired_slices(con, run_a, run_b, prof.name, attr, metric)
            ev = [Evidence.paired(len(g.utt_ids), int(g.n_ref.sum()), sides.get((run_a, g.attr, str(g.value))),
                                  sides.get((run_b, g.attr, str(g.value))), min_utts=min_utts, min_ref_chars=min_ref_chars)
                  for g in groups]
            family = sum(e.reliable for e in ev)
            boots = n_boot_for(n_boot, family, alpha)
            results = []
            for g in groups:
                rs = resampling_for(g.speakers, ci_method)
                results.append(paired_bootstrap(g.err_a, g.err_b, g.n_ref, n_boot=boots, alpha=alpha, seed=seed,
                                                 groups=rs.groups, metric=metric.upper()))
            raw = np.array([r.p_value if e.reliable else np.nan for r, e in zip(results, ev, strict=True)])
            adj = adjust_pvalues(raw, adjust)
            for g, e, r, p_adj in zip(groups, ev, results, adj, strict=True):
                tested = e.reliable and np.isfinite(p_adj)
                out.append({
                    "run_a": run_a, "run_b": run_b, "normalizer": prof.name, "metric": metric,
                    "slice_attr": g.attr, "slice_value": g.value, "n": e.n,
                    "rate_a": r.rate_a, "rate_b": r.rate_b, "delta": r.delta, "delta_lo": r.lo, "delta_hi": r.hi,
                    "p_b_better": r.p_b_better, "sign_test_p": r.sign_test_p,
                    "verdict": verdict(r.delta, r.lo, r.hi, f"{100 * (1 - alpha):g}%", metric.upper(),
                                       p_adj=float(p_adj) if tested else None, adj_method=adjust,
                                       family_size=family, alpha=alpha, evidence=e),
                    "p_raw": r.p_value, "p_adj": float(p_adj) if tested else None,
                    "adj_method": adjust if tested else None, "family_size": family if tested else None,
                    "reliable": e.reliable, "mde": r.mde, "ci_method": r.method, "n_nonfinite": r.n_nonfinite,
                    "ref_chars": e.ref_chars,
                })
    return replace_rows(con, "comparisons", "run_a = ? AND run_b = ? AND normalizer = ?",
                        [run_a, run_b, prof.name], out)


def _side_evidence(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str, min_utts: int,
                   min_ref_chars: int) -> dict[tuple[str, str, str], Evidence]:
    """Each run's own evidence per stored slice, (run, attr, value) → Evidence: the sides of a
    paired comparison (a pair is thin when either side is)."""
    found = con.execute("SELECT run_id, slice_attr, slice_value, n, coalesce(ref_chars, cer_n) FROM slice_metrics "
                        "WHERE normalizer = ? AND run_id IN (SELECT unnest(?))", [normalizer, list(run_ids)]).fetchall()
    return {(r, a, v): Evidence(int(n or 0), int(c or 0), min_utts, min_ref_chars) for r, a, v, n, c in found}


def check_options(ci_method: str | Mapping[str, str] = "auto", adjust: str = DEFAULT_ADJUSTMENT) -> None:
    """Fail fast (before any inference) on an unknown interval method or adjustment."""
    modes = ci_method.values() if isinstance(ci_method, Mapping) else [ci_method]
    bad = [m for m in modes if m not in ("auto", *CI_METHODS)]
    if bad:
        raise AsrEvalError(f"--ci-method {bad[0]!r}: use auto, utterance or speaker-block")
    if adjust not in ADJUSTMENTS:
        raise AsrEvalError(f"--adjust {adjust!r}: use one of {', '.join(ADJUSTMENTS)}")


def _mode(ci_method: str | Mapping[str, str], run_id: str) -> str:
    return ci_method.get(run_id, "auto") if isinstance(ci_method, Mapping) else ci_method


def analyse(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str = "zh-v1",
            slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
            ci_method: str | Mapping[str, str] = "auto", min_utts: int = MIN_UTTS,
            min_ref_chars: int = MIN_REF_CHARS, adjust: str = DEFAULT_ADJUSTMENT) -> None:
    """Score, slice and compare a set of runs of one corpus (every pair, first run as A), with each
    run's error taxonomy and pinyin error rate (``scoring.errors``) and, where its recordings have
    reference segments, its hallucination over silence (``scoring.hallucination``).
    ``ci_method`` ('auto' | 'utterance' | 'speaker-block', or one per run id): a pair resamples
    utterances when either of its runs does."""
    from asr_eval.scoring.errors import error_taxonomy
    from asr_eval.scoring.hallucination import hallucination_scores

    check_options(ci_method, adjust)
    for r in run_ids:
        score_run(con, r, normalizer)
        slice_metrics(con, r, normalizer, slices, n_boot, seed, _mode(ci_method, r), min_utts, min_ref_chars)
        error_taxonomy(con, r, normalizer, slices, n_boot, seed, _mode(ci_method, r), min_utts, min_ref_chars)
        hallucination_scores(con, r, normalizer, slices)
    for a, b in itertools.combinations(run_ids, 2):
        pair = "utterance" if "utterance" in (_mode(ci_method, a), _mode(ci_method, b)) else _mode(ci_method, a)
        compare_runs(con, a, b, normalizer, slices, n_boot, seed, pair, min_utts, min_ref_chars, adjust)


def stored_ci_method(con: duckdb.DuckDBPyConnection, run_id: str) -> str:
    """The resampling mode a run was analysed with, read back from its stored slice rows: any
    speaker-block interval means speaker-aware ('auto'); only utterance intervals mean
    'utterance' (chosen, or what 'auto' fell back to everywhere — the same on the same data);
    nothing stored means the default 'auto'."""
    found = {r[0] for r in con.execute("SELECT DISTINCT ci_method FROM slice_metrics WHERE run_id = ?",
                                       [run_id]).fetchall()}
    if "speaker-block" in found:
        return "auto"
    return "utterance" if found else "auto"


def analyse_with_stored(con: duckdb.DuckDBPyConnection, new_runs: Sequence[str], normalizer: str = "zh-v1",
                        slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                        ci_method: str = "auto") -> list[str]:
    """Score and slice ``new_runs`` and compare each with every other finished run of its corpus
    split (stored run as A, new run as B). Stored runs keep their rows (and their interval method,
    ``stored_ci_method``); one not yet scored under ``normalizer`` is scored first (no inference).
    A pair resamples utterances when either side does. Returns the stored runs compared with."""
    from asr_eval.text import get_profile

    check_options(ci_method)
    prof = get_profile(normalizer)
    compared: list[str] = []
    for new in new_runs:
        cid, split = con.execute("SELECT corpus_id, split FROM eval_runs WHERE run_id = ?", [new]).fetchall()[0]
        analyse(con, [new], normalizer, slices, n_boot, seed, ci_method)
        others = [r for (r,) in con.execute(
            "SELECT run_id FROM eval_runs WHERE corpus_id = ? AND split IS NOT DISTINCT FROM ? AND status = 'done' "
            "AND run_id <> ? ORDER BY started_at, run_id", [cid, split, new]).fetchall() if r not in new_runs]
        for other in others:
            mode = stored_ci_method(con, other)
            if not con.execute("SELECT 1 FROM slice_metrics WHERE run_id = ? AND normalizer = ? LIMIT 1",
                               [other, prof.name]).fetchall():
                analyse(con, [other], normalizer, slices, n_boot, seed, mode)
            pair = "utterance" if "utterance" in (mode, ci_method) else ci_method
            compare_runs(con, other, new, normalizer, slices, n_boot, seed, pair)
            compared.append(other)
    for a, b in itertools.combinations(new_runs, 2):
        compare_runs(con, a, b, normalizer, slices, n_boot, seed, ci_method)
    return list(dict.fromkeys(compared))


def rescore(con: duckdb.DuckDBPyConnection, normalizer: str, run_ids: Sequence[str] | None = None,
            slices: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0) -> list[str]:
    """Re-normalize and rescore stored hypotheses — no inference. Runs are grouped by corpus
    and split so comparisons stay paired; each run keeps the interval method it was analysed
    with (``stored_ci_method``), so a rescore never silently switches speaker-block to utterance.
    ``run_ids``: run references (``asr_eval.store.runs``: full or short ids, prefixes, model names)."""
    rows = con.execute("SELECT run_id, corpus_id, split FROM eval_runs WHERE status = 'done' ORDER BY started_at").fetchall()
    if run_ids:
        from asr_eval.store.runs import resolve_run

        keep = {resolve_run(con, r) for r in run_ids}
        rows = [r for r in rows if r[0] in keep]
    groups: dict[tuple, list[str]] = {}
    for run_id, cid, split in rows:
        groups.setdefault((cid, split), []).append(run_id)
    for ids in groups.values():
        modes = {r: stored_ci_method(con, r) for r in ids}
        analyse(con, ids, normalizer, slices, n_boot, seed, modes)
        from asr_eval.streaming.store import rescore_streams

        rescore_streams(con, ids, normalizer, slices, n_boot, seed)
    return [r[0] for r in rows]
