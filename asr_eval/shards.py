"""THE shard schema and the shard writer (ingest: atomic, resumable, verified; local or object storage).

A corpus (a folder, or a prefix in a bucket) holds::

    shard-00000.parquet …   Parquet, bounded by rows and bytes (schema below)
    index.json              shards with row counts and hashes, splits, source, parameters,
                            schema version, package version
    quarantine.jsonl        every item kept out, with its reason and where it came from
    _progress.jsonl         the writer's journal (what is finished), used to resume
    meta/shard-00000.parquet …  each shard without its audio column (hashed in the index too):
                            what the store loader and text readers read (~1 % of the bytes)

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

The corpus may be a local folder or an object-store URL (``storage``): a shard is written to a
local file, hashed, then renamed or uploaded whole; the journal records it after that; the index,
written last, is what makes shards visible — a reader (``corpus_handle``, the one door to a
corpus) never sees a shard the index does not name, and checks each against the index (size and
SHA-256) before using a row of it. ``shard_check`` holds the checks.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from asr_eval import __version__
from asr_eval.audio import (
    MAX_DURATION_S, MAX_LONG_FORM_S, MIN_DURATION_S, TARGET_SR, AudioError, Reason, probe_duration,
)
from asr_eval.corpus.base import CorpusReader, Rejection, Utterance, has_content, slice_name, unencodable
from asr_eval.errors import AsrEvalError
from asr_eval import storage
from asr_eval.integrity import forget
from asr_eval.shard_check import INDEX_FILE, META_DIR, PROGRESS_FILE, QUARANTINE_FILE, ShardCheck, check_file, check_meta
from asr_eval.storage import Location, location
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
        if src is not None and storage.is_url(src):  # an object in a bucket: fetched by this worker
            src = storage.read_bytes(storage.location(src))
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


def _write_shard(dest: Location, table: pa.Table) -> tuple[str, int]:
    """Write a shard atomically, straight to a local file (no second in-memory copy of its audio),
    then move it to ``dest`` (a rename, or one upload to an object store); returns (sha256, bytes)."""
    import hashlib

    tmp = storage.staging_file(dest)
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
    storage.put_file(tmp, dest)
    return h.hexdigest(), size


def _q_record(item: Utterance | Rejection, reason: str, detail: str) -> dict:
    if isinstance(item, Rejection):
        return {"utt_id": item.utt_id, "reason": reason, "detail": detail, "where": item.where,
                "source_path": item.source_path}
    return {"utt_id": item.utt_id, "reason": reason, "detail": detail, "where": item.where,
            "source_path": item.source_path, "split": item.split}


class _Journal:
    """Append-only record of finished shards; what makes an ingest resumable. On an object store
    (no append) each entry rewrites the journal object — one PUT, after the shard's own upload."""

    def __init__(self, out: Location, fingerprint: str):
        self.path = out / PROGRESS_FILE
        self.entries: list[dict] = []
        if storage.stat(self.path) is not None:
            # split on '\n' only: str.splitlines() also breaks at U+2028/U+0085, which
            # json.dumps(ensure_ascii=False) leaves raw inside strings.
            for line in storage.read_text(self.path).split("\n"):
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
        storage.write_bytes(self.path, ("\n".join(lines) + "\n").encode())

    @property
    def resume_at(self) -> int:
        return self.entries[-1]["end"] if self.entries else 0

    def append(self, entry: dict) -> None:
        self.entries.append(entry)
        if not self.path.is_local:
            self._rewrite()
            return
        with open(self.path.path, "a") as f:
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


def _shard_entry(out: Location, name: str, rows: list[dict], schema: pa.Schema) -> dict:
    """Write one shard atomically, then its metadata file (the same rows without audio: what the
    store loader and the text readers read — ~1 % of the bytes, which matters when the corpus is in
    a bucket); their journal facts (names, hashes, sizes, splits, audio seconds)."""
    table = pa.Table.from_pylist(rows, schema=schema)
    rows[:] = [{k: v for k, v in r.items() if k != "audio"} for r in rows]  # in place: one copy of the audio
    meta = table.drop_columns(["audio"])
    digest, size = _write_shard(out / name, table)
    del table
    meta_name = f"{META_DIR}/{name}"
    meta_digest, meta_size = _write_shard(out / meta_name, meta)
    if out.is_local:
        forget(out.path / name)
        forget(out.path / meta_name)
    return {"shard": name, "sha256": digest, "bytes": size, "splits": dict(Counter(r["split"] for r in rows)),
            "audio_s": round(sum(r["duration_s"] for r in rows), 3),
            "meta": {"file": meta_name, "sha256": meta_digest, "bytes": meta_size}}


def _shard_no(name: str) -> int:
    return int(name.removeprefix("shard-").removesuffix(".parquet"))


def _repair(reader: CorpusReader, out: Location, journal: _Journal, opts: IngestOptions, schema: pa.Schema,
            corpus: str, meta_keys: dict[str, str], pool, workers: int) -> tuple[set[str], int]:
    """Check every finished shard against its journal entry (size + SHA-256) and rewrite the
    missing or corrupt ones from the source, each from exactly the items it held. Returns the
    utterance ids already taken (for duplicate detection) and the number of shards rewritten."""
    bad = {i for i, e in enumerate(journal.entries)
           if e.get("shard") and not (check_file(out, e["shard"], e.get("bytes"), e.get("sha256"), "shard").ok
                                      and (check_meta(out, e) or ShardCheck("", "meta")).ok)}
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
            for k in ("shard", "sha256", "bytes", "splits", "audio_s", "meta"):
                e.pop(k, None)
            if rows:
                e.update(_shard_entry(out, name, rows, schema))
            else:
                storage.delete(out / name)
                storage.delete(out / META_DIR / name)
            e.update(rows=len(rows), quarantine=qs)
        elif e.get("shard"):  # checked just above; its metadata file is the small read
            f = e.get("meta") or {"file": e["shard"], "sha256": e["sha256"], "bytes": e.get("bytes")}
            local = storage.verified_copy(out / f["file"], f["sha256"], f.get("bytes"))
            seen.update(pq.read_table(local, columns=["utt_id"]).column(0).to_pylist())
        # Ids of utterances quarantined after decoding were taken too (first occurrence wins).
        seen.update(q["utt_id"] for q in e["quarantine"]
                    if "split" in q and q["reason"] != Reason.DUPLICATE_ID and q["utt_id"])
    if bad:
        journal._rewrite()
    return seen, len(bad)


def _clear(out: Location) -> None:
    """Remove an earlier ingest from ``out`` (its shards, metadata, index, quarantine, journal)."""
    for n in [n for n in storage.listdir(out) if n.startswith("shard-") and n.endswith(".parquet")] + \
            [f"{META_DIR}/{n}" for n in storage.listdir(out / META_DIR)] + [INDEX_FILE, QUARANTINE_FILE, PROGRESS_FILE]:
        storage.delete(out / n)


def _journal_fingerprint(out: Location) -> str | None:
    path = out / PROGRESS_FILE
    if storage.stat(path) is None:
        return None
    first = storage.read_text(path).split("\n", 1)[0]
    try:
        return json.loads(first).get("fingerprint")
    except (json.JSONDecodeError, AttributeError):
        return None


def ingest(reader: CorpusReader, out_dir: str | Path, opts: IngestOptions | None = None,
           progress: bool = True, overwrite: bool = False, replace_stale: bool = False) -> IngestSummary:
    """Ingest a corpus source into shards. Idempotent and resumable: a re-run skips
    finished shards; a run killed part-way restarts after the last finished shard. An earlier
    ingest of another source (or with other options) in ``out_dir`` is an error, unless
    ``overwrite`` (always start afresh) or ``replace_stale`` (start afresh only then: a cache)."""
    opts = opts or IngestOptions()
    out = location(out_dir)
    t0 = time.perf_counter()
    storage.makedirs(out)  # a missing bucket fails here, before any decoding
    if overwrite:
        _clear(out)
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
    if replace_stale and _journal_fingerprint(out) not in (None, fingerprint):
        _clear(out)
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


def _finish(reader, out: Location, corpus, journal: _Journal, schema, slice_cols, params, n_items, t0,
            repaired: int = 0) -> IngestSummary:
    shards = [e for e in journal.entries if e.get("shard")]
    quarantine = [q for e in journal.entries for q in e["quarantine"]]
    storage.write_bytes(out / QUARANTINE_FILE,
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
                    "splits": e["splits"], "audio_s": e["audio_s"], **({"meta": e["meta"]} if e.get("meta") else {})}
                   for e in shards],
    }
    storage.write_bytes(out / INDEX_FILE, json.dumps(index, indent=2, ensure_ascii=False).encode())
    elapsed = time.perf_counter() - t0
    return IngestSummary(
        corpus=corpus, out_dir=storage.redact(out), n_items=n_items, n_ingested=index["n_utterances"],
        n_quarantined=len(quarantine), quarantine_by_reason=index["quarantine_by_reason"],
        by_split=index["splits"], hours=index["hours"], shards=len(shards),
        shards_skipped=0, shards_repaired=repaired, elapsed_s=round(elapsed, 3), audio_s_per_s=round(audio_s / max(elapsed, 1e-9), 1),
    )
