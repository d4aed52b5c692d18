"""MagicData-RAMC (openslr 123, MDT2021S003) as distributed: conversational Mandarin, 351 dialogues.

The folder the recipes expect (the two archives unpacked side by side)::

    MagicData-RAMC/                   ← point asr-eval here (or at MDT2021S003/)
    ├── DataPartition/{train,dev,test}.tsv    the official split: one WAV file name a line
    ├── KeywordList/…
    └── MDT2021S003/
        ├── README.txt
        ├── SPKINFO.txt               CHANNEL  SPEAKER_ID  GENDER  AGE  REGION,CITY  DEVICE
        ├── UTTERANCEINFO.txt         CHANNEL  UTTRANS_ID(.wav)  SPEAKER_ID-1  SPEAKER_ID-2  TOPIC  …
        ├── TXT/<dialogue>.txt        [start,end] <TAB> speaker <TAB> gender,dialect <TAB> text
        └── WAV/<dialogue>.wav        the whole dialogue, 16 kHz

Items are the timed lines of TXT (cuts of the dialogue's WAV: ``offset_s``/``duration_s``), with the
speaker and the slice columns gender, dialect (from the line), age, region (SPKINFO.txt) and topic
(UTTERANCEINFO.txt); with ``recording_level``, the dialogues (reference = their speech lines in
time order, line times kept). Splits are the partition files' names: ``train``, ``dev``, ``test``.

Quirks: the transcripts keep the corpus's bracket marks (``[+]``, ``[++]``, ``[*]``, ``[LAUGHTER]``,
``[SONANT]``, ``[MUSIC]``, ``[ENS]``…: the normalizer drops bracket tags); a line that is only marks
and punctuation is rejected as ``empty_transcript``; so is a line of speaker ``G00000000``, which
marks audio of no participant and which the official recipe leaves out. The partition files start
with a line that is not a file name (a path), which is skipped. Transcripts in GBK are decoded as
GB18030 (``describe()["encoding"]``). A dialogue listed in a partition with no TXT/WAV, and a
TXT/WAV in no partition, are each reported.

Layout facts, verified from: MagicHub-io/MagicData-AccentedMandarin-ASR-Challenge
``asr/local/extract_magicdata_ramc.py`` (the tree above; partition files skip their first line and
name ``<dialogue>.wav``; TXT lines split on tabs into exactly 4 fields, times ``[beg,end]``; lines of
``G00000000`` and mark-only lines left out; the mark list) and ``asr/local/prepare_magicdata_ramc.sh``
(root holds ``DataPartition/`` and ``MDT2021S003/``); HaoranMiao/MagicData-RAMC ``README.md`` (the
SPKINFO/UTTERANCEINFO columns, the annotation line format ``[1.319,6.691]␉G00000140␉女,普通话␉…``,
the 289/19/43 dialogue partition); MagicHub-io/MagicData-RAMC ``tsv/dev.tsv`` (partition lines are
``CTS-CN-F2F-2019-11-15-1421.wav``) and ``asr/scripts/prepare_magicdata_180h.py`` (``TXT/``, ``WAV/``
of the same stem). Not verified: the exact header line of the released partition files (any first
line that does not name a .wav is skipped) and the tab layout of SPKINFO/UTTERANCEINFO (tabs, or
runs of 2+ spaces, are accepted).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from asr_eval.audio import Reason
from asr_eval.corpus.base import (
    Item,
    Rejection,
    Utterance,
    has_content,
    read_text_lines,
    resolve_audio,
)
from asr_eval.corpus.registry import (
    Layout,
    SourceOptions,
    TestSet,
    register_layout,
    register_test_set,
)
from asr_eval.errors import AsrEvalError

CORPUS_DIR = "MDT2021S003"
PARTITION_DIR = "DataPartition"
SPLITS = ("train", "dev", "test")
URL = "https://www.openslr.org/123/"
NO_SPEAKER = "G00000000"
_TAG = re.compile(r"\[[^\[\]]*\]")
_TIMES = re.compile(r"^\[\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\]$")
_GENDER = {"女": "female", "男": "male", "f": "female", "m": "male", "female": "female", "male": "male"}


@dataclass
class _Line:
    """A parsed TXT line: a segment, or why it is not one."""

    start: float
    end: float
    speaker: str
    gender: str | None
    dialect: str | None
    text: str
    where: str


def _is_corpus(d: Path) -> bool:
    return (d / "TXT").is_dir() and (d / "WAV").is_dir()


def locate(root: Path) -> tuple[Path, Path | None] | None:
    """(the MDT2021S003 folder, the DataPartition folder or None) for a root people point at."""
    if (root / CORPUS_DIR).is_dir() and _is_corpus(root / CORPUS_DIR):
        corpus = root / CORPUS_DIR
    elif root.name.upper() == CORPUS_DIR and _is_corpus(root):
        corpus = root
    else:
        return None
    part = next((d for d in (root / PARTITION_DIR, corpus.parent / PARTITION_DIR, corpus / PARTITION_DIR)
                 if d.is_dir()), None)
    return corpus, part


def _fields(line: str, n: int) -> list[str]:
    """Tab-separated columns, or columns separated by runs of 2+ spaces."""
    cols = [c.strip() for c in line.split("\t")]
    if len(cols) < n:
        cols = [c.strip() for c in re.split(r"\s{2,}", line.strip())]
    return cols


@dataclass
class RamcReader:
    root: Path
    splits: tuple[str, ...] | None = None
    confine_to_root: bool = False
    recording_level: bool = False
    layout: str = "magicdata-ramc"
    name: str = "magicdata-ramc"
    _enc: dict[str, str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        found = locate(self.root)
        if found is None:
            raise AsrEvalError(f"{self.root} is not MagicData-RAMC: expected {CORPUS_DIR}/ with TXT/ and WAV/ "
                               f"(point at the folder holding {CORPUS_DIR}/ and {PARTITION_DIR}/)")
        self.corpus, part = found
        if part is None:
            raise AsrEvalError(f"{self.root}: no {PARTITION_DIR}/ (train.tsv, dev.tsv, test.tsv) beside "
                               f"{CORPUS_DIR}/; it defines the official split: unpack it from the openslr 123 "
                               f"download ({URL}) next to {CORPUS_DIR}/")
        self.partition = part
        present = tuple(s for s in SPLITS if (part / f"{s}.tsv").is_file())
        wanted = tuple(self.splits or present)
        bad = [s for s in wanted if s not in present]
        if bad or not wanted:
            raise AsrEvalError(f"{part}: no split {bad[0] if bad else 'at all'!r} (no {bad[0] if bad else '*'}"
                               f".tsv); the splits present are {', '.join(present) or 'none'}")
        self._splits = wanted

    # ── describe ──

    def _encodings(self) -> dict[str, str]:
        """Encoding of every transcript/info file read (computed once: the files are small)."""
        if self._enc is None:
            files = [self.partition / f"{s}.tsv" for s in self._splits]
            files += [p for p in (self.corpus / "SPKINFO.txt", self.corpus / "UTTERANCEINFO.txt") if p.is_file()]
            txt = self._index("TXT", ".txt")
            for s in self._splits:
                recs, _ = self._partition(s)
                files += [txt[r] for r in recs if r in txt]
            self._enc = {str(p.relative_to(self.root) if p.is_relative_to(self.root) else p): read_text_lines(p)[0]
                         for p in files}
        return self._enc

    def describe(self) -> dict:
        enc = self._encodings()
        kinds = sorted(set(enc.values()))
        d = {"layout": self.layout, "path": str(self.root), "corpus": CORPUS_DIR, "splits": list(self._splits),
             "encoding": kinds[0] if len(kinds) == 1 else "mixed",
             **({"non_utf8": {k: v for k, v in enc.items() if v != "utf-8"}} if kinds != ["utf-8"] else {})}
        if self.confine_to_root:
            d["confine_to_root"] = True
        return {**d, "recording_level": True} if self.recording_level else d

    # ── reading ──

    def _index(self, sub: str, suffix: str) -> dict[str, Path]:
        """Stem → file under TXT/ or WAV/ (nested folders too), in name order."""
        return {p.stem: p for p in sorted((self.corpus / sub).rglob(f"*{suffix}")) if p.is_file()}

    def _partition(self, split: str) -> tuple[list[str], list[Rejection]]:
        path = self.partition / f"{split}.tsv"
        recs: list[str] = []
        bad: list[Rejection] = []
        _, lines = read_text_lines(path)
        for i, line, _raw in lines:
            where = f"{path}:{i}"
            if line is None:
                bad.append(Rejection(Reason.BAD_ENCODING, "partition line decodes neither as UTF-8 nor as GB18030; "
                                     "re-save the file as UTF-8", where))
                continue
            if not line.strip():
                continue
            first = line.split()[0]
            if not first.lower().endswith(".wav"):
                if i > 1:  # the first line is a header (a path), the rest name files
                    bad.append(Rejection(Reason.BAD_ROW, f"partition line {line.strip()[:100]!r} does not name a "
                                         "<dialogue>.wav file", where))
                continue
            recs.append(Path(first.replace("\\", "/")).name[:-4])
        return recs, bad

    def _speakers(self) -> tuple[dict[str, dict[str, str | None]], list[Rejection]]:
        path = self.corpus / "SPKINFO.txt"
        out: dict[str, dict[str, str | None]] = {}
        bad: list[Rejection] = []
        if not path.is_file():
            return out, bad
        for i, line, _raw in read_text_lines(path)[1]:
            if line is None:
                bad.append(Rejection(Reason.BAD_ENCODING, "SPKINFO line decodes neither as UTF-8 nor as GB18030",
                                     f"{path}:{i}"))
                continue
            cols = _fields(line, 5)
            if not line.strip() or cols[0].upper() == "CHANNEL":
                continue
            if len(cols) < 5:
                bad.append(Rejection(Reason.BAD_ROW, f"SPKINFO line needs CHANNEL, SPEAKER_ID, GENDER, AGE, "
                                     f"REGION (has {len(cols)} column(s))", f"{path}:{i}"))
                continue
            region = re.split(r"[,，]", cols[4])[0].strip() or None
            out[cols[1]] = {"gender": _GENDER.get(cols[2].lower(), cols[2] or None), "age": cols[3] or None,
                            "region": region}
        return out, bad

    def _topics(self) -> tuple[dict[str, str | None], list[Rejection]]:
        path = self.corpus / "UTTERANCEINFO.txt"
        out: dict[str, str | None] = {}
        bad: list[Rejection] = []
        if not path.is_file():
            return out, bad
        for i, line, _raw in read_text_lines(path)[1]:
            if line is None:
                bad.append(Rejection(Reason.BAD_ENCODING, "UTTERANCEINFO line decodes neither as UTF-8 nor as "
                                     "GB18030", f"{path}:{i}"))
                continue
            cols = _fields(line, 5)
            if not line.strip() or cols[0].upper() == "CHANNEL":
                continue
            if len(cols) < 5 or not cols[1].lower().endswith(".wav"):
                bad.append(Rejection(Reason.BAD_ROW, "UTTERANCEINFO line needs CHANNEL, UTTRANS_ID (.wav), "
                                     "SPEAKER_ID-1, SPEAKER_ID-2, TOPIC", f"{path}:{i}"))
                continue
            out[cols[1][:-4]] = cols[4] or None
        return out, bad

    def _lines(self, txt: Path) -> Iterator[_Line | Rejection]:
        """The TXT file's timed lines, each a _Line or the Rejection that says why it is not a segment."""
        for i, line, _raw in read_text_lines(txt)[1]:
            where = f"{txt}:{i}"
            if line is None:
                yield Rejection(Reason.BAD_ENCODING, "transcript line decodes neither as UTF-8 nor as GB18030; "
                                "re-save the file as UTF-8", where)
                continue
            if not line.strip():
                continue
            cols = line.rstrip("\r\n").split("\t", 3)
            m = _TIMES.match(cols[0].strip())
            if len(cols) < 4 or m is None:
                yield Rejection(Reason.BAD_ROW, f"line {line.strip()[:120]!r} is not "
                                "'[start,end]<TAB>speaker<TAB>gender,dialect<TAB>text'", where)
                continue
            try:
                start, end = float(m.group(1)), float(m.group(2))
            except ValueError:
                start = end = float("nan")
            if not 0 <= start < end < float("inf"):
                yield Rejection(Reason.BAD_ROW, f"times {cols[0].strip()} are not '[start,end]' seconds with "
                                "0 ≤ start < end", where)
                continue
            info = [x.strip() for x in re.split(r"[,，]", cols[2])]
            gender = _GENDER.get(info[0].lower(), info[0] or None)
            dialect = info[1] or None if len(info) > 1 else None
            yield _Line(start, end, cols[1].strip(), gender, dialect, cols[3].strip(), where)

    def items(self) -> Iterator[Item]:
        wavs, txts = self._index("WAV", ".wav"), self._index("TXT", ".txt")
        speakers, bad_s = self._speakers()
        topics, bad_t = self._topics()
        yield from bad_s + bad_t
        listed: dict[str, str] = {}
        for split in SPLITS:
            if not (self.partition / f"{split}.tsv").is_file():
                continue
            recs, bad_p = self._partition(split)
            if split in self._splits:
                yield from bad_p
            for rec in recs:
                if rec in listed:
                    if split in self._splits:
                        yield Rejection(Reason.BAD_ROW, f"dialogue {rec!r} is already in {listed[rec]}.tsv",
                                        f"{self.partition / f'{split}.tsv'}", rec)
                    continue
                listed[rec] = split
                if split in self._splits:
                    yield from self._dialogue(rec, split, wavs.get(rec), txts.get(rec), speakers, topics)
        for stem, p in [*wavs.items(), *txts.items()]:
            if stem not in listed:
                yield Rejection(Reason.BAD_ROW, f"{p.relative_to(self.corpus)} is in none of "
                                f"{PARTITION_DIR}/{{train,dev,test}}.tsv, so in no split", str(p), stem)

    def _dialogue(self, rec: str, split: str, wav: Path | None, txt: Path | None, speakers: dict,
                  topics: dict) -> Iterator[Item]:
        part = f"{self.partition / f'{split}.tsv'} ({rec}.wav)"
        if txt is None:
            gone = f"TXT/{rec}.txt is" if wav else f"TXT/{rec}.txt and WAV/{rec}.wav are"
            yield Rejection(Reason.BAD_ROW if wav else Reason.MISSING_FILE,
                            f"dialogue {rec!r} is listed in {split}.tsv but {CORPUS_DIR}/{gone} missing; unpack "
                            "the corpus archive again", part, rec)
            return
        if wav is None:
            audio: Path | str | Rejection = Rejection(
                Reason.MISSING_FILE, f"{CORPUS_DIR}/WAV/{rec}.wav is missing (its transcript TXT/{rec}.txt is "
                "there); unpack the corpus archive again", part, rec)
        else:
            audio = resolve_audio(self.root, str(wav), self.confine_to_root)
        src = f"{CORPUS_DIR}/WAV/{rec}.wav"
        topic = {"topic": topics.get(rec)} if topics else {}
        if self.recording_level:
            yield from self._recording(rec, split, audio, src, self._lines(txt), topic)
            return
        for ln in self._lines(txt):
            if isinstance(ln, Rejection):
                ln.source_path = src
                yield ln
                continue
            uid = f"{rec}-{ln.speaker}-{round(ln.start * 1000):07d}-{round(ln.end * 1000):07d}"
            why = _not_speech(ln)
            if why:
                yield Rejection(Reason.EMPTY_TRANSCRIPT, why, ln.where, uid, src)
                continue
            if isinstance(audio, Rejection):
                yield Rejection(audio.reason, audio.detail, ln.where, uid, src)
                continue
            info = speakers.get(ln.speaker, {})
            meta = {"gender": ln.gender or info.get("gender"), "dialect": ln.dialect,
                    **({"age": info.get("age"), "region": info.get("region")} if speakers else {}), **topic}
            yield Utterance(utt_id=uid, text=ln.text, split=split, audio_path=audio, source_path=src,
                            speaker=ln.speaker, offset_s=ln.start, duration_s=round(ln.end - ln.start, 6),
                            metadata=meta, where=ln.where)

    def _recording(self, rec: str, split: str, audio: Path | str | Rejection, src: str, lines: Iterator,
                   topic: dict) -> Iterator[Item]:
        """One item per dialogue: reference = its speech lines in time order (mark-only lines and
        G00000000 lines are not speech and are left out). A malformed line keeps the dialogue out."""
        segs: list[_Line] = []
        for ln in lines:
            if isinstance(ln, Rejection):
                yield Rejection(ln.reason, f"dialogue {rec!r}: {ln.detail}; its reference would be incomplete, so "
                                "the dialogue is kept out", ln.where, rec, src)
                return
            if not _not_speech(ln):
                segs.append(ln)
        where = f"{self.corpus / 'TXT' / (rec + '.txt')}"
        if isinstance(audio, Rejection):
            yield Rejection(audio.reason, audio.detail, where, rec, src)
            return
        segs.sort(key=lambda s: (s.start, s.end))
        spk = sorted({s.speaker for s in segs})
        yield Utterance(utt_id=rec, text=" ".join(s.text for s in segs), split=split, audio_path=audio,
                        source_path=src, metadata={**topic, "n_speakers": str(len(spk))}, where=where,
                        segments=[(s.start, s.end, s.text) for s in segs])


def _not_speech(ln: _Line) -> str | None:
    """Why a timed line is not a speech segment to score, or None."""
    if ln.speaker == NO_SPEAKER:
        return (f"speaker {NO_SPEAKER} marks audio of no participant (the official recipe leaves these lines "
                f"out): {ln.text[:80]!r}")
    if not has_content(_TAG.sub(" ", ln.text)):
        return f"segment is only noise/markup tags ({ln.text[:80]!r}), no speech to score"
    return None


# ───────────────────────────── registration ─────────────────────────────


def detects(path: Path, _source: str) -> bool:
    """The folder holding MDT2021S003/ (with TXT/ and WAV/), or MDT2021S003/ itself."""
    return path.is_dir() and locate(path) is not None


def opens(source: str, o: SourceOptions) -> RamcReader:
    splits = tuple(dict.fromkeys(s.strip().lower() for s in (o.split or "").split(",") if s.strip())) or None
    return RamcReader(Path(source), splits, o.confine_to_root, o.recording_level)


register_layout(Layout("magicdata-ramc", detects, opens,
                       f"MagicData-RAMC (a folder holding {CORPUS_DIR}/ with TXT/ + WAV/, and {PARTITION_DIR}/)",
                       recording_level=True))
register_test_set(TestSet("magicdata-ramc/test", "MagicData-RAMC test (43 dialogues)", "magicdata-ramc", "test",
                          url=URL))
register_test_set(TestSet("magicdata-ramc/dev", "MagicData-RAMC dev (19 dialogues)", "magicdata-ramc", "dev",
                          url=URL))
