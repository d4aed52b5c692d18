"""Embed a few utterances' audio in the report as data URIs, reading only those rows from the shards.

An item is (corpus_id, utt_id) for the whole stored file, or (corpus_id, utt_id, start_s, end_s)
for an excerpt (long recordings: only the seconds around the shown diff windows, re-encoded as FLAC)."""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from asr_eval import storage
from asr_eval.corpus_handle import open_corpus
from asr_eval.errors import AsrEvalError
from asr_eval.shard_check import INDEX_FILE
from asr_eval.storage import location

_MAGIC = ((b"fLaC", "audio/flac"), (b"RIFF", "audio/wav"), (b"OggS", "audio/ogg"), (b"ID3", "audio/mpeg"))


@dataclass
class AudioEmbed:
    """Data URIs by key, which utterance maps to which key, and what was left out and why."""

    uris: dict[str, str] = field(default_factory=dict)
    keys: dict[tuple, str] = field(default_factory=dict)  # (corpus_id, utt_id[, start_s, end_s]) -> key
    missing: dict[tuple, str] = field(default_factory=dict)  # item -> reason
    total_bytes: int = 0
    cap_bytes: int = 0
    n_capped: int = 0


def mime_of(data: bytes) -> str:
    return next((m for magic, m in _MAGIC if data.startswith(magic)), "application/octet-stream")


def _shard_files(corpus_dir: str | Path) -> Iterator[Callable[[], Path]]:
    """Each shard as a callable giving its verified local file (raising when it does not match
    ``index.json``); a plain folder of Parquet files without an index is read as it is."""
    loc = location(corpus_dir)
    if storage.stat(loc / INDEX_FILE) is None:
        for p in sorted(loc.path.glob("*.parquet")) if loc.is_local else []:
            yield lambda p=p: p
        return
    corpus = open_corpus(loc)
    for s in corpus.shards:
        yield lambda s=s: corpus.verified(s)


def corpus_available(corpus_dir: str | None) -> bool:
    """The stored corpus location still holds a corpus (a folder, or an index at the URL)."""
    if not corpus_dir:
        return False
    try:
        loc = location(corpus_dir)
        return Path(loc.url).is_dir() if loc.is_local else storage.stat(loc / INDEX_FILE) is not None
    except AsrEvalError:
        return False


def read_audio_bytes(corpus_dir: str | Path, utt_ids: Sequence[str],
                     problems: list[str] | None = None) -> dict[str, bytes]:
    """Stored (FLAC) bytes of a few utterances; row groups without them are skipped by the filter.
    A shard that does not match ``index.json`` is not read: its error goes to ``problems``
    (or is raised when no list is given)."""
    want = set(utt_ids)
    out: dict[str, bytes] = {}
    for verified in _shard_files(corpus_dir):
        left = list(want - out.keys())
        if not left:
            break
        try:
            p = verified()
        except AsrEvalError as exc:
            if problems is None:
                raise
            problems.append(str(exc))
            continue
        t = pq.read_table(p, columns=["utt_id", "audio"], filters=[("utt_id", "in", left)])
        for uid, data in zip(t.column("utt_id").to_pylist(), t.column("audio").to_pylist(), strict=True):
            if data is not None:
                out[uid] = data
    return out


def embed_audio(wanted: Sequence[tuple], corpus_paths: dict[str, str | None], cap_bytes: int) -> AudioEmbed:
    """Embed audio for (corpus_id, utt_id) or excerpts (corpus_id, utt_id, start_s, end_s) in
    priority order until ``cap_bytes`` of data URIs are used."""
    from asr_eval.report.windows import excerpt_flac

    emb = AudioEmbed(cap_bytes=cap_bytes)
    order = list(dict.fromkeys(wanted))
    by_corpus: dict[str, list[str]] = defaultdict(list)
    for cid, uid, *_ in order:
        if uid not in by_corpus[cid]:
            by_corpus[cid].append(uid)
    found: dict[tuple[str, str], bytes] = {}
    bad_shards: dict[str, list[str]] = {}
    for cid, uids in by_corpus.items():
        path = corpus_paths.get(cid)
        if not corpus_available(path):
            emb.missing.update({(cid, u): f"corpus shards not found at {path}" for u in uids})
            continue
        problems: list[str] = []
        try:
            got = read_audio_bytes(path, uids, problems)
            bad_shards[cid] = problems
        except (OSError, AsrEvalError, ValueError) as exc:  # unreadable shards must not sink the report
            emb.missing.update({(cid, u): f"shards unreadable: {exc}" for u in uids})
            continue
        found.update({(cid, u): b for u, b in got.items()})
    for item in order:
        if item in emb.missing or item[:2] in emb.missing:
            emb.missing.setdefault(item, emb.missing.get(item[:2], ""))
            continue
        data = found.get(item[:2])
        if data is None:
            bad = bad_shards.get(item[0])
            emb.missing[item] = (f"not embedded: {'; '.join(bad)}" if bad else "audio not in the corpus shards")
            continue
        if len(item) == 4:
            try:
                data = excerpt_flac(data, item[2], item[3])
            except Exception as exc:  # noqa: BLE001 - one undecodable file must not sink the report
                emb.missing[item] = f"excerpt not decodable: {exc}"
                continue
        uri = f"data:{mime_of(data)};base64,{base64.b64encode(data).decode('ascii')}"
        if emb.total_bytes + len(uri) > cap_bytes:
            emb.missing[item] = "not embedded: the report's audio size cap was reached"
            emb.n_capped += 1
            continue
        key = f"a{len(emb.uris)}"
        emb.uris[key] = uri
        emb.keys[item] = key
        emb.total_bytes += len(uri)
    return emb
