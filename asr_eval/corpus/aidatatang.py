"""aidatatang_200zh (OpenSLR 62) as distributed: ``aidatatang_200zh.tgz`` extracted.

Layout facts, and where they were verified:

- ``aidatatang_200zh/transcript/aidatatang_200_zh_transcript.txt``: one file for every split,
  ``<utt id> <word> <word> …`` (lhotse-speech/lhotse ``lhotse/recipes/aidatatang_200zh.py``;
  kaldi-asr/kaldi ``egs/aidatatang_200zh/s5/local/data_prep.sh`` filters it with
  ``filter_scp.pl -f 1``). The words are space-separated: the text keeps a space only between
  two Latin/digit tokens (``base.join_words``).
- ``aidatatang_200zh/corpus/{train,dev,test}/G0001/T0055G0001S0001.wav``: the speaker is the
  ``G…`` folder (Kaldi's ``utt2spk`` takes field NF-1 of the path; lhotse ``audio_path.parts[-2]``),
  the utterance id the file stem. Kaldi warns when it finds other than 237 265 wavs and keeps
  only those with a transcript line: a wav without one is quarantined here, naming the file.
- As distributed, each split folder holds one ``G….tar.gz`` per speaker, extracted in place
  (Kaldi ``local/download_and_untar.sh``: ``cd corpus/$set; tar -zxf $wav && rm $wav``; lhotse
  extracts each into the split folder and keeps the archive). A tarball whose speaker folder is
  absent is an error naming that command: the two-pass ingest reads a split's audio from files.
- Beside each wav are ``.txt`` (the sentence) and ``.metadata`` (the release README, as copied in
  PaddlePaddle/PaddleSpeech ``examples/dataset/aidatatang_200zh/README.md``: "speech data coding
  and speaker information is preserved in the metadata file"). NOT verified: the ``.metadata``
  field names. They are read as ``KEY<tab>VALUE`` lines in the SpeechDat label style; ``SEX`` →
  ``gender``, ``AGE`` → ``age``, ``ACC`` → ``accent``, ``REG`` → ``region`` become slice columns
  when present (one file per speaker is read); nothing else is taken from it.

The transcript file is read with ``read_text_lines``: UTF-8, else GB18030
(``describe()["encoding"]``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from asr_eval.audio import Reason
from asr_eval.corpus.base import (
    Item,
    Rejection,
    Utterance,
    check_splits,
    join_words,
    parse_splits,
    read_text_lines,
    resolve_audio,
)
from asr_eval.corpus.registry import Layout, SourceOptions, TestSet, register_layout, register_test_set
from asr_eval.corpus.thchs import only_subfolder
from asr_eval.errors import AsrEvalError

LAYOUT = "aidatatang"
TOP = "aidatatang_200zh"
SPLITS = ("train", "dev", "test")
TRANSCRIPT = Path("transcript") / "aidatatang_200_zh_transcript.txt"
META_KEYS = {"SEX": "gender", "AGE": "age", "ACC": "accent", "REG": "region"}  # unverified field names


def _is_top(p: Path) -> bool:
    return (p / "corpus").is_dir() and (p / TRANSCRIPT).is_file()


def find_root(p: Path) -> Path | None:
    """The ``aidatatang_200zh`` folder: ``p`` itself, or the folder it was extracted into."""
    if not p.is_dir():
        return None
    if _is_top(p):
        return p
    if only_subfolder(p, TOP) and _is_top(p / TOP):
        return p / TOP
    return None


def _speaker(utt: str) -> str | None:
    """``T0055G0001S0001`` → ``G0001`` (the speaker folder's name)."""
    g = utt.find("G")
    s = utt.find("S", g + 1) if g >= 0 else -1
    return utt[g:s] if g >= 0 and s > g else None


@dataclass
class AidatatangReader:
    root: Path
    splits: tuple[str, ...] | None = None
    confine_to_root: bool = False
    layout: str = LAYOUT
    name: str = "aidatatang_200zh"

    def __post_init__(self) -> None:
        given = Path(self.root)
        top = find_root(given)
        if top is None:
            raise AsrEvalError(f"{given}: not aidatatang_200zh as extracted (expected {TOP}/corpus/ and "
                               f"{TOP}/{TRANSCRIPT.as_posix()}); extract it with `tar -xzf aidatatang_200zh.tgz` "
                               "and point at the aidatatang_200zh folder")
        self.root = top
        present = tuple(s for s in SPLITS if (top / "corpus" / s).is_dir())
        self._splits = check_splits(self.splits, present, top)
        for split in self._splits:
            self._check_extracted(top / "corpus" / split)
        self._encoding, _ = read_text_lines(top / TRANSCRIPT)

    @staticmethod
    def _check_extracted(folder: Path) -> None:
        packed = sorted(n for n in os.listdir(folder) if n.endswith(".tar.gz")
                        and not (folder / n[: -len(".tar.gz")]).is_dir())
        if packed:
            raise AsrEvalError(
                f"{folder} holds {len(packed)} speaker archive(s) not yet extracted ({', '.join(packed[:3])}"
                f"{', …' if len(packed) > 3 else ''}); extract them in place first: "
                f"`cd {folder} && for f in *.tar.gz; do tar -xzf \"$f\"; done`")

    def describe(self) -> dict:
        return {"layout": self.layout, "path": str(self.root), "splits": list(self._splits),
                "transcript": TRANSCRIPT.as_posix(), "encoding": self._encoding,
                **({"confine_to_root": True} if self.confine_to_root else {})}

    def items(self) -> Iterator[Item]:
        path = self.root / TRANSCRIPT
        texts, lines_of, bad = self._transcripts(path)
        yield from bad
        speakers = {s: d.name for d in self._split_dirs() for s in self._speaker_dirs(d)}
        seen: set[str] = set()
        for split in self._splits:
            folder = self.root / "corpus" / split
            for spk in self._speaker_dirs(folder):
                meta = self._metadata(folder / spk)
                for name in sorted(n for n in os.listdir(folder / spk) if n.endswith(".wav")):
                    utt = name[:-4]
                    seen.add(utt)
                    yield self._utterance(folder, spk, name, split, texts, lines_of, meta)
        every = set(self._splits) == {d.name for d in self._split_dirs()}
        for utt, line in lines_of.items():
            spk = _speaker(utt)
            split = speakers.get(spk or "")
            if utt in seen or (split not in self._splits and not (split is None and every)):
                continue  # another split's line (that split is not being read)
            where_audio = f"corpus/{split}/{spk}/{utt}.wav" if split else f"a corpus/*/{spk}/ folder"
            yield Rejection(Reason.MISSING_FILE, f"transcript line for {utt!r} has no audio ({where_audio} "
                            "is missing)", f"{path}:{line}", utt)

    def _split_dirs(self) -> list[Path]:
        return [self.root / "corpus" / s for s in SPLITS if (self.root / "corpus" / s).is_dir()]

    @staticmethod
    def _speaker_dirs(folder: Path) -> list[str]:
        return sorted(n for n in os.listdir(folder) if (folder / n).is_dir() and not n.startswith("."))

    def _transcripts(self, path: Path) -> tuple[dict[str, str], dict[str, int], list[Rejection]]:
        texts: dict[str, str] = {}
        lines_of: dict[str, int] = {}
        bad: list[Rejection] = []
        _, lines = read_text_lines(path)
        for i, line, _raw in lines:
            where = f"{path}:{i}"
            if line is None:
                bad.append(Rejection(Reason.BAD_ENCODING, "transcript line is neither UTF-8 nor GB18030", where))
                continue
            if not line.strip():
                continue
            utt, *rest = line.split(maxsplit=1)  # the id ends at the first space or tab
            words = rest[0] if rest else ""
            if utt in texts:
                bad.append(Rejection(Reason.DUPLICATE_ID, f"transcript has {utt!r} again (line {lines_of[utt]} "
                                     "wins)", where, utt))
                continue
            texts[utt], lines_of[utt] = join_words(words.split()), i
        return texts, lines_of, bad

    def _utterance(self, folder: Path, spk: str, name: str, split: str, texts: dict[str, str],
                   lines_of: dict[str, int], meta: dict[str, str | None]) -> Item:
        utt = name[:-4]
        rel = f"corpus/{split}/{spk}/{name}"
        if utt not in texts:
            return Rejection(Reason.BAD_ROW, f"audio {rel} has no line in {TRANSCRIPT.as_posix()}",
                             f"{folder / spk / name}", utt, rel)
        where = f"{self.root / TRANSCRIPT}:{lines_of[utt]}"
        if not texts[utt]:
            return Rejection(Reason.EMPTY_TRANSCRIPT, f"the transcript line for {utt!r} has no words", where, utt, rel)
        resolved = resolve_audio(self.root, rel, self.confine_to_root)
        if isinstance(resolved, Rejection):
            resolved.where, resolved.utt_id = where, utt
            return resolved
        return Utterance(utt_id=utt, text=texts[utt], split=split, audio_path=resolved, source_path=rel,
                         speaker=spk, metadata=dict(meta), where=where)

    @staticmethod
    def _metadata(folder: Path) -> dict[str, str | None]:
        """Speaker-level slices from the first ``.metadata`` file in the speaker's folder."""
        first = next(iter(sorted(n for n in os.listdir(folder) if n.endswith(".metadata"))), None)
        if first is None:
            return {}
        _, lines = read_text_lines(folder / first)
        out: dict[str, str | None] = {}
        for _i, line, _raw in lines:
            key, _, value = (line or "").strip().partition("\t")
            if not value:
                key, _, value = key.partition(" ")
            col = META_KEYS.get(key.strip().upper())
            if col and col not in out:
                out[col] = value.strip() or None
        return out


def _opens(source: str, opts: SourceOptions) -> AidatatangReader:
    return AidatatangReader(Path(source), parse_splits(opts.split), opts.confine_to_root)


register_layout(Layout(LAYOUT, lambda p, _s: find_root(p) is not None, _opens,
                       "aidatatang_200zh as extracted (corpus/ + transcript/aidatatang_200_zh_transcript.txt)"))
register_test_set(TestSet("aidatatang_200zh/test", "aidatatang_200zh test", LAYOUT, "test",
                          url="https://www.openslr.org/62/"))
