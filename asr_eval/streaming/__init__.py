"""Streaming policies (``local-agreement``, ``vad-segment``, ``hold-k``), the simulation loop with
its two clocks, the streaming metrics, and readers of other systems' streaming logs; see ``base``,
``simulate``, ``policies``, ``metrics``, ``logs``."""

from asr_eval.streaming.base import (
    CLOCKS, POLICIES, Emission, Policy, Step, StreamResult, make_policy,
)
from asr_eval.streaming.logs import LogProblem, read_jsonl_stream, read_stream_folder, read_whisper_streaming
from asr_eval.streaming.simulate import StepMeasure, engine_transcribers, simulate

__all__ = ["CLOCKS", "POLICIES", "Emission", "LogProblem", "Policy", "Step", "StepMeasure", "StreamResult",
           "engine_transcribers", "make_policy", "read_jsonl_stream", "read_stream_folder", "read_whisper_streaming",
           "simulate"]
