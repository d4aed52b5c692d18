"""KeSpeech (Mandarin and eight subdialects; NeurIPS 2021 Datasets track) as distributed.

Layout facts, and where they were verified:

- ``KeSpeech/Tasks/ASR/{train_phase1,train_phase2,dev_phase1,dev_phase2,test}/`` are Kaldi-style
  folders with ``wav.scp``, ``text``, ``utt2spk`` and ``utt2subdialect`` (lhotse-speech/lhotse
  ``lhotse/recipes/kespeech.py``: ``KE_SPEECH_PARTS`` and the four files it opens per part).
- ``wav.scp`` paths are relative to the ``KeSpeech`` folder, not to the task folder (lhotse
  resolves ``corpus_dir / wav_path``): pointing the generic Kaldi layout at a task folder would
  miss every file, so this layout also recognises a task folder and reads it from the root.
- ``text`` carries ``<SPOKEN_NOISE>`` markers, which lhotse's ``text_normalize`` deletes; here
  every ``<UPPER_CASE>`` tag is deleted the same way (``strip_tags``).
- The subdialect (``utt2subdialect``: Mandarin or one of the eight subdialects) is the slice
  column ``subdialect``; lhotse stores it as the supervision's language.
- NOT verified (no public recipe reads them): speaker tables in ``KeSpeech/Metadata/``
  (``spk2gender``, ``spk2age``, ``spk2city`` as Kaldi-style ``spk value`` lines). When present they
  become the slice columns ``gender``, ``age`` and ``city``; when absent those columns are not made.

``text`` is read with ``read_text_lines`` (UTF-8, else GB18030: ``describe()["encoding"]``), the
other tables with the Kaldi reader's table reader (UTF-8).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from asr_eval.audio import Reason
from asr_eval.corpus.base import (
    Item,
    Rejection,
    Utterance,
    check_splits,
    parse_splits,
    read_text_lines,
    resolve_audio,
)
from asr_eval.corpus.kaldi import _table
from asr_eval.corpus.registry import Layout, SourceOptions, TestSet, register_layout, register_test_set
from asr_eval.corpus.thchs import only_subfolder
from asr_eval.errors import AsrEvalError

LAYOUT = "kespeech"
TOP = "KeSpeech"
PARTS = ("train_phase1", "train_phase2", "dev_phase1", "dev_phase2", "test")
TASK_FILES = ("wav.scp", "text", "utt2subdialect")
SPEAKER_TABLES = {"gender": "spk2gender", "age": "spk2age", "city": "spk2city"}  # unverified names

_TAG = re.compile(r"<[A-Z][A-Z_]*>")


def strip_tags(text: str) -> str:
    """Delete ``<SPOKEN_NOISE>``-style markers and tidy the spaces they leave."""
    return " ".join(_TAG.sub(" ", text).split())


def _is_part(p: Path) -> bool:
    return all((p / f).is_file() for f in TASK_FILES)


def _is_top(p: Path) -> bool:
    asr = p / "Tasks" / "ASR"
    return asr.is_dir() and any(_is_part(asr / part) for part in PARTS)


def find_root(p: Path) -> tuple[Path, str | None] | None:
    """(the ``KeSpeech`` folder, the one task part pointed at or None) for ``p`` = the KeSpeech
    folder, the folder it was extracted into, ``Tasks/ASR``, or one task part folder."""
    if not p.is_dir():
        return None
    if _is_top(p):
        return p, None
    if only_subfolder(p, TOP) and _is_top(p / TOP):
        return p / TOP, None
    if p.name == "ASR" and p.parent.name == "Tasks" and _is_top(p.parent.parent):
        return p.parent.parent, None
    if _is_part(p) and p.parent.name == "ASR" and p.parent.parent.name == "Tasks" and _is_top(p.parents[2]):
        return p.parents[2], p.name
    return None


@dataclass
class KeSpeechReader:
    root: Path
    splits: tuple[str, ...] | None = None
    confine_to_root: bool = False
    layout: str = LAYOUT
    name: str = "kespeech"

    def __post_init__(self) -> None:
        given = Path(self.root)
        found = find_root(given)
        if found is None:
            raise AsrEvalError(f"{given}: not KeSpeech as distributed (expected {TOP}/Tasks/ASR/<part>/ with "
                               f"{', '.join(TASK_FILES)}); point at the KeSpeech folder")
        self.root, part = found
        asr = self.root / "Tasks" / "ASR"
        present = tuple(p for p in PARTS if _is_part(asr / p))
        self._splits = check_splits(self.splits or ((part,) if part else None), present, self.root)

    def describe(self) -> dict:
        asr = self.root / "Tasks" / "ASR"
        enc = {read_text_lines(asr / s / "text")[0] for s in self._splits}
        meta = [t for t in SPEAKER_TABLES.values() if (self.root / "Metadata" / t).is_file()]
        return {"layout": self.layout, "path": str(self.root), "splits": list(self._splits),
                "encoding": "+".join(sorted(enc)), "speaker_tables": meta,
                **({"confine_to_root": True} if self.confine_to_root else {})}

    def items(self) -> Iterator[Item]:
        speaker_meta, bad = self._speaker_tables()
        yield from bad
        for split in self._splits:
            yield from self._part(split, speaker_meta)

    def _speaker_tables(self) -> tuple[dict[str, dict[str, str]], list[Rejection]]:
        tables: dict[str, dict[str, str]] = {}
        bad: list[Rejection] = []
        for col, fname in SPEAKER_TABLES.items():
            path = self.root / "Metadata" / fname
            if path.is_file():
                tables[col], errs = _table(path, fname)
                bad += errs
        return tables, bad

    def _part(self, split: str, speaker_meta: dict[str, dict[str, str]]) -> Iterator[Item]:
        d = self.root / "Tasks" / "ASR" / split
        wav, bad_w = _table(d / "wav.scp", "wav.scp")
        utt2spk, bad_s = _table(d / "utt2spk", "utt2spk")
        dialect, bad_d = _table(d / "utt2subdialect", "utt2subdialect")
        text, bad_t = self._text(d / "text")
        yield from bad_w + bad_t + bad_s + bad_d
        for utt, entry in wav.items():
            where = f"{d / 'text'} ({utt})"
            if utt not in text:
                yield Rejection(Reason.BAD_ROW, f"utterance {utt!r} is in {split}/wav.scp but has no line in "
                                f"{split}/text", where, utt)
                continue
            if not entry or len(entry.split()) > 1:
                yield Rejection(Reason.BAD_ROW, f"{split}/wav.scp line for {utt!r} is not a single path: "
                                f"{entry!r}", f"{d / 'wav.scp'} ({utt})", utt, entry)
                continue
            resolved = resolve_audio(self.root, entry, self.confine_to_root)
            if isinstance(resolved, Rejection):
                resolved.where, resolved.utt_id = where, utt
                yield resolved
                continue
            spk = utt2spk.get(utt)
            meta: dict[str, str | None] = {"subdialect": dialect.get(utt) or None}
            for col, table in speaker_meta.items():
                meta[col] = table.get(spk) if spk else None
            yield Utterance(utt_id=utt, text=strip_tags(text[utt]), split=split, audio_path=resolved,
                            source_path=entry, speaker=spk, metadata=meta, where=where)
        for utt in text:
            if utt not in wav:
                yield Rejection(Reason.MISSING_FILE, f"utterance {utt!r} is in {split}/text but not in "
                                f"{split}/wav.scp (no audio)", f"{d / 'text'}", utt)

    @staticmethod
    def _text(path: Path) -> tuple[dict[str, str], list[Rejection]]:
        out: dict[str, str] = {}
        bad: list[Rejection] = []
        _, lines = read_text_lines(path)
        for i, line, _raw in lines:
            where = f"{path}:{i}"
            if line is None:
                bad.append(Rejection(Reason.BAD_ENCODING, "text line is neither UTF-8 nor GB18030", where))
                continue
            if not line.strip():
                continue
            utt, *rest = line.split(maxsplit=1)
            if utt in out:
                bad.append(Rejection(Reason.DUPLICATE_ID, f"text has {utt!r} again (the first line wins)", where, utt))
                continue
            out[utt] = rest[0].strip() if rest else ""
        return out, bad


def _opens(source: str, opts: SourceOptions) -> KeSpeechReader:
    return KeSpeechReader(Path(source), parse_splits(opts.split), opts.confine_to_root)


register_layout(Layout(LAYOUT, lambda p, _s: find_root(p) is not None, _opens,
                       "KeSpeech as distributed (KeSpeech/Tasks/ASR/<part>/ with wav.scp, text, utt2subdialect)"))
register_test_set(TestSet("kespeech/test", "KeSpeech test (Mandarin + 8 subdialects)", LAYOUT, "test",
                          url="https://github.com/KeSpeech/KeSpeech"))
