"""A corpus opened once: its index, id, shard files and per-split counts (read ``index.json``
once instead of at every step). Lives beside the shard reader: the source-layout readers in
``corpus/`` sit below the shards and never import this."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from asr_eval.errors import AsrEvalError
from asr_eval.shards import INDEX_FILE


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    rows: int
    splits: dict[str, int]

    def n(self, split: str | None) -> int:
        return self.rows if split is None else self.splits.get(split, 0)


@dataclass(frozen=True)
class Corpus:
    path: Path
    index: dict
    corpus_id: str  # name@short hash of index.json: any re-ingest gives a new id

    @cached_property
    def shards(self) -> list[ShardInfo]:
        return [ShardInfo(self.path / s["file"], int(s["rows"]), dict(s.get("splits", {}))) for s in self.index["shards"]]

    @property
    def name(self) -> str:
        return self.index["corpus"]

    @property
    def splits(self) -> dict[str, int]:
        return dict(self.index.get("splits", {}))

    def default_split(self) -> str | None:
        """'test' when the corpus has one, else every utterance (None)."""
        return "test" if "test" in self.splits else None

    def resolve_split(self, split: str | None) -> str | None:
        """'auto' → ``default_split``; 'all' → None; an unknown split is an error naming the known ones."""
        if split == "auto":
            return self.default_split()
        if split in (None, "all"):
            return None
        if split not in self.splits:
            raise AsrEvalError(f"corpus {self.path} has no split {split!r}; its splits: {', '.join(self.splits) or 'none'}")
        return split

    def shards_for(self, split: str | None) -> list[ShardInfo]:
        return [s for s in self.shards if s.n(split)]

    def n_utts(self, split: str | None) -> int:
        return sum(s.n(split) for s in self.shards)


def open_corpus(corpus_dir: str | Path) -> Corpus:
    p = Path(corpus_dir).resolve()
    f = p / INDEX_FILE
    if not f.is_file():
        raise AsrEvalError(f"{p} is not an ingested corpus (no {INDEX_FILE}); run `asr-eval ingest` first")
    raw = f.read_bytes()
    try:
        idx = json.loads(raw)
    except json.JSONDecodeError as e:
        raise AsrEvalError(f"{f} is not valid JSON ({e}); re-run `asr-eval ingest` to rewrite it") from e
    return Corpus(p, idx, f"{idx['corpus']}@{hashlib.sha256(raw).hexdigest()[:10]}")
