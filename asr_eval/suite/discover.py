"""Which standard test sets are under a folder: the public corpora recognised by their own layouts.

A corpus is recognised by the ``detects`` of a layout that provides standard test sets
(``asr_eval.corpus.registry.test_sets``), looking from the folder down ``max_depth`` levels; a
recognised folder is not searched further (a corpus's own subfolders are not corpora). Common
Voice releases of several locales sit side by side (``cv-corpus-…/zh-CN``, ``…/zh-TW``): which
test set each is comes from its reader's ``describe()["variant"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asr_eval.corpus import open_source
from asr_eval.corpus.registry import TestSet, layouts, test_sets
from asr_eval.errors import AsrEvalError

MAX_DEPTH = 3


@dataclass(frozen=True)
class Found:
    """A public corpus found on disk, and the standard test sets it may hold."""

    layout: str
    path: Path
    variant: str | None
    test_sets: tuple[TestSet, ...]

    @property
    def name(self) -> str:
        """The name of its ingested corpus (one per layout and variant)."""
        return f"{self.layout}-{self.variant}" if self.variant else self.layout


def _standard_layouts() -> list[str]:
    have = {t.layout for t in test_sets()}
    return [name for name in layouts() if name in have]


def _variant(layout: str, path: Path) -> str | None:
    if not any(t.variant for t in test_sets(layout)):
        return None
    try:
        return open_source(str(path), layout).describe().get("variant")
    except AsrEvalError:
        return None


def discover(root: str | Path, max_depth: int = MAX_DEPTH) -> list[Found]:
    """The public corpora under ``root`` (``root`` itself included), in path order."""
    root = Path(root)
    if not root.is_dir():
        raise AsrEvalError(f"{root} is not a folder: point --root at the folder holding the corpora as downloaded")
    entries = layouts()
    names = _standard_layouts()
    found: list[Found] = []
    level = [root]
    for _depth in range(max_depth + 1):
        deeper: list[Path] = []
        for d in level:
            hit = next((n for n in names if entries[n].detects(d, str(d))), None)
            if hit is None:
                try:
                    deeper += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
                except OSError:
                    continue  # unreadable folder: nothing to find in it
                continue
            variant = _variant(hit, d)
            sets = tuple(t for t in test_sets(hit) if t.variant is None or t.variant == variant)
            if sets:
                found.append(Found(hit, d, variant, sets))
        level = deeper
    return sorted(found, key=lambda f: str(f.path))


def missing(found: list[Found]) -> list[TestSet]:
    """The registered test sets none of ``found`` holds (listed by the suite, not an error)."""
    have = {t.key for f in found for t in f.test_sets}
    return [t for t in test_sets() if t.key not in have]
