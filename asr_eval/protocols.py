"""The protocol matrix: the same stored hypotheses scored under several named scoring protocols.

Published CERs of one model on one test set differ by points depending on who normalized the
text (punctuation, Traditional/Simplified, numbers, case). A protocol is a normalizer profile
(``asr_eval/text/profiles.json`` — one source of truth for normalizer rules):

* ``zh-v1`` — ours (NFKC, T→S, tags and punctuation removed, digits read as Chinese numerals);
* ``zh-v1-keepnum`` — ours with numbers kept as written;
* ``none`` — raw text as the model wrote it;
* ``punct-t2s`` — punctuation removed + Traditional→Simplified, the rule common Whisper fine-tuning
  repositories score with;
* ``whisper-basic`` — OpenAI Whisper's ``BasicTextNormalizer`` from the ``whisper-normalizer`` package.

``compute_protocols`` scores every run of a corpus split under each protocol from the stored
hypotheses (no inference) and stores the whole-run rate and the paired whole-run comparisons
under that normalizer (``slice_metrics`` / ``comparisons`` with slice ``_all``), skipping what is
already stored. ``read_protocol_matrices`` (read-only, what the report uses) builds the matrix:
CER per run × protocol, the ranking under each protocol, and which rankings and verdicts flip.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb

from asr_eval.errors import AsrEvalError
from asr_eval.metrics.stats import Evidence, star_keys
from asr_eval.slices import ALL_ATTR
from asr_eval.store.labels import run_labels

PROTOCOLS: dict[str, str] = {
    "zh-v1": "ours: NFKC, T→S, punctuation/tags removed, numbers read as Chinese numerals",
    "zh-v1-keepnum": "ours, numbers kept as written",
    "none": "raw text, nothing normalized",
    "punct-t2s": "punctuation removed + Traditional→Simplified (common fine-tuning repositories)",
    "whisper-basic": "Whisper's BasicTextNormalizer (whisper-normalizer package)",
}
REFERENCE = "zh-v1"


@dataclass(frozen=True)
class ProtocolCell:
    cer: float | None
    lo: float | None
    hi: float | None
    rank: int | None  # 1 = lowest CER under this protocol
    reliable: bool = True  # enough evidence (``metrics.stats.Evidence``): else the CER alone, marked †
    n: int | None = None
    best: bool = False  # ★: the lowest CER among the runs with enough evidence (``metrics.stats.star_keys``)


@dataclass
class ProtocolMatrix:
    """One corpus split: CER per run × protocol, rankings and flips against ``REFERENCE``."""

    corpus_id: str
    split: str | None
    runs: list[str]
    names: dict[str, str]
    protocols: list[str]
    cells: dict[tuple[str, str], ProtocolCell] = field(default_factory=dict)
    rankings: dict[str, list[str]] = field(default_factory=dict)
    verdicts: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (a, b, protocol) -> decision

    @property
    def ranking_flips(self) -> list[str]:
        """Protocols whose ranking of the runs differs from the reference protocol's."""
        ref = self.rankings.get(REFERENCE)
        return [p for p in self.protocols if p != REFERENCE and ref and self.rankings.get(p) and self.rankings[p] != ref]

    @property
    def verdict_flips(self) -> list[tuple[str, str, str, str, str]]:
        """(run_a, run_b, protocol, reference decision, this decision) wherever they differ."""
        out = []
        for a, b in itertools.combinations(self.runs, 2):
            ref = self.verdicts.get((a, b, REFERENCE))
            for p in self.protocols:
                got = self.verdicts.get((a, b, p))
                if p != REFERENCE and ref and got and got != ref:
                    out.append((a, b, p, ref, got))
        return out


def decision(row: dict, name_a: str, name_b: str) -> str:
    """The whole-run verdict as a short decision: '<name> better' or 'no difference'."""
    lo, hi, p_adj = row.get("delta_lo"), row.get("delta_hi"), row.get("p_adj")
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "no interval"
    if row.get("reliable") is False:
        return "insufficient data"
    if (lo > 0 or hi < 0) and (p_adj is None or p_adj < 0.05):
        return f"{name_b if hi < 0 else name_a} better"
    return "no difference"


def _check(protocols: Sequence[str]) -> list[str]:
    from asr_eval.text import get_profile

    for p in protocols:
        get_profile(p)  # AsrEvalError naming the known profiles
    return list(protocols)


def _groups(con: duckdb.DuckDBPyConnection, corpus: str | None, runs: Sequence[str] | None) -> dict[tuple, list[str]]:
    rows = con.execute("""
        SELECT r.run_id, r.corpus_id, r.split, c.name, c.path FROM eval_runs r LEFT JOIN corpora c USING (corpus_id)
        WHERE coalesce(r.status, 'done') = 'done' ORDER BY r.started_at NULLS LAST, r.finished_at NULLS LAST, r.run_id
        """).fetchall()
    if corpus is not None:
        rows = [r for r in rows if corpus in (r[1], r[3], r[4]) or r[1].startswith(corpus)]
        if not rows:
            raise AsrEvalError(f"no finished runs on corpus {corpus!r} in the store; see `asr-eval runs`")
    if runs:
        rows = [r for r in rows if r[0] in set(runs)]
    out: dict[tuple, list[str]] = {}
    for run_id, cid, split, *_ in rows:
        out.setdefault((cid, split), []).append(run_id)
    return out


def compute_protocols(con: duckdb.DuckDBPyConnection, corpus: str | None = None,
                      protocols: Sequence[str] = tuple(PROTOCOLS), runs: Sequence[str] | None = None,
                      n_boot: int = 1000, seed: int = 0) -> list[ProtocolMatrix]:
    """Score every run (of ``corpus``, or all) under each protocol from stored hypotheses, storing
    the whole-run rates and paired comparisons that are missing; returns the matrices."""
    from asr_eval.scoring.analysis import compare_runs, score_run, slice_metrics, stored_ci_method
    from asr_eval.text import get_profile

    protocols = _check(protocols)
    groups = _groups(con, corpus, runs)
    for ids in groups.values():
        modes = {r: stored_ci_method(con, r) for r in ids}
        for p in protocols:
            prof = get_profile(p)
            for r in ids:
                have = con.execute("SELECT normalizer_hash FROM slice_metrics WHERE run_id = ? AND normalizer = ? "
                                   "AND slice_attr = ?", [r, prof.name, ALL_ATTR]).fetchall()
                if have and have[0][0] == prof.rules_hash:
                    continue  # already analysed under this protocol (maybe with slices: keep them)
                score_run(con, r, prof.name)
                slice_metrics(con, r, prof.name, [], n_boot, seed, modes[r])
            for a, b in itertools.combinations(ids, 2):
                if con.execute("SELECT 1 FROM comparisons WHERE run_a = ? AND run_b = ? AND normalizer = ? "
                               "AND slice_attr = ? LIMIT 1", [a, b, prof.name, ALL_ATTR]).fetchall():
                    continue
                pair = "utterance" if "utterance" in (modes[a], modes[b]) else "auto"
                compare_runs(con, a, b, prof.name, [], n_boot, seed, pair)
    return read_protocol_matrices(con, [r for ids in groups.values() for r in ids], protocols)


def read_protocol_matrices(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str],
                           protocols: Sequence[str] = tuple(PROTOCOLS)) -> list[ProtocolMatrix]:
    """The matrices from what is stored (read-only); protocols without stored rows are left out."""
    if not run_ids:
        return []
    protocols = list(protocols)
    info = con.execute("""
        SELECT r.run_id, r.corpus_id, r.split, coalesce(m.display_name, m.name, r.model_id)
        FROM eval_runs r LEFT JOIN models m USING (model_id) WHERE r.run_id IN (SELECT unnest($runs))""",
                       {"runs": list(run_ids)}).fetchall()
    order = {r: i for i, r in enumerate(run_ids)}
    labels = run_labels(con, list(run_ids))  # "model · int8", "NAME (imported)": tells runs of one model apart
    sm = con.execute("""
        SELECT run_id, normalizer, cer, cer_lo, cer_hi, n, coalesce(ref_chars, cer_n), reliable FROM slice_metrics
        WHERE run_id IN (SELECT unnest($runs)) AND normalizer IN (SELECT unnest($p)) AND slice_attr = '_all'""",
                     {"runs": list(run_ids), "p": protocols}).fetchall()
    cur = con.execute("""
        SELECT run_a, run_b, normalizer, delta_lo, delta_hi, p_adj, reliable FROM comparisons
        WHERE run_a IN (SELECT unnest($runs)) AND run_b IN (SELECT unnest($runs)) AND normalizer IN (SELECT unnest($p))
          AND metric = 'cer' AND slice_attr = '_all'""", {"runs": list(run_ids), "p": protocols})
    cols = [d[0] for d in cur.description]
    cmps = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    rates = {(r, p): (c, lo, hi) for r, p, c, lo, hi, *_ in sm}
    evidence = {(r, p): (int(n or 0), bool(rel) if rel is not None else Evidence(int(n or 0), int(ch or 0)).reliable)
                for r, p, _, _, _, n, ch, rel in sm}
    out = []
    groups: dict[tuple, list[tuple]] = {}
    for row in sorted(info, key=lambda x: order[x[0]]):
        groups.setdefault((row[1], row[2]), []).append(row)
    for (cid, split), rows in groups.items():
        ids = [r[0] for r in rows]
        names = {r[0]: labels.get(r[0], r[3]) for r in rows}
        present = [p for p in protocols if any((r, p) in rates for r in ids)]
        mx = ProtocolMatrix(cid, split, ids, names, present)
        for p in present:
            scored = sorted((r for r in ids if (r, p) in rates and rates[(r, p)][0] is not None),
                            key=lambda r: (rates[(r, p)][0], order[r]))
            mx.rankings[p] = scored
            stars = star_keys({r: (rates[(r, p)][0], evidence[(r, p)][1]) for r in scored})
            for r in ids:
                c = rates.get((r, p))
                n, ok = evidence.get((r, p), (None, True))
                mx.cells[(r, p)] = ProtocolCell(*(c or (None, None, None)),
                                                scored.index(r) + 1 if r in scored else None, ok, n, r in stars)
        for c in cmps:
            a, b = c["run_a"], c["run_b"]
            if a in names and b in names:
                key = (a, b) if order[a] < order[b] else (b, a)
                d = decision(c, names[a], names[b])
                mx.verdicts[(*key, c["normalizer"])] = d
        out.append(mx)
    return out
