"""THE door to an ingested corpus, wherever it lives (a local folder or an object-store URL).

``open_corpus(where)`` reads ``index.json`` once; the handle lists the shards, checks each one
against the index before a row of it is used (size + SHA-256: corrupt data is never scored,
trained on or embedded) and reads rows, metadata, audio and the quarantine. Training, selection,
the store loader, scoring, streaming, imports and the report ask the handle — nothing else builds
a shard path. Lives above the shard writer; the source-layout readers in ``corpus/`` sit below
the shards and never import this.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asr_eval import storage
from asr_eval.errors import AsrEvalError
from asr_eval.shard_check import (
    INDEX_FILE, PROGRESS_FILE, QUARANTINE_FILE, ShardCheck, check_jsonl, check_meta, check_shard, fix_hint,
)
from asr_eval.storage import Location, location, redact

META_EXCLUDE = ("audio",)


@dataclass(frozen=True)
class ShardInfo:
    name: str  # file name inside the corpus ('shard-00000.parquet')
    rows: int
    splits: dict[str, int]
    sha256: str | None = None
    bytes: int | None = None
    meta: dict | None = None  # {"file": "meta/shard-….parquet", "sha256", "bytes"}: the rows without audio

    def n(self, split: str | None) -> int:
        return self.rows if split is None else self.splits.get(split, 0)


@dataclass(frozen=True)
class Corpus:
    location: Location
    index: dict
    corpus_id: str  # name@short hash of index.json: any re-ingest gives a new id
    _verified: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    # ── where it lives ──
    @property
    def url(self) -> str:
        """The corpus location as recorded (a local absolute path, or the URL without credentials)."""
        return redact(self.location.url)

    @property
    def path(self) -> Path:
        """The local folder (a URL corpus has none: use ``url`` or ``cache_dir``)."""
        return self.location.path

    @property
    def cache_dir(self) -> Path:
        """A local folder for caches derived from this corpus (reference timing, …): the corpus
        folder itself, or a per-corpus folder in the local cache for a URL."""
        d = derived_cache_dir(self.url)
        d.mkdir(parents=True, exist_ok=True)
        return d

    # ── the index ──
    @cached_property
    def shards(self) -> list[ShardInfo]:
        return [ShardInfo(s["file"], int(s["rows"]), dict(s.get("splits", {})), s.get("sha256"), s.get("bytes"),
                          s.get("meta")) for s in self.index["shards"]]

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
            raise AsrEvalError(f"corpus {self.url} has no split {split!r}; its splits: {', '.join(self.splits) or 'none'}")
        return split

    def shards_for(self, split: str | None) -> list[ShardInfo]:
        return [s for s in self.shards if s.n(split)]

    def n_utts(self, split: str | None) -> int:
        return sum(s.n(split) for s in self.shards)

    def shard(self, name: str) -> ShardInfo:
        name = Path(name).name
        for s in self.shards:
            if s.name == name:
                return s
        raise AsrEvalError(f"corpus {self.url} has no shard {name!r} in its index.json")

    # ── verified reads ──
    def check(self, name: str) -> ShardCheck:
        return check_shard(self.location, Path(name).name, self.index)

    def _refusal(self, label: str, problem: str, detail: str) -> AsrEvalError:
        what = "missing" if problem == "missing" else "corrupt"
        return AsrEvalError(f"corpus {self.url}: {label} is {what} — {detail}; nothing from it is used. "
                            f"Fix: {fix_hint(self.url, self.index)}")

    def _checked(self, key: str, label: str, check: Callable[[], ShardCheck]) -> Path:
        """The local verified file of ``key`` (an object is checked once per handle, a local file on
        every call — its hash is cached by stat); else the refusal naming ``label``."""
        hit = self._verified.get(key)
        if hit and not self.location.is_local and Path(hit).is_file():
            return Path(hit)
        c = check()
        if not c.ok:
            raise self._refusal(label, c.problem, c.detail)
        self._verified[key] = c.local or str(self.location.path / key)
        return Path(self._verified[key])

    def verified(self, shard: ShardInfo | str) -> Path:
        """A local file with the shard's verified bytes (the shard itself, or a checked copy of the
        object); an ``AsrEvalError`` naming the shard, what is wrong and the fix otherwise."""
        name = shard.name if isinstance(shard, ShardInfo) else Path(shard).name
        return self._checked(name, f"shard {name}", lambda: self.check(name))

    def verified_meta(self, shard: ShardInfo) -> Path:
        """A local verified file with the shard's rows without audio: its metadata file, or the
        shard itself for corpora ingested before metadata files existed."""
        if not shard.meta:
            return self.verified(shard)
        entry = next(s for s in self.index["shards"] if s["file"] == shard.name)
        return self._checked(shard.meta["file"], f"{shard.meta['file']} (the metadata of {shard.name})",
                             lambda: check_meta(self.location, entry))

    def require_all(self, split: str | None = None) -> None:
        """Check every shard holding ``split`` now, before any model is loaded: a local shard in
        full (size + SHA-256, cached); an object by its size only (one HEAD request — its bytes are
        hashed where they are read, by the worker that reads them, instead of downloading the whole
        corpus to the driver first)."""
        for s in self.shards_for(split):
            if self.location.is_local:
                self.verified(s)
                continue
            info = storage.stat(self.location / s.name)
            if info is None:
                raise self._refusal(f"shard {s.name}", "missing", f"no object at {redact(self.location / s.name)}")
            if s.bytes is not None and info.size != s.bytes:
                raise self._refusal(f"shard {s.name}", "size", f"{info.size} bytes but index.json records {s.bytes}")

    def iter_rows(self, shard: ShardInfo | str, split: str | None = None, columns: Sequence[str] | None = None,
                  batch_rows: int = 64) -> Iterator[dict]:
        """Rows of one shard as dicts (audio still FLAC bytes), streaming by record batch; without
        the audio column, from the shard's metadata file."""
        info = shard if isinstance(shard, ShardInfo) else self.shard(shard)
        f = pq.ParquetFile(self.verified_meta(info) if columns and "audio" not in columns else self.verified(info))
        for rb in f.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None):
            for row in rb.to_pylist():
                if split is None or row.get("split") == split:
                    yield row

    def iter_batches(self, split: str | None = None, batch_size: int = 16, shards: Sequence[str] | None = None,
                     columns: Sequence[str] | None = None) -> Iterator[list[dict]]:
        """Batches of rows with ``audio`` decoded to 16 kHz float32 arrays; streams shard by shard."""
        from asr_eval.audio import decode_flac

        names = [Path(s).name for s in shards] if shards is not None else [s.name for s in self.shards]
        batch: list[dict] = []
        for name in names:
            for row in self.iter_rows(name, split, columns):
                if row.get("audio") is not None:
                    row["audio"] = decode_flac(row["audio"])
                batch.append(row)
                if len(batch) == batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def read_metadata(self, split: str | None = None) -> pa.Table:
        """All columns but the audio bytes, for every utterance (optionally of one split)."""
        from asr_eval.shards import CORE_COLUMNS

        tables = []
        for s in self.shards:
            p = self.verified_meta(s)
            cols = [c for c in pq.read_schema(p).names if c not in META_EXCLUDE]
            tables.append(pq.read_table(p, columns=cols, filters=[("split", "=", split)] if split else None))
        if not tables:
            return pa.table({c: [] for c in CORE_COLUMNS if c != "audio"})
        return pa.concat_tables(tables, promote_options="default")

    def load_audio(self, utt_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Decoded audio of a few utterances by id."""
        from asr_eval.audio import decode_flac

        want, out = list(set(utt_ids)), {}
        for s in self.shards:
            t = pq.read_table(self.verified(s), columns=["utt_id", "audio"], filters=[("utt_id", "in", want)])
            for uid, data in zip(t.column("utt_id").to_pylist(), t.column("audio").to_pylist(), strict=True):
                out[uid] = decode_flac(data)
        return out

    def quarantine(self) -> list[dict]:
        loc = self.location / QUARANTINE_FILE
        if storage.stat(loc) is None:
            return []
        return [json.loads(ln) for ln in storage.read_text(loc).split("\n") if ln.strip()]

    def verify(self) -> list[ShardCheck]:
        """Every shard against ``index.json``, plus stray shards and the quarantine and journal
        files (each line must parse)."""
        checks = [ShardCheck(file=INDEX_FILE, kind="index", rows=self.index.get("n_utterances"))]
        for s in self.index["shards"]:
            checks.append(self.check(s["file"]))
            if (meta := check_meta(self.location, s)) is not None:
                checks.append(meta)
        listed = {s.name for s in self.shards}
        checks += [ShardCheck(file=n, kind="shard", problem="not_in_index",
                              detail="index.json does not list it; readers of 'DIR/*.parquet' would include it")
                   for n in storage.listdir(self.location)
                   if n.startswith("shard-") and n.endswith(".parquet") and n not in listed]
        checks.append(check_jsonl(self.location / QUARANTINE_FILE, "quarantine"))
        if storage.stat(self.location / PROGRESS_FILE) is not None:
            checks.append(check_jsonl(self.location / PROGRESS_FILE, "journal"))
        return checks


def derived_cache_dir(where: str) -> Path:
    """The local folder of caches derived from the corpus at ``where`` (as ``corpora.path`` records
    it): the folder itself, or ``cache_dir()/corpora/<hash of the URL>`` for a URL."""
    if not storage.is_url(where):
        return location(where).path
    return storage.cache_dir() / "corpora" / hashlib.sha256(redact(where).encode()).hexdigest()[:16]


def _load_index(where: str | Path | Location) -> tuple[dict, bytes]:
    """The corpus index and its bytes; a clear error when the location is not a corpus."""
    loc = location(where)
    f = loc / INDEX_FILE
    if storage.stat(f) is None:
        raise AsrEvalError(f"{redact(str(loc))} is not an ingested corpus (no {INDEX_FILE}); "
                           f"run `asr-eval ingest SOURCE --out {redact(str(loc))}` first")
    try:
        raw = storage.read_bytes(f)
        idx = json.loads(raw)
    except (OSError, ValueError) as e:
        raise AsrEvalError(f"{redact(str(f))} is unreadable ({e}); re-run `asr-eval ingest` with the same arguments "
                           "to rebuild it") from None
    if not isinstance(idx, dict) or not isinstance(idx.get("shards"), list):
        raise AsrEvalError(f"{redact(str(f))} is not a corpus index (no 'shards' list); re-run `asr-eval ingest` "
                           "to rebuild it")
    return idx, raw


def open_corpus(where: str | Path | Location | Corpus) -> Corpus:
    """The corpus at a local folder, a file:// URL or an object-store URL (s3://, gs://, az://)."""
    if isinstance(where, Corpus):
        return where
    loc = location(where)
    idx, raw = _load_index(loc)
    return Corpus(loc, idx, f"{idx['corpus']}@{hashlib.sha256(raw).hexdigest()[:10]}")


def read_index(where: str | Path | Location) -> dict:
    """The corpus index (``index.json``) of a folder or URL."""
    return _load_index(where)[0]


def read_metadata(where: str | Path | Location, split: str | None = None) -> pa.Table:
    return open_corpus(where).read_metadata(split)


def read_quarantine(where: str | Path | Location) -> list[dict]:
    return open_corpus(where).quarantine()


def iter_batches(where: str | Path | Location, split: str | None = None, batch_size: int = 16,
                 shards: Sequence[str] | None = None, columns: Sequence[str] | None = None) -> Iterator[list[dict]]:
    return open_corpus(where).iter_batches(split, batch_size, shards, columns)


def load_audio(where: str | Path | Location, utt_ids: Sequence[str]) -> dict[str, np.ndarray]:
    return open_corpus(where).load_audio(utt_ids)


def verify_corpus(where: str | Path | Location) -> list[ShardCheck]:
    """``asr-eval verify``: every file of a corpus checked (an unreadable index is one failed check)."""
    try:
        corpus = open_corpus(where)
    except AsrEvalError as e:
        return [ShardCheck(file=INDEX_FILE, kind="index", problem="unreadable", detail=str(e))]
    return corpus.verify()
