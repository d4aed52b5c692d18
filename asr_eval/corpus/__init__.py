"""Corpus sources: one reader per layout, each yielding ``Utterance``/``Rejection`` records.

Layouts: manifest (CSV/TSV/JSONL, NeMo), kaldi, audiofolder, commonvoice, hf-disk,
hf-parquet, hf-hub. ``open_source`` detects the layout unless told.
"""

from asr_eval.corpus.base import CorpusReader, Item, Rejection, Utterance, slice_name
from asr_eval.corpus.detect import LAYOUTS, detect_layout, open_source

__all__ = ["LAYOUTS", "CorpusReader", "Item", "Rejection", "Utterance", "detect_layout",
           "open_source", "slice_name"]
