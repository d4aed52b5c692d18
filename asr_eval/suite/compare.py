"""Our numbers on the standard test sets beside the published ones (read-only, from the store).

``standard_runs``: which of the given runs are on a standard test set — told by the corpus's
recorded source (its layout and variant, ``corpora.source``) and the run's split, so a corpus
ingested by hand counts as much as one the suite ingested — with their whole-run CER.

``comparisons``: for each such run, every published result for the same model and test set
(``asr_eval.published``): the published CER, our CER, our CER re-scored under the closest protocol
we have to the one the source used (``Protocol.asr_eval_profile``: stored by the suite or
``asr-eval protocols``), the gap, and the protocol differences that could explain it. Published
results for models nobody here scored are listed per test set as context.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb

from asr_eval.corpus.registry import TestSet, test_set_of
from asr_eval.slices import ALL_ATTR
from asr_eval.store.labels import run_labels


@dataclass(frozen=True)
class StandardRun:
    run_id: str
    test_set: TestSet
    label: str
    model_name: str
    model_key: str | None  # canonical model id (published.model_key), None when it cannot be told
    n: int
    cer: float | None
    lo: float | None
    hi: float | None
    reliable: bool
    engine: str | None = None  # "ctranslate2 int8"
    recipe: str | None = None


@dataclass(frozen=True)
class PublishedPair:
    """Our run beside one published result for the same model and test set (rates as fractions)."""

    published_cer: float
    source_title: str
    source_url: str
    where: str
    profile: str | None  # our closest protocol to theirs
    ours_their_protocol: float | None  # our CER re-scored under ``profile`` (None: not computed yet)
    gap: float  # ours (under their protocol when we have it) − published, in CER points (fraction)
    differences: list[str]
    evidence: str
    notes: str = ""


@dataclass
class TestSetView:
    __test__ = False

    test_set: TestSet
    runs: list[tuple[StandardRun, list[PublishedPair]]] = field(default_factory=list)
    others: list[object] = field(default_factory=list)  # PublishedResult of models not scored here


def _profile_rates(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> dict[tuple[str, str], tuple]:
    rows = con.execute("""SELECT run_id, normalizer, cer, cer_lo, cer_hi, n, reliable FROM slice_metrics
                          WHERE run_id IN (SELECT unnest($r)) AND slice_attr = $a""",
                       {"r": list(run_ids), "a": ALL_ATTR}).fetchall()
    return {(r[0], r[1]): r[2:] for r in rows}


def standard_runs(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str = "zh-v1") -> list[StandardRun]:
    """The runs of ``run_ids`` on a standard test set, in ``run_ids`` order."""
    from asr_eval.published import model_key

    if not run_ids:
        return []
    info = con.execute("""
        SELECT r.run_id, r.split, c.source, m.name, r.engine, r.compute_type, r.recipe FROM eval_runs r
        JOIN corpora c USING (corpus_id) JOIN models m USING (model_id)
        WHERE r.run_id IN (SELECT unnest($r)) AND coalesce(r.status, 'done') = 'done'""",
                       {"r": list(run_ids)}).fetchall()
    rates = _profile_rates(con, run_ids)
    labels = run_labels(con, list(run_ids))
    order = {r: i for i, r in enumerate(run_ids)}
    out = []
    for run_id, split, source, name, engine, compute_type, recipe in sorted(info, key=lambda x: order[x[0]]):
        src = json.loads(source) if isinstance(source, str) else (source or {})
        ts = test_set_of(src.get("layout"), split, src.get("variant"))
        if ts is None:
            continue
        cer, lo, hi, n, reliable = rates.get((run_id, normalizer), (None, None, None, 0, False))
        out.append(StandardRun(run_id, ts, labels.get(run_id, name), name, model_key(name), int(n or 0), cer,
                               lo if reliable else None, hi if reliable else None, bool(reliable),
                               " ".join(x for x in (engine, compute_type) if x) or None, recipe))
    return out


def comparisons(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str = "zh-v1") -> list[TestSetView]:
    """Per standard test set among ``run_ids``: each run beside the published results for its model."""
    from asr_eval.published import load_published, protocol_differences

    runs = standard_runs(con, run_ids, normalizer)
    if not runs:
        return []
    published = load_published()
    rates = _profile_rates(con, [r.run_id for r in runs])
    views: dict[str, TestSetView] = {}
    for r in runs:
        view = views.setdefault(r.test_set.key, TestSetView(r.test_set))
        pairs = []
        for p in published:
            if p.test_set != r.test_set.key or r.model_key is None or p.model != r.model_key:
                continue
            prof = p.protocol.asr_eval_profile
            theirs = rates.get((r.run_id, prof), (None,))[0] if prof else None
            ours = theirs if theirs is not None else r.cer
            pairs.append(PublishedPair(
                published_cer=p.cer / 100, source_title=p.source.title, source_url=p.source.url, where=p.source.where,
                profile=prof, ours_their_protocol=theirs,
                gap=(ours - p.cer / 100) if ours is not None else float("nan"),
                differences=protocol_differences(p.protocol, normalizer), evidence=p.evidence, notes=p.notes))
        view.runs.append((r, pairs))
    scored = {(r.test_set.key, r.model_key) for r in runs}
    for key, view in views.items():
        view.others = [p for p in published if p.test_set == key and (key, p.model) not in scored]
    return list(views.values())
