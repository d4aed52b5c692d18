"""Per-utterance scores: normalize, align at three token levels, per-class breakdown, flags.

``score_many`` is the rescoring engine: texts are normalized in batches (one pass per rule
over the joined batch), aligned with rapidfuzz, and spread over worker processes for big
inputs; it returns an Arrow table whose columns match the DuckDB ``utterance_scores`` table.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pyarrow as pa

from asr_eval.metrics.align import (
    alignment_json, alignment_pairs, align, chars, count_ops, mer_counts, wer_counts,
)
from asr_eval.metrics.flags import Segments, flags_for, long_form_flags
from asr_eval.progress import Progress
from asr_eval.text import DEFAULT_PROFILE, NormalizerProfile, get_profile
from asr_eval.text.normalizer import opencc_t2s, text_or_empty

CHUNK = 20_000            # utterances per worker task
PARALLEL_MIN = 3 * CHUNK  # below this, worker start-up costs more than it saves

_INT_FIELDS = ("cer_n", "cer_s", "cer_d", "cer_i", "mer_n", "mer_s", "mer_d", "mer_i",
               "wer_n", "wer_s", "wer_d", "wer_i", "zh_n", "zh_err", "en_n", "en_err",
               "num_n", "num_err", "other_n", "other_err")


@dataclass
class UtteranceScore:
    """Scores of one utterance; field names are the DuckDB ``utterance_scores`` columns.
    ``*_n`` is the reference length in that unit; hits = n - s - d."""

    ref_norm: str
    hyp_norm: str
    cer_n: int
    cer_s: int
    cer_d: int
    cer_i: int
    mer_n: int
    mer_s: int
    mer_d: int
    mer_i: int
    wer_n: int
    wer_s: int
    wer_d: int
    wer_i: int
    zh_n: int
    zh_err: int
    en_n: int
    en_err: int
    num_n: int
    num_err: int
    other_n: int
    other_err: int
    alignment: list[tuple[str, str, str]] = field(repr=False)
    flags: list[str]
    empty_ref: bool

    @property
    def cer_hits(self) -> int:
        return self.cer_n - self.cer_s - self.cer_d

    @property
    def mer_hits(self) -> int:
        return self.mer_n - self.mer_s - self.mer_d

    @property
    def cer_errors(self) -> int:
        return self.cer_s + self.cer_d + self.cer_i

    @property
    def mer_errors(self) -> int:
        return self.mer_s + self.mer_d + self.mer_i

    @property
    def cer(self) -> float:
        """Error rate of this one utterance (inf for an empty reference with insertions)."""
        return _rate(self.cer_errors, self.cer_n)

    @property
    def mer(self) -> float:
        return _rate(self.mer_errors, self.mer_n)

    @property
    def wer(self) -> float:
        return _rate(self.wer_s + self.wer_d + self.wer_i, self.wer_n)

    def to_dict(self) -> dict:
        return asdict(self)


COLUMNS = [f.name for f in fields(UtteranceScore)]
# Arrow types of the score_many table (DuckDB: VARCHAR, INTEGER, JSON text, VARCHAR[], BOOLEAN)
SCHEMA = pa.schema([("ref_norm", pa.string()), ("hyp_norm", pa.string())]
                   + [(c, pa.int32()) for c in _INT_FIELDS]
                   + [("alignment", pa.string()), ("flags", pa.list_(pa.string())), ("empty_ref", pa.bool_())])
assert SCHEMA.names == COLUMNS


def _rate(err: int, n: int) -> float:
    return err / n if n else (0.0 if err == 0 else float("inf"))


@dataclass(frozen=True)
class LongForm:
    """Marks a recording (long-form item) for ``score_many``: its long-form flags are computed,
    with the segment times ``[[start, end, text], ...]`` of the reference and hypothesis when known."""

    ref_segments: Segments | None = None
    hyp_segments: Segments | None = None


def _score_normalized(ref: str, hyp: str, hyp_raw: str | None, profile: NormalizerProfile, idioms: tuple[str, ...],
                      traditional: bool | None, alignment: str, long_form: LongForm | None = None) -> tuple:
    """Everything but the normalization; ``alignment`` is 'pairs', 'json' or 'none'. The CER
    alignment is rapidfuzz's bit-parallel Levenshtein, measured fast and small enough for whole
    recordings (15,000 characters: 0.06 s, 60,000: 1 s; bench/bench_longform.py), so long-form
    items take the same path as utterances."""
    ref_c, hyp_c = chars(ref), chars(hyp)
    ops = align(ref_c, hyp_c)
    cer = (len(ref_c), *count_ops(ops))
    mer, n_cls, err_cls = mer_counts(ref, hyp, ref_c, hyp_c, ops, cer, idioms)
    wer = wer_counts(ref, hyp)
    if alignment == "pairs":
        al = alignment_pairs(ref_c, hyp_c, ops)
    else:
        al = alignment_json(ref_c, hyp_c, ops) if alignment == "json" else None
    flags = flags_for(hyp_raw, ref, hyp, ref_c, hyp_c, profile, traditional)
    if long_form is not None:
        flags += long_form_flags(ref, hyp, ref_c, hyp_c, ops, long_form.ref_segments, long_form.hyp_segments)
    return (ref, hyp, *cer, *mer, *wer, n_cls[0], err_cls[0], n_cls[1], err_cls[1], n_cls[2], err_cls[2],
            n_cls[3], err_cls[3], al, flags, not ref_c)


def _idioms(profile: NormalizerProfile) -> tuple[str, ...]:
    return tuple(profile.rules["numeral_idioms"])


def score_pair(ref_raw: str | None, hyp_raw: str | None, profile: str | NormalizerProfile = DEFAULT_PROFILE,
               with_alignment: bool = True, long_form: LongForm | None = None) -> UtteranceScore:
    """Score one reference/hypothesis pair. A missing or empty hypothesis is all deletions; an
    empty reference is scored (its insertions counted) and marked ``empty_ref``."""
    prof = get_profile(profile)
    ref, hyp = prof.normalize_many([ref_raw, hyp_raw])
    row = _score_normalized(ref, hyp, hyp_raw, prof, _idioms(prof), None, "pairs" if with_alignment else "none",
                            long_form)
    out = UtteranceScore(*row)
    if not with_alignment:
        out.alignment = []
    return out


def _score_chunk(refs: Sequence[str | None], hyps: Sequence[str | None], profile: NormalizerProfile,
                 with_alignment: bool, long_form: Sequence[LongForm | None] | None = None) -> pa.RecordBatch:
    """One chunk's rows as an Arrow batch (runs in a worker; a batch pickles as flat buffers,
    so the parent does no per-row work)."""
    ref_n = profile.normalize_many(refs)
    hyp_n = profile.normalize_many(hyps)
    # one OpenCC pass over the whole chunk instead of one call per utterance
    raw = [text_or_empty(h) for h in hyps]
    conv = opencc_t2s().convert("\n".join(raw)).split("\n")
    trad = [a != b for a, b in zip(raw, conv)] if len(conv) == len(raw) else [None] * len(raw)
    mode, idioms = "json" if with_alignment else "none", _idioms(profile)
    lf = long_form if long_form is not None else [None] * len(refs)
    rows = [_score_normalized(r, h, hr, profile, idioms, t, mode, x)
            for r, h, hr, t, x in zip(ref_n, hyp_n, hyps, trad, lf)]
    cols = list(zip(*rows)) if rows else [()] * len(COLUMNS)
    return pa.RecordBatch.from_arrays(
        [pa.array(np.asarray(col, dtype=np.int32) if f.name in _INT_FIELDS else col, f.type)
         for f, col in zip(SCHEMA, cols)], schema=SCHEMA)


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for a in range(0, n, size):
        yield a, min(n, a + size)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def score_many(refs: Sequence[str | None], hyps: Sequence[str | None], profile: str | NormalizerProfile = DEFAULT_PROFILE,
               with_alignment: bool = True, progress: bool = False, workers: int | None = None,
               long_form: Sequence[LongForm | None] | None = None) -> pa.Table:
    """Score many pairs; one row per pair with the ``UtteranceScore`` columns (alignment as a
    JSON string or null, flags as list<string>). Uses ``workers`` processes (default: the
    usable cores) when there are more than a few chunks. ``long_form`` marks the recordings
    (a ``LongForm`` per pair, None for utterances) whose long-form flags are computed."""
    if len(refs) != len(hyps) or (long_form is not None and len(long_form) != len(refs)):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    lf = list(long_form) if long_form is not None else None
    prof = get_profile(profile)
    n = len(refs)
    workers = default_workers() if workers is None else workers
    bounds = list(_chunks(n, CHUNK))
    batches: list[pa.RecordBatch] = []
    bar = Progress("scoring (CER alignments)", n, "pairs", enabled=progress)
    try:
        if workers > 1 and n >= PARALLEL_MIN:
            ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futs = [pool.submit(_score_chunk, list(refs[a:b]), list(hyps[a:b]), prof, with_alignment,
                                    lf[a:b] if lf else None)
                        for a, b in bounds]
                for (a, b), fut in zip(bounds, futs):
                    batches.append(fut.result())
                    bar.advance(b - a)
        else:
            for a, b in bounds:
                batches.append(_score_chunk(refs[a:b], hyps[a:b], prof, with_alignment, lf[a:b] if lf else None))
                bar.advance(b - a)
    finally:
        bar.close()
    return pa.Table.from_batches(batches, schema=SCHEMA)
