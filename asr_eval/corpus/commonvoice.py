"""A Common Voice release folder as extracted from its tarball: clips/*.mp3 plus
train.tsv / dev.tsv / test.tsv (validated.tsv and others on request).

Columns kept as slices: client_id (→ speaker), up_votes, down_votes, age, gender,
accent(s), variant, locale, segment, sentence_domain — whatever the release has."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from asr_eval.audio import Reason
from asr_eval.corpus.base import Item, Rejection, Utterance, resolve_audio, stem_id
from asr_eval.corpus.manifest import iter_rows
from asr_eval.errors import AsrEvalError

DEFAULT_TSVS = ("train", "dev", "test")


@dataclass
class CommonVoiceReader:
    root: Path
    tsvs: tuple[str, ...] = field(default=DEFAULT_TSVS)
    confine_to_root: bool = False
    layout: str = "commonvoice"

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not (self.root / "clips").is_dir():
            raise AsrEvalError(f"{self.root}: not a Common Voice folder (no clips/)")
        self._files = [self.root / f"{t}.tsv" for t in self.tsvs if (self.root / f"{t}.tsv").is_file()]
        if not self._files:
            raise AsrEvalError(
                f"{self.root}: none of {[t + '.tsv' for t in self.tsvs]} exist "
                f"(found {sorted(p.name for p in self.root.glob('*.tsv'))})"
            )
        self.name = self.root.name

    def describe(self) -> dict:
        return {"layout": self.layout, "path": str(self.root), "tsvs": [p.name for p in self._files], **({"confine_to_root": True} if self.confine_to_root else {})}

    def items(self) -> Iterator[Item]:
        clips = self.root / "clips"
        for tsv in self._files:
            split = tsv.stem
            for where, row, problem in iter_rows(tsv):
                if row is None:
                    reason = Reason.BAD_ENCODING if problem == "bad_encoding" else Reason.BAD_ROW
                    yield Rejection(reason, problem if reason is Reason.BAD_ROW else "line is not valid UTF-8", where)
                    continue
                rel = (row.get("path") or "").strip()
                if not rel:
                    yield Rejection(Reason.BAD_ROW, "empty 'path' field", where)
                    continue
                resolved = resolve_audio(clips, rel, self.confine_to_root)
                if isinstance(resolved, Rejection):
                    resolved.where, resolved.utt_id = where, stem_id(rel)
                    yield resolved
                    continue
                meta = {k: (v or None) for k, v in row.items() if k not in ("path", "sentence", "client_id", "sentence_id")}
                yield Utterance(
                    utt_id=stem_id(rel), text=row.get("sentence") or "", split=split,
                    audio_path=resolved, source_path=f"clips/{rel}", speaker=row.get("client_id") or None,
                    metadata=meta, where=where,
                )
