"""Shard verification: a corpus file against what ``index.json`` records (size, SHA-256, Parquet
footer), on a local folder or an object store alike (``storage``). Used by the corpus handle before
any row is read, by the writer when it resumes, and by ``asr-eval verify``."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pyarrow as pa
import pyarrow.parquet as pq

from asr_eval import storage
from asr_eval.storage import IntegrityError, Location, redact

INDEX_FILE, QUARANTINE_FILE, PROGRESS_FILE = "index.json", "quarantine.jsonl", "_progress.jsonl"
META_DIR = "meta"  # meta/shard-N.parquet: the shard without its audio column (readers of text and slices)


@dataclass(frozen=True)
class ShardCheck:
    """One corpus file checked: a shard against its recorded size and SHA-256, or a JSON-lines
    file (quarantine, journal) line by line. ``problem`` is '' when the file is sound."""

    file: str
    kind: str  # 'shard' | 'meta' | 'index' | 'quarantine' | 'journal'
    problem: str = ""  # '' | 'missing' | 'size' | 'sha256' | 'unreadable' | 'not_in_index' | 'bad_lines'
    detail: str = ""
    expected_bytes: int | None = None
    actual_bytes: int | None = None
    expected_sha256: str | None = None
    actual_sha256: str | None = None
    rows: int | None = None
    cached: bool = False  # the hash came from the verification cache
    local: str | None = None  # a local file with the verified bytes (the file itself, or a cached copy of the object)

    @property
    def ok(self) -> bool:
        return not self.problem


def check_file(root: Location, name: str, exp_bytes: int | None, exp_sha: str | None, kind: str) -> ShardCheck:
    """Size, then SHA-256 (local: cached by size/mtime/inode; object: hashed while it downloads into
    the local copy cache, reused while its ETag is unchanged), then the Parquet footer."""
    loc = root / name
    base = dict(file=name, kind=kind, expected_bytes=exp_bytes, expected_sha256=exp_sha)
    try:
        info = storage.stat(loc)
    except (OSError, storage.AsrEvalError) as e:
        return ShardCheck(**base, problem="unreadable", detail=f"{type(e).__name__}: {e}")
    if info is None:
        return ShardCheck(**base, problem="missing", detail="the file does not exist" if root.is_local
                          else f"no object at {redact(loc)}")
    if exp_bytes is not None and info.size != exp_bytes:
        return ShardCheck(**base, actual_bytes=info.size, problem="size",
                          detail=f"{info.size} bytes but index.json records {exp_bytes}")
    cached = False
    try:
        if root.is_local:
            from asr_eval.integrity import hashed

            facts = hashed(loc.path)
            sha, cached, local = facts.sha256, facts.cached, str(loc.path)
            if exp_sha is not None and sha != exp_sha:
                raise IntegrityError(f"SHA-256 {sha[:16]}… but index.json records {exp_sha[:16]}…", actual=sha)
        elif exp_sha is None:
            sha, local = storage.object_sha256(loc), None
        else:
            local, sha = str(storage.verified_copy(loc, exp_sha, exp_bytes)), exp_sha
    except IntegrityError as e:
        return ShardCheck(**base, actual_bytes=info.size, actual_sha256=e.actual, problem="sha256",
                          detail=e.reason)
    except (OSError, storage.AsrEvalError) as e:
        return ShardCheck(**base, actual_bytes=info.size, problem="unreadable", detail=f"{type(e).__name__}: {e}")
    rows = None
    if not cached and local is not None and kind in ("shard", "meta"):
        try:
            rows = pq.ParquetFile(local).metadata.num_rows
        except (OSError, pa.ArrowException) as e:
            return ShardCheck(**base, actual_bytes=info.size, actual_sha256=sha, problem="unreadable",
                              detail=f"not readable as Parquet: {e}")
    return ShardCheck(**base, actual_bytes=info.size, actual_sha256=sha, rows=rows, cached=cached, local=local)


def check_shard(root: Location, name: str, index: dict) -> ShardCheck:
    """Check one shard (a file name inside the corpus) against ``index``."""
    entry = next((s for s in index.get("shards", []) if s.get("file") == name), None)
    if entry is None:
        return ShardCheck(file=name, kind="shard", problem="not_in_index",
                          detail="index.json does not list this shard (left over from an interrupted ingest?)")
    check = _rows_as_indexed(check_file(root, name, entry.get("bytes"), entry.get("sha256"), "shard"), entry)
    return replace(check, rows=entry.get("rows")) if check.ok else check


def _rows_as_indexed(check: ShardCheck, entry: dict) -> ShardCheck:
    """A sound file whose footer counts other rows than the index records is unreadable."""
    if check.ok and check.rows is not None and check.rows != entry.get("rows"):
        return replace(check, problem="unreadable", detail=f"{check.rows} rows but index.json records {entry.get('rows')}")
    return check


def check_meta(root: Location, entry: dict) -> ShardCheck | None:
    """The metadata file of a shard entry against the index (None for corpora ingested before they
    existed: their readers read the shard itself)."""
    meta = entry.get("meta")
    if not meta:
        return None
    return _rows_as_indexed(check_file(root, meta["file"], meta.get("bytes"), meta.get("sha256"), "meta"), entry)


def check_jsonl(loc: Location, kind: str) -> ShardCheck:
    if storage.stat(loc) is None:
        return ShardCheck(file=loc.name, kind=kind, problem="missing", detail="the file does not exist")
    bad, n = [], 0
    for i, line in enumerate(storage.read_bytes(loc).split(b"\n"), start=1):
        if not line.strip():
            continue
        n += 1
        try:
            if not isinstance(json.loads(line), dict):
                bad.append(i)
        except ValueError:
            bad.append(i)
    if bad:
        return ShardCheck(file=loc.name, kind=kind, rows=n, problem="bad_lines",
                          detail=f"{len(bad)} unparseable line(s): {', '.join(map(str, bad[:5]))}"
                                 + ("…" if len(bad) > 5 else ""))
    return ShardCheck(file=loc.name, kind=kind, rows=n)


def fix_hint(root: Location | str, index: dict | None = None) -> str:
    """How to repair a corpus: the ingest command that made it, run again."""
    src = (index or {}).get("source") or {}
    where = src.get("path") or src.get("source") or "SOURCE"
    return (f"re-run `asr-eval ingest {where} --out {redact(str(root))}` with the same arguments as the first "
            "time: it checks every finished shard and rewrites the corrupt ones "
            f"(`asr-eval verify {redact(str(root))}` lists every problem)")
