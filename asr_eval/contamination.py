"""Is the test set leaking? Train/test contamination of an evaluation corpus split against training
texts — an ingested corpus's split or a plain text file (one sentence per line).

Both sides are normalized with the same profile (default ``zh-v1``) and compared without spaces.
For every evaluation utterance (``asr_eval.metrics.overlap``):

- ``exact``: its normalized reference *is* one of the training texts;
- ``longest_ngram``: the longest character n-gram it shares with any training text;
- ``ngram_share``: the share of its character 8-grams found in the training texts;

and its flag — ``exact``, else ``overlap`` when the share reaches ``threshold`` (default 0.5), else
``clean``. Flags are stored per (corpus, utterance, training-source hash) in ``contamination``
(the source in ``contamination_sources``) and become the slice ``contaminated``
(``asr_eval.slices``), so every score, comparison and gate can be read on ``contaminated=clean``.
``reslice`` adds that slice to the runs already stored (no inference, no rescoring).

``check_finetune`` is the lineage step of a fine-tuning run (``train.export.register_finetune``):
its own training texts (the training split minus any carved dev set) against the split it will be
scored on; the counts land in ``lineage_contamination`` for each model the run exported.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from asr_eval.errors import AsrEvalError
from asr_eval.metrics.align import chars
from asr_eval.metrics.overlap import CLEAN, DEFAULT_THRESHOLD, EXACT, NGRAM, OVERLAP, Overlap, TextIndex, overlap
from asr_eval.provenance import stable_hash
from asr_eval.slices import ALL_ATTR, CONTAMINATED_ATTR
from asr_eval.store.tx import replace_rows, transaction

FLAGS = (EXACT, OVERLAP, CLEAN)


# ───────────────────────────── training texts ─────────────────────────────


@dataclass(frozen=True)
class TrainingSource:
    """Normalized training texts and where they came from; ``source_hash`` (of the set of texts,
    the normalizer rules and n) keys the stored flags: the same texts from a corpus or a file are
    one source."""

    kind: str  # 'corpus' | 'file'
    path: str
    texts: tuple[str, ...] = field(repr=False)
    normalizer: str = "zh-v1"
    normalizer_hash: str = ""
    corpus_id: str | None = None
    split: str | None = None
    ngram: int = NGRAM

    @property
    def source_hash(self) -> str:
        digest = hashlib.sha256("\n".join(sorted(set(self.texts))).encode()).hexdigest()  # the set, not the order
        return stable_hash({"texts": digest, "normalizer": self.normalizer, "rules": self.normalizer_hash,
                            "ngram": self.ngram}, 16)

    def describe(self) -> str:
        where = f"corpus {self.corpus_id} split {self.split or 'all'}" if self.kind == "corpus" else f"file {self.path}"
        return f"{where} ({len(self.texts)} texts)"


def corpus_texts(corpus_dir: str | Path, split: str | None, exclude: Sequence[str] = ()) -> list[str]:
    """The raw reference texts of a corpus split (None: every utterance), shards read by column."""
    from asr_eval.corpus_handle import open_corpus

    skip = set(exclude)
    out: list[str] = []
    corpus = open_corpus(corpus_dir)
    for s in corpus.shards:
        t = pq.read_table(corpus.verified_meta(s), columns=["utt_id", "split", "text"],
                          filters=[("split", "=", split)] if split else None)
        out += [x for u, x in zip(t.column("utt_id").to_pylist(), t.column("text").to_pylist(), strict=True)
                if u not in skip and x]
    return out


def training_source(against: str | Path, split: str | None = "train", normalizer: str = "zh-v1",
                    exclude: Sequence[str] = (), ngram: int = NGRAM) -> TrainingSource:
    """Training texts from an ingested corpus directory (its ``split``; 'all'/None: every utterance)
    or a UTF-8 text file with one sentence per line, normalized with ``normalizer``."""
    from asr_eval.text import get_profile

    from asr_eval import storage

    prof = get_profile(normalizer)
    p = Path(against) if not storage.is_url(against) else None
    if _is_corpus(against):
        from asr_eval.corpus_handle import open_corpus

        c = open_corpus(against)
        sp = None if split in (None, "all") else c.resolve_split(split)
        raw, kind, cid = corpus_texts(c, sp, exclude), "corpus", c.corpus_id
        where = c.url
    elif p is not None and p.is_file():
        raw = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        kind, cid, sp, where = "file", None, None, str(p.resolve())
    else:
        raise AsrEvalError(f"--against {against}: neither an ingested corpus directory (with index.json) nor a "
                           "text file (one sentence per line)")
    texts = tuple(t for t in (chars(x) for x in prof.normalize_many(raw)) if t)
    return TrainingSource(kind, where, texts, prof.name, prof.rules_hash, cid, sp, ngram)


def _is_corpus(where: str | Path) -> bool:
    """An ingested corpus: a folder or a URL holding index.json."""
    from asr_eval import storage

    try:
        return storage.stat(storage.location(where) / "index.json") is not None
    except (AsrEvalError, OSError):  # a file, not a folder
        return False


# ───────────────────────────── the check ─────────────────────────────


@dataclass
class ContaminationReport:
    """One evaluation split against one training source: the per-utterance rows and their counts."""

    corpus_id: str
    split: str | None
    source: TrainingSource
    threshold: float
    rows: list[dict[str, Any]]

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(r["flag"] for r in self.rows)
        return {f: c.get(f, 0) for f in FLAGS}

    @property
    def n(self) -> int:
        return len(self.rows)

    def as_json(self, top: int = 20) -> dict[str, Any]:
        worst = sorted(self.rows, key=lambda r: (-(r["ngram_share"] or 0), -r["longest_ngram"], r["utt_id"]))
        return {"corpus_id": self.corpus_id, "split": self.split or "all", "source_hash": self.source.source_hash,
                "source": self.source.describe(), "threshold": self.threshold, "ngram": self.source.ngram,
                "n": self.n, "counts": self.counts,
                "shares": {f: (k / self.n if self.n else None) for f, k in self.counts.items()},
                "flagged": [r for r in worst if r["flag"] != CLEAN][:top]}


def check_texts(refs: Sequence[str], source: TrainingSource, threshold: float = DEFAULT_THRESHOLD) -> list[Overlap]:
    """Overlaps of normalized references (spaces removed) with the source's texts."""
    index = TextIndex(source.texts)
    return [overlap(index, r, source.ngram, threshold) for r in refs]


def check(con: duckdb.DuckDBPyConnection, corpus_dir: str | Path, source: TrainingSource, split: str | None = "auto",
          threshold: float = DEFAULT_THRESHOLD) -> ContaminationReport:
    """Check every utterance of ``split`` of the corpus (loaded into the store if needed) against
    ``source`` and store the flags (replacing an earlier check of the same split and source)."""
    from asr_eval.corpus_handle import open_corpus
    from asr_eval.store.load import load_corpus
    from asr_eval.text import get_profile

    if not 0 < threshold <= 1:
        raise AsrEvalError(f"--threshold {threshold}: a share of 8-grams in (0, 1], e.g. 0.5")
    sp = open_corpus(corpus_dir).resolve_split(split)
    cid = load_corpus(con, corpus_dir)
    utts = con.execute("SELECT utt_id, split, text FROM utterances WHERE corpus_id = ? AND (? IS NULL OR split = ?) "
                       "ORDER BY utt_id", [cid, sp, sp]).fetchall()
    refs = [chars(t) for t in get_profile(source.normalizer).normalize_many([u[2] for u in utts])]
    found = check_texts(refs, source, threshold)
    sh = source.source_hash
    rows = [{"corpus_id": cid, "utt_id": u, "source_hash": sh, "split": s, "exact": o.exact,
             "longest_ngram": o.longest_ngram, "ngram_share": o.ngram_share, "threshold": threshold, "flag": o.flag}
            for (u, s, _), o in zip(utts, found, strict=True)]
    with transaction(con):
        con.execute("DELETE FROM contamination_sources WHERE source_hash = ?", [sh])
        con.execute("INSERT INTO contamination_sources (source_hash, kind, corpus_id, split, path, n_texts, n_chars, "
                    "normalizer, normalizer_hash, ngram) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [sh, source.kind, source.corpus_id, source.split, source.path, len(source.texts),
                     sum(map(len, source.texts)), source.normalizer, source.normalizer_hash, source.ngram])
    where = "corpus_id = ? AND source_hash = ?" + ("" if sp is None else " AND split = ?")
    replace_rows(con, "contamination", where, [cid, sh] + ([] if sp is None else [sp]), rows)
    return ContaminationReport(cid, sp, source, threshold, rows)


# ───────────────────────────── stored runs get the slice ─────────────────────────────


def reslice(con: duckdb.DuckDBPyConnection, corpus_id: str) -> list[str]:
    """Add the ``contaminated`` slice to every analysed run of the corpus and to their stored
    comparisons — no inference, no rescoring: each run keeps its slice columns, replicates and
    interval method (minimum evidence at the defaults). Returns the runs re-sliced."""
    from asr_eval.scoring.analysis import compare_runs, slice_metrics, stored_ci_method
    from asr_eval.scoring.errors import error_slices

    runs = con.execute("""
        SELECT sm.run_id, sm.normalizer, max(sm.n_boot) FROM slice_metrics sm JOIN eval_runs r USING (run_id)
        WHERE r.corpus_id = ? GROUP BY ALL ORDER BY 1, 2""", [corpus_id]).fetchall()
    done: list[str] = []
    for run_id, norm, n_boot in runs:
        attrs = _attrs(con, "SELECT DISTINCT slice_attr FROM slice_metrics WHERE run_id = ? AND normalizer = ?",
                       [run_id, norm])
        mode = stored_ci_method(con, run_id)
        slice_metrics(con, run_id, norm, attrs, n_boot or 1000, 0, mode)
        if con.execute("SELECT 1 FROM utterance_errors WHERE run_id = ? AND normalizer = ? LIMIT 1",
                       [run_id, norm]).fetchall():
            error_slices(con, run_id, norm, attrs, n_boot or 1000, 0, mode)
        done.append(run_id)
    pairs = con.execute("""
        SELECT c.run_a, c.run_b, c.normalizer, max(c.adj_method) FROM comparisons c
        JOIN eval_runs a ON a.run_id = c.run_a JOIN eval_runs b ON b.run_id = c.run_b
        WHERE a.corpus_id = ? AND b.corpus_id = ? GROUP BY ALL ORDER BY 1, 2, 3""", [corpus_id, corpus_id]).fetchall()
    for a, b, norm, adj in pairs:
        attrs = _attrs(con, "SELECT DISTINCT slice_attr FROM comparisons WHERE run_a = ? AND run_b = ? AND "
                            "normalizer = ?", [a, b, norm])
        n_boot = con.execute("SELECT max(n_boot) FROM slice_metrics WHERE run_id IN (?, ?) AND normalizer = ?",
                             [a, b, norm]).fetchall()[0][0] or 1000
        modes = {stored_ci_method(con, a), stored_ci_method(con, b)}
        compare_runs(con, a, b, norm, attrs, n_boot, 0, "utterance" if "utterance" in modes else "auto",
                     adjust=adj or "holm")
    return list(dict.fromkeys(done))


def _attrs(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[str]:
    found = [a for (a,) in con.execute(sql, params).fetchall() if a != ALL_ATTR]
    return sorted({*found, CONTAMINATED_ATTR})


# ───────────────────────────── a fine-tune's lineage ─────────────────────────────


def check_finetune(con: duckdb.DuckDBPyConnection, run: dict[str, Any], out_dir: str | Path | None = None,
                   eval_split: str | None = "auto", threshold: float = DEFAULT_THRESHOLD,
                   normalizer: str = "zh-v1") -> ContaminationReport | None:
    """The lineage check of a fine-tuning run (its ``training_run.json`` record): its training
    texts — ``train_split`` of its corpus without the carved dev utterances — against the split it
    is scored on (``auto``: test when the corpus has one, else every utterance). Stores the flags and
    one ``lineage_contamination`` row per exported model; None when the corpus is not on disk."""
    from asr_eval.train.selection import SELECTION_FILE

    corpus_dir = run.get("corpus_dir") or ""
    if not corpus_dir or not _is_corpus(corpus_dir):
        return None
    carved: list[str] = []
    if out_dir is not None and (Path(out_dir) / SELECTION_FILE).is_file():
        carved = json.loads((Path(out_dir) / SELECTION_FILE).read_text(encoding="utf-8")).get("utt_ids", [])
    src = training_source(corpus_dir, run.get("train_split") or "train", normalizer, exclude=carved)
    rep = check(con, corpus_dir, src, eval_split, threshold)
    c = rep.counts
    rows = [{"model_id": m["model_id"], "corpus_id": rep.corpus_id, "eval_split": rep.split or "all",
             "source_hash": src.source_hash, "training_run_id": run.get("training_run_id"), "n_utts": rep.n,
             "n_exact": c[EXACT], "n_overlap": c[OVERLAP], "n_clean": c[CLEAN], "threshold": threshold}
            for m in run.get("models", []) if m.get("model_id")]
    for r in rows:
        replace_rows(con, "lineage_contamination", "model_id = ? AND corpus_id = ? AND eval_split = ? AND "
                     "source_hash = ?", [r["model_id"], r["corpus_id"], r["eval_split"], r["source_hash"]], [r])
    return rep


# ───────────────────────────── readers ─────────────────────────────


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def stored_checks(con: duckdb.DuckDBPyConnection, corpus_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Per (corpus, split, training source): utterances checked and how many of each flag."""
    return _dicts(con.execute("""
        SELECT c.corpus_id, coalesce(c.split, 'all') AS split, c.source_hash, s.kind, s.corpus_id AS train_corpus_id,
               s.split AS train_split, s.path, s.n_texts, max(c.threshold) AS threshold, s.ngram, count(*) AS n,
               count(*) FILTER (WHERE c.flag = 'exact') AS n_exact,
               count(*) FILTER (WHERE c.flag = 'overlap') AS n_overlap,
               count(*) FILTER (WHERE c.flag = 'clean') AS n_clean
        FROM contamination c LEFT JOIN contamination_sources s USING (source_hash)
        WHERE c.corpus_id IN (SELECT unnest(?))
        GROUP BY ALL ORDER BY c.corpus_id, split, s.kind, c.source_hash""", [list(corpus_ids)]))


def lineage(con: duckdb.DuckDBPyConnection, model_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The stored lineage checks of some models (their training texts against a scored split)."""
    return _dicts(con.execute("SELECT * FROM lineage_contamination WHERE model_id IN (SELECT unnest(?)) "
                              "ORDER BY model_id, corpus_id, eval_split", [list(model_ids)]))
