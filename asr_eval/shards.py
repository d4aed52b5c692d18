"""THE shard schema, the shard writer (ingest: atomic, resumable) and the shard reader.

A corpus directory holds::

    shard-00000.parquet …   Parquet, bounded by rows and bytes (schema below)
    index.json              shards with row counts and hashes, splits, source, parameters,
                            schema version, package version
    quarantine.jsonl        every item kept out, with its reason and where it came from
    _progress.jsonl         the writer's journal (what is finished), used to resume

Shard schema (version 2) — core columns, then one nullable string column per slice:

=============  ============  =====================================================
utt_id         string        unique within the corpus
split          string        after the optional split mapping (e.g. train+dev→train)
audio          binary        16 kHz mono 16-bit FLAC bytes (never log-mel features)
sample_rate    int32         always 16000
duration_s     float64       of the stored audio
text           string        raw transcript as the source wrote it; normalized only at scoring
speaker        string        speaker / client id when the source has one
corpus         string        corpus name
source_path    string        audio path (or row) as written in the source
audio_sha256   string        of the FLAC bytes
qc_flags       list<string>  'too_long' when --keep-long admitted a >30 s clip; 'long_form' for a
                             recording kept by --long-form (scored with a long-form strategy)
segments       list<struct>  [{start, end, text}] in time order: the reference's segment times of a
                             recording (Kaldi --recording-level, manifests with segments); null
                             otherwise. New in version 2; version-1 shards read as all-null
<slice cols>   string        every metadata column (accent, gender, age, up_votes, …),
                             names lower-cased to [a-z0-9_]; values kept as text
=============  ============  =====================================================

Shards open as they are in DuckDB (``SELECT … FROM 'DIR/*.parquet'``) and with
``datasets.load_dataset("parquet", data_files=…)``.

Every reader here checks a shard against ``index.json`` (size and SHA-256, cached by
size/mtime in ``.verified.json``) before using a row of it: corrupt data is never scored,
trained on or embedded. ``verify_corpus`` checks a whole corpus (``asr-eval verify``).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asr_eval import __version__
from asr_eval.audio import (
    MAX_DURATION_S, MAX_LONG_FORM_S, MIN_DURATION_S, TARGET_SR, AudioError, Reason, decode_flac, probe_duration,
)
from asr_eval.corpus.base import CorpusReader, Rejection, Utterance, has_content, slice_name, unencodable
from asr_eval.errors import AsrEvalError
from asr_eval.integrity import forget, hashed
from asr_eval.progress import Progress
from asr_eval.provenance import stable_hash

SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)  # version 1 lacks ``segments``
SEGMENT_TYPE = pa.list_(pa.struct([("start", pa.float64()), ("end", pa.float64()), ("text", pa.string())]))

CORE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("utt_id", pa.string(), nullable=False),
    pa.field("split", pa.string()),
    pa.field("audio", pa.binary()),
    pa.field("sample_rate", pa.int32()),
    pa.field("duration_s", pa.float64()),
    pa.field("text", pa.string()),
    pa.field("speaker", pa.string()),
    pa.field("corpus", pa.string()),
    pa.field("source_path", pa.string()),
    pa.field("audio_sha256", pa.string()),
    pa.field("qc_flags", pa.list_(pa.string())),
    pa.field("segments", SEGMENT_TYPE),
)
CORE_COLUMNS = tuple(f.name for f in CORE_FIELDS)
INDEX_FILE, QUARANTINE_FILE, PROGRESS_FILE = "index.json", "quarantine.jsonl", "_progress.jsonl"


def shard_schema(slice_columns: Sequence[str]) -> pa.Schema:
    """The Arrow schema of every shard of a corpus with these slice columns."""
    return pa.schema(list(CORE_FIELDS) + [pa.field(c, pa.string()) for c in slice_columns],
                     metadata={b"asr_eval_schema_version": str(SCHEMA_VERSION).encode()})


# ───────────────────────────── writer ─────────────────────────────


@dataclass
class IngestOptions:
    max_rows: int = 2000
    max_bytes: int = 128 * 2**20
    min_duration_s: float = MIN_DURATION_S
    max_duration_s: float = MAX_DURATION_S
    keep_long: bool = False  # admit >max_duration_s clips, flagged 'too_long'
    long_form: bool = False  # admit recordings up to max_long_s, flagged 'long_form', encoded in blocks
    max_long_s: float = MAX_LONG_FORM_S
    window_audio_s: float = 1800.0  # long-form: audio seconds in flight per round trip (bounds memory)
    split_map: dict[str, str] = field(default_factory=dict)
    workers: int = 0  # 0: one per core; 1: in-process
    corpus_name: str | None = None
    window: int = 64  # items decoded per round trip to the worker pool (bounds memory)


@dataclass
class IngestSummary:
    corpus: str
    out_dir: str
    n_items: int
    n_ingested: int
    n_quarantined: int
    quarantine_by_reason: dict[str, int]
    by_split: dict[str, int]
    hours: float
    shards: int
    shards_skipped: int
    elapsed_s: float
    audio_s_per_s: float
    shards_repaired: int = 0  # finished shards found missing/corrupt on resume and rewritten


def parse_split_map(specs: Sequence[str]) -> dict[str, str]:
    """['train+dev=train', 'test:eval', 'validated→all'] → {'train': 'train', 'dev': 'train', …}."""
    out: dict[str, str] = {}
    for spec in specs:
        for sep in ("→", "->", "=", ":"):
            if sep in spec:
                left, right = spec.split(sep, 1)
                break
        else:
            raise AsrEvalError(f"split mapping {spec!r} must look like 'train+dev=train'")
        for s in left.split("+"):
            if s.strip() and right.strip():
                out[s.strip()] = right.strip()
    return out


def _source_span(u: Utterance) -> float | None:
    """Seconds an item will decode to, from its record or the file header (no decoding)."""
    if u.duration_s is not None:
        return u.duration_s
    full = probe_duration(u.audio_bytes if u.audio_bytes is not None else u.audio_path)
    return None if full is None else max(0.0, full - u.offset_s)


def process_item(u: Utterance, min_s: float, max_s: float, keep_long: bool, long_form: bool = False,
             max_long_s: float = MAX_LONG_FORM_S) -> dict | tuple[str, str]:
    """Worker: decode → 16 kHz mono → validate → FLAC. Returns a row or (reason, detail).
    With ``long_form``, a recording over ``max_s`` is kept up to ``max_long_s`` (flag 'long_form')
    and streamed block by block, so its memory is bounded by the FLAC bytes."""
    from asr_eval import audio as A

    src = u.audio_bytes if u.audio_bytes is not None else u.audio_path
    try:
        if long_form:
            span = _source_span(u)
            if span is None or span > max_s:
                enc = A.encode_streaming(src, u.offset_s, u.duration_s, min_s, max_long_s)
                return {"audio": enc.flac, "duration_s": round(enc.duration_s, 6), "audio_sha256": A.sha256(enc.flac),
                        "qc_flags": ["long_form"] if enc.duration_s > max_s else []}
        a = A.load(src, u.offset_s, u.duration_s)
        flags: list[str] = []
        try:
            A.validate(a.samples, min_s, max_s)
        except AudioError as e:
            if not (keep_long and e.reason is Reason.TOO_LONG):
                raise
            A.validate(a.samples, min_s, None)
            flags.append("too_long")
        flac = A.encode_flac(a.samples)
    except AudioError as e:
        return (str(e.reason), e.detail)
    except Exception as e:  # never lose the run to one odd file
        return (str(Reason.UNREADABLE), f"{type(e).__name__}: {e}")
    return {"audio": flac, "duration_s": round(len(a.samples) / A.TARGET_SR, 6),
            "audio_sha256": A.sha256(flac), "qc_flags": flags}


def _segment_rows(segments) -> list[dict] | None:
    """Reference segments as shard values: [{start, end, text}] in time order, or None."""
    if not segments:
        return None
    return [{"start": float(a), "end": float(b), "text": t} for a, b, t in sorted(segments, key=lambda s: (s[0], s[1]))]


def _write_shard(path: Path, table: pa.Table) -> tuple[str, int]:
    """Write a shard atomically, straight to disk (no second in-memory copy of its audio);
    returns (sha256, bytes) of the file."""
    import hashlib

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    # Row groups of at most ~64 MB (and 256 rows): readers stream a group at a time, so a shard of
    # hour-long recordings is never read whole.
    per_row = table.nbytes / max(1, table.num_rows)
    pq.write_table(table, tmp, compression="zstd", row_group_size=max(1, min(256, int(2**26 // max(per_row, 1)))))
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
        os.fsync(f.fileno())
    size = tmp.stat().st_size
    os.replace(tmp, path)
    return h.hexdigest(), size


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _q_record(item: Utterance | Rejection, reason: str, detail: str) -> dict:
    if isinstance(item, Rejection):
        return {"utt_id": item.utt_id, "reason": reason, "detail": detail, "where": item.where,
                "source_path": item.source_path}
    return {"utt_id": item.utt_id, "reason": reason, "detail": detail, "where": item.where,
            "source_path": item.source_path, "split": item.split}


class _Journal:
    """Append-only record of finished shards; what makes an ingest resumable."""

    def __init__(self, out: Path, fingerprint: str):
        self.path = out / PROGRESS_FILE
        self.entries: list[dict] = []
        if self.path.exists():
            # split on '\n' only: str.splitlines() also breaks at U+2028/U+0085, which
            # json.dumps(ensure_ascii=False) leaves raw inside strings.
            for line in self.path.read_text().split("\n"):
                if not line.strip():
                    continue
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:
                    break  # a torn last line from a kill: everything after it is redone
                self.entries.append(e)
            head = self.entries[0] if self.entries else None
            if head and head.get("fingerprint") != fingerprint:
                raise AsrEvalError(
                    f"{out} holds an ingest of a different source or with different options; "
                    "use another --out directory or delete it (or pass --overwrite)"
                )
            self.entries = [e for e in self.entries if "end" in e]
            # A finished shard that is now missing or corrupt is rewritten by ``_repair``:
            # the journal alone is not trusted.
        self._fh = None
        self._fingerprint = fingerprint
        self._rewrite()

    def _rewrite(self) -> None:
        lines = [json.dumps({"fingerprint": self._fingerprint})] + [json.dumps(e, ensure_ascii=False) for e in self.entries]
        _atomic_write(self.path, ("\n".join(lines) + "\n").encode())

    @property
    def resume_at(self) -> int:
        return self.entries[-1]["end"] if self.entries else 0

    def append(self, entry: dict) -> None:
        self.entries.append(entry)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _unique_slice_names(meta_keys: dict[str, str]) -> dict[str, str]:
    """Metadata keys (in first-seen order) → distinct column names: 'Accent' and 'accent' both
    lower-case to 'accent', so the later one becomes 'accent_2' (deterministic for a source). A
    column named like a slice the store derives itself (speaker, duration_bucket, contaminated)
    is renamed the same way, so the two never mix in one slice."""
    from asr_eval.slices import DERIVED_ATTRS

    out: dict[str, str] = {}
    taken: set[str] = set(DERIVED_ATTRS)
    for key, name in meta_keys.items():
        cand, k = name, 1
        while cand in taken:
            k += 1
            cand = f"{name}_{k}"
        taken.add(cand)
        out[key] = cand
    return out


def _admit(it: Utterance | Rejection, opts: IngestOptions, seen: set[str]) -> tuple[str, str] | None:
    """The checks made before decoding: (reason, detail) to quarantine, or None to decode."""
    if isinstance(it, Rejection):
        return (str(it.reason), it.detail)
    bad = unencodable(it.utt_id, it.text, it.split, it.speaker, it.source_path, *it.metadata.values())
    if bad is not None:
        return (str(Reason.BAD_ENCODING), f"{bad[:80]!r} is not valid Unicode (a lone surrogate, e.g. from a "
                                          "JSON '\\ud800' escape); fix the source line")
    it.split = opts.split_map.get(it.split, it.split)
    if it.utt_id in seen:
        return (str(Reason.DUPLICATE_ID), f"utt_id {it.utt_id!r} already used by an earlier item")
    seen.add(it.utt_id)
    if not has_content(it.text):
        return (str(Reason.EMPTY_TRANSCRIPT), f"transcript {it.text!r} is empty or punctuation only")
    return None


def _decode_all(todo: list[Utterance], opts: IngestOptions, pool, workers: int) -> list[dict | tuple[str, str]]:
    args = (opts.min_duration_s, opts.max_duration_s, opts.keep_long, opts.long_form, opts.max_long_s)
    if pool and todo:
        return list(pool.map(process_item, todo, *[[a] * len(todo) for a in args],
                             chunksize=max(1, len(todo) // (workers * 2))))
    return [process_item(u, *args) for u in todo]


def _shard_row(it: Utterance, res: dict, corpus: str, meta_keys: dict[str, str]) -> dict:
    row = {"utt_id": it.utt_id, "split": it.split, "sample_rate": TARGET_SR, "text": it.text,
           "speaker": it.speaker, "corpus": corpus, "source_path": it.source_path,
           "segments": _segment_rows(it.segments), **res}
    for k, v in it.metadata.items():
        row[meta_keys[k]] = v
    return row


def _shard_entry(out: Path, name: str, rows: list[dict], schema: pa.Schema) -> dict:
    """Write one shard atomically; its journal facts (name, hash, size, splits, audio seconds)."""
    table = pa.Table.from_pylist(rows, schema=schema)
    rows[:] = [{k: v for k, v in r.items() if k != "audio"} for r in rows]  # in place: one copy of the audio
    digest, size = _write_shard(out / name, table)
    del table
    forget(out / name)
    return {"shard": name, "sha256": digest, "bytes": size, "splits": dict(Counter(r["split"] for r in rows)),
            "audio_s": round(sum(r["duration_s"] for r in rows), 3)}


def _shard_no(name: str) -> int:
    return int(name.removeprefix("shard-").removesuffix(".parquet"))


def _repair(reader: CorpusReader, out: Path, journal: _Journal, opts: IngestOptions, schema: pa.Schema,
            corpus: str, meta_keys: dict[str, str], pool, workers: int) -> tuple[set[str], int]:
    """Check every finished shard against its journal entry (size + SHA-256) and rewrite the
    missing or corrupt ones from the source, each from exactly the items it held. Returns the
    utterance ids already taken (for duplicate detection) and the number of shards rewritten."""
    bad = {i for i, e in enumerate(journal.entries)
           if e.get("shard") and not _check_file(out, e["shard"], e.get("bytes"), e.get("sha256"), "shard").ok}
    items: dict[int, Utterance | Rejection] = {}
    if bad:
        ranges = [(journal.entries[i]["start"], journal.entries[i]["end"]) for i in sorted(bad)]
        for pos, it in enumerate(reader.items()):
            if any(a <= pos < b for a, b in ranges):
                items[pos] = it
    seen: set[str] = set()
    for i, e in enumerate(journal.entries):
        if i in bad:
            window = [(it, _admit(it, opts, seen)) for pos, it in sorted(items.items()) if e["start"] <= pos < e["end"]]
            done = iter(_decode_all([it for it, pre in window if pre is None], opts, pool, workers))
            rows, qs = [], []
            for it, pre in window:
                res = pre if pre is not None else next(done)
                if isinstance(res, tuple):
                    qs.append(_q_record(it, *res))
                else:
                    rows.append(_shard_row(it, res, corpus, meta_keys))
            name = e["shard"]
            for k in ("shard", "sha256", "bytes", "splits", "audio_s"):
                e.pop(k, None)
            if rows:
                e.update(_shard_entry(out, name, rows, schema))
            else:
                (out / name).unlink(missing_ok=True)
            e.update(rows=len(rows), quarantine=qs)
        elif e.get("shard"):
            seen.update(pq.read_table(out / e["shard"], columns=["utt_id"]).column(0).to_pylist())
        # Ids of utterances quarantined after decoding were taken too (first occurrence wins).
        seen.update(q["utt_id"] for q in e["quarantine"]
                    if "split" in q and q["reason"] != Reason.DUPLICATE_ID and q["utt_id"])
    if bad:
        journal._rewrite()
    return seen, len(bad)


def ingest(reader: CorpusReader, out_dir: str | Path, opts: IngestOptions | None = None,
           progress: bool = True, overwrite: bool = False) -> IngestSummary:
    """Ingest a corpus source into shards. Idempotent and resumable: a re-run skips
    finished shards; a run killed part-way restarts after the last finished shard."""
    opts = opts or IngestOptions()
    out = Path(out_dir)
    t0 = time.perf_counter()
    if overwrite and out.exists():
        for p in list(out.glob("shard-*.parquet")) + [out / n for n in (INDEX_FILE, QUARANTINE_FILE, PROGRESS_FILE)]:
            p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    corpus = opts.corpus_name or reader.name

    # Pass 1 (metadata only, no audio): the slice columns and the item count.
    meta_keys: dict[str, str] = {}
    n_items = 0
    for it in reader.items():
        n_items += 1
        if isinstance(it, Utterance):
            for k in it.metadata:
                meta_keys.setdefault(k, slice_name(k))
    meta_keys = _unique_slice_names(meta_keys)
    slice_cols = sorted(meta_keys.values())
    schema = shard_schema(slice_cols)
    params = {k: v for k, v in asdict(opts).items() if k not in ("workers", "window", "window_audio_s")}
    fingerprint = stable_hash({"source": reader.describe(), "params": params, "columns": slice_cols,
                               "n_items": n_items, "schema": SCHEMA_VERSION})
    journal = _Journal(out, fingerprint)
    resume = journal.resume_at
    workers = opts.workers or os.cpu_count() or 1
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 1 else None
    bar: Progress | None = None
    try:
        seen, repaired = _repair(reader, out, journal, opts, schema, corpus, meta_keys, pool, workers)
        state = {"rows": [], "bytes": 0, "quarantine": [], "start": resume}
        shard_no = max((_shard_no(e["shard"]) + 1 for e in journal.entries if e.get("shard")), default=0)

        def flush(end: int) -> None:
            nonlocal shard_no
            rows, qs = state["rows"], state["quarantine"]
            entry: dict = {"start": state["start"], "end": end, "rows": len(rows), "quarantine": qs}
            state.update(rows=[], bytes=0, quarantine=[], start=end)
            if rows:
                entry.update(_shard_entry(out, f"shard-{shard_no:05d}.parquet", rows, schema))
                shard_no += 1
            journal.append(entry)

        bar = _progress_bar(progress, n_items, resume, corpus)
        # Every item passes through the window in source order, so a shard's journal entry
        # covers exactly the positions [start, end) and a resume never repeats a record.
        window: list[tuple[int, Utterance | Rejection, tuple[str, str] | None]] = []

        def drain() -> None:
            done = iter(_decode_all([it for _, it, pre in window if pre is None], opts, pool, workers))
            for pos, it, pre in window:
                res = pre if pre is not None else next(done)
                if isinstance(res, tuple):
                    state["quarantine"].append(_q_record(it, *res))
                else:
                    state["rows"].append(_shard_row(it, res, corpus, meta_keys))
                    state["bytes"] += len(res["audio"])
                bar.advance(1, res["duration_s"] if isinstance(res, dict) else 0.0)
                if len(state["rows"]) >= opts.max_rows or state["bytes"] >= opts.max_bytes:
                    flush(pos + 1)
            window.clear()

        pos = -1
        in_flight = 0.0
        for pos, it in enumerate(reader.items()):
            if pos < resume:
                continue
            pre = _admit(it, opts, seen)
            window.append((pos, it, pre))
            if opts.long_form and pre is None:
                # a window of recordings is bounded by audio seconds too (their FLAC bytes come back at once)
                in_flight += _source_span(it) or opts.max_duration_s
            if len(window) >= opts.window or in_flight >= opts.window_audio_s:
                drain()
                in_flight = 0.0
        drain()
        if pos + 1 > journal.resume_at:
            flush(pos + 1)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()

    return _finish(reader, out, corpus, journal, schema, slice_cols, params, n_items, t0, repaired)


def _progress_bar(enabled: bool, total: int, done: int, corpus: str) -> Progress:
    return Progress(f"ingest {corpus}", total, "items", enabled=enabled, initial=done)


def _finish(reader, out: Path, corpus, journal: _Journal, schema, slice_cols, params, n_items, t0,
            repaired: int = 0) -> IngestSummary:
    shards = [e for e in journal.entries if e.get("shard")]
    quarantine = [q for e in journal.entries for q in e["quarantine"]]
    _atomic_write(out / QUARANTINE_FILE,
                  "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in quarantine).encode())
    by_split: Counter = Counter()
    for e in shards:
        by_split.update(e["splits"])
    audio_s = sum(e["audio_s"] for e in shards)
    reasons = Counter(q["reason"] for q in quarantine)
    index = {
        "corpus": corpus,
        "schema_version": SCHEMA_VERSION,
        "asr_eval_version": __version__,
        "source": reader.describe(),
        "params": params,
        "columns": [f.name for f in schema],
        "slice_columns": slice_cols,
        "n_items": n_items,
        "n_utterances": sum(e["rows"] for e in shards),
        "n_quarantined": len(quarantine),
        "quarantine_by_reason": dict(sorted(reasons.items())),
        "splits": dict(sorted(by_split.items())),
        "hours": round(audio_s / 3600, 6),
        "shards": [{"file": e["shard"], "rows": e["rows"], "sha256": e["sha256"], "bytes": e["bytes"],
                    "splits": e["splits"], "audio_s": e["audio_s"]} for e in shards],
    }
    _atomic_write(out / INDEX_FILE, json.dumps(index, indent=2, ensure_ascii=False).encode())
    elapsed = time.perf_counter() - t0
    return IngestSummary(
        corpus=corpus, out_dir=str(out), n_items=n_items, n_ingested=index["n_utterances"],
        n_quarantined=len(quarantine), quarantine_by_reason=index["quarantine_by_reason"],
        by_split=index["splits"], hours=index["hours"], shards=len(shards),
        shards_skipped=0, shards_repaired=repaired, elapsed_s=round(elapsed, 3), audio_s_per_s=round(audio_s / max(elapsed, 1e-9), 1),
    )


# ───────────────────────────── verification ─────────────────────────────


@dataclass(frozen=True)
class ShardCheck:
    """One corpus file checked: a shard against its recorded size and SHA-256, or a JSON-lines
    file (quarantine, journal) line by line. ``problem`` is '' when the file is sound."""

    file: str
    kind: str  # 'shard' | 'index' | 'quarantine' | 'journal'
    problem: str = ""  # '' | 'missing' | 'size' | 'sha256' | 'unreadable' | 'not_in_index' | 'bad_lines'
    detail: str = ""
    expected_bytes: int | None = None
    actual_bytes: int | None = None
    expected_sha256: str | None = None
    actual_sha256: str | None = None
    rows: int | None = None
    cached: bool = False  # the hash came from the verification cache

    @property
    def ok(self) -> bool:
        return not self.problem


def _check_file(out: Path, name: str, exp_bytes: int | None, exp_sha: str | None, kind: str) -> ShardCheck:
    """Size, then SHA-256 (cached by size/mtime/inode), then the Parquet footer."""
    path = out / name
    base = dict(file=name, kind=kind, expected_bytes=exp_bytes, expected_sha256=exp_sha)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return ShardCheck(**base, problem="missing", detail="the file does not exist")
    except OSError as e:
        return ShardCheck(**base, problem="unreadable", detail=f"{type(e).__name__}: {e}")
    if exp_bytes is not None and size != exp_bytes:
        return ShardCheck(**base, actual_bytes=size, problem="size",
                          detail=f"{size} bytes but index.json records {exp_bytes}")
    try:
        facts = hashed(path)
    except OSError as e:
        return ShardCheck(**base, actual_bytes=size, problem="unreadable", detail=f"{type(e).__name__}: {e}")
    if exp_sha is not None and facts.sha256 != exp_sha:
        return ShardCheck(**base, actual_bytes=size, actual_sha256=facts.sha256, problem="sha256",
                          detail=f"SHA-256 {facts.sha256[:16]}… but index.json records {exp_sha[:16]}…")
    rows = None
    if not facts.cached:
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException) as e:
            return ShardCheck(**base, actual_bytes=size, actual_sha256=facts.sha256, problem="unreadable",
                              detail=f"not readable as Parquet: {e}")
    return ShardCheck(**base, actual_bytes=size, actual_sha256=facts.sha256, rows=rows, cached=facts.cached)


def verify_shard(corpus_dir: str | Path, shard: str | Path, index: dict | None = None) -> ShardCheck:
    """Check one shard (a file name or path inside ``corpus_dir``) against ``index.json``."""
    corpus_dir = Path(corpus_dir)
    name = Path(shard).name
    idx = index if index is not None else read_index(corpus_dir)
    entry = next((s for s in idx.get("shards", []) if s.get("file") == name), None)
    if entry is None:
        return ShardCheck(file=name, kind="shard", problem="not_in_index",
                          detail="index.json does not list this shard (left over from an interrupted ingest?)")
    check = _check_file(corpus_dir, name, entry.get("bytes"), entry.get("sha256"), "shard")
    if check.ok and check.rows is not None and check.rows != entry.get("rows"):
        return replace(check, problem="unreadable", detail=f"{check.rows} rows but index.json records {entry.get('rows')}")
    return replace(check, rows=entry.get("rows")) if check.ok else check


def _check_jsonl(path: Path, kind: str) -> ShardCheck:
    if not path.exists():
        return ShardCheck(file=path.name, kind=kind, problem="missing", detail="the file does not exist")
    bad, n = [], 0
    for i, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        n += 1
        try:
            if not isinstance(json.loads(line), dict):
                bad.append(i)
        except ValueError:
            bad.append(i)
    if bad:
        return ShardCheck(file=path.name, kind=kind, rows=n, problem="bad_lines",
                          detail=f"{len(bad)} unparseable line(s): {', '.join(map(str, bad[:5]))}"
                                 + ("…" if len(bad) > 5 else ""))
    return ShardCheck(file=path.name, kind=kind, rows=n)


def verify_corpus(corpus_dir: str | Path) -> list[ShardCheck]:
    """Every shard of a corpus against ``index.json``, plus stray shards and the quarantine and
    journal files (each line must parse). Uses and refreshes the verification cache."""
    corpus_dir = Path(corpus_dir)
    try:
        idx = read_index(corpus_dir)
    except AsrEvalError as e:
        return [ShardCheck(file=INDEX_FILE, kind="index", problem="unreadable", detail=str(e))]
    checks = [ShardCheck(file=INDEX_FILE, kind="index", rows=idx.get("n_utterances"))]
    checks += [verify_shard(corpus_dir, s["file"], idx) for s in idx.get("shards", [])]
    listed = {s["file"] for s in idx.get("shards", [])}
    checks += [ShardCheck(file=p.name, kind="shard", problem="not_in_index",
                          detail="index.json does not list it; readers of 'DIR/*.parquet' would include it")
               for p in sorted(corpus_dir.glob("shard-*.parquet")) if p.name not in listed]
    checks.append(_check_jsonl(corpus_dir / QUARANTINE_FILE, "quarantine"))
    if (corpus_dir / PROGRESS_FILE).exists():
        checks.append(_check_jsonl(corpus_dir / PROGRESS_FILE, "journal"))
    return checks


def fix_hint(corpus_dir: str | Path, index: dict | None = None) -> str:
    """How to repair a corpus: the ingest command that made it, run again."""
    src = (index or {}).get("source") or {}
    where = src.get("path") or src.get("source") or "SOURCE"
    return (f"re-run `asr-eval ingest {where} --out {corpus_dir}` with the same arguments as the first "
            "time: it checks every finished shard and rewrites the corrupt ones "
            f"(`asr-eval verify {corpus_dir}` lists every problem)")


def require_shard(shard: str | Path, corpus_dir: str | Path | None = None) -> Path:
    """The shard's path once it matches ``index.json``; else an ``AsrEvalError`` naming the shard,
    what is wrong and the fix. Every shard reader calls this before using a row."""
    shard = Path(shard)
    corpus_dir = Path(corpus_dir) if corpus_dir is not None else shard.parent
    idx = read_index(corpus_dir)
    check = verify_shard(corpus_dir, shard.name, idx)
    if not check.ok:
        raise AsrEvalError(f"corpus {corpus_dir}: shard {check.file} is {'missing' if check.problem == 'missing' else 'corrupt'}"
                           f" — {check.detail}; nothing from it is used. Fix: {fix_hint(corpus_dir, idx)}")
    return corpus_dir / check.file


# ───────────────────────────── reader ─────────────────────────────


def read_index(corpus_dir: str | Path) -> dict:
    """The corpus index (``index.json``); a clear error when the folder is not a corpus."""
    p = Path(corpus_dir) / INDEX_FILE
    if not p.is_file():
        raise AsrEvalError(f"{corpus_dir} is not an ingested corpus (no {INDEX_FILE}); "
                           f"run `asr-eval ingest SOURCE --out {corpus_dir}` first")
    try:
        idx = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise AsrEvalError(f"{p} is unreadable ({e}); re-run `asr-eval ingest` with the same arguments "
                           f"to rebuild it") from None
    if not isinstance(idx, dict) or not isinstance(idx.get("shards"), list):
        raise AsrEvalError(f"{p} is not a corpus index (no 'shards' list); re-run `asr-eval ingest` to rebuild it")
    return idx


def shard_paths(corpus_dir: str | Path) -> list[Path]:
    idx = read_index(corpus_dir)
    return [Path(corpus_dir) / s["file"] for s in idx["shards"]]


def read_quarantine(corpus_dir: str | Path) -> list[dict]:
    p = Path(corpus_dir) / QUARANTINE_FILE
    return [json.loads(ln) for ln in p.read_text().split("\n") if ln.strip()] if p.exists() else []


def read_metadata(corpus_dir: str | Path, split: str | None = None) -> pa.Table:
    """All columns but the audio bytes, for every utterance (optionally of one split)."""
    tables = []
    for p in shard_paths(corpus_dir):
        require_shard(p, corpus_dir)
        cols = [c for c in pq.read_schema(p).names if c != "audio"]
        t = pq.read_table(p, columns=cols, filters=[("split", "=", split)] if split else None)
        tables.append(t)
    if not tables:
        return pa.table({c: [] for c in CORE_COLUMNS if c != "audio"})
    return pa.concat_tables(tables, promote_options="default")


def iter_shard_rows(shard: str | Path, split: str | None = None, columns: Sequence[str] | None = None,
                    batch_rows: int = 64) -> Iterator[dict]:
    """Rows of one shard as dicts (audio still FLAC bytes), streaming by record batch."""
    f = pq.ParquetFile(require_shard(shard))
    for rb in f.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None):
        for row in rb.to_pylist():
            if split is None or row.get("split") == split:
                yield row


def iter_batches(corpus_dir: str | Path, split: str | None = None, batch_size: int = 16,
                 shards: Sequence[str | Path] | None = None, columns: Sequence[str] | None = None,
                 ) -> Iterator[list[dict]]:
    """Batches of rows with ``audio`` decoded to 16 kHz float32 arrays; streams shard by shard."""
    paths = [Path(s) for s in shards] if shards is not None else shard_paths(corpus_dir)
    batch: list[dict] = []
    for p in paths:
        for row in iter_shard_rows(p, split, columns):
            if row.get("audio") is not None:
                row["audio"] = decode_flac(row["audio"])
            batch.append(row)
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def load_audio(corpus_dir: str | Path, utt_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Decoded audio of a few utterances by id."""
    want, out = set(utt_ids), {}
    for p in shard_paths(corpus_dir):
        require_shard(p, corpus_dir)
        t = pq.read_table(p, columns=["utt_id", "audio"], filters=[("utt_id", "in", list(want))])
        for uid, data in zip(t.column("utt_id").to_pylist(), t.column("audio").to_pylist(), strict=True):
            out[uid] = decode_flac(data)
    return out
