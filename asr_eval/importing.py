"""External hypotheses: another system's transcripts (a cloud API, SenseVoice/Paraformer,
production logs, an open_asr_leaderboard run) registered as a run and scored exactly like ours.

Three steps, the first two pure:

* ``read_hyp_file`` parses a file in one of the registered formats (``FORMATS``: JSONL, TSV,
  NeMo manifest, open_asr_leaderboard JSONL) into ``HypRow`` records; a bad line is an error
  naming ``file:line`` and the fix.
* ``match_hypotheses`` maps the rows onto the utterances of one corpus split — by ``utt_id``, or
  by audio path against the corpus's ``source_path`` — and refuses unknown and duplicate ids.
  Utterances without a hypothesis are *missing* (scored as full deletions); an empty text is an
  empty hypothesis, which is not the same thing.
* ``import_hypotheses`` writes the model row, the hypotheses and an ``eval_runs`` row
  (``kind = 'import'``) through the store, then scores the run and compares it with every other
  finished run of the same corpus split.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from asr_eval.corpus_handle import Corpus, open_corpus
from asr_eval.errors import AsrEvalError
from asr_eval.provenance import stable_hash

MAX_LISTED = 10  # ids / lines named in one error message


# ───────────── records ─────────────


@dataclass(frozen=True)
class HypRow:
    """One hypothesis as read from the file. ``key`` is an utt_id or an audio path (see the
    format's ``key``); ``text`` may be empty (an empty hypothesis)."""

    line: int
    key: str
    text: str
    offset_s: float | None = None  # NeMo segment offset (to tell segments of one file apart)
    time_s: float | None = None  # leaderboard: transcription seconds
    duration_s: float | None = None


@dataclass(frozen=True)
class HypFile:
    path: Path
    format: str
    key: str  # 'utt_id' | 'audio_filepath'
    sha256: str
    rows: tuple[HypRow, ...]


@dataclass(frozen=True)
class HypFormat:
    """A hypothesis file layout: how to recognise it from its first line, and how to parse it."""

    name: str
    key: str  # what HypRow.key holds: 'utt_id' or 'audio_filepath'
    description: str
    sniff: Callable[[dict | None, str, Path], bool]  # (first line as JSON object or None, raw line, path)
    parse: Callable[[Path, list[tuple[int, str]]], list[HypRow]]


FORMATS: dict[str, HypFormat] = {}


def register_format(fmt: HypFormat) -> HypFormat:
    FORMATS[fmt.name] = fmt
    return fmt


# ───────────── line-level helpers ─────────────


class _Problems:
    """Collects bad lines (up to MAX_LISTED are named) so one error lists them together."""

    def __init__(self, path: Path, fix: str) -> None:
        self.path, self.fix, self.items, self.n = path, fix, [], 0

    def add(self, line: int, what: str) -> None:
        self.n += 1
        if len(self.items) < MAX_LISTED:
            self.items.append(f"{self.path}:{line}: {what}")

    def raise_if_any(self) -> None:
        if self.n:
            more = f"\n  … and {self.n - len(self.items)} more" if self.n > len(self.items) else ""
            raise AsrEvalError(f"{self.n} bad line(s) in {self.path}:\n  " + "\n  ".join(self.items) + more
                               + f"\nFix: {self.fix}")


def _read_lines(path: Path) -> tuple[list[tuple[int, str]], str]:
    """Non-blank lines with their 1-based numbers, and the file's SHA-256."""
    if not path.is_file():
        raise AsrEvalError(f"hypothesis file {path} does not exist (or is not a file)")
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    lines, bad = [], _Problems(path, "save the file as UTF-8")
    for i, b in enumerate(raw.split(b"\n"), start=1):
        if i == 1 and b.startswith(b"\xef\xbb\xbf"):
            b = b[3:]
        try:
            s = b.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as e:
            bad.add(i, f"not valid UTF-8 ({e.reason} at byte {e.start})")
            continue
        if s.strip():
            lines.append((i, s))
    bad.raise_if_any()
    return lines, sha


def _json_object(s: str) -> dict | None:
    try:
        obj = json.loads(s)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _json_rows(path: Path, lines: list[tuple[int, str]], example: str,
               row: Callable[[dict, Callable[[str], None]], HypRow | None]) -> list[HypRow]:
    """Parse JSON lines with ``row(obj, complain)``; every bad line is collected, then one error."""
    bad = _Problems(path, f"each line must be one JSON object like {example}")
    out: list[HypRow] = []
    for lineno, s in lines:
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            bad.add(lineno, f"not valid JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(obj, dict):
            bad.add(lineno, f"a JSON {type(obj).__name__}, not an object")
            continue
        problems: list[str] = []
        r = row({**obj, "_line": lineno}, problems.append)
        if problems:
            bad.add(lineno, "; ".join(problems))
        elif r is not None:
            out.append(r)
    bad.raise_if_any()
    return out


def _str_field(obj: dict, names: Sequence[str], complain: Callable[[str], None], what: str,
               ids: bool = False) -> str | None:
    """The first of ``names`` present in ``obj``; must be a string (or an integer id)."""
    for n in names:
        if n in obj:
            v = obj[n]
            if isinstance(v, str):
                return v
            if ids and isinstance(v, int) and not isinstance(v, bool):
                return str(v)
            if v is None:
                complain(f"{n!r} is null (write \"\" for an empty {what}; leave the line out to count it as missing)"
                         if not ids else f"{n!r} is null")
            else:
                complain(f"{n!r} is a {type(v).__name__}, not a string")
            return None
    keys = ", ".join(k for k in obj if k != "_line") or "none"
    complain(f"no {' or '.join(repr(n) for n in names)} field (keys: {keys})")
    return None


def _num_field(obj: dict, name: str, complain: Callable[[str], None]) -> float | None:
    v = obj.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        complain(f"{name!r} is {v!r}, not a finite number")
        return None
    return float(v)


# ───────────── formats ─────────────


def _parse_jsonl(path: Path, lines: list[tuple[int, str]]) -> list[HypRow]:
    def row(obj: dict, complain: Callable[[str], None]) -> HypRow | None:
        uid = _str_field(obj, ("utt_id",), complain, "id", ids=True)
        # pred_text first: a line with both carries the reference in "text" (NeMo style)
        text = _str_field(obj, ("pred_text", "text"), complain, "hypothesis")
        return None if uid is None or text is None else HypRow(obj["_line"], uid, text)

    return _json_rows(path, lines, '{"utt_id": "u001", "text": "今天天气很好"}', row)


def _parse_tsv(path: Path, lines: list[tuple[int, str]]) -> list[HypRow]:
    bad = _Problems(path, "write one `utt_id<TAB>text` per line (an empty hypothesis is the id followed by a TAB)")
    out: list[HypRow] = []
    for k, (lineno, s) in enumerate(lines):
        if "\t" not in s:
            bad.add(lineno, f"no TAB in {s[:60]!r}")
            continue
        uid, text = s.split("\t", 1)
        uid = uid.strip()
        if k == 0 and uid.lower() in ("utt_id", "id", "key") and text.strip().lower() in (
                "text", "pred_text", "hyp", "hypothesis", "transcript", "transcription"):
            continue  # header line
        if not uid:
            bad.add(lineno, "empty utterance id before the TAB")
            continue
        out.append(HypRow(lineno, uid, text.strip()))
    bad.raise_if_any()
    return out


def _parse_nemo(path: Path, lines: list[tuple[int, str]]) -> list[HypRow]:
    def row(obj: dict, complain: Callable[[str], None]) -> HypRow | None:
        afp = _str_field(obj, ("audio_filepath",), complain, "path")
        text = _str_field(obj, ("pred_text",), complain, "hypothesis")
        off = _num_field(obj, "offset", complain)
        dur = _num_field(obj, "duration", complain)
        if afp is not None and not afp.strip():
            complain("'audio_filepath' is empty")
            return None
        return None if afp is None or text is None else HypRow(obj["_line"], afp, text, off, None, dur)

    return _json_rows(path, lines, '{"audio_filepath": "audio/u001.wav", "text": "…", "pred_text": "…"}', row)


def _parse_leaderboard(path: Path, lines: list[tuple[int, str]]) -> list[HypRow]:
    """open_asr_leaderboard ``write_manifest`` rows: audio_filepath, duration, time, text (the
    reference), pred_text, optional extra fields. Chunked rows (``parent_id`` + ``chunk_index``)
    are joined per parent in chunk order, as its ``merge_chunked_manifest`` does."""
    chunks: dict[str, list[tuple[int, int, str, float | None, float | None]]] = {}

    def row(obj: dict, complain: Callable[[str], None]) -> HypRow | None:
        text = _str_field(obj, ("pred_text",), complain, "hypothesis")
        t = _num_field(obj, "time", complain)
        dur = _num_field(obj, "duration", complain)
        if "parent_id" in obj:
            parent = _str_field(obj, ("parent_id",), complain, "id", ids=True)
            idx = obj.get("chunk_index")
            if isinstance(idx, bool) or not isinstance(idx, int):
                complain(f"'chunk_index' is {idx!r}, not an integer (chunked rows need parent_id + chunk_index)")
                return None
            if parent is not None and text is not None:
                chunks.setdefault(parent, []).append((idx, obj["_line"], text, t, dur))
            return None
        afp = _str_field(obj, ("audio_filepath",), complain, "path")
        return None if afp is None or text is None else HypRow(obj["_line"], afp, text, None, t, dur)

    out = _json_rows(path, lines, '{"audio_filepath": "…", "duration": 3.2, "time": 0.1, "text": "…", '
                                  '"pred_text": "…"}', row)
    for parent, cs in chunks.items():
        cs.sort()
        idx = [c[0] for c in cs]
        if idx != list(range(len(idx))):
            raise AsrEvalError(f"{path}:{cs[0][1]}: chunks of {parent!r} have chunk_index {idx}, not 0…{len(idx) - 1}; "
                               "a missing chunk would be scored as deletions — re-export the complete run")

        def total(vals: list[float | None]) -> float | None:
            return None if any(v is None for v in vals) else float(sum(vals))  # type: ignore[arg-type]

        text = " ".join(p for c in cs if (p := c[2].strip()))
        out.append(HypRow(cs[0][1], parent, text, None, total([c[3] for c in cs]), total([c[4] for c in cs])))
    return sorted(out, key=lambda r: r.line)


def _first_is(keys: Sequence[str]) -> Callable[[dict | None, str, Path], bool]:
    return lambda obj, _s, _p: obj is not None and all(k in obj for k in keys)


register_format(HypFormat(
    "jsonl", "utt_id", "JSON lines with utt_id and text (or pred_text)", _first_is(["utt_id"]), _parse_jsonl))
register_format(HypFormat(
    "leaderboard", "audio_filepath",
    "open_asr_leaderboard JSONL (MODEL_<model>_DATASET_<dataset>_<split>.jsonl: audio_filepath, duration, time, "
    "text, pred_text)",
    lambda obj, _s, p: obj is not None and ("parent_id" in obj or (
        "audio_filepath" in obj and "pred_text" in obj and ("time" in obj or p.name.startswith("MODEL_")))),
    _parse_leaderboard))
register_format(HypFormat(
    "nemo", "audio_filepath", "NeMo manifest with audio_filepath and pred_text",
    _first_is(["audio_filepath", "pred_text"]), _parse_nemo))
register_format(HypFormat(
    "tsv", "utt_id", "utt_id<TAB>text per line", lambda obj, s, _p: obj is None and "\t" in s, _parse_tsv))


def detect_format(path: Path, lines: list[tuple[int, str]]) -> HypFormat:
    if not lines:
        raise AsrEvalError(f"{path} has no hypotheses (empty file)")
    s = lines[0][1]
    obj = _json_object(s)
    for fmt in FORMATS.values():
        if fmt.sniff(obj, s, path):
            return fmt
    seen = f"JSON keys {sorted(obj)}" if obj is not None else f"{s[:60]!r}"
    raise AsrEvalError(f"{path}:{lines[0][0]}: cannot tell the format from the first line ({seen}); pass --format "
                       f"({', '.join(FORMATS)}): " + "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values()))


def read_hyp_file(path: str | Path, fmt: str = "auto") -> HypFile:
    """Parse a hypothesis file (``fmt`` 'auto' or a name in ``FORMATS``)."""
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise AsrEvalError(f"unknown hypothesis format {fmt!r}; known: auto, {', '.join(FORMATS)}")
    lines, sha = _read_lines(path)
    f = detect_format(path, lines) if fmt == "auto" else FORMATS[fmt]
    rows = f.parse(path, lines)
    if not rows:
        raise AsrEvalError(f"{path} has no hypotheses (empty file)")
    return HypFile(path, f.name, f.key, sha, tuple(rows))


# ───────────── matching against a corpus split ─────────────


@dataclass(frozen=True)
class SplitUtterances:
    """What matching needs from a corpus: the split's ids (in order), every id's split, and the
    split's utterances by resolved absolute audio path and by path as written in the source."""

    corpus_id: str
    split: str | None
    utt_ids: tuple[str, ...]
    split_of: dict[str, str]
    by_abs: dict[str, tuple[str, ...]]
    by_rel: dict[str, tuple[str, ...]]


def _norm_rel(p: str) -> str:
    return posixpath.normpath(p.replace("\\", "/")).removeprefix("./")


def _source_roots(source: dict[str, Any]) -> tuple[Path | None, dict[str, Path]]:
    """Folders the ingested source's relative audio paths were resolved against: the source root
    (the folder, or a manifest's folder) and, for audiofolder split subfolders, one per split."""
    raw = source.get("path")
    if not raw:
        return None, {}
    p = Path(raw)
    root = p.parent if p.is_file() or p.suffix.lower() in (".csv", ".tsv", ".json", ".jsonl") else p
    per_split = {}
    for entry in source.get("metadata") or []:
        parent = Path(entry).parent
        if parent.parts:
            per_split[parent.parts[0]] = root / parent
    return root, per_split


def split_utterances(corpus: Corpus, split: str | None) -> SplitUtterances:

    meta = corpus.read_metadata().select(["utt_id", "split", "source_path"]).to_pylist()
    root, per_split = _source_roots(corpus.index.get("source") or {})
    by_abs: dict[str, list[str]] = {}
    by_rel: dict[str, list[str]] = {}
    ids = []
    for m in meta:
        if split is not None and m["split"] != split:
            continue
        uid, sp = m["utt_id"], m["source_path"] or ""
        ids.append(uid)
        if not sp:
            continue
        if Path(sp).is_absolute():
            by_abs.setdefault(str(Path(sp).resolve()), []).append(uid)
            continue
        by_rel.setdefault(_norm_rel(sp), []).append(uid)
        base = per_split.get(m["split"], root)
        if base is not None:
            by_abs.setdefault(str((base / sp).resolve()), []).append(uid)
    return SplitUtterances(corpus.corpus_id, split, tuple(sorted(ids)), {m["utt_id"]: m["split"] for m in meta},
                           {k: tuple(v) for k, v in by_abs.items()}, {k: tuple(v) for k, v in by_rel.items()})


@dataclass
class Matched:
    texts: dict[str, str]  # utt_id → hypothesis (possibly "")
    lines: dict[str, int]  # utt_id → line in the file
    missing: list[str]  # utterances of the split without a hypothesis
    matched_by: dict[str, int] = field(default_factory=dict)  # 'utt_id' | 'absolute path' | … → count

    @property
    def n_empty(self) -> int:
        return sum(1 for t in self.texts.values() if not t.strip())


def _path_candidates(row: HypRow, base: Path, utts: SplitUtterances) -> tuple[str, tuple[str, ...]]:
    p = Path(row.key)
    full = (p if p.is_absolute() else base / p).resolve()
    if str(full) in utts.by_abs:
        return "absolute path", utts.by_abs[str(full)]
    rels = [] if p.is_absolute() else [_norm_rel(row.key)]
    if full.is_relative_to(base):
        rels.append(full.relative_to(base).as_posix())
    for r in rels:
        if r in utts.by_rel:
            return "relative path", utts.by_rel[r]
    if row.key in utts.split_of and utts.split_of[row.key] == (utts.split or utts.split_of[row.key]):
        return "utt_id", (row.key,)
    return "", ()


def match_hypotheses(hf: HypFile, utts: SplitUtterances) -> Matched:
    """Rows → utterances of the split. Unknown ids, duplicates and ambiguous paths are one error
    (up to ten of each named); utterances without a row are ``missing``."""
    base = hf.path.resolve().parent
    split_ids = set(utts.utt_ids)
    by_utt: dict[str, list[HypRow]] = {}
    unknown: list[HypRow] = []
    ambiguous: list[str] = []
    how: dict[str, int] = {}
    for row in hf.rows:
        if hf.key == "utt_id":
            kind, cands = ("utt_id", (row.key,)) if row.key in split_ids else ("", ())
        else:
            kind, cands = _path_candidates(row, base, utts)
        if len(cands) > 1 and row.offset_s is not None:
            suffix = f"_{round(row.offset_s * 1000):08d}"
            cands = tuple(c for c in cands if c.endswith(suffix)) or cands
        if not cands:
            unknown.append(row)
            continue
        if len(cands) > 1:
            ambiguous.append(f"line {row.line}: {row.key!r} is the audio of {len(cands)} utterances "
                             f"({', '.join(cands[:3])}{'…' if len(cands) > 3 else ''})")
            continue
        by_utt.setdefault(cands[0], []).append(row)
        how[kind] = how.get(kind, 0) + 1
    problems = []
    dups = [(u, rs) for u, rs in by_utt.items() if len(rs) > 1]
    if dups:
        listed = "; ".join(f"{u} (lines {', '.join(str(r.line) for r in rs)})" for u, rs in dups[:MAX_LISTED])
        problems.append(f"{len(dups)} utterance(s) have more than one hypothesis: {listed}"
                        f"{' …' if len(dups) > MAX_LISTED else ''}. Keep one line per utterance.")
    if ambiguous:
        problems.append(f"{len(ambiguous)} audio path(s) match several utterances: {'; '.join(ambiguous[:MAX_LISTED])}. "
                        "Give an 'offset' per segment or use --format jsonl with utt_id.")
    if unknown:
        where = f"split {utts.split!r} of corpus {utts.corpus_id}" if utts.split else f"corpus {utts.corpus_id}"
        listed = ", ".join(f"{r.key!r} (line {r.line})" for r in unknown[:MAX_LISTED])
        other = sum(1 for r in unknown if r.key in utts.split_of)
        hint = [f"{other} of them are utterances of another split: pass the right --split"] if other else []
        if hf.key == "audio_filepath":
            hint.append("audio paths are matched against the corpus's source paths (absolute, or relative to the "
                        f"file's folder {base}) and utterance ids")
            if any(r.key.startswith("sample_") for r in unknown):
                hint.append("sample_N paths mean the leaderboard had no audio paths; export utt_id + pred_text as JSONL "
                            "instead")
        else:
            hint.append("ids must be the corpus's utt_id values (see the shards' utt_id column or `asr-eval export`)")
        problems.append(f"{len(unknown)} hypothesis(es) name no utterance of {where}: {listed}"
                        f"{' …' if len(unknown) > MAX_LISTED else ''}. " + "; ".join(hint) + ".")
    if problems:
        raise AsrEvalError(f"cannot import {hf.path} ({hf.format}):\n  " + "\n  ".join(problems))
    texts = {u: rs[0].text for u, rs in by_utt.items()}
    return Matched(texts, {u: rs[0].line for u, rs in by_utt.items()},
                   [u for u in utts.utt_ids if u not in texts], how)


# ───────────── writing through the store ─────────────


@dataclass(frozen=True)
class ImportResult:
    run_id: str
    model_id: str
    corpus_id: str
    split: str | None
    format: str
    sha256: str
    n_rows: int
    n_matched: int
    n_missing: int
    n_empty: int
    compared_with: tuple[str, ...]

    @property
    def n(self) -> int:
        """Utterances of the split the run is scored over: matched + missing (full deletions)."""
        return self.n_matched + self.n_missing


def import_run_id(name: str, sha256: str, corpus_id: str, split: str | None) -> str:
    """Deterministic: re-importing the same file under the same name replaces the run."""
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-")[:40] or "import"
    return f"import-{slug}-{stable_hash([name, sha256, corpus_id, split], 10)}"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def import_hypotheses(corpus_dir: str | Path, file: str | Path, name: str, db: str | Path, split: str | None = "auto",
                      fmt: str = "auto", engine_notes: str | None = None, normalizer: str = "zh-v1",
                      slices: Sequence[str] | None = None, n_boot: int = 1000,
                      ci_method: str = "auto") -> ImportResult:
    """Parse, match, then (one writer) register the model and run, load the hypotheses, score the
    run per slice and compare it with every other finished run of the corpus split."""
    from asr_eval.provenance import package_versions
    from asr_eval.scoring.analysis import analyse_with_stored, check_options
    from asr_eval.store import connect
    from asr_eval.store.load import (
        load_corpus,
        load_hypotheses,
        register_model,
        upsert_eval_run,
    )
    from asr_eval.text import get_profile

    check_options(ci_method)  # fail before reading anything
    if not name or not name.strip():
        raise AsrEvalError("--name must name the system the hypotheses come from (e.g. sensevoice-small)")
    name = name.strip()
    get_profile(normalizer)  # fail fast on an unknown profile
    corpus = open_corpus(corpus_dir)
    split = corpus.resolve_split(split)
    hf = read_hyp_file(file, fmt)
    m = match_hypotheses(hf, split_utterances(corpus, split))
    if not m.texts:
        raise AsrEvalError(f"{hf.path}: no hypothesis matched an utterance of the split; nothing to import")
    run_id = import_run_id(name, hf.sha256, corpus.corpus_id, split)
    model_id = f"import:{name}@{hf.sha256[:12]}"
    ids = sorted(m.texts)
    hyps = pa.table({"utt_id": pa.array(ids, pa.string()), "hyp_raw": pa.array([m.texts[u] for u in ids], pa.string())})
    times = [r.time_s for r in hf.rows]
    durs = [r.duration_s for r in hf.rows]
    timed = bool(times) and all(t is not None for t in times) and all(d is not None for d in durs)
    audio_s = float(sum(durs)) if timed else None  # type: ignore[arg-type]
    proc_s = float(sum(times)) if timed else None  # type: ignore[arg-type]
    provenance = {
        "source_file": str(hf.path.resolve()), "source_sha256": hf.sha256, "format": hf.format,
        "imported_at": _now().isoformat(timespec="seconds") + "Z", "engine_notes": engine_notes,
        "n_rows": len(hf.rows), "matched_by": m.matched_by, "n_empty": m.n_empty,
        "timing": "from the file's time/duration fields" if timed else None,
    }
    con = connect(db)
    try:
        cid = load_corpus(con, corpus)
        if cid != corpus.corpus_id:  # pragma: no cover - both hash the same index.json
            raise AssertionError(f"corpus id {cid} != {corpus.corpus_id}")
        register_model(con, {"model_id": model_id, "name": name, "source": "import", "path": str(hf.path.resolve()),
                             "revision": hf.sha256, "display_name": name,
                             "config": {"format": hf.format, "engine_notes": engine_notes}})
        n = load_hypotheses(con, run_id, hyps)
        now = _now()
        upsert_eval_run(con, {
            "run_id": run_id, "corpus_id": cid, "split": split, "model_id": model_id, "status": "done",
            "started_at": now, "finished_at": now, "device": None, "dtype": None, "batch_size": None,
            "decode_params": None, "versions": package_versions(), "n_utts": n, "audio_s": audio_s, "proc_s": proc_s,
            "rtfx": audio_s / proc_s if timed and proc_s else None, "peak_gpu_mem_bytes": None,
            "kind": "import", "engine": "import", "engine_version": None, "compute_type": None,
            "preprocessing": None, "recipe": None, "strategy": None, "provenance": provenance,
            "n_missing": len(m.missing),
        })
        others = analyse_with_stored(con, [run_id], normalizer, slices, n_boot, 0, ci_method)
    finally:
        con.close()
    return ImportResult(run_id, model_id, corpus.corpus_id, split, hf.format, hf.sha256, len(hf.rows), n,
                        len(m.missing), m.n_empty, tuple(others))
