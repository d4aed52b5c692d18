"""Where a corpus or an artifact lives: a local path or a URL — one thin layer over fsspec.

The only module that knows about URL schemes. Everything else holds a ``Location`` (or the
string it prints as) and calls the functions here:

- ``location('s3://bucket/zh/aishell')``, ``location('/data/corpus')``, ``location('file:///data')``;
  ``loc / 'index.json'`` is a child.
- ``read_bytes`` / ``write_bytes`` / ``put_file`` / ``stat`` / ``listdir`` / ``delete``.
  Writes are atomic for readers: a local file is written beside its destination and renamed; an
  object store has no rename, but one PUT is all-or-nothing (a multipart upload is invisible until
  it completes), so a reader sees the whole object or none. What makes a set of objects visible
  together is the index written last (``shards``).
- ``verified_copy(loc, sha256, size)``: a local file with exactly the bytes a hash names. For a
  URL the object is downloaded once into a local cache, hashed on the way, and refused (naming the
  URL) when the hash differs; the cached copy is reused while the object's ETag/generation and size
  are unchanged, so a flipped byte in the bucket is refused again on the next read.

Credentials are never arguments here: fsspec's back-ends read the standard places
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws``,
instance roles; ``GOOGLE_APPLICATION_CREDENTIALS``; ``AZURE_STORAGE_*``), plus the process-wide
options of ``--storage-option key=value`` / ``ASR_EVAL_STORAGE_OPTIONS`` (JSON). No function here
returns, stores or logs them; ``redact`` strips ``user:password@`` from a URL before it is recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from asr_eval.errors import AsrEvalError

# scheme → (fsspec protocol, module of its back-end, pip extra that installs it)
SCHEMES: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "s3fs"), "s3a": ("s3fs", "s3fs"),
    "gs": ("gcsfs", "gcsfs"), "gcs": ("gcsfs", "gcsfs"),
    "az": ("adlfs", "adlfs"), "abfs": ("adlfs", "adlfs"), "abfss": ("adlfs", "adlfs"),
    "memory": ("fsspec", "fsspec"),  # fsspec's in-process store (tests, examples)
}
ENV_OPTIONS = "ASR_EVAL_STORAGE_OPTIONS"
CACHE_ENV = "ASR_EVAL_CACHE_DIR"
_CHUNK = 1 << 22

_OPTIONS: dict[str, Any] = {}  # from --storage-option (process-wide)
_FS: dict[tuple[str, str], Any] = {}


def is_url(value: str | os.PathLike | Location) -> bool:
    """True for 'scheme://…' other than file:// (a file URL is a local path)."""
    if isinstance(value, Location):
        return not value.is_local
    s = str(value)
    return "://" in s and not s.startswith("file://") and s.split("://", 1)[0].isidentifier()


@dataclass(frozen=True)
class Location:
    """A local folder/file (``url`` is its absolute path) or an object URL ('s3://bucket/key')."""

    url: str

    def __str__(self) -> str:
        return self.url

    def __fspath__(self) -> str:
        if not self.is_local:
            raise TypeError(f"{self.url} is a URL, not a local path")
        return self.url

    @property
    def is_local(self) -> bool:
        return "://" not in self.url

    @property
    def scheme(self) -> str:
        return "file" if self.is_local else self.url.split("://", 1)[0]

    @property
    def path(self) -> Path:
        """The local path (only for a local location)."""
        if not self.is_local:
            raise AsrEvalError(f"{redact(self.url)} is a URL; this step needs a local path")
        return Path(self.url)

    @property
    def name(self) -> str:
        return posixpath.basename(self.url.rstrip("/")) if not self.is_local else Path(self.url).name

    @property
    def parent(self) -> Location:
        if self.is_local:
            return Location(str(Path(self.url).parent))
        head, _, _ = self.url.rstrip("/").rpartition("/")
        return Location(head)

    def __truediv__(self, name: str) -> Location:
        if self.is_local:
            return Location(str(Path(self.url) / name))
        return Location(f"{self.url.rstrip('/')}/{name.lstrip('/')}")


def location(value: str | os.PathLike | Location) -> Location:
    """A Location for a path, a file:// URL or an object URL (trailing '/' dropped)."""
    if isinstance(value, Location):
        return value
    s = os.fspath(value) if not isinstance(value, str) else value
    if s.startswith("file://"):
        s = s[len("file://"):] or "/"
    if is_url(s):
        scheme = s.split("://", 1)[0].lower()
        if scheme not in SCHEMES:
            raise AsrEvalError(f"{redact(s)}: unknown storage scheme {scheme!r}; use a local path or one of "
                               + ", ".join(f"{k}://" for k in SCHEMES if k != "memory"))
        return Location(s.rstrip("/"))
    return Location(str(Path(s).expanduser().resolve()))


def redact(url: str | Location) -> str:
    """A URL without ``user:password@`` (and without a query string, where signed URLs keep keys)."""
    s = str(url)
    if "://" not in s:
        return s
    parts = urlsplit(s)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", parts.fragment))


# ───────────────────────────── options and file systems ─────────────────────────────


def parse_storage_options(items: Sequence[str]) -> dict[str, Any]:
    """['endpoint_url=http://…', 'anon=true', 'client_kwargs.region_name=eu-west-1'] → nested dict;
    a value is JSON when it parses as JSON (true, 3, {"a": 1}), text otherwise."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise AsrEvalError(f"--storage-option {item!r} must look like key=value (e.g. endpoint_url=http://minio:9000)")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        *path, last = [k for k in key.strip().split(".") if k]
        d = out
        for k in path:
            d = d.setdefault(k, {})
        d[last] = value
    return out


def set_storage_options(options: dict[str, Any]) -> None:
    """Options for every later object-store file system of this process (``--storage-option``);
    handed to fsspec only, never stored or printed."""
    _OPTIONS.update(options)
    _FS.clear()


def _options(scheme: str) -> dict[str, Any]:
    env = os.environ.get(ENV_OPTIONS)
    opts: dict[str, Any] = {}
    if env:
        try:
            loaded = json.loads(env)
        except ValueError:
            raise AsrEvalError(f"{ENV_OPTIONS} is not valid JSON; set it to an object such as "
                               '{"endpoint_url": "http://minio:9000"}') from None
        if not isinstance(loaded, dict):
            raise AsrEvalError(f"{ENV_OPTIONS} must be a JSON object")
        opts.update(loaded)
    opts.update(_OPTIONS)
    if scheme in ("s3", "s3a") and "endpoint_url" not in opts:
        ep = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if ep:
            opts["endpoint_url"] = ep
    return opts


def exported_options() -> dict[str, str]:
    """Environment for worker processes (Ray) so they see this process's --storage-option values;
    passed as environment, never as task arguments (which Prefect and Ray record)."""
    return {ENV_OPTIONS: json.dumps({**json.loads(os.environ.get(ENV_OPTIONS) or "{}"), **_OPTIONS})} if _OPTIONS else {}


def filesystem(loc: Location):
    """The fsspec file system of a location (cached per scheme and options)."""
    if loc.is_local:
        import fsspec

        return fsspec.filesystem("file")
    scheme = loc.scheme
    module, extra = SCHEMES[scheme]
    opts = _options(scheme)
    key = (scheme, json.dumps(opts, sort_keys=True, default=str))
    if key not in _FS:
        try:
            __import__(module)
        except ImportError:
            raise AsrEvalError(f"{redact(loc.url)}: {scheme}:// needs the {extra} package; "
                               f"pip install 'asr-eval[cloud]' (or pip install {extra})") from None
        import fsspec

        proto = {"s3a": "s3", "gs": "gcs", "az": "abfs", "abfss": "abfs"}.get(scheme, scheme)
        # no listings cache: other processes (workers, a resumed ingest) add objects while this one
        # runs, and a cached listing would call them missing
        _FS[key] = fsspec.filesystem(proto, skip_instance_cache=True, **{"use_listings_cache": False, **opts})
    return _FS[key]


def _key(loc: Location) -> str:
    """The path a file system takes ('bucket/key' for object stores)."""
    return loc.url if loc.is_local else loc.url.split("://", 1)[1]


@contextlib.contextmanager
def errors(loc: Location | str, doing: str) -> Iterator[None]:
    """Turn a storage back-end's exception into an ``AsrEvalError`` naming the URL and the fix
    (credentials, endpoint, bucket); never its request headers."""
    try:
        yield
    except AsrEvalError:
        raise
    except FileNotFoundError as e:
        raise AsrEvalError(f"{redact(loc)}: not found while {doing} ({_short(e)}); check the URL "
                           "(and that the bucket exists)") from None
    except PermissionError as e:
        raise AsrEvalError(f"{redact(loc)}: access denied while {doing} ({_short(e)}); check the credentials "
                           "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role) and "
                           "the bucket policy") from None
    except Exception as e:  # noqa: BLE001 — every back-end raises its own types
        raise AsrEvalError(f"{redact(loc)}: {doing} failed: {_classify(e)}") from None


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def _classify(e: BaseException) -> str:
    name, text = type(e).__name__, str(e)
    low = f"{name} {text}".lower()
    if "nocredentials" in low or "unable to locate credentials" in low:
        return ("no credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, use an "
                "instance role, or --storage-option anon=true for a public bucket")
    if any(k in low for k in ("invalidaccesskeyid", "signaturedoesnotmatch", "invalidtoken", "expiredtoken",
                              "accessdenied", "forbidden", "403")):
        return f"the storage service refused the credentials ({_short(e)}); check the key, secret and profile"
    if "nosuchbucket" in low:
        return f"the bucket does not exist ({_short(e)}); create it or fix the URL"
    if any(k in low for k in ("endpointconnection", "could not connect", "connection refused", "connecttimeout",
                              "cannot connect", "name or service not known", "clientconnectorerror")):
        return (f"cannot reach the storage endpoint ({_short(e)}); check AWS_ENDPOINT_URL / "
                "--storage-option endpoint_url=… and the network")
    return f"{name}: {_short(e)}"


# ───────────────────────────── operations ─────────────────────────────


def read_bytes(loc: Location) -> bytes:
    if loc.is_local:
        return Path(loc.url).read_bytes()
    with errors(loc, "reading it"):
        return filesystem(loc).cat_file(_key(loc))


def read_text(loc: Location) -> str:
    return read_bytes(loc).decode()


def makedirs(loc: Location) -> None:
    """A local folder is created; for an object store the bucket must exist (checked here, so a
    missing bucket is reported before any work)."""
    if loc.is_local:
        Path(loc.url).mkdir(parents=True, exist_ok=True)
        return
    bucket = _key(loc).split("/", 1)[0]
    with errors(loc, "checking its bucket"):
        fs = filesystem(loc)
        if not fs.exists(bucket):
            raise AsrEvalError(f"{redact(loc)}: bucket {bucket!r} does not exist (or is not visible with these "
                               "credentials); create it first, or fix the URL")


def write_bytes(loc: Location, data: bytes) -> None:
    """Atomically replace ``loc``'s content (local: temp file + fsync + rename; object: one PUT)."""
    if loc.is_local:
        path = Path(loc.url)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return
    with errors(loc, "writing it"):
        filesystem(loc).pipe_file(_key(loc), data)


def put_file(local: Path, loc: Location) -> None:
    """Move a finished local file to ``loc`` (local: rename; object: upload, then remove the file)."""
    if loc.is_local:
        Path(loc.url).parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, loc.url)
        return
    try:
        with errors(loc, "uploading it"):
            filesystem(loc).put_file(str(local), _key(loc))
    finally:
        Path(local).unlink(missing_ok=True)


def staging_file(dest: Location, suffix: str = "") -> Path:
    """Where to write a file that ``put_file`` will move to ``dest``: beside it for a local
    destination (so the rename is atomic), in the local cache for an object."""
    if dest.is_local:
        p = Path(dest.url)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p.with_name(f".{p.name}.tmp{os.getpid()}{suffix}")
    d = cache_dir() / "staging"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{hashlib.sha256(dest.url.encode()).hexdigest()[:16]}.{os.getpid()}{suffix}"


def delete(loc: Location) -> None:
    if loc.is_local:
        Path(loc.url).unlink(missing_ok=True)
        return
    with errors(loc, "deleting it"):
        fs = filesystem(loc)
        if fs.exists(_key(loc)):
            fs.rm_file(_key(loc))


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    version: str  # ETag / generation / mtime: changes whenever the bytes do


def stat(loc: Location) -> ObjectInfo | None:
    """Size and version tag, or None when the object/file does not exist."""
    if loc.is_local:
        try:
            st = Path(loc.url).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(st.st_size, f"{st.st_mtime_ns}:{st.st_ino}")
    with errors(loc, "reading its metadata"):
        fs = filesystem(loc)
        try:
            info = fs.info(_key(loc))
        except FileNotFoundError:
            return None
    if info.get("type") == "directory":
        return None
    ver = next((str(info[k]) for k in ("ETag", "etag", "generation", "md5Hash", "LastModified", "last_modified",
                                        "mtime") if info.get(k)), "")
    return ObjectInfo(int(info.get("size") or info.get("Size") or 0), ver.strip('"'))


def listdir(loc: Location) -> list[str]:
    """Names directly under a folder/prefix (empty when there is none)."""
    if loc.is_local:
        p = Path(loc.url)
        return sorted(x.name for x in p.iterdir()) if p.is_dir() else []
    with errors(loc, "listing it"):
        fs = filesystem(loc)
        try:
            return sorted(posixpath.basename(x.rstrip("/")) for x in fs.ls(_key(loc), detail=False))
        except FileNotFoundError:
            return []


def get_tree(loc: Location, dest: Path) -> Path:
    """Copy a folder/prefix (or one object) to the local folder ``dest``; returns the local copy."""
    if loc.is_local:
        return Path(loc.url)
    with errors(loc, "downloading it"):
        fs = filesystem(loc)
        key = _key(loc)
        dest.mkdir(parents=True, exist_ok=True)
        if fs.isfile(key):
            out = dest / posixpath.basename(key)
            fs.get_file(key, str(out))
            return out
        if not fs.exists(key):
            raise FileNotFoundError(key)
        for f in fs.find(key):
            rel = posixpath.relpath(f, key)
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f, str(target))
        return dest


# ───────────────────────────── verified local copies ─────────────────────────────


def cache_dir() -> Path:
    """Local cache of verified object copies and fetched models (``ASR_EVAL_CACHE_DIR``, else
    ``~/.cache/asr-eval``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "asr-eval")


class IntegrityError(AsrEvalError):
    """A file or object does not have the bytes its index records (``reason`` without the
    location; ``actual`` the SHA-256 found, when one was computed)."""

    def __init__(self, reason: str, where: str = "", actual: str | None = None):
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason, self.actual = reason, actual


def verified_copy(loc: Location, sha256: str, size: int | None = None) -> Path:
    """A local file holding exactly the bytes ``sha256`` names. A local ``loc`` is hashed in place
    (with the per-folder hash cache); an object is downloaded once into ``cache_dir()/objects``
    (hashed while it streams) and reused while its version tag and size are unchanged.
    ``IntegrityError`` naming the location when the size or hash differs; missing → IntegrityError too."""
    if loc.is_local:
        from asr_eval.integrity import hashed

        path = Path(loc.url)
        if not path.is_file():
            raise IntegrityError("the file does not exist", str(path))
        if size is not None and path.stat().st_size != size:
            raise IntegrityError(f"{path.stat().st_size} bytes but the index records {size}", str(path))
        got = hashed(path).sha256
        if got != sha256:
            raise IntegrityError(f"SHA-256 {got[:16]}… but the index records {sha256[:16]}…", str(path), got)
        return path
    info = stat(loc)
    if info is None:
        raise IntegrityError("no such object", redact(loc))
    if size is not None and info.size != size:
        raise IntegrityError(f"{info.size} bytes but the index records {size}", redact(loc))
    objects = cache_dir() / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    target = objects / sha256
    tag = objects / f"{sha256}.json"
    seen = {"url": redact(loc), "version": info.version, "size": info.size}
    if target.is_file() and tag.is_file():
        with contextlib.suppress(OSError, ValueError):
            if json.loads(tag.read_text()) == seen:
                os.utime(target)  # least-recently-used eviction reads the access time
                return target
    tmp = objects / f".{sha256}.{os.getpid()}.tmp"
    h = hashlib.sha256()
    with errors(loc, "downloading it"):
        with filesystem(loc).open(_key(loc), "rb", block_size=_CHUNK) as src, open(tmp, "wb") as dst:
            while block := src.read(_CHUNK):
                h.update(block)
                dst.write(block)
    got = h.hexdigest()
    if got != sha256:
        tmp.unlink(missing_ok=True)
        raise IntegrityError(f"SHA-256 {got[:16]}… but the index records {sha256[:16]}…", redact(loc), got)
    os.replace(tmp, target)
    write_bytes(Location(str(tag)), json.dumps(seen).encode())
    _evict(objects)
    return target


def object_sha256(loc: Location) -> str:
    """SHA-256 of an object's (or a file's) bytes, streamed."""
    if loc.is_local:
        from asr_eval.integrity import file_sha256

        return file_sha256(loc.url)
    h = hashlib.sha256()
    with errors(loc, "reading it"), filesystem(loc).open(_key(loc), "rb", block_size=_CHUNK) as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _evict(objects: Path) -> None:
    """Keep the object cache under ``ASR_EVAL_CACHE_MAX_GB`` (default 50) by removing the least
    recently used copies (a copy in use by a reader stays readable: POSIX keeps unlinked files)."""
    limit = float(os.environ.get("ASR_EVAL_CACHE_MAX_GB", "50")) * 2**30
    files = [(p.stat().st_atime, p.stat().st_size, p) for p in objects.iterdir()
             if p.is_file() and not p.name.endswith((".json", ".tmp"))]
    total = sum(s for _, s, _ in files)
    for _, s, p in sorted(files):
        if total <= limit:
            break
        p.unlink(missing_ok=True)
        (objects / f"{p.name}.json").unlink(missing_ok=True)
        total -= s



def local_mirror(loc: Location, kind: str = "models") -> Path:
    """A local copy of a folder/prefix (a checkpoint or CT2 folder in a bucket), fetched once per
    machine into ``cache_dir()/KIND/<fingerprint>/<its name>``: the fingerprint hashes every
    object's name, size and ETag, so a changed object is a new copy and an unchanged one is never
    fetched twice. Concurrent workers on one node each download to a temporary folder; the first
    rename wins."""
    if loc.is_local:
        return loc.path
    with errors(loc, "listing it"):
        fs = filesystem(loc)
        key = _key(loc)
        found = fs.find(key, detail=True)
    if not found:
        raise AsrEvalError(f"{redact(loc)}: no objects under this prefix; check the URL")
    entries = sorted((posixpath.relpath(k, key), int(v.get("size") or 0),
                      str(next((v[t] for t in ("ETag", "etag", "generation", "md5Hash") if v.get(t)), "")))
                     for k, v in found.items())
    digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:20]
    dest = cache_dir() / kind / digest
    if (dest / loc.name / ".complete").is_file():
        return dest / loc.name
    tmp = dest.with_name(f".{digest}.{os.getpid()}.tmp")
    with errors(loc, "downloading it"):
        for rel, _, _ in entries:
            (tmp / loc.name / rel).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{key}/{rel}", str(tmp / loc.name / rel))
    (tmp / loc.name / ".complete").write_text(json.dumps({"url": redact(loc), "objects": len(entries)}))
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, dest)
    except OSError:  # another worker finished first: use its copy
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return dest / loc.name


def put_tree(local: Path, loc: Location) -> int:
    """Upload every file under a local folder to the prefix ``loc`` (one PUT each); returns how
    many. A local ``loc`` gets a copy."""
    files = [p for p in sorted(Path(local).rglob("*")) if p.is_file()]
    if loc.is_local:
        import shutil

        shutil.copytree(local, loc.url, dirs_exist_ok=True)
        return len(files)
    with errors(loc, "uploading to it"):
        fs = filesystem(loc)
        for p in files:
            fs.put_file(str(p), f"{_key(loc)}/{p.relative_to(local).as_posix()}")
    return len(files)
