"""Kaldi data directories: wav.scp, text, optional utt2spk, spk2gender, segments.

With ``segments``, items are the segments (default) or, with ``recording_level``, the
recordings: one item per wav.scp entry whose reference is its segments' texts in time order,
with the segment times kept (``Utterance.segments``) for long-form scoring.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from asr_eval.audio import Reason
from asr_eval.corpus.base import Item, Rejection, Utterance, read_lines, resolve_audio, split_from_name
from asr_eval.errors import AsrEvalError


def _table(path: Path, what: str) -> tuple[dict[str, str], list[Rejection]]:
    """'key rest-of-line' files. Bad lines become rejections."""
    out: dict[str, str] = {}
    bad: list[Rejection] = []
    if not path.is_file():
        return out, bad
    for i, line, _ in read_lines(path):
        where = f"{path}:{i}"
        if line is None:
            bad.append(Rejection(Reason.BAD_ENCODING, f"{what} line is not valid UTF-8", where))
            continue
        if not line.strip():
            continue
        key, *rest = line.strip().split(maxsplit=1)  # Kaldi separates the key by any whitespace
        if key in out:
            bad.append(Rejection(Reason.DUPLICATE_ID, f"{what} has {key!r} again (the first line wins)", where,
                                 key if what in ("wav.scp", "text") else None))
            continue
        out[key] = rest[0].strip() if rest else ""
    return out, bad


@dataclass
class KaldiReader:
    root: Path
    split: str | None = None
    confine_to_root: bool = False
    recording_level: bool = False
    layout: str = "kaldi"

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        for f in ("wav.scp", "text"):
            if not (self.root / f).is_file():
                raise AsrEvalError(f"{self.root} is not a Kaldi data dir: {f} is missing")
        self.name = self.root.name
        self._split = self.split or split_from_name(self.root.name, "all")

    def describe(self) -> dict:
        return {"layout": self.layout, "path": str(self.root),
                "files": sorted(p.name for p in self.root.iterdir() if p.is_file()),
                **({"confine_to_root": True} if self.confine_to_root else {}),
                **({"recording_level": True} if self.recording_level else {})}

    def items(self) -> Iterator[Item]:
        wav, bad_w = _table(self.root / "wav.scp", "wav.scp")
        text, bad_t = _table(self.root / "text", "text")
        utt2spk, bad_u = _table(self.root / "utt2spk", "utt2spk")
        spk2gender, bad_g = _table(self.root / "spk2gender", "spk2gender")
        segments, bad_s = _table(self.root / "segments", "segments")
        yield from bad_w + bad_t + bad_u + bad_g + bad_s
        text_where = f"{self.root / 'text'}"
        if segments:
            units = []
            for utt, rest in segments.items():
                parts = rest.split()
                if len(parts) != 3:
                    yield Rejection(Reason.BAD_ROW, f"segments line for {utt!r} needs 'rec start end'",
                                    f"{self.root / 'segments'}", utt)
                    continue
                try:
                    start, end = float(parts[1]), float(parts[2])
                except ValueError:
                    start = end = float("nan")
                if not 0 <= start < end < float("inf"):
                    yield Rejection(Reason.BAD_ROW, f"segments times {parts[1:]} are not 'start end' seconds "
                                    "with 0 ≤ start < end", f"{self.root / 'segments'}", utt)
                    continue
                units.append((utt, parts[0], start, end - start))
        else:
            units = [(utt, utt, 0.0, None) for utt in wav]
        if segments and self.recording_level:
            yield from self._recordings(units, wav, text, utt2spk, spk2gender)
            return
        for utt, rec, start, dur in units:
            where = f"{text_where} ({utt})"
            if utt not in text:
                yield Rejection(Reason.BAD_ROW, f"utterance {utt!r} has audio but no line in text", where, utt)
                continue
            entry = wav.get(rec)
            if entry is None:
                yield Rejection(Reason.MISSING_FILE, f"recording {rec!r} is not in wav.scp", where, utt)
                continue
            if not entry:
                yield Rejection(Reason.BAD_ROW, f"wav.scp line for {rec!r} has no audio path", where, utt)
                continue
            if entry.endswith("|") or len(entry.split()) > 1:
                yield Rejection(
                    Reason.UNSUPPORTED,
                    f"wav.scp entry {entry!r} is a piped command; asr-eval reads plain paths only "
                    "(materialise the audio, e.g. with `wav-copy scp:wav.scp ark,scp:…`, first)",
                    where, utt, entry,
                )
                continue
            resolved = resolve_audio(self.root, entry, self.confine_to_root)
            if isinstance(resolved, Rejection):
                resolved.where, resolved.utt_id = where, utt
                yield resolved
                continue
            spk = utt2spk.get(utt)
            meta = {"gender": spk2gender.get(spk)} if spk2gender else {}
            if dur is not None:
                meta["recording"] = rec
            yield Utterance(
                utt_id=utt, text=text[utt], split=self._split, audio_path=resolved, source_path=entry,
                speaker=spk, offset_s=start, duration_s=dur, metadata=meta, where=where,
            )
        listed = {u[0] for u in units} | set(segments)
        for utt in text:
            if utt not in listed:
                where_ = "segments" if segments else "wav.scp"
                yield Rejection(Reason.MISSING_FILE, f"utterance {utt!r} is in text but not in {where_}",
                                text_where, utt)

    def _recordings(self, units: list, wav: dict, text: dict, utt2spk: dict, spk2gender: dict) -> Iterator[Item]:
        """One item per recording: reference = its segments' texts in time order (joined by a
        space, which the normalizer drops between Han characters), segment times kept. A
        recording with a segment that has no transcript is rejected whole: its reference would
        be incomplete and the missing speech would score as insertions."""
        by_rec: dict[str, list] = {}
        for utt, rec, start, dur in units:
            by_rec.setdefault(rec, []).append((start, start + dur, utt))
        seg_where = f"{self.root / 'segments'}"
        for rec in [r for r in wav if r in by_rec] + sorted(r for r in by_rec if r not in wav):
            segs = sorted(by_rec[rec])
            where = f"{seg_where} (recording {rec})"
            entry = wav.get(rec)
            if entry is None:
                yield Rejection(Reason.MISSING_FILE, f"recording {rec!r} is not in wav.scp", where, rec)
                continue
            missing = [u for _, _, u in segs if u not in text]
            if missing:
                yield Rejection(Reason.BAD_ROW, f"segments {missing[:5]} of recording {rec!r} have no line in "
                                f"{self.root / 'text'}; its reference would be incomplete", where, rec, entry)
                continue
            if entry.endswith("|") or " " in entry.strip():
                yield Rejection(Reason.UNSUPPORTED, f"wav.scp entry {entry!r} is a piped command; asr-eval reads "
                                "plain paths only (materialise the audio first)", where, rec, entry)
                continue
            resolved = resolve_audio(self.root, entry, self.confine_to_root)
            if isinstance(resolved, Rejection):
                resolved.where, resolved.utt_id = where, rec
                yield resolved
                continue
            spks = {utt2spk.get(u) for _, _, u in segs}
            spk = spks.pop() if len(spks) == 1 else None
            meta = {"gender": spk2gender.get(spk) if spk else None} if spk2gender else {}
            meta["n_speakers"] = str(len({utt2spk[u] for _, _, u in segs if u in utt2spk})) if utt2spk else None
            yield Utterance(
                utt_id=rec, text=" ".join(text[u] for _, _, u in segs), split=self._split, audio_path=resolved,
                source_path=entry, speaker=spk, metadata=meta, where=where,
                segments=[(a, b, text[u]) for a, b, u in segs],
            )
