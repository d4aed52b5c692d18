"""Manifest files: CSV, TSV or JSONL (NeMo manifests included: audio_filepath, text,
duration, offset). Relative audio paths resolve against the manifest's folder."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from asr_eval.audio import Reason
from asr_eval.corpus.base import (
    AUDIO_COLUMNS, ID_COLUMNS, SPEAKER_COLUMNS, TEXT_COLUMNS, Item, Rejection, Utterance,
    pick, read_lines, resolve_audio, split_from_name, stem_id,
)
from asr_eval.errors import AsrEvalError

MANIFEST_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


def iter_rows(path: Path) -> Iterator[tuple[str, dict | None, str]]:
    """(where, row or None, problem) for every data line; a bad line never stops the others."""
    kind = MANIFEST_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise AsrEvalError(f"{path}: not a manifest (expected .csv, .tsv, .jsonl or .json)")
    if kind == "jsonl":
        for i, line, _ in read_lines(path):
            where = f"{path}:{i}"
            if line is None:
                yield where, None, "bad_encoding"
            elif line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield where, None, f"invalid JSON: {exc.msg} at column {exc.colno}"
                    continue
                if not isinstance(row, dict):
                    yield where, None, "JSON line is not an object"
                    continue
                yield where, row, ""
        return
    delimiter = "\t" if kind == "tsv" else ","
    header: list[str] | None = None
    good: list[tuple[int, str]] = []
    bad: list[int] = []
    for i, line, _ in read_lines(path):
        if line is None:
            bad.append(i)
        else:
            good.append((i, line))
    for i in bad:
        yield f"{path}:{i}", None, "bad_encoding"
    # Common Voice TSVs contain bare quotes inside sentences: TSV is read without quoting.
    quoting = csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL
    state: dict[str, int] = {}
    reader = csv.reader(_track(good, state), delimiter=delimiter, quoting=quoting)
    for fields in reader:
        lineno = state.get("i", 0)
        where = f"{path}:{lineno}"
        if header is None:
            header = [h.strip() for h in fields]
            continue
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            yield where, None, f"{len(fields)} fields, header has {len(header)}"
            continue
        yield where, dict(zip(header, fields, strict=True)), ""


def _track(lines: list[tuple[int, str]], state: dict[str, int]) -> Iterator[str]:
    """Feed lines to csv.reader while remembering the current line number for messages."""
    for i, ln in lines:
        state["i"] = i
        yield ln


def header_of(path: Path) -> list[str]:
    for _, row, _ in iter_rows(path):
        if row is not None:
            return list(row)
    return []


@dataclass
class ManifestReader:
    """One manifest file. Every column that is not audio/text/id/timing becomes metadata."""

    path: Path
    audio_column: str | None = None
    text_column: str | None = None
    id_column: str | None = None
    split: str | None = None  # used when the manifest has no 'split' column
    root: Path = field(default=None)  # type: ignore[assignment]
    confine_to_root: bool = False
    layout: str = "manifest"

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_file():
            raise AsrEvalError(f"manifest {self.path} does not exist")
        self.root = Path(self.root) if self.root else self.path.parent
        self.name = self.path.parent.name if self.path.stem in ("metadata", "manifest") else self.path.stem
        cols = header_of(self.path)
        where = str(self.path)
        self._audio = pick(cols, self.audio_column, AUDIO_COLUMNS, "audio", where)
        self._text = pick(cols, self.text_column, TEXT_COLUMNS, "transcript", where)
        if cols and (self._audio is None or self._text is None):
            raise AsrEvalError(
                f"{where}: cannot find the {'audio' if self._audio is None else 'transcript'} column "
                f"among {cols}; looked for {AUDIO_COLUMNS if self._audio is None else TEXT_COLUMNS} "
                "(use --audio-column / --text-column)"
            )
        self._id = pick(cols, self.id_column, ID_COLUMNS, "id", where)
        self._speaker = pick(cols, None, SPEAKER_COLUMNS, "speaker", where)
        self._default_split = self.split or split_from_name(self.path.name, "all")

    def describe(self) -> dict:
        return {"layout": self.layout, "path": str(self.path), "audio_column": self._audio,
                "text_column": self._text, "id_column": self._id, **({"confine_to_root": True} if self.confine_to_root else {})}

    def items(self) -> Iterator[Item]:
        # Columns that fill core shard fields (or are per-utterance numbers) are not slices.
        skip = {self._audio, self._text, self._id, self._speaker, "split", "duration", "duration_s", "offset"}
        for where, row, problem in iter_rows(self.path):
            if row is None:
                reason = Reason.BAD_ENCODING if problem == "bad_encoding" else Reason.BAD_ROW
                detail = "line is not valid UTF-8" if reason is Reason.BAD_ENCODING else problem
                yield Rejection(reason, detail, where)
                continue
            raw_audio = row.get(self._audio)
            if not isinstance(raw_audio, str) or not raw_audio.strip():
                yield Rejection(Reason.BAD_ROW, f"empty {self._audio!r} field", where)
                continue
            text = row.get(self._text)
            text = "" if text is None else str(text)
            offset = _num(row.get("offset"))
            duration = _num(row.get("duration")) if "offset" in row else None
            utt_id = str(row[self._id]) if self._id and row.get(self._id) not in (None, "") else stem_id(raw_audio)
            if "offset" in row and offset:
                utt_id = f"{utt_id}_{int(round(offset * 1000)):08d}"
            resolved = resolve_audio(self.root, raw_audio, self.confine_to_root)
            if isinstance(resolved, Rejection):
                resolved.where, resolved.utt_id = where, utt_id
                yield resolved
                continue
            meta = {k: _str(v) for k, v in row.items() if k not in skip}
            speaker = _str(row.get(self._speaker)) if self._speaker else None
            yield Utterance(
                utt_id=utt_id, text=text, split=str(row.get("split") or self._default_split),
                audio_path=resolved, source_path=raw_audio, speaker=speaker,
                offset_s=offset or 0.0, duration_s=duration, metadata=meta, where=where,
            )


def _num(v) -> float | None:
    if v in (None, ""):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _str(v) -> str | None:
    if v is None or v == "":
        return None
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)
