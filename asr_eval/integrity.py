"""File integrity: SHA-256 of a file, and a per-folder cache of files already verified.

A folder's ``.verified.json`` maps a file name to the (size, mtime_ns, inode, sha256) it had
when its hash was last computed; a file whose stat still matches is not hashed again, a file
that changed in any of those is. Like git's index, a file modified within ``RACY_S`` seconds
of being hashed is not cached (an in-place edit inside the same clock tick would keep its
mtime). The cache is only a speed-up: it is written atomically, a read-only folder or a
damaged cache file just means hashing again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

CACHE_FILE = ".verified.json"
RACY_S = 2.0
_CHUNK = 1 << 20

# In-process memo of the same facts, so one run does not re-read the cache file per shard.
_MEMO: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class FileFacts:
    """What a file is now: size and SHA-256 (``cached``: the hash came from the cache)."""

    size: int
    sha256: str
    cached: bool


def _stat_key(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def _read_cache(folder: Path) -> dict:
    try:
        data = json.loads((folder / CACHE_FILE).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(folder: Path, data: dict) -> None:
    tmp = folder / f".{CACHE_FILE}.tmp{os.getpid()}"
    try:
        tmp.write_text(json.dumps(data, indent=0, sort_keys=True))
        os.replace(tmp, folder / CACHE_FILE)
    except OSError:  # read-only corpus: verification still works, only uncached
        tmp.unlink(missing_ok=True)


def hashed(path: str | Path) -> FileFacts:
    """Size and SHA-256 of ``path``, from the folder's cache when the file is unchanged since."""
    path = Path(path)
    key = _stat_key(path)
    _, size, mtime_ns, ino = key
    if key in _MEMO:
        return FileFacts(size, _MEMO[key], True)
    cache = _read_cache(path.parent)
    hit = cache.get(path.name)
    if isinstance(hit, dict) and (hit.get("size"), hit.get("mtime_ns"), hit.get("ino")) == (size, mtime_ns, ino) \
            and isinstance(hit.get("sha256"), str):
        _MEMO[key] = hit["sha256"]
        return FileFacts(size, hit["sha256"], True)
    sha = file_sha256(path)
    if _stat_key(path) == key and time.time() - mtime_ns / 1e9 > RACY_S:
        _MEMO[key] = sha
        cache = _read_cache(path.parent)  # re-read: another process may have added entries
        cache[path.name] = {"size": size, "mtime_ns": mtime_ns, "ino": ino, "sha256": sha}
        _write_cache(path.parent, cache)
    return FileFacts(size, sha, False)


def forget(path: str | Path) -> None:
    """Drop a file's cache entry (after rewriting it)."""
    path = Path(path)
    for k in [k for k in _MEMO if k[0] == str(path.resolve())]:
        del _MEMO[k]
    cache = _read_cache(path.parent)
    if cache.pop(path.name, None) is not None:
        _write_cache(path.parent, cache)
