"""Engine parity: runs of the same weights (same model id = same content hash) on the same
corpus split that differ in engine, compute type, preprocessing, recipe or engine options. How
many raw transcripts are identical, the paired CER difference (from the stored comparison), and
the most divergent utterances. Read-only; used by ``asr-eval score`` and the report.

A pair that differs in engine options only is the verification of output-preserving options
(``engines.options``): ``ParityPair.verdict`` says "identical on N/N" or how many differ. A pair
whose A is the reference (transformers float32) and whose B differs from it in engine, compute type
or engine options only is a fidelity check of B: ``ParityPair.fidelity``."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb

from asr_eval.errors import AsrEvalError
from asr_eval.metrics.stats import stored_reliable


@dataclass
class Divergent:
    utt_id: str
    ref: str
    hyp_a: str | None
    hyp_b: str | None
    cer_a: float | None
    cer_b: float | None


@dataclass
class ParityPair:
    run_a: str
    run_b: str
    model_id: str
    n: int
    n_identical: int
    delta: float | None = None  # CER_b - CER_a (pooled)
    delta_lo: float | None = None
    delta_hi: float | None = None
    delta_reliable: bool = True  # the stored comparison's minimum-evidence flag: else Δ alone, marked †
    differs_in: list[str] = field(default_factory=list)
    divergent: list[Divergent] = field(default_factory=list)
    options_check: bool = False  # B is A plus output-preserving engine options (set by ``parity_pairs``)
    reference_check: bool = False  # A is the reference (transformers float32), B another engine / compute type

    @property
    def identical(self) -> float:
        return self.n_identical / self.n if self.n else 0.0

    @property
    def options_only(self) -> bool:
        """B is the same configuration as A plus speed options that claim to leave transcripts
        unchanged (A: without them) — the check of those options."""
        return self.options_check and self.differs_in == ["engine_options"]

    @property
    def verdict(self) -> str | None:
        """For an engine-options check: 'identical on N/N' or 'differs on K/N'; else None."""
        if not self.options_only:
            return None
        if self.n and self.n_identical == self.n:
            return f"identical on {self.n}/{self.n}"
        return f"differs on {self.n - self.n_identical}/{self.n}"

    @property
    def fidelity(self) -> tuple[str, str] | None:
        """For a reference check (B: another engine or compute type than transformers float32 on the
        same weights, features, recipe and strategy): (status, sentence). Status ``faithful``
        (identical transcripts), ``no measurable loss`` (some differ; the paired CER interval holds 0),
        ``better`` / ``worse`` (the interval excludes 0) or ``undecided`` (too little data)."""
        if not self.reference_check:
            return None
        if self.n and self.n_identical == self.n:
            return "faithful", f"transcripts identical on {self.n}/{self.n}"
        said = f"{self.n - self.n_identical}/{self.n} transcripts differ"
        if self.delta is None or self.delta_lo is None or not self.delta_reliable:
            return "undecided", f"{said}; too little data for a CER interval"
        iv = f"Δ CER {100 * self.delta:+.2f} pts [{100 * self.delta_lo:+.2f}, {100 * self.delta_hi:+.2f}]"
        status = "worse" if self.delta_lo > 0 else "better" if self.delta_hi < 0 else "no measurable loss"
        return status, f"{said}; {iv}"

    @property
    def fidelity_mark(self) -> str | None:
        """✔ for faithful / no measurable loss / better, ✘ for worse, ? for undecided; None when no reference check."""
        if self.fidelity is None:
            return None
        status = self.fidelity[0]
        return "✘" if status == "worse" else "?" if status == "undecided" else "✔"


AXES = ("engine", "engine_version", "compute_type", "preprocessing", "recipe", "strategy", "engine_options")


def parity_pairs(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str = "zh-v1",
                 top: int = 5, options_only: bool = False) -> list[ParityPair]:
    """Every parity pair among ``run_ids`` (only the engine-options checks with ``options_only``:
    the other pairs are then skipped before their queries)."""
    if len(run_ids) < 2:
        return []
    rows = con.execute(
        f"""SELECT run_id, model_id, corpus_id, coalesce(split, ''), {', '.join(f'coalesce({a}::VARCHAR, {chr(39)}{chr(39)})' for a in AXES)}
            FROM eval_runs WHERE coalesce(kind, 'model') = 'model' AND run_id IN ({', '.join('?' * len(run_ids))})""",
        list(run_ids)).fetchall()
    order = {r: i for i, r in enumerate(run_ids)}
    rows.sort(key=lambda r: order[r[0]])
    out = []
    for a, b in itertools.combinations(rows, 2):
        if a[1:4] != b[1:4]:  # different weights, corpus or split: not a parity question
            continue
        differs = [ax for ax, x, y in zip(AXES, a[4:], b[4:]) if x != y]
        if not differs:
            continue
        check = False
        if differs == ["engine_options"]:
            if _is_baseline_of(b, a):  # the run without the options is A
                a, b = b, a
            check = _is_baseline_of(a, b)
        if options_only and not check:
            continue
        ref = set(differs) <= _ENGINE_AXES and _is_reference(a) != _is_reference(b)
        if ref and _is_reference(b):  # the reference run is A
            a, b = b, a
        ra, rb = a[0], b[0]
        n, same = con.execute(
            """SELECT count(*), count(*) FILTER (WHERE ha.hyp_raw IS NOT DISTINCT FROM hb.hyp_raw)
               FROM hypotheses ha JOIN hypotheses hb ON hb.utt_id = ha.utt_id AND hb.run_id = ?
               WHERE ha.run_id = ?""", [rb, ra]).fetchone()
        p = ParityPair(ra, rb, a[1], int(n), int(same), differs_in=differs, options_check=check, reference_check=ref)
        cmp = con.execute(
            """SELECT run_a, delta, delta_lo, delta_hi, reliable, n, ref_chars FROM comparisons WHERE normalizer = ?
               AND metric = 'cer' AND slice_attr = '_all' AND ((run_a = ? AND run_b = ?) OR (run_a = ? AND run_b = ?))""",
            [normalizer, ra, rb, rb, ra]).fetchone()
        if cmp:
            sign = 1 if cmp[0] == ra else -1  # stored as B − A; flipped pairs change sign and swap bounds
            d, lo, hi = (sign * cmp[1], sign * cmp[2], sign * cmp[3]) if sign == 1 else (-cmp[1], -cmp[3], -cmp[2])
            p.delta, p.delta_lo, p.delta_hi = d, lo, hi
            p.delta_reliable = stored_reliable(cmp[4], cmp[5], cmp[6])
        div = con.execute(
            """SELECT u.utt_id, u.text, ha.hyp_raw, hb.hyp_raw,
                      (sa.cer_s + sa.cer_d + sa.cer_i) / greatest(sa.cer_n, 1),
                      (sb.cer_s + sb.cer_d + sb.cer_i) / greatest(sb.cer_n, 1)
               FROM hypotheses ha JOIN hypotheses hb ON hb.utt_id = ha.utt_id AND hb.run_id = ?
               JOIN eval_runs r ON r.run_id = ha.run_id
               JOIN utterances u ON u.corpus_id = r.corpus_id AND u.utt_id = ha.utt_id
               LEFT JOIN utterance_scores sa ON sa.run_id = ha.run_id AND sa.utt_id = ha.utt_id AND sa.normalizer = ?
               LEFT JOIN utterance_scores sb ON sb.run_id = hb.run_id AND sb.utt_id = hb.utt_id AND sb.normalizer = ?
               WHERE ha.run_id = ? AND ha.hyp_raw IS DISTINCT FROM hb.hyp_raw
               ORDER BY abs(coalesce((sb.cer_s + sb.cer_d + sb.cer_i) / greatest(sb.cer_n, 1), 0)
                            - coalesce((sa.cer_s + sa.cer_d + sa.cer_i) / greatest(sa.cer_n, 1), 0)) DESC, u.utt_id
               LIMIT ?""", [rb, normalizer, normalizer, ra, top]).fetchall()
        p.divergent = [Divergent(*r) for r in div]
        out.append(p)
    return out


_OPT = 4 + AXES.index("engine_options")  # the engine_options column of a parity_pairs row
_ENGINE_AXES = {"engine", "engine_version", "compute_type", "engine_options"}
REFERENCE = ("transformers", "float32")  # the engine and compute type every other one is checked against


def _is_reference(row: tuple) -> bool:
    """Run row ``row`` is on the reference engine and compute type (``REFERENCE``)."""
    return (row[4 + AXES.index("engine")], row[4 + AXES.index("compute_type")]) == REFERENCE


def _is_baseline_of(x: tuple, y: tuple) -> bool:
    """Run row ``y``'s engine options without their output-preserving ones are run row ``x``'s."""
    from asr_eval.engines.options import baseline

    ox, oy = (json.loads(r[_OPT]) if r[_OPT] else {} for r in (x, y))
    try:
        return baseline(y[4], oy) == ox
    except (AsrEvalError, KeyError):  # an engine no longer registered, an option no longer known: no check
        return False


def option_checks(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str = "zh-v1",
                  top: int = 5) -> list[ParityPair]:
    """The pairs among ``run_ids`` that differ in engine options only: each run with speed options
    against the same configuration without them (``ParityPair.verdict``)."""
    return parity_pairs(con, run_ids, normalizer, top, options_only=True)


def preprocessing_mismatches(con, run_ids: list[str]) -> list[tuple[str, str, str]]:
    """(run_id, trained with, scored with) for fine-tuned models scored under another preprocessing."""
    if not run_ids:
        return []
    return con.execute(
        f"""SELECT r.run_id, m.train_preprocessing, r.preprocessing FROM eval_runs r JOIN models m USING (model_id)
            WHERE m.train_preprocessing IS NOT NULL AND r.preprocessing IS NOT NULL
              AND m.train_preprocessing <> r.preprocessing AND r.run_id IN ({', '.join('?' * len(run_ids))})""",
        run_ids).fetchall()
