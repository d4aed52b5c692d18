"""Where fine-tuning selects its checkpoint — never on the split that will be scored.

``resolve_selection`` picks the evaluation (checkpoint-selection) set of a fine-tuning run:

* an explicit ``--eval-split`` is used as given (recorded, so scoring that split later is flagged
  "selected on this split: optimistic");
* ``auto`` (the default) uses the corpus's dev/validation split when it has one, and otherwise
  **carves** one from the training split: seeded, by speaker when speakers are known for at least
  half of the training utterances (a speaker is wholly in dev or wholly in train, so selection is
  not flattered by voices it trained on), ``DEV_FRACTION`` of the utterances, at most ``DEV_MAX``.
  The carved utterances are excluded from training, and their ids are written beside the run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from asr_eval.errors import AsrEvalError
from asr_eval.metrics.stats import MIN_SPEAKER_SHARE
from asr_eval.corpus_handle import open_corpus

DEV_SPLIT_NAMES = ("dev", "validation", "valid", "val")
DEV_FRACTION = 0.10  # of the training utterances
DEV_MAX = 500  # utterances: enough to rank checkpoints; more only slows every evaluation
SELECTION_FILE = "selection_split.json"
CARVED_SUFFIX = "dev-carve"  # recorded selection split of a carved dev set: '<train split>:dev-carve'


@dataclass(frozen=True)
class Selection:
    """The checkpoint-selection set: ``split`` of the corpus, restricted to ``utt_ids`` when carved."""

    split: str  # the corpus split the evaluation utterances come from
    label: str  # what is recorded as the selection split (models.selection_split)
    carved: bool = False
    utt_ids: tuple[str, ...] = field(default=(), repr=False)  # carved: the held-out dev utterances
    by: str | None = None  # carved: 'speaker' | 'utterance'
    seed: int = 0
    fraction: float = DEV_FRACTION
    cap: int = DEV_MAX

    def record(self) -> dict:
        d = asdict(self)
        d["n"] = len(self.utt_ids) if self.carved else None
        d.pop("utt_ids")
        return d


def _split_rows(corpus_dir: str | Path, split: str) -> list[tuple[str, str | None]]:
    rows: list[tuple[str, str | None]] = []
    corpus = open_corpus(corpus_dir)
    for s in corpus.shards:
        t = pq.read_table(corpus.verified_meta(s), columns=["utt_id", "split", "speaker"])
        for u, sp, spk in zip(*(t.column(c).to_pylist() for c in ("utt_id", "split", "speaker")), strict=True):
            if sp == split:
                rows.append((u, spk or None))
    return sorted(rows)


def carve_dev(rows: list[tuple[str, str | None]], fraction: float = DEV_FRACTION, cap: int = DEV_MAX,
              seed: int = 0) -> tuple[list[str], str]:
    """Seeded dev utterances out of ``rows`` (utt_id, speaker): ceil(fraction·N), at most ``cap``,
    at least 1 and leaving at least one utterance to train on. By speaker when speakers are known
    for ≥ MIN_SPEAKER_SHARE of the rows: speakers in seeded order, each taken whole when it fits in
    what is still needed (unknown speakers are single utterances); else utterances."""
    n = len(rows)
    if n < 2:
        raise AsrEvalError(f"the training split has {n} utterance(s): too few to carve a dev split from; "
                           "add a dev split to the corpus or pass --eval-split")
    target = min(cap, max(1, math.ceil(fraction * n)), n - 1)
    rng = np.random.default_rng(seed)
    known = sum(s is not None for _, s in rows)
    if known / n >= MIN_SPEAKER_SHARE:
        groups: dict[str, list[str]] = {}
        for u, s in rows:
            groups.setdefault(s if s is not None else f"\0{u}", []).append(u)
        keys = sorted(groups)
        picked: list[str] = []
        for i in rng.permutation(len(keys)):
            g = groups[keys[i]]
            if len(g) <= target - len(picked):
                picked += g
            if len(picked) == target:
                break
        if picked:
            return sorted(picked), "speaker"
    idx = rng.choice(n, target, replace=False)
    return sorted(rows[i][0] for i in idx), "utterance"


def resolve_selection(corpus_dir: str | Path, train_split: str, eval_split: str = "auto",
                      fraction: float = DEV_FRACTION, cap: int = DEV_MAX, seed: int = 0) -> Selection:
    """The checkpoint-selection set of a fine-tuning run (see the module docstring)."""
    splits = open_corpus(corpus_dir).splits
    if eval_split != "auto":
        if eval_split == train_split:
            raise AsrEvalError(f"--eval-split {eval_split!r} is the training split: checkpoints would be selected "
                               "on the data they were trained on; use 'auto' (a held-out dev set) or another split")
        return Selection(eval_split, eval_split, seed=seed)
    for name in DEV_SPLIT_NAMES:
        if splits.get(name) and name != train_split:
            return Selection(name, name, seed=seed)
    if not (0 < fraction < 1) or cap < 1:
        raise AsrEvalError(f"--dev-fraction {fraction} must be in (0, 1) and --dev-max {cap} ≥ 1")
    ids, by = carve_dev(_split_rows(corpus_dir, train_split), fraction, cap, seed)
    return Selection(train_split, f"{train_split}:{CARVED_SUFFIX}", True, tuple(ids), by, seed, fraction, cap)


def write_selection(out_dir: Path, sel: Selection) -> None:
    """The carved dev utterances beside the run, so anyone can check they never trained."""
    (out_dir / SELECTION_FILE).write_text(json.dumps({**sel.record(), "utt_ids": list(sel.utt_ids)}, indent=1,
                                                     ensure_ascii=False), encoding="utf-8")
