"""THCHS-30 (OpenSLR 18) as distributed: ``data_thchs30.tgz`` extracted.

Layout facts, and where they were verified:

- ``data_thchs30/data/`` holds every recording (``A11_0.wav``) and its transcript
  (``A11_0.wav.trn``): line 1 the word-segmented characters, line 2 pinyin, line 3 phones
  (PaddlePaddle/PaddleSpeech ``dataset/thchs30/thchs30.py`` ``read_trn``; kaldi-asr/kaldi
  ``egs/thchs30/s5/local/thchs-30_data_prep.sh`` reads ``sed -n 1p`` for words, ``3p`` for phones).
- ``data_thchs30/{train,dev,test}/`` define the splits (10 000 / 893 / 2 495 sentences): they hold
  the split's ``*.wav`` and ``*.wav.trn`` as links into ``data/`` (the release README, as copied
  in PaddleSpeech ``dataset/thchs30/README.md``). Where the links did not survive extraction or
  copying, a ``.wav.trn`` in a split folder is a one-line text file naming its target
  (``../data/A11_0.wav.trn``): PaddleSpeech ``resolve_symlink`` reads the path out of the file and
  resolves it against the file's folder. The audio is read from the split folder (PaddleSpeech,
  Kaldi's ``wav.scp``); a ``.wav`` that is likewise a pointer file is resolved the same way.
- Speaker = the id before ``_`` (``A11``): lhotse-speech/lhotse ``lhotse/recipes/thchs_30.py``.
- Text = line 1 with the spaces between words removed (PaddleSpeech joins ``lines[0].split()``);
  a single space is kept between two Latin/digit tokens.

A transcript that is a real file is read with ``read_text_lines`` (UTF-8, else GB18030); the
encodings met are in ``describe()["encoding"]``. Not verified: whether any release copy ships
non-UTF-8 ``.trn`` files (lhotse and PaddleSpeech open them as UTF-8).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
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
from asr_eval.errors import AsrEvalError

LAYOUT = "thchs30"
TOP = "data_thchs30"
SPLITS = ("train", "dev", "test")
RELEASE_PARTS = {"resource", "test-noise"}  # the other OpenSLR 18 tarballs, beside data_thchs30/
POINTER_MAX_BYTES = 512  # a pointer file holds one short relative path


def only_subfolder(path: Path, name: str, allowed: set[str] = frozenset()) -> bool:
    """``path`` holds ``name/`` and no other folder but ``allowed`` ones: the folder a user
    extracted one corpus into, not a folder of several corpora (detecting that as one corpus
    would hide the others from the suite's discovery)."""
    if not (path / name).is_dir():
        return False
    try:
        others = {p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")}
    except OSError:
        return False
    return others - {name} <= set(allowed)


def _is_top(p: Path) -> bool:
    data = p / "data"
    if not data.is_dir() or not any((p / s).is_dir() for s in SPLITS):
        return False
    return next(data.glob("*.wav.trn"), None) is not None


def find_root(p: Path) -> Path | None:
    """The ``data_thchs30`` folder: ``p`` itself, or the folder it was extracted into."""
    if not p.is_dir():
        return None
    if _is_top(p):
        return p
    if only_subfolder(p, TOP, RELEASE_PARTS) and _is_top(p / TOP):
        return p / TOP
    return None


def _pointer(path: Path) -> str | None:
    """The relative path a link-turned-file holds (``../data/A11_0.wav.trn``), else None."""
    try:
        if path.is_symlink() or path.stat().st_size > POINTER_MAX_BYTES:
            return None
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if "\n" in text or not text or not (text.endswith(".trn") or text.endswith(".wav")):
        return None
    return text if "/" in text or "\\" in text else None


@dataclass
class ThchsReader:
    root: Path
    splits: tuple[str, ...] | None = None
    confine_to_root: bool = False
    layout: str = LAYOUT
    name: str = "thchs30"
    _encodings: set[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        given = Path(self.root)
        top = find_root(given)
        if top is None:
            raise AsrEvalError(f"{given}: not THCHS-30 as extracted from data_thchs30.tgz (expected "
                               f"{TOP}/data/*.wav.trn and {TOP}/{{train,dev,test}}/); extract it with "
                               "`tar -xzf data_thchs30.tgz` and point at the data_thchs30 folder")
        self.root = top
        present = tuple(s for s in SPLITS if (top / s).is_dir())
        self._splits = check_splits(self.splits, present, top)

    def describe(self) -> dict:
        if self._encodings is None:
            for _ in self.items():
                pass
        return {"layout": self.layout, "path": str(self.root), "splits": list(self._splits),
                "encoding": "+".join(sorted(self._encodings or {"utf-8"})),
                **({"confine_to_root": True} if self.confine_to_root else {})}

    def items(self) -> Iterator[Item]:
        encodings: set[str] = set()
        for split in self._splits:
            yield from self._split_items(split, encodings)
        self._encodings = encodings

    def _split_items(self, split: str, encodings: set[str]) -> Iterator[Item]:
        folder = self.root / split
        names = sorted(os.listdir(folder))
        wavs = [n for n in names if n.endswith(".wav")]
        have = set(wavs)
        for name in wavs:
            yield self._utterance(folder, name, split, encodings)
        for name in names:
            if name.endswith(".wav.trn") and name[:-4] not in have:
                utt = name[:-8]
                yield Rejection(Reason.MISSING_FILE, f"transcript {split}/{name} has no audio {split}/{utt}.wav "
                                "in the split folder; extract data_thchs30.tgz again", f"{folder / name}", utt)

    def _utterance(self, folder: Path, name: str, split: str, encodings: set[str]) -> Item:
        utt = name[:-4]
        wav = folder / name
        audio = self._follow(wav)
        if isinstance(audio, Rejection):
            audio.utt_id = utt
            return audio
        resolved = resolve_audio(self.root, os.path.relpath(audio, self.root), self.confine_to_root)
        if isinstance(resolved, Rejection):
            resolved.where, resolved.utt_id = f"{wav}", utt
            return resolved
        text = self._transcript(folder, utt, encodings)
        if isinstance(text, Rejection):
            return text
        words, where = text
        return Utterance(utt_id=utt, text=join_words(words.split()), split=split, audio_path=resolved,
                         source_path=f"{split}/{name}", speaker=utt.split("_", 1)[0], where=where)

    def _follow(self, path: Path) -> Path | Rejection:
        """A file, or the file a pointer file names (relative to the pointer's folder, inside the corpus)."""
        target = _pointer(path)
        if target is None:
            return path
        full = Path(os.path.normpath(path.parent / target.replace("\\", "/")))
        if not full.is_relative_to(Path(os.path.normpath(self.root))):
            return Rejection(Reason.PATH_ESCAPE, f"{path.name} points at {target!r}, outside the corpus "
                             f"folder {self.root}", f"{path}", source_path=target)
        if not full.is_file():
            return Rejection(Reason.MISSING_FILE, f"{path.name} points at {target!r}, which does not exist; "
                             "extract data_thchs30.tgz again", f"{path}", source_path=target)
        return full

    def _transcript(self, folder: Path, utt: str, encodings: set[str]) -> tuple[str, str] | Rejection:
        """(line 1, where) of the utterance's ``.wav.trn``: the split folder's (a link or a pointer
        file) or, when the split folder has none, ``data/``'s (what Kaldi's recipe reads)."""
        trn = folder / f"{utt}.wav.trn"
        if not trn.exists():
            trn = self.root / "data" / f"{utt}.wav.trn"
            if not trn.is_file():
                return Rejection(Reason.BAD_ROW, f"audio {folder.name}/{utt}.wav has no transcript: neither "
                                 f"{folder.name}/{utt}.wav.trn nor data/{utt}.wav.trn exists", f"{folder / utt}.wav",
                                 utt)
        target = self._follow(trn)
        if isinstance(target, Rejection):
            target.utt_id = utt
            return target
        encoding, lines = read_text_lines(target)
        encodings.add(encoding)
        first = next(iter(lines), None)
        where = f"{target}:1"
        if first is None or first[1] is None:
            reason = Reason.BAD_ENCODING if first is not None else Reason.EMPTY_TRANSCRIPT
            what = "is neither UTF-8 nor GB18030" if first is not None else "is empty"
            return Rejection(reason, f"transcript line 1 {what}", where, utt)
        words = first[1].strip()
        if not words:
            return Rejection(Reason.EMPTY_TRANSCRIPT, "transcript line 1 (the characters) is empty", where, utt)
        return words, where


def _opens(source: str, opts: SourceOptions) -> ThchsReader:
    return ThchsReader(Path(source), parse_splits(opts.split), opts.confine_to_root)


register_layout(Layout(LAYOUT, lambda p, _s: find_root(p) is not None, _opens,
                       "THCHS-30 as extracted (data_thchs30/ with data/*.wav.trn and train/dev/test/)"))
register_test_set(TestSet("thchs-30/test", "THCHS-30 test", LAYOUT, "test", url="https://www.openslr.org/18/"))
