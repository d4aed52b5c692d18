"""Long-form transcription strategies (``sequential``, ``chunked``, ``vad``); see ``base``."""

from asr_eval.longform.base import (
    STRATEGIES, LongFormResult, ShortBatch, ShortTranscriber, Strategy, join_texts, make_strategy, parse_params,
    short_transcriber,
)

__all__ = ["STRATEGIES", "LongFormResult", "ShortBatch", "ShortTranscriber", "Strategy", "join_texts",
           "make_strategy", "parse_params", "short_transcriber"]
