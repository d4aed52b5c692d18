"""Corpus sources: one reader per layout, each yielding ``Utterance``/``Rejection`` records.

Layouts: manifest (CSV/TSV/JSONL, NeMo), kaldi, audiofolder, commonvoice, hf-disk,
hf-parquet, hf-hub — a registry (``register_layout``). ``open_source`` detects the layout
unless told.
"""

from asr_eval.corpus.base import CorpusReader, Item, Rejection, Utterance, slice_name
from asr_eval.corpus.detect import (
    LAYOUTS, Layout, SourceOptions, detect_layout, layout_names, open_source, register_layout,
)

__all__ = ["LAYOUTS", "CorpusReader", "Item", "Layout", "Rejection", "SourceOptions", "Utterance", "detect_layout",
           "layout_names", "open_source", "register_layout", "slice_name"]
