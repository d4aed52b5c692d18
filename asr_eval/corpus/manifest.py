"""Manifest files: CSV, TSV or JSONL (NeMo manifests included: audio_filepath, text,
duration, offset). Relative audio paths resolve against the manifest's folder.

A row may be a whole recording (a NeMo row with ``duration`` > 30 s and no ``offset`` is one):
``ingest --long-form`` keeps it, with the row's text as the reference. An optional
``segments`` field (JSON: ``[[start, end, text], ...]`` or ``[{"start", "end", "text"}, ...]``)
keeps the reference's segment times."""

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
MAX_FIELD_CHARS = 1 << 24  # csv's default limit (128 KiB) would stop the whole file at one long field


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
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_CHARS))
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
    consumed: list[int] = []  # line numbers the csv reader has pulled for the current record
    reader = csv.reader(_track(good, consumed), delimiter=delimiter, quoting=quoting)
    while True:
        try:
            fields = next(reader)
            problem = ""
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a NUL or a bare carriage return inside a field
            fields, problem = None, f"unparseable {kind.upper()} line: {exc}"
        lines, consumed[:] = consumed[:], []
        if not lines:
            continue
        where = f"{path}:{lines[0]}" + (f"-{lines[-1]}" if len(lines) > 1 else "")
        if fields is None:
            yield where, None, problem
            continue
        if not any(f.strip() for f in fields):
            continue  # a blank line, or one of only delimiters (spreadsheet exports end with ',,,')
        if header is None:
            header = [h.strip() for h in fields]
            continue
        if len(fields) != len(header):
            joined = (f" (an unclosed quote joined lines {lines[0]}–{lines[-1]} into one record)"
                      if len(lines) > 1 and kind == "csv" else "")
            yield where, None, f"{len(fields)} fields, header has {len(header)}{joined}"
            continue
        yield where, dict(zip(header, fields, strict=True)), ""


def _track(lines: list[tuple[int, str]], consumed: list[int]) -> Iterator[str]:
    """Feed lines to csv.reader while remembering which lines each record came from."""
    for i, ln in lines:
        consumed.append(i)
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
        skip = {self._audio, self._text, self._id, self._speaker, "split", "duration", "duration_s", "offset",
                "segments"}
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
            if any(v is not None and not (0 <= v < MAX_SECONDS) for v in (offset, duration)):
                yield Rejection(Reason.BAD_ROW, f"offset {row.get('offset')!r} / duration {row.get('duration')!r} "
                                f"is not a time in seconds (0 to {MAX_SECONDS:.0f})", where)
                continue
            utt_id = str(row[self._id]) if self._id and row.get(self._id) not in (None, "") else stem_id(raw_audio)
            if "offset" in row and offset:
                utt_id = f"{utt_id}_{int(round(offset * 1000)):08d}"
            resolved = resolve_audio(self.root, raw_audio, self.confine_to_root)
            if isinstance(resolved, Rejection):
                resolved.where, resolved.utt_id = where, utt_id
                yield resolved
                continue
            segs = _segments(row.get("segments"))
            if isinstance(segs, str):
                yield Rejection(Reason.BAD_ROW, f"segments field: {segs}", where, utt_id, raw_audio)
                continue
            # a list or an object (e.g. a stress set's inserted stretches) describes the row; it is no slice value
            meta = {k: _str(v) for k, v in row.items() if k not in skip and not isinstance(v, (list, dict))}
            speaker = _str(row.get(self._speaker)) if self._speaker else None
            yield Utterance(
                utt_id=utt_id, text=text, split=str(row.get("split") or self._default_split),
                audio_path=resolved, source_path=raw_audio, speaker=speaker,
                offset_s=offset or 0.0, duration_s=duration, metadata=meta, where=where, segments=segs,
            )


MAX_SECONDS = 1e7  # ~4 months: anything longer is not an offset into one recording


def _num(v) -> float | None:
    """A number from a manifest field; None when empty or not a number. NaN stays NaN (and is rejected)."""
    if v is None or v == "" or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return None


def _str(v) -> str | None:
    if v is None or v == "":
        return None
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _segments(v) -> list[tuple[float, float, str]] | None | str:
    """A row's reference segments, or None; a string says what is wrong with them."""
    if v in (None, "", []):
        return None
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError as exc:
            return f"not JSON ({exc.msg})"
    if not isinstance(v, list):
        return "must be a list of [start, end, text]"
    out = []
    for k, s in enumerate(v):
        try:
            a, b, t = (s["start"], s["end"], s["text"]) if isinstance(s, dict) else s
            a, b = float(a), float(b)
        except (KeyError, TypeError, ValueError):
            return f"item {k} {s!r} is not [start, end, text]"
        if not 0 <= a <= b:
            return f"item {k} has start {a} and end {b}; need 0 <= start <= end"
        out.append((a, b, str(t)))
    return sorted(out, key=lambda s: (s[0], s[1]))
