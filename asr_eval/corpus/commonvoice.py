"""A Common Voice release folder as extracted from its tarball: clips/*.mp3 plus
train.tsv / dev.tsv / test.tsv (validated.tsv and others on request).

Columns kept as slices: client_id (→ speaker), up_votes, down_votes, age, gender,
accent(s), variant, locale, segment, sentence_domain — whatever the release has.

``describe()`` names the locale as ``"variant"`` when it can be told — from the folder's name as
extracted (``cv-corpus-<version>-<date>/<locale>/``), else from the first row's ``locale`` column
— and the release as ``"release"`` when the parent folder is a ``cv-corpus-…`` folder. The suite
tells the standard test sets apart by it: ``common-voice/zh-CN/test``, ``…/zh-TW/test`` (Traditional
characters; the normalizer folds them to Simplified) and ``…/zh-HK/test`` (Cantonese)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from asr_eval.audio import Reason
from asr_eval.corpus.base import Item, Rejection, Utterance, resolve_audio, stem_id
from asr_eval.corpus.manifest import iter_rows
from asr_eval.corpus.registry import TestSet, register_test_set
from asr_eval.errors import AsrEvalError

DEFAULT_TSVS = ("train", "dev", "test")
_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]+)*$")  # a CV locale code: zh-CN, yue, sv-SE, es-AR …
_REGIONAL = re.compile(r"^[a-z]{2,3}-[A-Z]{2}$")  # zh-CN: a locale even without the release folder above it
RELEASE_PREFIX = "cv-corpus-"


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
        variant = self._locale()
        release = self.root.parent.name if self.root.parent.name.startswith(RELEASE_PREFIX) else None
        return {"layout": self.layout, "path": str(self.root), "tsvs": [p.name for p in self._files],
                **({"variant": variant} if variant else {}), **({"release": release} if release else {}),
                **({"confine_to_root": True} if self.confine_to_root else {})}

    def _locale(self) -> str | None:
        """The locale: the folder's name as extracted (``cv-corpus-…/zh-CN``), else the ``locale``
        column of a TSV's first row (recent releases), else a folder named like ``zh-CN``."""
        name = self.root.name
        if self.root.parent.name.startswith(RELEASE_PREFIX) and _LOCALE.match(name):
            return name
        for tsv in sorted(self._files, key=lambda p: p.stat().st_size):  # the smallest TSV is read fastest
            for _where, row, _problem in iter_rows(tsv):
                if row is not None:
                    value = (row.get("locale") or "").strip()
                    if value:
                        return value
                    break
        return name if _REGIONAL.match(name) else None

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


for _locale, _what in (("zh-CN", "Mandarin, Simplified"), ("zh-TW", "Mandarin, Traditional"),
                       ("zh-HK", "Cantonese, Hong Kong")):
    register_test_set(TestSet(f"common-voice/{_locale}/test", f"Common Voice {_locale} test ({_what})",
                              "commonvoice", "test", language="yue" if _locale == "zh-HK" else "zh",
                              url="https://commonvoice.mozilla.org/datasets", variant=_locale))
