"""The layout registry and the standard test sets: what a corpus layout is, and which public test
sets a layout provides.

Kept apart from ``detect`` (which imports every reader) so a reader module can register itself at
import: ``register_layout(Layout(...))`` and ``register_test_set(TestSet(...))``. Detection tries
layouts in registration order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asr_eval.errors import AsrEvalError


@dataclass(frozen=True)
class SourceOptions:
    """What a caller may say about a source; each layout reads the fields it understands."""

    audio_column: str | None = None
    text_column: str | None = None
    id_column: str | None = None
    split: str | None = None  # the split of a single-split source; the split(s) to read of a public corpus
    hf_config: str | None = None
    cv_tsvs: tuple[str, ...] | None = None
    confine_to_root: bool = False
    recording_level: bool = False


@dataclass(frozen=True)
class Layout:
    name: str
    detects: Callable[[Path, str], bool]  # (path, source string) -> is this layout
    opens: Callable[[str, SourceOptions], object]  # -> CorpusReader
    looked_for: str  # what ``detects`` looks for, for the error that lists them all
    recording_level: bool = False  # supports --recording-level


_LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> Layout:
    """Add a layout; detection tries layouts in registration order."""
    if layout.name in _LAYOUTS:
        raise AsrEvalError(f"layout {layout.name!r} is registered twice")
    _LAYOUTS[layout.name] = layout
    return layout


def layout_names() -> tuple[str, ...]:
    return tuple(_LAYOUTS)


def layouts() -> dict[str, Layout]:
    return dict(_LAYOUTS)


@dataclass(frozen=True)
class TestSet:
    """A public test set as the literature names it, and where it lands after ingest.

    ``key`` is what published results refer to (``aishell-1/test``); ``layout`` + ``split`` (+
    ``variant``) say which ingested corpus split it is: the reader of ``layout`` names its splits
    so, and reports its variant in ``describe()``."""

    __test__ = False  # not a pytest class

    key: str
    title: str
    layout: str
    split: str
    language: str = "zh"
    url: str = ""  # where the corpus is distributed
    variant: str | None = None  # must equal the reader's describe()["variant"] (Common Voice: the locale)


_TEST_SETS: dict[str, TestSet] = {}


def register_test_set(ts: TestSet) -> TestSet:
    if ts.key in _TEST_SETS:
        raise AsrEvalError(f"test set {ts.key!r} is registered twice")
    _TEST_SETS[ts.key] = ts
    return ts


def test_sets(layout: str | None = None) -> list[TestSet]:
    """The registered standard test sets (of one layout), in registration order."""
    return [t for t in _TEST_SETS.values() if layout is None or t.layout == layout]


test_sets.__test__ = False  # type: ignore[attr-defined]


def test_set_of(layout: str | None, split: str | None, variant: str | None = None) -> TestSet | None:
    """The standard test set an ingested corpus split is (from the corpus's recorded source), or None."""
    return next((t for t in _TEST_SETS.values() if t.layout == layout and t.split == split
                 and (t.variant is None or t.variant == variant)), None)


test_set_of.__test__ = False  # type: ignore[attr-defined]
