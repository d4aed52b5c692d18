"""WenetSpeech as distributed: ``WenetSpeech.json`` beside ``audio/`` (Opus recordings).

The folder the download script (``utils/download_wenetspeech.sh``) untars into::

    wenetspeech/                      ← point asr-eval here (or at WenetSpeech.json itself)
    ├── WenetSpeech.json              one JSON object, ~1–2 GB for the full release
    ├── TERMS_OF_ACCESS
    └── audio/{train,dev,test_net,test_meeting}/<source>/B000nn/<aid>.opus

``WenetSpeech.json`` is ``{…, "audios": [{"aid", "path", "duration", "source", "segments": [{"sid",
"begin_time", "end_time", "text", "confidence", "subsets": ["L", "M", …]}, …], …}, …]}``: one entry
per long recording, its segments carrying the subsets they belong to (training subsets L ⊃ M ⊃ S
and W; evaluation subsets DEV, TEST_NET, TEST_MEETING). Items are the segments (a cut of the Opus
file: ``offset_s``/``duration_s``), or, with ``recording_level``, the recordings (one item per
recording and split, reference = the segments' texts in time order, segment times kept).

Splits are the subset tags lower-cased with the training subsets prefixed, as the WeNet recipe names
them: ``test_net``, ``test_meeting``, ``dev``, ``train_l``, ``train_m``, ``train_s``, ``train_w``.
Without ``--split`` only the evaluation subsets are read (the training subsets are 10k hours); a
segment in several requested subsets goes to the first one requested.

The JSON is parsed as a stream (ijson, its C parser: the ``audios`` array one recording at a time),
so memory is bounded by one recording's entry. A
file cut short (an interrupted download or untar) keeps the recordings read before the break and
reports the break as one rejection naming the byte offset and the last recording read; a file that
breaks before any recording is an ``AsrEvalError``.

Layout facts, verified from: lhotse-speech/lhotse ``lhotse/recipes/wenet_speech.py`` (corpus dir
holds ``WenetSpeech.json``; ``audios`` entries with ``aid``, ``path`` relative to the corpus dir,
``duration``, ``segments`` with ``sid``, ``begin_time``, ``end_time``, ``text``, ``subsets``; parts
L/M/S/DEV/TEST_NET/TEST_MEETING); wenet-e2e/WenetSpeech ``toolkits/wenet/s0/local/
wenetspeech_data_prep.sh`` (corpus dir holds ``WenetSpeech.json`` and ``audio/``; subset tags
L/M/S/W/DEV/TEST_NET/TEST_MEETING → train_l/…/dev/test_net/test_meeting),
``toolkits/wenet/extract_meta.py`` (path joined to the JSON's folder), ``utils/fix_json.py`` (the
file is written by ``json.dump(indent=4, ensure_ascii=False)``: UTF-8), ``metadata/v1.list`` and
``utils/download_wenetspeech.sh`` (the ``audio/<split>/<source>/B000nn`` tarballs untarred into
one folder). Not verified (no public copy of the JSON found): the recording-level ``source``
(youtube/podcast) and domain (``tags`` list or ``category``) fields; they become the ``source`` and
``domain`` slice columns when present and are left out otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from asr_eval.audio import Reason
from asr_eval.corpus.base import Item, Rejection, Utterance, parse_splits, resolve_audio
from asr_eval.corpus.registry import (
    Layout,
    SourceOptions,
    TestSet,
    register_layout,
    register_test_set,
)
from asr_eval.errors import AsrEvalError

JSON_NAME = "WenetSpeech.json"
URL = "https://wenet.org.cn/WenetSpeech/"
# subset tag in the JSON → split name (the WeNet recipe's)
SUBSET_SPLIT = {"TEST_NET": "test_net", "TEST_MEETING": "test_meeting", "DEV": "dev",
                "L": "train_l", "M": "train_m", "S": "train_s", "W": "train_w"}
DEFAULT_SPLITS = ("test_net", "test_meeting", "dev")
REFETCH = ("extract WenetSpeech.json again from WenetSpeech.json.aes.tgz (its md5 is in the release's "
           "metadata/v1.list)")


# ───────────────────────────── streaming JSON ─────────────────────────────


class JsonBreak(Exception):
    """The JSON stream cannot be read past ``offset`` (a byte offset into the file)."""

    def __init__(self, offset: int, what: str, reason: Reason = Reason.BAD_ROW):
        super().__init__(what)
        self.offset, self.what, self.reason = offset, what, reason


BUF_SIZE = 1 << 16  # bytes ijson reads at a time


class _Counted:
    """A binary file that counts what was read and keeps the last block (to place a break)."""

    def __init__(self, f: BinaryIO):
        self.f, self.n, self.last, self.last_at = f, 0, b"", 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.last, self.last_at = data, self.n
        self.n += len(data)
        return data

    def bad_utf8_at(self) -> int | None:
        """The byte offset of the first invalid UTF-8 sequence in the last block read, if any."""
        try:
            self.last.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.end < len(self.last) or e.reason != "unexpected end of data":
                return self.last_at + e.start
        return None


def iter_audios(f: BinaryIO) -> Iterator[dict]:
    """The entries of the top-level ``audios`` array, one at a time; ``JsonBreak`` where it breaks.

    Streamed with ijson (its C parser: the release's JSON is 1–2 GB, never loaded whole); other
    top-level keys are skipped. No ``audios`` key: JsonBreak at the end."""
    import ijson

    src = _Counted(f)
    n = 0
    try:
        for val in ijson.items(src, "audios.item", buf_size=BUF_SIZE, use_float=True):
            n += 1
            yield val if isinstance(val, dict) else {"__not_an_object__": val}
    except (ijson.JSONError, UnicodeDecodeError) as e:
        what = str(e.args[0] if e.args else e)
        what = (what.decode("utf-8", "replace") if isinstance(what, bytes) else what).splitlines()[0]
        bad = src.bad_utf8_at()
        if bad is not None or isinstance(e, UnicodeDecodeError):
            raise JsonBreak(bad if bad is not None else src.n, "bytes that are not UTF-8", Reason.BAD_ENCODING) from None
        ends = "premature EOF" in what or src.f.read(1) == b""
        raise JsonBreak(src.n, f"{'the file ends' if ends else 'the JSON is malformed'} ({what})") from None
    if n == 0:  # nothing at all: is there an 'audios' array? (a second pass, over a file without recordings)
        f.seek(0)
        if not any(p == "" and e == "map_key" and v == "audios" for p, e, v in ijson.parse(f)):
            raise JsonBreak(src.n, "the top-level object has no 'audios' array")


# ───────────────────────────── reader ─────────────────────────────


@dataclass
class WenetSpeechReader:
    root: Path
    splits: tuple[str, ...] | None = None
    confine_to_root: bool = False
    recording_level: bool = False
    layout: str = "wenetspeech"
    name: str = "wenetspeech"

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.root.is_file() and self.root.name == JSON_NAME:
            self.root = self.root.parent
        self.json_path = self.root / JSON_NAME
        if not self.json_path.is_file():
            raise AsrEvalError(f"{self.root} is not a WenetSpeech folder: {JSON_NAME} is missing; point at the "
                               "folder the release was untarred into (WenetSpeech.json + audio/)")
        if self.json_path.stat().st_size == 0:
            raise AsrEvalError(f"{self.json_path} is empty: {REFETCH}")
        known = tuple(SUBSET_SPLIT.values())
        bad = [s for s in self.splits or () if s not in known]
        if bad:
            raise AsrEvalError(f"WenetSpeech has no split {bad[0]!r}; its splits are {', '.join(known)} "
                               f"(default: {', '.join(DEFAULT_SPLITS)})")
        self._splits = tuple(self.splits or DEFAULT_SPLITS)

    def describe(self) -> dict:
        st = self.json_path.stat()
        d = {"layout": self.layout, "path": str(self.root), "json": JSON_NAME, "json_bytes": st.st_size,
             "splits": list(self._splits), "encoding": "utf-8",
             "note": "without --split only the evaluation subsets are read (training subsets: 10k hours)"}
        if self.confine_to_root:
            d["confine_to_root"] = True
        return {**d, "recording_level": True} if self.recording_level else d

    def items(self) -> Iterator[Item]:
        n_read, last = 0, None
        with self.json_path.open("rb") as f:
            try:
                for audio in iter_audios(f):
                    n_read += 1
                    last = audio.get("aid") if isinstance(audio.get("aid"), str) else last
                    yield from self._audio(audio, n_read)
            except JsonBreak as e:
                after = f"after recording {last!r}" if last else f"after {n_read} recording(s)"
                if n_read == 0:
                    raise AsrEvalError(f"{self.json_path}: cannot read it at byte {e.offset}: {e.what}. "
                                       f"No recording could be read; {REFETCH}") from None
                yield Rejection(e.reason, f"{JSON_NAME} breaks at byte {e.offset} ({after}): {e.what}. The "
                                f"{n_read} recording(s) before it are kept, the rest is unread; {REFETCH}",
                                where=f"{self.json_path}:byte {e.offset}")

    def _audio(self, audio: dict, n: int) -> Iterator[Item]:
        """The items of one recording (``n``: its 1-based position in ``audios``)."""
        aid, rel = audio.get("aid"), audio.get("path")
        where = f"{self.json_path} (audios[{n - 1}]" + (f", aid {aid})" if isinstance(aid, str) else ")")
        segs = audio.get("segments")
        if not isinstance(aid, str) or not aid or not isinstance(rel, str) or not rel or not isinstance(segs, list):
            yield Rejection(Reason.BAD_ROW, "recording entry needs a string 'aid', a string 'path' and a "
                            f"'segments' list (has {sorted(audio)[:8]}); fix or re-extract {JSON_NAME}", where,
                            aid if isinstance(aid, str) else None)
            return
        for k, seg in enumerate(segs):
            if not isinstance(seg, dict) or not isinstance(seg.get("subsets"), list):
                yield Rejection(Reason.BAD_ROW, f"segment {k} of recording {aid!r} is not an object with a "
                                f"'subsets' list ({seg!r:.200}); fix or re-extract {JSON_NAME}", where, None, rel)
        chosen = [(seg, split) for seg in segs if (split := self._split_of(seg)) is not None]
        if not chosen:
            return
        resolved = resolve_audio(self.root, rel, self.confine_to_root)
        if isinstance(resolved, Path) and not resolved.is_file():
            resolved = Rejection(Reason.MISSING_FILE, f"{rel} (recording {aid}) is not under {self.root}: untar "
                                 f"its audio tarball ({Path(rel).parent}.aes.tgz) into this folder", where,
                                 source_path=rel)
        meta = _metadata(audio)
        if self.recording_level:
            yield from self._recordings(aid, rel, resolved, chosen, meta, where)
            return
        for seg, split in chosen:
            yield self._segment(seg, split, aid, rel, resolved, meta, where)

    def _split_of(self, seg: object) -> str | None:
        tags = seg.get("subsets") if isinstance(seg, dict) else None
        mine = {SUBSET_SPLIT.get(str(t), str(t).lower()) for t in tags} if isinstance(tags, list) else set()
        return next((s for s in self._splits if s in mine), None)

    def _segment(self, seg: dict, split: str, aid: str, rel: str, resolved: Path | str | Rejection, meta: dict,
                 where: str) -> Item:
        sid, text = seg.get("sid"), seg.get("text")
        if not isinstance(sid, str) or not sid:
            return Rejection(Reason.BAD_ROW, f"a segment of recording {aid!r} has no string 'sid' ({seg!r:.200})",
                             where, None, rel)
        where = f"{self.json_path} (sid {sid})"
        times = _times(seg)
        if isinstance(times, str):
            return Rejection(Reason.BAD_ROW, f"segment {sid!r}: {times}; fix its begin_time/end_time in "
                             f"{JSON_NAME}", where, sid, rel)
        if not isinstance(text, str):
            return Rejection(Reason.BAD_ROW, f"segment {sid!r} has no string 'text' ({text!r:.100})", where, sid, rel)
        if isinstance(resolved, Rejection):
            return Rejection(resolved.reason, resolved.detail, where, sid, rel)
        begin, end = times
        return Utterance(utt_id=sid, text=text.strip(), split=split, audio_path=resolved, source_path=rel,
                         offset_s=begin, duration_s=round(end - begin, 6), metadata=dict(meta), where=where)

    def _recordings(self, aid: str, rel: str, resolved: Path | str | Rejection, chosen: list, meta: dict,
                    where: str) -> Iterator[Item]:
        """One item per recording and split: reference = the split's segments in time order. A
        recording with a bad segment is rejected whole (its reference would be incomplete)."""
        by_split: dict[str, list] = {}
        for seg, split in chosen:
            by_split.setdefault(split, []).append(seg)
        for split, segs in by_split.items():
            rid = aid if len(by_split) == 1 else f"{aid}-{split}"
            if isinstance(resolved, Rejection):
                yield Rejection(resolved.reason, resolved.detail, where, rid, rel)
                continue
            items = [self._segment(s, split, aid, rel, resolved, meta, where) for s in segs]
            bad = [it for it in items if isinstance(it, Rejection)]
            if bad:
                yield Rejection(Reason.BAD_ROW, f"recording {aid!r} ({split}): {bad[0].detail} — its reference "
                                f"would be incomplete, so the recording is kept out ({len(bad)} bad segment(s))",
                                where, rid, rel)
                continue
            spans = sorted((u.offset_s, u.offset_s + (u.duration_s or 0.0), u.text) for u in items)
            yield Utterance(utt_id=rid, text=" ".join(t for _, _, t in spans), split=split, audio_path=resolved,
                            source_path=rel, metadata={**meta, "n_segments": str(len(spans))}, where=where,
                            segments=[(round(a, 6), round(b, 6), t) for a, b, t in spans])


def _times(seg: dict) -> tuple[float, float] | str:
    b, e = seg.get("begin_time"), seg.get("end_time")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (b, e)):
        return f"begin_time {b!r} / end_time {e!r} are not numbers"
    b, e = float(b), float(e)
    if not (math.isfinite(b) and math.isfinite(e)) or b < 0 or e <= b:
        return f"end_time {e} is not after begin_time {b} (need 0 ≤ begin < end)"
    return b, e


def _metadata(audio: dict) -> dict[str, str | None]:
    """Recording-level slice columns, only those the JSON has: source (youtube/podcast), domain."""
    meta: dict[str, str | None] = {}
    src = audio.get("source")
    if isinstance(src, str) and src.strip():
        meta["source"] = src.strip().lower()
    tags = audio.get("tags")
    if isinstance(tags, list):
        tags = ",".join(sorted({str(t).strip() for t in tags if str(t).strip()}))
    domain = tags if isinstance(tags, str) and tags.strip() else audio.get("category")
    if isinstance(domain, str) and domain.strip():
        meta["domain"] = domain.strip()
    return meta


# ───────────────────────────── registration ─────────────────────────────


def detects(path: Path, _source: str) -> bool:
    """The folder holding WenetSpeech.json (the untar folder), or the JSON file itself."""
    if path.is_file():
        return path.name == JSON_NAME
    return path.is_dir() and (path / JSON_NAME).is_file()


def opens(source: str, o: SourceOptions) -> WenetSpeechReader:
    return WenetSpeechReader(Path(source), parse_splits((o.split or "").lower()), o.confine_to_root, o.recording_level)


register_layout(Layout("wenetspeech", detects, opens, "a WenetSpeech folder (WenetSpeech.json + audio/)",
                       recording_level=True))
for _split, _title in (("test_net", "WenetSpeech TEST_NET (internet, matched)"),
                       ("test_meeting", "WenetSpeech TEST_MEETING (far-field meetings, mismatched)"),
                       ("dev", "WenetSpeech DEV")):
    register_test_set(TestSet(f"wenetspeech/{_split}", _title, "wenetspeech", _split, url=URL))
