"""Ingest sources in object storage: a manifest object, or a corpus folder (Common Voice, Kaldi,
audiofolder, NeMo, a datasets ``save_to_disk`` folder, Parquet) under a prefix.

A folder is copied once into the local cache (``storage.local_mirror``: keyed by its objects'
names, sizes and ETags, so a re-run resumes without downloading again) and read by its usual
reader — every layout works unchanged. A manifest object is downloaded alone; its relative audio
paths then resolve against the manifest's URL and are fetched one by one by the decoder workers,
as are audio paths written as URLs in any manifest. Either way the index records the URL, never
the local copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from asr_eval import storage
from asr_eval.corpus.base import CorpusReader, Item


@dataclass
class RemoteSource:
    """A reader opened on a local copy of ``url``; describes itself by the URL."""

    inner: CorpusReader
    url: str

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def layout(self) -> str:
        return self.inner.layout

    def describe(self) -> dict:
        return {**self.inner.describe(), "path": self.url}

    def items(self) -> Iterator[Item]:
        return self.inner.items()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


def stage(url: str) -> tuple[str, str | None]:
    """(local path to open, URL to resolve relative audio paths against — for a single object)."""
    loc = storage.location(url)
    info = storage.stat(loc)
    if info is not None:  # one object: a manifest (its audio stays in the bucket)
        digest = hashlib.sha256(f"{loc.url}|{info.version}".encode()).hexdigest()[:16]
        # inside a folder named like the object's own, so the reader names the corpus as it would locally
        dest = storage.cache_dir() / "sources" / digest / loc.parent.name
        return str(storage.get_tree(loc, dest)), loc.parent.url
    return str(storage.local_mirror(loc, kind="sources")), None
