"""Hugging Face "audiofolder" layout: metadata.csv / metadata.jsonl beside the audio,
at the root or in one folder per split (train/, test/, …)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from asr_eval.corpus.base import Item
from asr_eval.corpus.manifest import ManifestReader
from asr_eval.errors import AsrEvalError

METADATA_NAMES = ("metadata.csv", "metadata.jsonl", "metadata.tsv")


def find_metadata(root: Path) -> list[tuple[Path, str | None]]:
    """(metadata file, split from its folder or None)."""
    for name in METADATA_NAMES:
        if (root / name).is_file():
            return [(root / name, None)]
    found = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for name in METADATA_NAMES:
            if (sub / name).is_file():
                found.append((sub / name, sub.name))
                break
    return found


@dataclass
class AudioFolderReader:
    root: Path
    audio_column: str | None = None
    text_column: str | None = None
    split: str | None = None
    confine_to_root: bool = False
    layout: str = "audiofolder"

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._files = find_metadata(self.root)
        if not self._files:
            raise AsrEvalError(f"{self.root}: no {' / '.join(METADATA_NAMES)} at the root or in split folders")
        self.name = self.root.name
        self._readers = [
            ManifestReader(f, audio_column=self.audio_column, text_column=self.text_column,
                           split=self.split or sub or "all",
                           root=f.parent if sub else self.root,
                           confine_to_root=self.confine_to_root)
            for f, sub in self._files
        ]

    def describe(self) -> dict:
        return {"layout": self.layout, "path": str(self.root),
                "metadata": [str(f.relative_to(self.root)) for f, _ in self._files], **({"confine_to_root": True} if self.confine_to_root else {})}

    def items(self) -> Iterator[Item]:
        for r in self._readers:
            yield from r.items()
