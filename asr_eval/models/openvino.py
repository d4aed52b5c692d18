"""Any transformers Whisper folder → OpenVINO IR, once per (weights hash, compute type), cached.

The export is our own (``openvino.convert_model`` on three small torch modules built from the
checkpoint's own layers), not optimum-intel's: optimum-intel 2.x pins transformers 5.5 and its
1.x releases predate transformers 5, so neither installs beside this project's pins; openvino and
nncf do. Three models are written, so a decoding step never recomputes what it need not:

``encoder.xml``  log-mel features [B, n_mels, 3000] → encoder states [B, 1500, d] (the checkpoint's
                 own ``WhisperEncoder``, traced as it is).
``cross.xml``    encoder states → per decoder layer the cross-attention keys and values
                 [B, heads, 1500, d/heads] — computed once per utterance, not once per token.
``decoder.xml``  new tokens [B, T], their positions [T], an additive mask [T, P + T], the past
                 self-attention keys/values [B, heads, P, d/heads] per layer and the cross ones →
                 logits [B, T, vocab] and the T new keys/values per layer (the caller appends them).

The decoder step is written out below from the checkpoint's layers — the same operations in the
same order as transformers' ``WhisperDecoderLayer`` (pre-norm self-attention with the query scaled
before the product, cross-attention, GELU MLP, final norm, tied output projection) — because the
traced transformers decoder carries its cache objects and mask builders, which do not trace.

Compute types are NNCF weight compression of the float32 IR (``nncf.compress_weights``, data-free):
``int8`` = INT8_ASYM per output channel on every matmul and embedding; ``int4`` = INT4_SYM in
groups of 128 input channels (NNCF keeps the embedding/output projection at INT8_ASYM). Activations
stay float32 in both: the engine turns off the CPU plugin's dynamic activation quantization
(``DYNAMIC_QUANTIZATION_GROUP_SIZE`` 0) and pins ``INFERENCE_PRECISION_HINT`` to f32 (OpenVINO
would otherwise run bf16 on CPUs that have it).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asr_eval.errors import AsrEvalError
from asr_eval.models.bundled import cache_root, cached_conversion, conversion_meta

if TYPE_CHECKING:
    from asr_eval.models.loading import ModelFiles

EXPORT_VERSION = 1  # bump when the exported graphs change, so cached exports are redone
MODELS = ("encoder", "cross", "decoder")
INSTALL_HINT = "pip install 'asr-eval[openvino]' (openvino + nncf)"
# NNCF weight compression per compute type (None: the float32 IR as exported)
COMPRESSION: dict[str, dict[str, Any] | None] = {
    "float32": None,
    "int8": {"mode": "INT8_ASYM"},
    # group size 128 (NNCF's default); ADJUST: a layer whose input width 128 does not divide (tiny
    # test models) gets the largest group size that does, instead of failing the export
    "int4": {"mode": "INT4_SYM", "group_size": 128, "ratio": 1.0, "group_size_fallback_mode": "ADJUST"},
}


def require_openvino() -> tuple[Any, Any]:
    """(openvino, nncf), or the error that says how to install them."""
    try:
        import openvino
    except ImportError as e:
        raise AsrEvalError(f"engine openvino needs the openvino package, which is not installed: {INSTALL_HINT}") from e
    try:
        import nncf
    except ImportError as e:
        raise AsrEvalError(f"engine openvino exports weights with nncf, which is not installed: {INSTALL_HINT}") from e
    return openvino, nncf


def check_compute_type(compute_type: str) -> dict[str, Any] | None:
    if compute_type not in COMPRESSION:
        raise AsrEvalError(f"engine openvino runs compute types {', '.join(COMPRESSION)}; not {compute_type!r}")
    return COMPRESSION[compute_type]


def _modules(model: Any) -> tuple[Any, Any, Any]:
    """The three torch modules that are exported (encoder, cross, decoder step)."""
    import torch
    from torch import nn

    dec = model.model.decoder
    layers = list(dec.layers)
    heads = model.config.decoder_attention_heads

    def split(x: torch.Tensor) -> torch.Tensor:  # [B, T, d] → [B, heads, T, d/heads]
        b, t, d = x.shape
        return x.view(b, t, heads, d // heads).transpose(1, 2)

    def merge(x: torch.Tensor) -> torch.Tensor:
        b, h, t, e = x.shape
        return x.transpose(1, 2).reshape(b, t, h * e)

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        w = torch.matmul(q, k.transpose(-1, -2))  # q is already scaled, as in transformers
        if mask is not None:
            w = w + mask
        return torch.matmul(torch.softmax(w, dim=-1), v)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = model.model.encoder

        def forward(self, input_features: torch.Tensor) -> torch.Tensor:
            return self.encoder(input_features).last_hidden_state

    class Cross(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(layers)

        def forward(self, encoder_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = []
            for layer in self.layers:
                out += [split(layer.encoder_attn.k_proj(encoder_states)), split(layer.encoder_attn.v_proj(encoder_states))]
            return tuple(out)

    class DecoderStep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dec = dec
            self.proj = model.proj_out

        def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                    *kv: torch.Tensor) -> tuple[torch.Tensor, ...]:
            n = len(layers)
            past, cross = kv[:2 * n], kv[2 * n:]
            x = self.dec.embed_tokens(input_ids) + self.dec.embed_positions.weight[positions]
            new = []
            for i, layer in enumerate(self.dec.layers):
                a = layer.self_attn
                h = layer.self_attn_layer_norm(x)
                q, k, v = split(a.q_proj(h) * a.scaling), split(a.k_proj(h)), split(a.v_proj(h))
                new += [k, v]
                o = attend(q, torch.cat([past[2 * i], k], dim=2), torch.cat([past[2 * i + 1], v], dim=2), mask)
                x = x + a.out_proj(merge(o))
                c = layer.encoder_attn
                h = layer.encoder_attn_layer_norm(x)
                o = attend(split(c.q_proj(h) * c.scaling), cross[2 * i], cross[2 * i + 1], None)
                x = x + c.out_proj(merge(o))
                h = layer.final_layer_norm(x)
                x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
            return (self.proj(self.dec.layer_norm(x)), *new)

    return Encoder().eval(), Cross().eval(), DecoderStep().eval()


def export_openvino(folder: Path, out: Path, compute_type: str) -> dict[str, Any]:
    """Write encoder/cross/decoder IR for the transformers Whisper in ``folder`` to ``out``;
    returns what is recorded about the export."""
    ov, nncf = require_openvino()
    compression = check_compute_type(compute_type)
    import torch
    from transformers import WhisperForConditionalGeneration

    t0 = time.perf_counter()
    try:
        model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch.float32,
                                                                attn_implementation="eager", local_files_only=True).eval()
    except Exception as e:  # noqa: BLE001 - unreadable weights are the export's failure too
        raise AsrEvalError(f"OpenVINO export of {folder} failed: its weights could not be loaded "
                           f"({type(e).__name__}: {e}); check the folder's model.safetensors") from e
    cfg = model.config
    n, heads, d = cfg.decoder_layers, cfg.decoder_attention_heads, cfg.d_model
    dh, src = d // heads, cfg.max_source_positions
    frames = src * model.model.encoder.conv1.stride[0] * model.model.encoder.conv2.stride[0]
    encoder, cross, step = _modules(model)
    f32 = ov.Type.f32
    kv_shape = [-1, heads, -1, dh]
    feats = torch.zeros(1, cfg.num_mel_bins, frames)
    states = torch.zeros(1, src, d)
    ex_step = (torch.zeros(1, 2, dtype=torch.long), torch.arange(1, 3), torch.zeros(2, 3),
               *[torch.zeros(1, heads, 1, dh)] * (2 * n), *[torch.zeros(1, heads, src, dh)] * (2 * n))
    step_inputs = ([([-1, -1], ov.Type.i64), ([-1], ov.Type.i64), ([-1, -1], f32)]
                   + [(kv_shape, f32)] * (2 * n) + [([-1, heads, src, dh], f32)] * (2 * n))
    try:
        with torch.inference_mode(False), torch.no_grad():
            graphs = {
                "encoder": ov.convert_model(encoder, example_input=feats,
                                            input=[([-1, cfg.num_mel_bins, frames], f32)]),
                "cross": ov.convert_model(cross, example_input=states, input=[([-1, src, d], f32)]),
                "decoder": ov.convert_model(step, example_input=ex_step, input=step_inputs),
            }
    except Exception as e:  # noqa: BLE001 - any tracing/conversion failure is the export's
        raise AsrEvalError(f"OpenVINO export of {folder} failed ({type(e).__name__}: {e}); the engine exports "
                           f"transformers WhisperForConditionalGeneration checkpoints — is this one?") from e
    names = {"encoder": ["encoder_states"], "cross": [f"cross_{kv}_{i}" for i in range(n) for kv in "kv"],
             "decoder": ["logits", *[f"new_{kv}_{i}" for i in range(n) for kv in "kv"]]}
    in_names = {"encoder": ["input_features"], "cross": ["encoder_states"],
                "decoder": ["input_ids", "positions", "mask", *[f"past_{kv}_{i}" for i in range(n) for kv in "kv"],
                            *[f"cross_{kv}_{i}" for i in range(n) for kv in "kv"]]}
    out.mkdir(parents=True, exist_ok=True)
    for key, g in graphs.items():
        for port, name in zip(g.inputs, in_names[key]):
            port.get_tensor().set_names({name})
        for port, name in zip(g.outputs, names[key]):
            port.get_tensor().set_names({name})
        if compression is not None:
            g = _compress(nncf, g, compression)
        ov.save_model(g, str(out / f"{key}.xml"), compress_to_fp16=False)
    return {"compute_type": compute_type, "weight_compression": compression, "openvino": ov.__version__,
            "nncf": nncf.__version__, "export": f"asr_eval.models.openvino v{EXPORT_VERSION} (openvino.convert_model)",
            "torch": torch.__version__, "export_s": round(time.perf_counter() - t0, 2),
            "bytes": sum(p.stat().st_size for p in out.iterdir() if p.is_file())}


def _compress(nncf: Any, graph: Any, compression: dict[str, Any]) -> Any:
    import logging

    kw = dict(compression)
    kw["mode"] = getattr(nncf.CompressWeightsMode, kw["mode"])
    if "group_size_fallback_mode" in kw:
        from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

        kw["advanced_parameters"] = AdvancedCompressionParameters(
            group_size_fallback_mode=getattr(GroupSizeFallbackMode, kw.pop("group_size_fallback_mode")))
    log = logging.getLogger("nncf")
    level = log.level
    log.setLevel(logging.WARNING)  # not its per-model bit-width tables on every export
    try:
        return nncf.compress_weights(graph, **kw)
    finally:
        log.setLevel(level)


def openvino_folder(mf: ModelFiles, compute_type: str) -> Path:
    """The cached OpenVINO export of ``mf`` at ``compute_type`` (exported on first use). A
    compressed type is derived from the cached float32 IR, so the checkpoint is traced once."""
    ov, nncf = require_openvino()
    compression = check_compute_type(compute_type)
    base = cache_root() / "openvino" / f"{mf.revision[:16]}-ov{ov.__version__.split('-')[0]}-e{EXPORT_VERSION}"
    if compression is None:
        def build(tmp: Path) -> dict:
            return {"source": mf.spec.name, "model_id": mf.model_id, **export_openvino(mf.folder, tmp, compute_type)}

        return cached_conversion(base / "float32", build,
                                 f"exporting {mf.spec.name} to OpenVINO (float32, once) into {base / 'float32'}")
    fp32 = openvino_folder(mf, "float32")
    dest = base / f"{compute_type}-nncf{nncf.__version__}"

    def compress(tmp: Path) -> dict:
        t0 = time.perf_counter()
        core = ov.Core()
        tmp.mkdir(parents=True, exist_ok=True)
        for key in MODELS:
            g = _compress(nncf, core.read_model(str(fp32 / f"{key}.xml")), compression)
            ov.save_model(g, str(tmp / f"{key}.xml"), compress_to_fp16=False)
        meta = conversion_meta(fp32)
        return {**meta, "compute_type": compute_type, "weight_compression": compression, "nncf": nncf.__version__,
                "compress_s": round(time.perf_counter() - t0, 2),
                "bytes": sum(p.stat().st_size for p in tmp.iterdir() if p.is_file())}

    return cached_conversion(dest, compress, f"compressing the OpenVINO export of {mf.spec.name} to {compute_type} "
                             f"weights (NNCF, once) into {dest}")


def convert_model_openvino(name: str, out: str | Path, compute_type: str = "int8", force: bool = False) -> Path:
    """``asr-eval convert --to openvino``: the cached export of ``name`` copied to ``out``."""
    from asr_eval.models.loading import open_model

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise AsrEvalError(f"{out} exists and is not empty; choose another --out or pass --force")
    check_compute_type(compute_type)
    src = openvino_folder(open_model(name), compute_type)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    return out
