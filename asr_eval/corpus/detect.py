"""Pick the reader for a source: layout auto-detection, or ``layout=`` to force one.

Layouts are a registry (``register_layout``): each knows how to recognise a source (``detects``,
tried in registration order) and how to open it (``opens``). A plugin module named in
``$ASR_EVAL_PLUGINS`` can register its own layout; ``open_source``/``detect_layout`` load the
plugins when a name or a source is not recognised.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path

from asr_eval.corpus.audiofolder import AudioFolderReader, find_metadata
from asr_eval.corpus.base import CorpusReader
from asr_eval.corpus.commonvoice import CommonVoiceReader
from asr_eval.corpus.hf import HFDatasetReader
from asr_eval.corpus.kaldi import KaldiReader
from asr_eval.corpus.manifest import MANIFEST_SUFFIXES, ManifestReader
from asr_eval.corpus import registry
from asr_eval.corpus.registry import Layout, SourceOptions, layout_names, register_layout
from asr_eval.errors import AsrEvalError

# The public Mandarin corpora as distributed (each module registers its layouts and test sets at
# import). First, so their own folder structure wins over the generic layouts below (a KeSpeech
# task folder is also a Kaldi dir).
PUBLIC_ZH = ("aishell", "wenetspeech", "magicdata", "kespeech", "thchs", "aidatatang")
for _mod in PUBLIC_ZH:
    importlib.import_module(f"asr_eval.corpus.{_mod}")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _is_file_with(*suffixes: str) -> Callable[[Path, str], bool]:
    return lambda p, _s: p.is_file() and p.suffix.lower() in suffixes


def _is_dir_with(test: Callable[[Path], bool]) -> Callable[[Path, str], bool]:
    return lambda p, _s: p.is_dir() and test(p)


def _hf(kind: str) -> Callable[[str, SourceOptions], CorpusReader]:
    return lambda s, o: HFDatasetReader(s, kind, o.hf_config, o.split, o.audio_column, o.text_column, o.id_column)


for _layout in (
    Layout("manifest", _is_file_with(*MANIFEST_SUFFIXES),
           lambda s, o: ManifestReader(Path(s), o.audio_column, o.text_column, o.id_column, o.split,
                                       confine_to_root=o.confine_to_root),
           "a manifest file (.csv/.tsv/.jsonl/.json, NeMo manifests included)"),
    Layout("hf-disk", _is_dir_with(lambda p: (p / "dataset_dict.json").is_file() or (p / "state.json").is_file()),
           _hf("disk"), "a datasets save_to_disk folder (dataset_dict.json or state.json)"),
    Layout("kaldi", _is_dir_with(lambda p: (p / "wav.scp").is_file() and (p / "text").is_file()),
           lambda s, o: KaldiReader(Path(s), o.split, o.confine_to_root, o.recording_level),
           "a Kaldi dir (wav.scp + text)", recording_level=True),
    Layout("commonvoice",
           _is_dir_with(lambda p: (p / "clips").is_dir()
                        and any((p / f"{t}.tsv").is_file() for t in ("train", "dev", "test", "validated"))),
           lambda s, o: CommonVoiceReader(Path(s), **({"tsvs": tuple(o.cv_tsvs)} if o.cv_tsvs else {}),
                                          confine_to_root=o.confine_to_root),
           "a Common Voice folder (clips/ + train/dev/test.tsv)"),
    Layout("audiofolder", _is_dir_with(lambda p: bool(find_metadata(p))),
           lambda s, o: AudioFolderReader(Path(s), o.audio_column, o.text_column, o.split, o.confine_to_root),
           "an audiofolder (metadata.csv/.jsonl at the root or in split folders)"),
    Layout("hf-parquet",
           lambda p, s: _is_file_with(".parquet")(p, s)
           or _is_dir_with(lambda d: any(d.glob("*.parquet")) or any(d.glob("*/*.parquet")))(p, s),
           _hf("parquet"), "Parquet files"),
    Layout("hf-hub", lambda p, s: not p.exists() and bool(_HUB_ID.match(s)), _hf("hub"), "a hub id like 'org/name'"),
):
    register_layout(_layout)

LAYOUTS = layout_names()  # the built-in layouts, for help texts


def _looked_for() -> str:
    return "; ".join(lay.looked_for for lay in registry._LAYOUTS.values())


def _detect(source: str) -> str | None:
    p = Path(source)
    return next((lay.name for lay in registry._LAYOUTS.values() if lay.detects(p, source)), None)


def detect_layout(source: str) -> str:
    from asr_eval.engines.base import load_plugins

    found = _detect(source)
    if found is None:
        load_plugins()
        found = _detect(source)
    if found is not None:
        return found
    if not Path(source).exists():
        raise AsrEvalError(f"source {source!r} does not exist (and is not a hub id like 'org/name')")
    raise AsrEvalError(f"cannot tell the layout of {source!r}; looked for {_looked_for()}. "
                       f"Use --layout {{{','.join(layout_names())}}} to force one.")


def open_source(
    source: str,
    layout: str | None = None,
    *,
    audio_column: str | None = None,
    text_column: str | None = None,
    id_column: str | None = None,
    split: str | None = None,
    hf_config: str | None = None,
    cv_tsvs: tuple[str, ...] | None = None,
    confine_to_root: bool = False,
    allow_outside_root: bool | None = None,
    recording_level: bool = False,
) -> CorpusReader:
    """Open ``source`` with its reader. ``split`` names the split of a single-split source.
    Absolute audio paths are accepted unless ``confine_to_root``; ``allow_outside_root`` is the
    deprecated spelling of the old opt-in (accepting them is the default now) and is ignored."""
    from asr_eval import storage
    from asr_eval.engines.base import load_plugins

    if storage.is_url(source):
        from asr_eval.corpus.remote import RemoteSource, stage

        local, audio_root = stage(source)
        reader = open_source(local, layout, audio_column=audio_column, text_column=text_column, id_column=id_column,
                             split=split, hf_config=hf_config, cv_tsvs=cv_tsvs, confine_to_root=confine_to_root,
                             recording_level=recording_level)
        if audio_root is not None and hasattr(reader, "root"):
            reader.root = audio_root  # a manifest object: its relative audio paths are objects beside it
        return RemoteSource(reader, storage.redact(source))
    layout = layout or detect_layout(source)
    if layout not in registry._LAYOUTS:
        load_plugins()
    if layout not in registry._LAYOUTS:
        raise AsrEvalError(f"unknown layout {layout!r}; choose one of {', '.join(layout_names())}")
    entry = registry._LAYOUTS[layout]
    if recording_level and not entry.recording_level:
        which = ", ".join(n for n, lay in registry._LAYOUTS.items() if lay.recording_level)
        raise AsrEvalError(f"--recording-level applies to sources with segment times ({which}); {source!r} is a "
                           f"{layout} source (its rows are already recordings: use --long-form)")
    return entry.opens(source, SourceOptions(audio_column, text_column, id_column, split, hf_config, cv_tsvs,
                                             confine_to_root, recording_level))
