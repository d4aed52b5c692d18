"""A plugin engine for the seam tests: registered by import (``ASR_EVAL_PLUGINS=fake_engine``),
it answers every utterance with 测试 and the audio's length class, so its output is known.
``FAKE_ENGINE_DELAY_S`` makes each batch take that long (a job that lasts long enough to lose a
node in the middle of it)."""

from __future__ import annotations

import os
import time

from asr_eval.engines.base import Candidate, EngineBase, register_engine


@register_engine("fake", "test engine: answers 测试 + 短/长", {"cpu": ("float32",), "cuda": ("float32",)})
class FakeEngine(EngineBase):
    name, version = "fake", "1.0"

    def __init__(self, files, device="cpu", compute_type="float32", threads=0):
        self.files, self.device, self.compute_type = files, device, compute_type

    def decode(self, features, request):
        tok = self.files.processor.tokenizer
        time.sleep(float(os.environ.get("FAKE_ENGINE_DELAY_S", "0")))
        out = []
        for f in features:
            ids = tok.encode("测试", add_special_tokens=False)[: request.max_new_tokens]
            out.append([Candidate(ids, -0.25, False)] * request.num_candidates)
        return out

    def suggest_batch_size(self, recipe):
        return 3

    def peak_memory_bytes(self):
        return None

    def identity(self):
        return {"engine": "fake", "version": self.version}
