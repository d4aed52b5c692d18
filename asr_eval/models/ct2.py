"""CTranslate2 Whisper ``model.bin`` → transformers ``WhisperForConditionalGeneration`` folder.

The CT2 binary (``ctranslate2/specs/model_spec.py::_serialize``, binary version 6) is:
``u32 version, str spec_name, u32 spec_revision, u32 n_vars, n_vars × (str name, u8 ndim,
ndim × u32 dim, u8 dtype_id, u32 nbytes, bytes), u32 n_aliases, n_aliases × (str alias, str target)``,
little-endian, where ``str`` is ``u16 len_with_nul, utf-8 bytes, NUL``. The Whisper layout is the
inverse of ``ctranslate2/converters/transformers.py::WhisperLoader``: self-attention q/k/v are fused
into one ``linear_0`` and cross-attention k/v into ``linear_1``, with a zero bias standing in for
the bias-less k projection.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from asr_eval.errors import AsrEvalError

CONVERTER_VERSION = 2  # bump when the output changes, so cached conversions are redone
SUPPORTED_BINARY_VERSIONS = (5, 6)
# Order of ctranslate2's DataType enum (include/ctranslate2/types.h, _dtype_to_type_id).
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")

if TYPE_CHECKING:
    import torch


@dataclass
class Ct2Model:
    """The parsed content of a CT2 ``model.bin``."""

    spec: str
    revision: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str]  # already resolved into ``variables``; kept for inspection


def read_ct2_model_bin(parts: Path | Sequence[Path]) -> Ct2Model:
    """Parse a CT2 ``model.bin`` given as one file or as split parts (concatenated in order)."""
    import torch

    paths = [Path(parts)] if isinstance(parts, (str, Path)) else [Path(p) for p in parts]
    buf = bytearray()  # writable, so torch.frombuffer views it without copying or warning
    for p in paths:
        buf += p.read_bytes()
    where = " + ".join(str(p) for p in paths)
    off = 0

    def take(fmt: str):
        nonlocal off
        size = struct.calcsize(fmt)
        if off + size > len(buf):
            raise AsrEvalError(f"{where}: truncated CTranslate2 model.bin at byte {off}; "
                               "are all parts present and concatenated in order?")
        (val,) = struct.unpack_from(fmt, buf, off)
        off += size
        return val

    def string() -> str:
        nonlocal off
        n = take("<H")
        s = bytes(buf[off:off + n - 1]).decode("utf-8")
        off += n
        return s

    version = take("<I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise AsrEvalError(f"{where}: CTranslate2 binary version {version} is not supported "
                           f"(supported: {SUPPORTED_BINARY_VERSIONS}); is this a model.bin file?")
    spec = string()
    revision = take("<I")
    variables: dict[str, torch.Tensor] = {}
    for _ in range(take("<I")):
        name = string()
        shape = [take("<I") for _ in range(take("<B"))]
        dtype_id = take("<B")
        nbytes = take("<I")
        if dtype_id >= len(_DTYPES) or off + nbytes > len(buf):
            raise AsrEvalError(f"{where}: corrupt variable {name!r} (dtype id {dtype_id}, {nbytes} bytes at {off})")
        dtype = getattr(torch, _DTYPES[dtype_id])
        count = nbytes // dtype.itemsize
        t = torch.frombuffer(buf, dtype=dtype, count=count, offset=off) if count else torch.empty(0, dtype=dtype)
        variables[name] = t.reshape(shape)
        off += nbytes
    aliases = {string(): string() for _ in range(take("<I"))}
    if off != len(buf):
        raise AsrEvalError(f"{where}: {len(buf) - off} trailing bytes after the model; wrong part order?")
    # ctranslate2 stores each distinct tensor once: equal ones (zero biases, unit layer-norm
    # gains, the tied output projection) become aliases, possibly of other aliases.
    for alias in aliases:
        target, seen = aliases[alias], {alias}
        while target in aliases and target not in seen:
            seen.add(target)
            target = aliases[target]
        if target not in variables:
            raise AsrEvalError(f"{where}: alias {alias!r} points to missing variable {target!r}")
        variables[alias] = variables[target]
    return Ct2Model(spec, revision, variables, aliases)


def _split_linear(v: dict[str, torch.Tensor], src: str, dst: Sequence[str], out: dict[str, torch.Tensor]) -> None:
    """Split a fused CT2 linear into equal HF projections; ``k_proj`` gets no bias. Dropping
    k's bias is exact: it adds q·b_k to every key's score alike, and softmax ignores that."""
    w, b = v[f"{src}/weight"], v.get(f"{src}/bias")
    for i, name in enumerate(dst):
        n = w.shape[0] // len(dst)
        out[f"{name}.weight"] = w[i * n:(i + 1) * n].clone()
        if b is not None and not name.endswith("k_proj"):
            out[f"{name}.bias"] = b[i * n:(i + 1) * n].clone()


def _linear(v: dict[str, torch.Tensor], src: str, dst: str, out: dict[str, torch.Tensor]) -> None:
    _split_linear(v, src, [dst], out)


def _norm(v: dict[str, torch.Tensor], src: str, dst: str, out: dict[str, torch.Tensor]) -> None:
    out[f"{dst}.weight"] = v[f"{src}/gamma"].clone()
    out[f"{dst}.bias"] = v[f"{src}/beta"].clone()


def _n_layers(v: dict[str, torch.Tensor], stack: str) -> int:
    idx = {int(m.group(1)) for k in v if (m := re.match(rf"{stack}/layer_(\d+)/", k))}
    return max(idx) + 1 if idx else 0


def ct2_to_state_dict(m: Ct2Model) -> dict[str, torch.Tensor]:
    """Map CT2 Whisper variables to a transformers Whisper state dict (same dtype)."""
    if m.spec != "WhisperSpec":
        raise AsrEvalError(f"CTranslate2 model is a {m.spec}, not a WhisperSpec; only Whisper models convert")
    import torch

    v = m.variables
    if any(k.endswith("weight_scale") for k in v):
        raise AsrEvalError("quantized (int8/int16) CTranslate2 models cannot be converted; "
                           "use a float16/float32/bfloat16 conversion of the model")
    sd: dict[str, torch.Tensor] = {}
    for conv in ("conv1", "conv2"):
        sd[f"model.encoder.{conv}.weight"] = v[f"encoder/{conv}/weight"].clone()
        sd[f"model.encoder.{conv}.bias"] = v[f"encoder/{conv}/bias"].clone()
    for stack in ("encoder", "decoder"):
        sd[f"model.{stack}.embed_positions.weight"] = v[f"{stack}/position_encodings/encodings"].clone()
        _norm(v, f"{stack}/layer_norm", f"model.{stack}.layer_norm", sd)
        for i in range(_n_layers(v, stack)):
            s, d = f"{stack}/layer_{i}", f"model.{stack}.layers.{i}"
            _split_linear(v, f"{s}/self_attention/linear_0", [f"{d}.self_attn.{p}_proj" for p in "qkv"], sd)
            _linear(v, f"{s}/self_attention/linear_1", f"{d}.self_attn.out_proj", sd)
            _norm(v, f"{s}/self_attention/layer_norm", f"{d}.self_attn_layer_norm", sd)
            if stack == "decoder":
                _linear(v, f"{s}/attention/linear_0", f"{d}.encoder_attn.q_proj", sd)
                _split_linear(v, f"{s}/attention/linear_1", [f"{d}.encoder_attn.{p}_proj" for p in "kv"], sd)
                _linear(v, f"{s}/attention/linear_2", f"{d}.encoder_attn.out_proj", sd)
                _norm(v, f"{s}/attention/layer_norm", f"{d}.encoder_attn_layer_norm", sd)
            _linear(v, f"{s}/ffn/linear_0", f"{d}.fc1", sd)
            _linear(v, f"{s}/ffn/linear_1", f"{d}.fc2", sd)
            _norm(v, f"{s}/ffn/layer_norm", f"{d}.final_layer_norm", sd)
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"].clone()
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]  # tied, as in every Whisper
    # CT2 stores the output projection as an alias of the embeddings when they are tied (Whisper).
    if "decoder/projection/weight" in v and not torch.equal(v["decoder/projection/weight"], v["decoder/embeddings/weight"]):
        raise AsrEvalError("CT2 Whisper model has an output projection distinct from the embeddings; "
                           "transformers Whisper ties them, so it cannot be represented")
    return sd


def whisper_config_kwargs(m: Ct2Model) -> dict:
    """Architecture of the CT2 model, read from tensor shapes (never assumed from a model name)."""
    v = m.variables
    emb = v["decoder/embeddings/weight"]
    return {
        "vocab_size": emb.shape[0],
        "d_model": emb.shape[1],
        "num_mel_bins": v["encoder/conv1/weight"].shape[1],
        "encoder_layers": _n_layers(v, "encoder"),
        "decoder_layers": _n_layers(v, "decoder"),
        "encoder_attention_heads": int(v["encoder/num_heads"].item()),
        "decoder_attention_heads": int(v["decoder/num_heads"].item()),
        "encoder_ffn_dim": v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        "decoder_ffn_dim": v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        "max_source_positions": v["encoder/position_encodings/encodings"].shape[0],
        "max_target_positions": v["decoder/position_encodings/encodings"].shape[0],
    }


def _model_bin_parts(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if (src / "model.bin").is_file():
        return [src / "model.bin"]
    parts = sorted(src.glob("model.bin.part*"), key=lambda p: int(re.sub(r"\D", "", p.suffix) or 0))
    if not parts:
        raise AsrEvalError(f"{src}: no model.bin (or model.bin.part1, part2 …) in this CTranslate2 model folder")
    return parts


def convert_ct2_whisper(ct2_dir_or_model_bin: str | Path | Sequence[Path], out_dir: str | Path,
                        tokenizer_json: str | Path | None = None, ct2_config: str | Path | None = None,
                        dtype: str | None = "float32") -> Path:
    """Convert a CTranslate2 Whisper model into a transformers folder (weights, config,
    generation config, processor) at ``out_dir``; returns ``out_dir``.

    Weights are saved as ``dtype`` (None: the source precision). float32 is the default because
    transformers loads a folder in its saved dtype: float16 weights would otherwise reach CPU
    inference and fine-tuning as float16 (slower on CPU, and fp16 master weights). Upcasting
    float16 → float32 is exact.

    The source is a CT2 folder (``model.bin`` or ``model.bin.part*``, ``config.json``,
    ``tokenizer.json``), a ``model.bin`` path, or a list of split parts (then pass
    ``tokenizer_json`` and ``ct2_config``). ``out_dir`` is written in place; callers wanting
    atomicity convert into a temporary folder and rename it (see ``bundled``).
    """
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from asr_eval.models.processor import make_generation_config, make_processor, special_ids

    if isinstance(ct2_dir_or_model_bin, (str, Path)):
        src = Path(ct2_dir_or_model_bin)
        parts = _model_bin_parts(src)
        folder = src if src.is_dir() else src.parent
    else:
        parts = [Path(p) for p in ct2_dir_or_model_bin]
        folder = parts[0].parent
    tokenizer_json = Path(tokenizer_json or folder / "tokenizer.json")
    ct2_config = Path(ct2_config or folder / "config.json")
    for f in (tokenizer_json, ct2_config):
        if not f.is_file():
            raise AsrEvalError(f"{f} not found: a CT2 Whisper conversion needs the model's tokenizer.json and config.json")
    ct2_cfg = json.loads(ct2_config.read_text(encoding="utf-8"))
    m = read_ct2_model_bin(parts)
    sd = ct2_to_state_dict(m)
    out_dtype = getattr(torch, dtype) if dtype else sd["model.decoder.embed_tokens.weight"].dtype

    arch = whisper_config_kwargs(m)
    processor = make_processor(tokenizer_json, arch["num_mel_bins"], model_max_length=arch["max_target_positions"])
    ids = special_ids(processor.tokenizer)
    config = WhisperConfig(
        **arch, **{k: ids[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")},
        suppress_tokens=ct2_cfg.get("suppress_ids"), begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin"),
        scale_embedding=False, activation_function="gelu", tie_word_embeddings=True,
        dtype=str(out_dtype).removeprefix("torch."))
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict(sd, strict=True, assign=True)
    model.tie_weights()
    model.to(out_dtype)  # after tying, so the shared embedding/projection stays one tensor
    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise AsrEvalError(f"CT2 conversion left tensors unset: {on_meta[:5]}")
    model.generation_config = make_generation_config(
        processor.tokenizer, config, lang_ids=ct2_cfg.get("lang_ids"), alignment_heads=ct2_cfg.get("alignment_heads"),
        suppress_tokens=ct2_cfg.get("suppress_ids"), begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin"))

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir

