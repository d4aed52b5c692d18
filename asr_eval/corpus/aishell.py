"""AISHELL-1 (openslr 33) and the AISHELL-2 test sets, read exactly as they are distributed.

AISHELL-1, layout ``aishell1``: point at ``data_aishell/`` or at the folder holding it (and
``resource_aishell/``)::

    data_aishell/transcript/aishell_transcript_v0.8.txt   "BAC009S0002W0122 而 对 楼市 成交 …"
    data_aishell/wav/{train,dev,test}/S0002/BAC009S0002W0122.wav     (extracted) and/or
    data_aishell/wav/S0002.tar.gz  (as shipped: one tarball per speaker, members "train/S0002/….wav")
    resource_aishell/speaker.info                          "0002 F" (speaker without the S, gender)

Layout facts and where they were checked (reference only; no code taken from them):
- transcript path, one file for all splits, "ID word word …" split on whitespace, and the split
  being the folder under ``wav/``: lhotse-speech/lhotse lhotse/recipes/aishell.py,
  wenet-e2e/wenet examples/aishell/s0/local/aishell_data_prep.sh (which also expects 141925 wavs
  while the transcript has 141600 lines: a few hundred wavs have no transcript line; the recipes
  drop them, this reader quarantines each).
- one ``SPK.tar.gz`` per speaker in ``wav/`` that extracts to ``wav/<split>/SPK/…``:
  kaldi-asr/kaldi egs/aishell/s5/local/download_and_untar.sh (``cd wav; tar -zxf S*.tar.gz``)
  and lhotse's download_aishell (extracts them in ``wav/`` and keeps the tarballs).
- ``resource_aishell/speaker.info``: "NNNN G" lines, speaker id without its "S", gender F/M; some
  copies carry a third column, ignored (scripts reading it with two and three columns found by
  code search). Only gender is a slice: the file has no age or accent.
- The transcript is word-segmented; spaces between Chinese words are not characters, so they are
  removed here; a single space is kept only between two Latin/digit tokens ("ｋ ｔ ｖ", "a b").

AISHELL-2, layout ``aishell2``: point at ``AISHELL-DEV-TEST-SET/``, the folder holding it
and/or ``AISHELL-2/``, one device folder, or one ``<device>/<dev|test>`` folder::

    AISHELL-DEV-TEST-SET/{iOS,Android,Mic}/{dev,test}/{wav.scp,trans.txt,wav/SPK/ID.wav}
    AISHELL-2/iOS/data/{wav.scp,trans.txt,wav/SPK/ID.wav}                   (train, iOS only)

- wav.scp "ID<TAB>wav/SPK/ID.wav" relative to its folder, trans.txt "ID<TAB>text" (raw text,
  not segmented): kaldi-asr/kaldi egs/aishell2/s5/local/prepare_data.sh (``awk -F'\\t'`` and the
  ``$corpus/`` prefix) and run.sh; the device folders ``Android iOS Mic``: espnet egs2/aishell2
  local/data.sh; other recipes spell them ``IOS``/``MIC``, so device names match case-insensitively.
- the evaluation ZIP holds ``<device>/{dev,test}.tar.gz`` (members ``test/trans.txt`` …), found
  by code search; an unextracted one is an error naming the ``tar`` command.
Splits: ``train`` (iOS), ``dev_ios``, ``dev_android``, ``dev_mic``, ``test_ios``, ``test_android``,
``test_mic``; slice ``device``. Speaker = the folder above the wav.
"""

from __future__ import annotations

import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from asr_eval.audio import Reason
from asr_eval.corpus.base import (
    Item,
    Rejection,
    Utterance,
    check_splits,
    has_content,
    join_words,
    parse_splits,
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

A1_SPLITS = ("train", "dev", "test")
A1_TRANSCRIPT = "aishell_transcript_v0.8.txt"
_A1_SPK = re.compile(r"(S\d{4})W\d+")
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")


# ───────────────────────────── AISHELL-1 ─────────────────────────────

def aishell1_data_dir(path: Path) -> Path | None:
    """The ``data_aishell`` folder of ``path`` (itself or a child of that name), or None."""
    for cand in (path, path / "data_aishell"):
        if (cand / "wav").is_dir() and (cand / "transcript" / A1_TRANSCRIPT).is_file():
            return cand
    return None


def _tar_stem(path: Path) -> str | None:
    name = path.name
    return next((name[: -len(s)] for s in _TAR_SUFFIXES if name.endswith(s)), None)


def _member_parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in PurePosixPath(name).parts if p not in (".", "/"))


def _tar_split(path: Path) -> str:
    """The split of a speaker tarball, from its first file's path (only that header is read)."""
    with tarfile.open(path, "r|*") as tar:
        for m in tar:
            parts = _member_parts(m.name)
            if m.isfile() or (m.isdir() and len(parts) == 1):
                if parts and parts[0] in A1_SPLITS:
                    return parts[0]
                break
    raise AsrEvalError(f"{path}: its members are not '<train|dev|test>/SPK/….wav'; extract it by hand "
                       f"(`tar -xzf {path.name}` in {path.parent}) and check where its wavs land")


@dataclass(frozen=True)
class _Speaker:
    speaker: str
    split: str | None  # None: a tarball whose split could not be read
    folder: Path | None = None
    tarball: Path | None = None
    problem: str = ""


def _a1_inventory(wav_dir: Path) -> list[_Speaker]:
    """Every speaker of every split: extracted folders, then tarballs of speakers not extracted."""
    found: list[_Speaker] = []
    for split in A1_SPLITS:
        d = wav_dir / split
        if d.is_dir():
            found += [_Speaker(s.name, split, folder=s) for s in sorted(d.iterdir()) if s.is_dir()]
    extracted = {s.speaker for s in found}
    for tar in sorted(p for p in wav_dir.iterdir() if p.is_file() and _tar_stem(p)):
        spk = _tar_stem(tar) or ""
        if spk in extracted:
            continue  # lhotse keeps the tarballs beside the folders it extracted them to
        try:
            found.append(_Speaker(spk, _tar_split(tar), tarball=tar))
        except AsrEvalError as e:
            found.append(_Speaker(spk, None, tarball=tar, problem=str(e)))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            found.append(_Speaker(spk, None, tarball=tar, problem=f"{type(e).__name__}: {e}"))
    return found


@dataclass
class _Line:
    text: str
    where: str


@dataclass
class Aishell1Reader:
    root: Path
    splits: tuple[str, ...] | None = None
    confine_to_root: bool = False
    name: str = "aishell-1"
    layout: str = "aishell1"
    _data: Path = field(init=False, repr=False)
    _speakers: list[_Speaker] = field(init=False, repr=False)
    _encoding: str | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        data = aishell1_data_dir(self.root)
        if data is None:
            raise AsrEvalError(f"{self.root} is not AISHELL-1 as distributed: expected data_aishell/wav/ and "
                               f"data_aishell/transcript/{A1_TRANSCRIPT} (unpack data_aishell.tgz from "
                               "https://www.openslr.org/33/ and point at data_aishell/ or the folder holding it)")
        self._data = data
        self._speakers = _a1_inventory(data / "wav")
        present = [s for s in A1_SPLITS if any(sp.split == s for sp in self._speakers)]
        self.splits = check_splits(self.splits, present, f"AISHELL-1 at {data}")

    @property
    def transcript(self) -> Path:
        return self._data / "transcript" / A1_TRANSCRIPT

    @property
    def speaker_info(self) -> Path:
        return self._data.parent / "resource_aishell" / "speaker.info"

    def describe(self) -> dict:
        if self._encoding is None:
            self._encoding, _ = read_text_lines(self.transcript)
        tars = sum(1 for s in self._speakers if s.tarball is not None and s.split in self.splits)
        folders = sum(1 for s in self._speakers if s.folder is not None and s.split in self.splits)
        return {"layout": self.layout, "path": str(self._data), "splits": list(self.splits),
                "transcript": A1_TRANSCRIPT, "encoding": self._encoding,
                "speaker_folders": folders, "speaker_tarballs": tars,
                "speaker_info": self.speaker_info.is_file(),
                **({"confine_to_root": True} if self.confine_to_root else {})}

    def items(self) -> Iterator[Item]:
        lines, bad = self._read_transcript()
        genders = self._genders()
        undecodable = {k for k, r in bad if k and r.reason is Reason.BAD_ENCODING}  # reported once, below
        used: set[str] = set()
        for sp in self._speakers:
            if sp.split is None:
                yield Rejection(Reason.UNREADABLE, f"speaker tarball {sp.tarball} cannot be read ({sp.problem}); "
                                "download data_aishell.tgz again and re-extract it", str(sp.tarball),
                                source_path=str(sp.tarball))
            elif sp.split in self.splits:
                for utt_id, src, audio in self._audio(sp):
                    if isinstance(audio, Rejection):
                        yield audio
                        continue
                    if utt_id in undecodable and utt_id not in lines:
                        continue
                    used.add(utt_id)
                    yield self._utterance(utt_id, sp, src, audio, lines.get(utt_id), genders)
        mine = {sp.speaker for sp in self._speakers if sp.split in self.splits}
        known = {sp.speaker for sp in self._speakers}

        def ours(utt_id: str | None) -> bool:
            m = _A1_SPK.search(utt_id or "")
            spk = m.group(1) if m else None
            return spk in mine or (spk not in known and set(self.splits) == set(A1_SPLITS))

        for utt_id, rej in bad:
            if ours(utt_id):
                yield rej
        for utt_id, line in lines.items():
            if utt_id not in used and ours(utt_id):
                yield Rejection(Reason.MISSING_FILE, f"transcript line for {utt_id!r} has no wav: no "
                                f"wav/<split>/SPK/{utt_id}.wav nor speaker tarball holds it", line.where, utt_id)

    def _utterance(self, utt_id: str, sp: _Speaker, src: str, audio: Path | bytes, line: _Line | None,
                   genders: dict[str, str] | None) -> Item:
        if line is None:
            return Rejection(Reason.EMPTY_TRANSCRIPT, f"{src} has no line in {self.transcript} (the release "
                             "ships a few hundred such wavs; nothing to fix)", src, utt_id, src)
        if not has_content(line.text):
            return Rejection(Reason.EMPTY_TRANSCRIPT, f"transcript line for {utt_id!r} has no text; fix "
                             f"{line.where}", line.where, utt_id, src)
        meta = {} if genders is None else {"gender": genders.get(sp.speaker.removeprefix("S"))}
        return Utterance(utt_id=utt_id, text=line.text, split=sp.split or "", speaker=sp.speaker,
                         audio_path=audio if isinstance(audio, Path) else None,
                         audio_bytes=audio if isinstance(audio, bytes) else None,
                         source_path=src, metadata=meta, where=line.where)

    def _audio(self, sp: _Speaker) -> Iterator[tuple[str, str, Path | bytes | Rejection]]:
        if sp.folder is not None:
            for wav in sorted(p for p in sp.folder.iterdir() if p.suffix.lower() == ".wav"):
                rel = wav.relative_to(self._data).as_posix()
                got = resolve_audio(self._data, rel, True) if self.confine_to_root else wav
                if isinstance(got, Rejection):
                    got.where, got.utt_id = str(wav), wav.stem
                yield wav.stem, rel, got if isinstance(got, Rejection) else Path(got)
            return
        yield from self._tar_audio(sp)

    def _tar_audio(self, sp: _Speaker) -> Iterator[tuple[str, str, bytes | Rejection]]:
        tar_path = sp.tarball
        assert tar_path is not None
        rel = tar_path.relative_to(self._data).as_posix()
        if self.confine_to_root:
            got = resolve_audio(self._data, rel, True)
            if isinstance(got, Rejection):
                got.where = str(tar_path)
                yield tar_path.name, rel, got
                return
        n = 0
        try:
            with tarfile.open(tar_path, "r|*") as tar:  # streamed: one pass, members in stored order
                for m in tar:
                    parts = _member_parts(m.name)
                    if not (m.isfile() and parts and parts[-1].lower().endswith(".wav")):
                        continue
                    src = f"{rel}:{m.name}"
                    f = tar.extractfile(m)
                    data = f.read() if f is not None else b""
                    n += 1
                    if len(parts) < 3 or parts[-3] != sp.split or parts[-2] != sp.speaker:
                        yield PurePosixPath(m.name).stem, src, Rejection(
                            Reason.BAD_ROW, f"{tar_path} member {m.name!r} is not {sp.split}/{sp.speaker}/….wav "
                            "like the tarball's first member; re-download the tarball", str(tar_path),
                            PurePosixPath(m.name).stem, src)
                        continue
                    yield PurePosixPath(m.name).stem, src, data
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            yield tar_path.name, rel, Rejection(
                Reason.TRUNCATED, f"speaker tarball {tar_path} breaks off after {n} wavs ({type(e).__name__}: "
                f"{e}); its other wavs are missing: download data_aishell.tgz again", str(tar_path), None, rel)

    def _read_transcript(self) -> tuple[dict[str, _Line], list[tuple[str | None, Rejection]]]:
        path = self.transcript
        self._encoding, numbered = read_text_lines(path)
        lines: dict[str, _Line] = {}
        bad: list[tuple[str | None, Rejection]] = []
        for i, text, raw in numbered:
            where = f"{path}:{i}"
            if text is None:
                key = raw.split(maxsplit=1)[0].decode("ascii", "replace") if raw.strip() else None
                bad.append((key, Rejection(Reason.BAD_ENCODING, f"transcript line {i} decodes as neither UTF-8 nor "
                                           f"GB18030 ({raw[:60]!r}); re-save {path.name} or fix that line",
                                           where, key)))
                continue
            words = text.split()
            if not words:
                continue
            if words[0] in lines:
                bad.append((words[0], Rejection(Reason.DUPLICATE_ID, f"{words[0]!r} has a second transcript line "
                                                f"(the one at {lines[words[0]].where} is used)", where, words[0])))
                continue
            lines[words[0]] = _Line(join_words(words[1:]), where)
        return lines, bad

    def _genders(self) -> dict[str, str] | None:
        """speaker.info: speaker id (no "S") → "female"/"male" (other values kept, lower-case)."""
        path = self.speaker_info
        if not path.is_file():
            return None
        out: dict[str, str] = {}
        _, numbered = read_text_lines(path)
        for _, text, _ in numbered:
            cols = (text or "").split()
            if len(cols) >= 2:
                g = cols[1].lower()
                out[cols[0].removeprefix("S")] = {"f": "female", "m": "male"}.get(g, g)
        return out


def _detect_aishell1(path: Path, _source: str) -> bool:
    return path.is_dir() and aishell1_data_dir(path) is not None


# ───────────────────────────── AISHELL-2 ─────────────────────────────

DEVICES = {"ios": "iOS", "android": "Android", "mic": "Mic"}
A2_TEST_SET = "AISHELL-DEV-TEST-SET"


@dataclass(frozen=True)
class _Part:
    split: str
    device: str
    folder: Path
    tarball: Path | None = None  # set when the folder is still packed as <device>/<part>.tar.gz


def _device(name: str) -> str | None:
    return DEVICES.get(name.lower())


def _kaldi_like(d: Path) -> bool:
    return (d / "wav.scp").is_file() and (d / "trans.txt").is_file()


def _device_parts(dev_dir: Path) -> list[_Part]:
    device = _device(dev_dir.name)
    if device is None or not dev_dir.is_dir():
        return []
    parts = []
    for part in ("dev", "test"):
        folder = dev_dir / part
        if _kaldi_like(folder):
            parts.append(_Part(f"{part}_{device.lower()}", device, folder))
        elif (dev_dir / f"{part}.tar.gz").is_file():
            parts.append(_Part(f"{part}_{device.lower()}", device, folder, dev_dir / f"{part}.tar.gz"))
    return parts


def aishell2_parts(root: Path) -> list[_Part]:
    """The AISHELL-2 splits reachable from ``root`` (see the module docstring for what it may be)."""
    if not root.is_dir():
        return []
    if root.name.lower() in ("dev", "test") and _device(root.parent.name) and _kaldi_like(root):
        device = _device(root.parent.name) or ""
        return [_Part(f"{root.name.lower()}_{device.lower()}", device, root)]
    if root.name.lower() == "data" and _device(root.parent.name) == "iOS" and _kaldi_like(root):
        return [_Part("train", "iOS", root)]
    if _device(root.name):
        return _device_parts(root)
    parts: list[_Part] = []
    for base in (root, root / A2_TEST_SET):
        if base.is_dir():
            for child in sorted(base.iterdir(), key=lambda p: p.name.lower()):
                parts += _device_parts(child)
    for base in (root, root / "AISHELL-2"):
        for ios in (base / "iOS", base / "IOS", base / "ios"):
            if _kaldi_like(ios / "data") and not any(p.split == "train" for p in parts):
                parts.append(_Part("train", "iOS", ios / "data"))
    order = ["train"] + [f"{p}_{d}" for p in ("dev", "test") for d in ("ios", "android", "mic")]
    return sorted(parts, key=lambda p: order.index(p.split))


def _table(path: Path, what: str) -> tuple[str, dict[str, tuple[str, str]], list[Rejection]]:
    """'ID<TAB or spaces>value' lines → (encoding, {id: (value, file:line)}, rejections)."""
    encoding, numbered = read_text_lines(path)
    out: dict[str, tuple[str, str]] = {}
    bad: list[Rejection] = []
    for i, text, raw in numbered:
        where = f"{path}:{i}"
        if text is None:
            bad.append(Rejection(Reason.BAD_ENCODING, f"{what} line {i} decodes as neither UTF-8 nor GB18030 "
                                 f"({raw[:60]!r}); fix that line", where))
            continue
        if not text.strip():
            continue
        key, *rest = text.strip().split(maxsplit=1)
        if key in out:
            bad.append(Rejection(Reason.DUPLICATE_ID, f"{what} has {key!r} again (the line at {out[key][1]} is "
                                 "used)", where, key))
            continue
        out[key] = (" ".join(rest[0].split()) if rest else "", where)
    return encoding, out, bad


@dataclass
class Aishell2Reader:
    root: Path
    splits: tuple[str, ...] | None = None
    confine_to_root: bool = False
    name: str = "aishell-2"
    layout: str = "aishell2"
    _parts: list[_Part] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        found = aishell2_parts(self.root)
        if not found:
            raise AsrEvalError(f"{self.root} is not AISHELL-2 as distributed: expected {A2_TEST_SET}/<iOS|Android|"
                               "Mic>/<dev|test>/{wav.scp,trans.txt} or AISHELL-2/iOS/data/{wav.scp,trans.txt}")
        self.splits = check_splits(self.splits, [p.split for p in found], f"AISHELL-2 at {self.root}")
        self._parts = [p for p in found if p.split in self.splits]
        packed = [p for p in self._parts if p.tarball is not None]
        if packed:
            cmds = "; ".join(f"tar -xzf {p.tarball} -C {p.tarball.parent}" for p in packed if p.tarball)
            raise AsrEvalError(f"AISHELL-2 {', '.join(p.split for p in packed)} still packed as tar.gz: extract "
                               f"first ({cmds}), or pass --split naming extracted ones")

    def describe(self) -> dict:
        enc = {p.split: read_text_lines(p.folder / "trans.txt")[0] for p in self._parts}
        encoding: str | dict = next(iter(enc.values())) if len(set(enc.values())) == 1 else enc
        return {"layout": self.layout, "path": str(self.root), "splits": list(self.splits),
                "folders": {p.split: str(p.folder) for p in self._parts}, "encoding": encoding,
                **({"confine_to_root": True} if self.confine_to_root else {})}

    def items(self) -> Iterator[Item]:
        for part in self._parts:
            yield from self._part_items(part)

    def _part_items(self, part: _Part) -> Iterator[Item]:
        _, wavs, bad_w = _table(part.folder / "wav.scp", "wav.scp")
        _, trans, bad_t = _table(part.folder / "trans.txt", "trans.txt")
        yield from bad_w + bad_t
        listed: set[Path] = set()
        for utt_id, (raw, where) in wavs.items():
            got = resolve_audio(part.folder, raw, self.confine_to_root) if raw else \
                Rejection(Reason.BAD_ROW, f"wav.scp line for {utt_id!r} has no audio path", where)
            if isinstance(got, Rejection):
                got.where, got.utt_id = where, utt_id
                yield got
                continue
            if isinstance(got, Path):
                listed.add(got)
            line = trans.get(utt_id)
            if line is None or not has_content(line[0]):
                what = "has no line in" if line is None else "has an empty line in"
                yield Rejection(Reason.EMPTY_TRANSCRIPT, f"{utt_id!r} ({raw}) {what} {part.folder / 'trans.txt'}",
                                line[1] if line else where, utt_id, raw)
                continue
            yield Utterance(utt_id=utt_id, text=line[0], split=part.split, audio_path=got, source_path=raw,
                            speaker=PurePosixPath(raw).parent.name or None, metadata={"device": part.device},
                            where=line[1])
        for utt_id, (_, where) in trans.items():
            if utt_id not in wavs:
                yield Rejection(Reason.MISSING_FILE, f"trans.txt has {utt_id!r} but wav.scp has no audio for it",
                                where, utt_id)
        wav_dir = part.folder / "wav"
        if wav_dir.is_dir():  # wavs on disk that wav.scp does not list would be dropped silently
            for p in sorted(wav_dir.rglob("*")):
                if p.suffix.lower() == ".wav" and p.resolve() not in listed:
                    rel = p.relative_to(part.folder).as_posix()
                    yield Rejection(Reason.EMPTY_TRANSCRIPT, f"{rel} is not listed in {part.folder / 'wav.scp'}",
                                    str(p), p.stem, rel)


def _detect_aishell2(path: Path, _source: str) -> bool:
    return bool(aishell2_parts(path))


def _open_aishell1(source: str, o: SourceOptions) -> Aishell1Reader:
    return Aishell1Reader(Path(source), parse_splits(o.split), o.confine_to_root)


def _open_aishell2(source: str, o: SourceOptions) -> Aishell2Reader:
    return Aishell2Reader(Path(source), parse_splits(o.split), o.confine_to_root)


register_layout(Layout(
    "aishell1", _detect_aishell1, _open_aishell1,
    "AISHELL-1 (data_aishell/ with wav/ and transcript/aishell_transcript_v0.8.txt, or its parent)"))
register_layout(Layout(
    "aishell2", _detect_aishell2, _open_aishell2,
    "AISHELL-2 (AISHELL-DEV-TEST-SET/<iOS|Android|Mic>/<dev|test>/ or AISHELL-2/iOS/data/ with wav.scp + trans.txt)"))

_A1_URL = "https://www.openslr.org/33/"
_A2_URL = "https://www.aishelltech.com/aishell_2"
for _split in ("test", "dev"):
    register_test_set(TestSet(f"aishell-1/{_split}", f"AISHELL-1 {_split}", "aishell1", _split, url=_A1_URL))
for _dev in ("ios", "android", "mic"):
    register_test_set(TestSet(f"aishell-2/test_{_dev}", f"AISHELL-2 test ({DEVICES[_dev]})", "aishell2",
                              f"test_{_dev}", url=_A2_URL))
