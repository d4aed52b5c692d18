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
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asr_eval import __version__
from asr_eval.audio import (
    MAX_DURATION_S, MAX_LONG_FORM_S, MIN_DURATION_S, TARGET_SR, AudioError, Reason, decode_flac, probe_duration,
)
from asr_eval.corpus.base import CorpusReader, Rejection, Utterance, has_content, slice_name
from asr_eval.errors import AsrEvalError
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


def _process(u: Utterance, min_s: float, max_s: float, keep_long: bool, long_form: bool = False,
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
            for line in self.path.read_text().splitlines():
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
            # Drop journal entries whose shard file vanished: they are redone.
            ok = []
            for e in self.entries:
                if e.get("shard") and not (out / e["shard"]).exists():
                    break
                ok.append(e)
            self.entries = ok
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
    slice_cols = sorted(set(meta_keys.values()))
    if len(slice_cols) != len(meta_keys):
        clash = Counter(meta_keys.values())
        raise AsrEvalError(f"metadata columns collide after renaming: "
                           f"{[k for k, v in meta_keys.items() if clash[v] > 1]}")
    schema = shard_schema(slice_cols)
    params = {k: v for k, v in asdict(opts).items() if k not in ("workers", "window", "window_audio_s")}
    fingerprint = stable_hash({"source": reader.describe(), "params": params, "columns": slice_cols,
                               "n_items": n_items, "schema": SCHEMA_VERSION})
    journal = _Journal(out, fingerprint)
    resume = journal.resume_at
    seen: set[str] = set()
    for e in journal.entries:
        if e.get("shard"):
            seen.update(pq.read_table(out / e["shard"], columns=["utt_id"]).column(0).to_pylist())
        # Ids of utterances quarantined after decoding were taken too (first occurrence wins).
        seen.update(q["utt_id"] for q in e["quarantine"]
                    if "split" in q and q["reason"] != Reason.DUPLICATE_ID and q["utt_id"])

    state = {"rows": [], "bytes": 0, "quarantine": [], "start": resume}
    shard_no = sum(1 for e in journal.entries if e.get("shard"))

    def flush(end: int) -> None:
        nonlocal shard_no
        rows, qs = state["rows"], state["quarantine"]
        entry: dict = {"start": state["start"], "end": end, "rows": len(rows), "quarantine": qs}
        if rows:
            name = f"shard-{shard_no:05d}.parquet"
            table = pa.Table.from_pylist(rows, schema=schema)
            state["rows"] = rows = [{k: v for k, v in r.items() if k != "audio"} for r in rows]  # one copy of the audio
            digest, size = _write_shard(out / name, table)
            del table
            entry.update(shard=name, sha256=digest, bytes=size,
                         splits=dict(Counter(r["split"] for r in rows)),
                         audio_s=round(sum(r["duration_s"] for r in rows), 3))
            shard_no += 1
        journal.append(entry)
        state.update(rows=[], bytes=0, quarantine=[], start=end)

    workers = opts.workers or os.cpu_count() or 1
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 1 else None
    bar = _progress_bar(progress, n_items, resume, corpus)
    try:
        # Every item passes through the window in source order, so a shard's journal entry
        # covers exactly the positions [start, end) and a resume never repeats a record.
        window: list[tuple[int, Utterance | Rejection, tuple[str, str] | None]] = []

        def drain() -> None:
            todo = [it for _, it, pre in window if pre is None]
            args = (opts.min_duration_s, opts.max_duration_s, opts.keep_long, opts.long_form, opts.max_long_s)
            if pool and todo:
                done = iter(pool.map(_process, todo, *[[a] * len(todo) for a in args],
                                     chunksize=max(1, len(todo) // (workers * 2))))
            else:
                done = iter([_process(u, *args) for u in todo])
            for pos, it, pre in window:
                res = pre if pre is not None else next(done)
                if isinstance(res, tuple):
                    state["quarantine"].append(_q_record(it, *res))
                else:
                    row = {"utt_id": it.utt_id, "split": it.split, "sample_rate": TARGET_SR, "text": it.text,
                           "speaker": it.speaker, "corpus": corpus, "source_path": it.source_path,
                           "segments": _segment_rows(it.segments), **res}
                    for k, v in it.metadata.items():
                        row[meta_keys[k]] = v
                    state["rows"].append(row)
                    state["bytes"] += len(res["audio"])
                if bar:
                    bar[0].update(bar[1], advance=1)
                if len(state["rows"]) >= opts.max_rows or state["bytes"] >= opts.max_bytes:
                    flush(pos + 1)
            window.clear()

        pos = -1
        in_flight = 0.0
        for pos, it in enumerate(reader.items()):
            if pos < resume:
                continue
            pre: tuple[str, str] | None = None
            if isinstance(it, Rejection):
                pre = (str(it.reason), it.detail)
            else:
                it.split = opts.split_map.get(it.split, it.split)
                if it.utt_id in seen:
                    pre = (str(Reason.DUPLICATE_ID), f"utt_id {it.utt_id!r} already used by an earlier item")
                else:
                    seen.add(it.utt_id)
                    if not has_content(it.text):
                        pre = (str(Reason.EMPTY_TRANSCRIPT), f"transcript {it.text!r} is empty or punctuation only")
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
        if bar:
            bar[0].stop()

    return _finish(reader, out, corpus, journal, schema, slice_cols, params, n_items, t0)


def _progress_bar(enabled: bool, total: int, done: int, corpus: str):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    p = Progress(TextColumn(f"ingest [bold]{corpus}[/]"), BarColumn(), MofNCompleteColumn(),
                 TimeRemainingColumn(), transient=False)
    p.start()
    return p, p.add_task("ingest", total=total, completed=done)


def _finish(reader, out: Path, corpus, journal: _Journal, schema, slice_cols, params, n_items, t0) -> IngestSummary:
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
        shards_skipped=0, elapsed_s=round(elapsed, 3), audio_s_per_s=round(audio_s / max(elapsed, 1e-9), 1),
    )


# ───────────────────────────── reader ─────────────────────────────


def read_index(corpus_dir: str | Path) -> dict:
    """The corpus index (``index.json``); a clear error when the folder is not a corpus."""
    p = Path(corpus_dir) / INDEX_FILE
    if not p.is_file():
        raise AsrEvalError(f"{corpus_dir} is not an ingested corpus (no {INDEX_FILE}); "
                           f"run `asr-eval ingest SOURCE --out {corpus_dir}` first")
    return json.loads(p.read_text())


def shard_paths(corpus_dir: str | Path) -> list[Path]:
    idx = read_index(corpus_dir)
    return [Path(corpus_dir) / s["file"] for s in idx["shards"]]


def read_quarantine(corpus_dir: str | Path) -> list[dict]:
    p = Path(corpus_dir) / QUARANTINE_FILE
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.exists() else []


def read_metadata(corpus_dir: str | Path, split: str | None = None) -> pa.Table:
    """All columns but the audio bytes, for every utterance (optionally of one split)."""
    tables = []
    for p in shard_paths(corpus_dir):
        cols = [c for c in pq.read_schema(p).names if c != "audio"]
        t = pq.read_table(p, columns=cols, filters=[("split", "=", split)] if split else None)
        tables.append(t)
    if not tables:
        return pa.table({c: [] for c in CORE_COLUMNS if c != "audio"})
    return pa.concat_tables(tables, promote_options="default")


def iter_shard_rows(shard: str | Path, split: str | None = None, columns: Sequence[str] | None = None,
                    batch_rows: int = 64) -> Iterator[dict]:
    """Rows of one shard as dicts (audio still FLAC bytes), streaming by record batch."""
    f = pq.ParquetFile(shard)
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
        t = pq.read_table(p, columns=["utt_id", "audio"], filters=[("utt_id", "in", list(want))])
        for uid, data in zip(t.column("utt_id").to_pylist(), t.column("audio").to_pylist(), strict=True):
            out[uid] = decode_flac(data)
    return out
