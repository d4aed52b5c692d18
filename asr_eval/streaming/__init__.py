"""Streaming policies (``local-agreement``, ``vad-segment``, ``hold-k``), the simulation loop with
its two clocks, and the streaming metrics; see ``base``, ``simulate``, ``policies``, ``metrics``."""

from asr_eval.streaming.base import (
    CLOCKS, POLICIES, Emission, Policy, Step, StreamResult, make_policy,
)
from asr_eval.streaming.simulate import StepMeasure, engine_transcribers, simulate

__all__ = ["CLOCKS", "POLICIES", "Emission", "Policy", "Step", "StepMeasure", "StreamResult",
           "engine_transcribers", "make_policy", "simulate"]
