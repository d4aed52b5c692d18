"""Records every corpus reader yields, and helpers shared by the readers.

A reader turns a source layout into a stream of ``Utterance`` (audio not yet decoded) and
``Rejection`` (an item that could not even be described: bad row, bad encoding, path that
escapes the corpus root, piped wav.scp command). Nothing is dropped silently.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from asr_eval.audio import Reason


@dataclass
class Utterance:
    utt_id: str
    text: str
    split: str
    audio_path: Path | str | None = None  # a file on disk, or an object URL …
    audio_bytes: bytes | None = None  # … or encoded bytes (HF datasets)
    source_path: str = ""  # as written in the source (for the user)
    speaker: str | None = None
    offset_s: float = 0.0
    duration_s: float | None = None  # segment length when cutting a longer file
    metadata: dict[str, str | None] = field(default_factory=dict)
    where: str = ""  # file:line, for messages
    segments: list[tuple[float, float, str]] | None = None  # a recording's reference segments (s, s, text)


@dataclass
class Rejection:
    reason: Reason
    detail: str
    where: str
    utt_id: str | None = None
    source_path: str | None = None


Item = Utterance | Rejection


class CorpusReader(Protocol):
    """A source layout. ``items()`` may be called more than once and yields in a stable order."""

    layout: str
    root: Path
    name: str

    def items(self) -> Iterator[Item]: ...

    def describe(self) -> dict: ...


AUDIO_COLUMNS = ("audio_filepath", "audio_path", "file_name", "audio", "path", "file", "wav", "filename")
TEXT_COLUMNS = ("text", "sentence", "transcript", "transcription", "normalized_text", "label")
ID_COLUMNS = ("utt_id", "id", "key", "utterance_id")
SPEAKER_COLUMNS = ("speaker", "speaker_id", "client_id", "spk")
KNOWN_SPLITS = ("train", "dev", "validation", "valid", "test", "validated", "other", "invalidated", "eval")


def pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, where: str) -> str | None:
    """Choose a column: the user's choice (must exist) or the first known candidate."""
    if wanted:
        if wanted not in columns:
            from asr_eval.errors import AsrEvalError

            raise AsrEvalError(f"{where}: no {what} column {wanted!r}; columns are {columns}")
        return wanted
    lower = {c.lower(): c for c in columns}
    for c in candidates:
        if c in lower:
            return lower[c]
    return None


def resolve_audio(root: Path | str, raw: str, confine_to_root: bool = False) -> Path | str | Rejection:
    """Resolve an audio path as manifests, NeMo manifests and Kaldi ``wav.scp`` write them.

    An absolute path is taken as written (that is those formats' convention). A relative path
    resolves against ``root`` (the manifest's folder) and is refused when it climbs out of it
    (``../../etc/passwd``); symlinks inside the root are followed. ``confine_to_root`` refuses
    every path whose real location (symlinks resolved) is outside the root. An object URL
    (``s3://…``) is kept as a URL, and a root that is a URL (a manifest read from a bucket)
    resolves relative paths to URLs beside it; the decoder workers fetch them.
    """
    from asr_eval.storage import is_url

    if is_url(raw) or is_url(str(root)):
        return _resolve_url(str(root), raw, confine_to_root)
    try:
        p = Path(raw)
        full = (p if p.is_absolute() else root / p).resolve()
    except (ValueError, OSError) as e:  # NUL byte, name too long, symlink loop
        return Rejection(Reason.BAD_ROW, f"audio path {raw[:200]!r} is not a usable path ({e})",
                         where="", source_path=raw[:1000])
    root_r = root.resolve()
    if confine_to_root:
        if not full.is_relative_to(root_r):
            return Rejection(
                Reason.PATH_ESCAPE,
                f"audio path {raw!r} resolves to {full}, outside the corpus root {root_r} "
                "(--confine-to-root is on; drop it to accept paths elsewhere)",
                where="", source_path=raw,
            )
        return full
    if not p.is_absolute() and not Path(os.path.normpath(root_r / p)).is_relative_to(root_r):
        return Rejection(
            Reason.PATH_ESCAPE,
            f"relative audio path {raw!r} climbs out of the manifest's folder {root_r}; "
            "write it as an absolute path, or relative to the manifest's folder without '..'",
            where="", source_path=raw,
        )
    return full


def _resolve_url(root: str, raw: str, confine_to_root: bool) -> str | Rejection:
    import posixpath

    from asr_eval.storage import is_url

    if is_url(raw):
        full = raw
    elif not is_url(root) or raw.startswith("/"):
        return Rejection(Reason.BAD_ROW, f"audio path {raw[:200]!r} is a local path in a manifest read from "
                         f"{root}; write it relative to the manifest or as a URL", where="", source_path=raw[:1000])
    else:
        scheme, rest = root.split("://", 1)
        full = f"{scheme}://{posixpath.normpath(posixpath.join(rest, raw))}"
    base = root.rstrip("/") + "/"
    if is_url(root) and not full.startswith(base) and (confine_to_root or not is_url(raw)):
        return Rejection(Reason.PATH_ESCAPE, f"audio path {raw!r} resolves to {full}, outside the manifest's "
                         f"folder {root}", where="", source_path=raw)
    return full


_CLEAN = re.compile(r"[^0-9a-zA-Z_]+")
_CORE = {"utt_id", "split", "audio", "sample_rate", "duration_s", "text", "speaker", "corpus",
         "source_path", "audio_sha256", "qc_flags", "segments"}


def slice_name(column: str) -> str:
    """Metadata column → a safe, lower-case shard column name that never shadows a core column."""
    name = _CLEAN.sub("_", column.strip()).strip("_").lower() or "col"
    if name[0].isdigit():
        name = "c_" + name
    return f"meta_{name}" if name in _CORE else name


def has_content(text: str | None) -> bool:
    """False for empty or punctuation/symbol/space-only transcripts."""
    if not text:
        return False
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


def stem_id(path: str) -> str:
    return Path(path).with_suffix("").as_posix().replace("/", "_").lstrip("._") or path


def split_from_name(name: str, default: str) -> str:
    stem = Path(name).stem.lower()
    return stem if stem in KNOWN_SPLITS else default


def read_lines(path: Path) -> Iterator[tuple[int, str | None, bytes]]:
    """Yield (line number, decoded text or None when not UTF-8, raw bytes).

    UTF-8 with or without a byte-order mark; a file starting with a UTF-16 byte-order mark
    (what some Windows tools save as "Unicode") is decoded as UTF-16 as a whole."""
    with path.open("rb") as f:
        head = f.read(2)
        f.seek(0)
        if head in (b"\xff\xfe", b"\xfe\xff"):
            yield from _utf16_lines(f.read())
            return
        for i, raw in enumerate(f, start=1):
            try:
                yield i, raw.decode("utf-8-sig" if i == 1 else "utf-8").rstrip("\r\n"), raw
            except UnicodeDecodeError:
                yield i, None, raw


def read_text_lines(path: Path) -> tuple[str, Iterator[tuple[int, str | None, bytes]]]:
    """(encoding name, lines) of a transcript file that may not be UTF-8.

    The public Mandarin corpora ship some transcripts in GBK/GB2312. The encoding is chosen for
    the whole file: ``"utf-8"`` when every line is UTF-8 (a byte-order mark is dropped);
    otherwise ``"gb18030"`` (a superset of GBK and GB2312) when more of its non-ASCII lines
    decode as GB18030 than as UTF-8, else ``"utf-8"``; each line that does not decode under the
    chosen encoding is yielded with text ``None`` (the caller rejects it as ``BAD_ENCODING``,
    naming ``path:line``). A file starting with a UTF-16 byte-order mark is ``"utf-16"``.

    Lines are (line number from 1, text without the line end, raw bytes without the line end).
    Splitting on ``\\n`` is safe for GB18030: no multi-byte sequence contains 0x0A. The file is
    read whole (transcript files are a few MB at most); iterating the lines does no I/O.
    """
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16", ((i, t, r.rstrip(b"\r\n")) for i, t, r in _utf16_lines(data))
    raws = [r[:-1] if r.endswith(b"\r") else r for r in data.split(b"\n")]
    if raws and raws[-1] == b"":
        raws.pop()
    encoding = _text_encoding(data, raws)
    return encoding, _decoded(raws, encoding)


def _text_encoding(data: bytes, raws: list[bytes]) -> str:
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    utf8 = gb = 0  # a UTF-8 file with one damaged line stays UTF-8 (GB18030 would turn it all to mojibake)
    for raw in raws:
        if raw.isascii():
            continue
        try:
            raw.decode("utf-8")
            utf8 += 1
        except UnicodeDecodeError:
            try:
                raw.decode("gb18030")
                gb += 1
            except UnicodeDecodeError:
                pass
    return "gb18030" if gb > utf8 else "utf-8"


def _decoded(raws: list[bytes], encoding: str) -> Iterator[tuple[int, str | None, bytes]]:
    for i, raw in enumerate(raws, start=1):
        try:
            text: str | None = raw.decode(encoding)
        except UnicodeDecodeError:
            text = None
        if i == 1 and text is not None:
            text = text.removeprefix("\ufeff")
        yield i, text, raw


def _utf16_lines(data: bytes) -> Iterator[tuple[int, str | None, bytes]]:
    try:
        text = data.decode("utf-16")
    except UnicodeDecodeError:
        # Decode line by line in the file's byte order, so only the damaged lines are lost.
        enc = "utf-16-le" if data[:2] == b"\xff\xfe" else "utf-16-be"
        nl = "\n".encode(enc)
        body = data[2:]
        chunks: list[bytes] = []
        start = 0
        for k in range(0, len(body) - 1, 2):
            if body[k:k + 2] == nl:
                chunks.append(body[start:k])
                start = k + 2
        if start < len(body):
            chunks.append(body[start:])
        for i, raw in enumerate(chunks, start=1):
            try:
                yield i, raw.decode(enc).rstrip("\r"), raw
            except UnicodeDecodeError:
                yield i, None, raw
        return
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    for i, line in enumerate(lines, start=1):
        yield i, line.rstrip("\r"), line.encode("utf-8", "surrogatepass")


def unencodable(*values: object) -> str | None:
    """The first string that cannot be stored as UTF-8 (a lone surrogate from a JSON escape), or None."""
    for v in values:
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return v
    return None


# ─────── shared by the readers of the public corpora (AISHELL, THCHS-30, aidatatang, KeSpeech, …) ───────


def join_words(words: list[str]) -> str:
    """A word-segmented transcript (AISHELL-1, THCHS-30, aidatatang) as running text: the spaces
    between words are dropped, except one between two Latin letters/digits (full-width ones
    included), where it separates words: ``我 的 iPhone X 手机`` → ``我的iPhone X手机``."""
    out = ""
    for w in words:
        if out and _latin(out[-1]) and _latin(w[0]):
            out += " "
        out += w
    return out


def _latin(ch: str) -> bool:
    n = unicodedata.normalize("NFKC", ch)
    return n.isascii() and n.isalnum()


def parse_splits(value: str | None) -> tuple[str, ...] | None:
    """``SourceOptions.split`` of a public corpus (``"test"``, ``"dev,test"``) → the splits to read
    (None: the reader's default)."""
    got = tuple(dict.fromkeys(s.strip() for s in (value or "").split(",") if s.strip()))
    return got or None


def check_splits(wanted: tuple[str, ...] | None, present: Sequence[str], what: str | Path) -> tuple[str, ...]:
    """The splits to read, in the corpus's order; an unknown name is an error listing those present."""
    from asr_eval.errors import AsrEvalError

    if wanted is None:
        return tuple(present)
    unknown = [s for s in wanted if s not in present]
    if unknown:
        raise AsrEvalError(f"{what}: no split {', '.join(map(repr, unknown))}; the splits present are "
                           f"{', '.join(present) or 'none'} (pass --split with one of them)")
    return tuple(s for s in present if s in wanted)
