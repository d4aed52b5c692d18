"""The web app (``asr-eval ui``): a thin gradio layer over engines, long-form strategies, streaming
policies and the store — like ``asr_eval.cli``, it adds no evaluation logic of its own.

``models`` (the bounded engine cache, model choices from the store), ``transcribe`` (one
configuration on one recording, through the scorer's own per-shard path), ``live`` (the microphone
through ``asr_eval.streaming.live.LiveStream``), ``browse`` (read-only store queries), ``render``
(HTML with the report's own diff macro and styles) and ``app`` (the gradio Blocks). Only ``app``
imports gradio; the rest is testable without it.
"""
