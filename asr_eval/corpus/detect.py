"""Pick the reader for a source: layout auto-detection, or ``layout=`` to force one."""

from __future__ import annotations

import re
from pathlib import Path

from asr_eval.corpus.audiofolder import AudioFolderReader, find_metadata
from asr_eval.corpus.base import CorpusReader
from asr_eval.corpus.commonvoice import CommonVoiceReader
from asr_eval.corpus.hf import HFDatasetReader
from asr_eval.corpus.kaldi import KaldiReader
from asr_eval.corpus.manifest import MANIFEST_SUFFIXES, ManifestReader
from asr_eval.errors import AsrEvalError

LAYOUTS = ("manifest", "kaldi", "audiofolder", "commonvoice", "hf-disk", "hf-parquet", "hf-hub")

LOOKED_FOR = (
    "a manifest file (.csv/.tsv/.jsonl/.json, NeMo manifests included); "
    "a Kaldi dir (wav.scp + text); an audiofolder (metadata.csv/.jsonl at the root or in split folders); "
    "a Common Voice folder (clips/ + train/dev/test.tsv); a datasets save_to_disk folder "
    "(dataset_dict.json or state.json); Parquet files; or a hub id like 'org/name'"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def detect_layout(source: str) -> str:
    p = Path(source)
    if p.is_file():
        if p.suffix.lower() in MANIFEST_SUFFIXES:
            return "manifest"
        if p.suffix.lower() == ".parquet":
            return "hf-parquet"
    elif p.is_dir():
        if (p / "dataset_dict.json").is_file() or (p / "state.json").is_file():
            return "hf-disk"
        if (p / "wav.scp").is_file() and (p / "text").is_file():
            return "kaldi"
        if (p / "clips").is_dir() and any((p / f"{t}.tsv").is_file() for t in ("train", "dev", "test", "validated")):
            return "commonvoice"
        if find_metadata(p):
            return "audiofolder"
        if any(p.glob("*.parquet")) or any(p.glob("*/*.parquet")):
            return "hf-parquet"
    elif _HUB_ID.match(source):
        return "hf-hub"
    else:
        raise AsrEvalError(f"source {source!r} does not exist (and is not a hub id like 'org/name')")
    raise AsrEvalError(f"cannot tell the layout of {source!r}; looked for {LOOKED_FOR}. "
                       f"Use --layout {{{','.join(LAYOUTS)}}} to force one.")


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
    layout = layout or detect_layout(source)
    if layout not in LAYOUTS:
        raise AsrEvalError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if recording_level and layout != "kaldi":
        raise AsrEvalError(f"--recording-level applies to Kaldi dirs with a segments file; {source!r} is a "
                           f"{layout} source (its rows are already recordings: use --long-form)")
    if layout == "manifest":
        return ManifestReader(Path(source), audio_column, text_column, id_column, split,
                              confine_to_root=confine_to_root)
    if layout == "kaldi":
        return KaldiReader(Path(source), split, confine_to_root, recording_level)
    if layout == "audiofolder":
        return AudioFolderReader(Path(source), audio_column, text_column, split, confine_to_root)
    if layout == "commonvoice":
        return CommonVoiceReader(Path(source), **({"tsvs": tuple(cv_tsvs)} if cv_tsvs else {}),
                                 confine_to_root=confine_to_root)
    kind = layout.split("-", 1)[1]
    return HFDatasetReader(source, kind, hf_config, split, audio_column, text_column, id_column)
