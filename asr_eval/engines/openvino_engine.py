"""Engine ``openvino``: Intel's OpenVINO runtime (CPU) running our own export of the checkpoint
(``models/openvino.py``: encoder, cross-attention keys/values, decoder step), with float32,
int8 or int4 *weights* (NNCF weight compression) and float32 activations.

Decoding is transformers' own ``generate`` — the same Whisper logits processors, beam search,
sampling, prompts, ``no_repeat_ngram_size``/``repetition_penalty``, scores and no-speech capture as
the ``transformers`` engine (its ``decode`` is reused as it is) — over a model whose forward pass
runs the OpenVINO graphs instead of PyTorch layers: ``OVWhisper`` is a weightless (meta-device)
``WhisperForConditionalGeneration`` whose ``get_encoder()`` and ``forward`` call the compiled
models and keep the keys/values in transformers' own cache objects (so beam search reorders them
as usual). Hence every recipe and both preprocessing modes are honoured: the engine receives our
features, and float32 differs from the transformers engine only by kernel rounding.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import numpy as np

from asr_eval.engines.base import EngineBase, register_engine
from asr_eval.engines.transformers_engine import peak_process_memory
from asr_eval.provenance import cpu_isa

# Measured on the 2-core AVX2 VM (whisper-base int8, 60 demo clips, noisy: other jobs ran): batch 4 took 89 s,
# batch 1 344 s — the Python generate loop's per-step cost is shared by the batch, so batch as transformers does.
CPU_BATCH_SIZE = 4
def _ov_whisper(files: Any, compiled: dict[str, Any]) -> Any:
    """A ``WhisperForConditionalGeneration`` without weights whose passes run ``compiled``."""
    import torch
    from torch import nn
    from transformers import GenerationConfig, WhisperForConditionalGeneration
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

    from asr_eval.models.loading import DEFAULT_MAX_NEW_TOKENS, force_language

    cfg = files.config
    n_layers, heads = cfg.decoder_layers, cfg.decoder_attention_heads
    dh = cfg.d_model // heads
    requests = {k: m.create_infer_request() for k, m in compiled.items()}

    def run(key: str, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        req = requests[key]
        req.infer(inputs, share_inputs=True)
        return [req.get_output_tensor(i).data.copy() for i in range(len(compiled[key].outputs))]

    class Encoder(nn.Module):
        def forward(self, input_features: torch.Tensor, **kwargs: Any) -> BaseModelOutput:
            feats = np.ascontiguousarray(input_features.detach().float().cpu().numpy())
            (states,) = run("encoder", {"input_features": feats})
            return BaseModelOutput(last_hidden_state=torch.from_numpy(states))

    class OVWhisper(WhisperForConditionalGeneration):
        @property
        def device(self) -> torch.device:
            return torch.device("cpu")

        @property
        def dtype(self) -> torch.dtype:
            return torch.float32

        def get_encoder(self, *args: Any, **kwargs: Any) -> nn.Module:
            return self.ov_encoder

        def forward(self, input_features=None, attention_mask=None, decoder_input_ids=None,
                    decoder_attention_mask=None, encoder_outputs=None, past_key_values=None,
                    decoder_inputs_embeds=None, decoder_position_ids=None, labels=None, use_cache=None,
                    cache_position=None, **kwargs):
            if encoder_outputs is None:
                encoder_outputs = self.ov_encoder(input_features)
            states = encoder_outputs[0]
            cache = past_key_values if past_key_values is not None else EncoderDecoderCache(DynamicCache(),
                                                                                           DynamicCache())
            self_c, cross_c = cache.self_attention_cache, cache.cross_attention_cache
            ids = decoder_input_ids
            b, t = ids.shape
            if cross_c.get_seq_length() == 0:  # first pass: the cross keys/values, once per utterance
                kv = run("cross", {"encoder_states": np.ascontiguousarray(states.float().numpy())})
                for i in range(n_layers):
                    cross_c.update(torch.from_numpy(kv[2 * i]), torch.from_numpy(kv[2 * i + 1]), i)
                    if hasattr(cache, "is_updated"):
                        cache.is_updated[i] = True
            past = self_c.get_seq_length()
            positions = (cache_position.numpy() if cache_position is not None else np.arange(past, past + t))
            mask = np.zeros((t, past + t), np.float32)
            if t > 1:  # causal among the new tokens; every past one is visible
                mask[:, past:] = np.triu(np.full((t, t), np.finfo(np.float32).min, np.float32), 1)
            inputs: dict[str, np.ndarray] = {"input_ids": ids.numpy().astype(np.int64), "positions":
                                             positions.astype(np.int64), "mask": mask}
            empty = np.zeros((b, heads, 0, dh), np.float32)
            for i in range(n_layers):
                for j, kv in enumerate("kv"):
                    inputs[f"past_{kv}_{i}"] = (self_c.layers[i].keys if j == 0 else self_c.layers[i].values).numpy() \
                        if past else empty
                    inputs[f"cross_{kv}_{i}"] = (cross_c.layers[i].keys if j == 0 else cross_c.layers[i].values).numpy()
            out = run("decoder", inputs)
            for i in range(n_layers):
                self_c.update(torch.from_numpy(out[1 + 2 * i]), torch.from_numpy(out[2 + 2 * i]), i)
            return Seq2SeqLMOutput(logits=torch.from_numpy(out[0]), past_key_values=cache,
                                   encoder_last_hidden_state=states)

    with torch.device("meta"):
        model = OVWhisper(cfg)
    model.ov_encoder = Encoder()
    model.eval()
    model.generation_config = GenerationConfig.from_pretrained(files.folder)
    force_language(model, files.processor.tokenizer, "zh", "transcribe", DEFAULT_MAX_NEW_TOKENS,
                   f"model {files.spec.name!r}")
    return model


@register_engine("openvino")
class OpenVINOEngine(EngineBase):
    """OpenVINO runtime (CPU) on our export of the checkpoint; int8/int4 = NNCF weight-only compression."""

    name = "openvino"

    def __init__(self, files, device: str = "cpu", compute_type: str = "float32", threads: int = 0):
        from asr_eval.engines.transformers_engine import TransformersEngine
        from asr_eval.errors import AsrEvalError
        from asr_eval.models.bundled import conversion_meta
        from asr_eval.models.openvino import MODELS, check_compute_type, openvino_folder, require_openvino

        ov, nncf = require_openvino()  # before anything is read or exported
        check_compute_type(compute_type)
        if device != "cpu":
            raise AsrEvalError(f"engine openvino runs on the CPU here; not device {device!r} (use --device cpu)")
        self.files, self.device, self.compute_type = files, device, compute_type
        self.version = ov.__version__
        self.nncf_version = nncf.__version__
        self.folder = openvino_folder(files, compute_type)
        self.meta = conversion_meta(self.folder)
        self.threads = threads or len(os.sched_getaffinity(0))
        self.config = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
                       "INFERENCE_NUM_THREADS": str(self.threads), "PERFORMANCE_HINT": "LATENCY"}
        core = ov.Core()
        compiled = {k: core.compile_model(str(self.folder / f"{k}.xml"), "CPU", self.config) for k in MODELS}
        self.cpu_name = core.get_property("CPU", "FULL_DEVICE_NAME")
        prec = compiled["decoder"].get_property("INFERENCE_PRECISION_HINT")
        self.precision = prec.get_type_name() if hasattr(prec, "get_type_name") else str(prec)
        self.model = _ov_whisper(files, compiled)
        # the transformers engine's decode, over the OpenVINO-backed model (generate, scores, no-speech)
        loaded = SimpleNamespace(model=self.model, device="cpu", dtype="float32")  # float32: the features' dtype
        self._gen = TransformersEngine(files, "cpu", "float32", loaded=loaded)

    def identity(self) -> dict[str, Any]:
        return {"engine": self.name, "openvino": self.version, "nncf": self.nncf_version, "device": self.device,
                "compute_type": self.compute_type, "threads": self.threads,
                "weight_compression": self.meta.get("weight_compression"), "export": self.meta.get("export"),
                "export_torch": self.meta.get("torch"), "inference_precision": self.precision,
                "dynamic_quantization_group_size": 0, "cpu": self.cpu_name, "cpu_isa": cpu_isa(),
                "openvino_folder": str(self.folder)}

    def suggest_batch_size(self, recipe) -> int:
        return CPU_BATCH_SIZE

    def peak_memory_bytes(self) -> int | None:
        return peak_process_memory("cpu")

    def decode(self, features, request):
        return self._gen.decode(features, request)
