"""Any transformers Whisper checkpoint → a whisper.cpp ``ggml`` model file, and a reader for it.

The layout is the one ``whisper_model_load`` (whisper.cpp ``src/whisper.cpp``) reads, all
little-endian ``int32`` unless said otherwise:

1. magic ``0x67676d6c`` ("ggml");
2. hparams: ``n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx,
   n_text_state, n_text_head, n_text_layer, n_mels, ftype`` — ``ftype`` is ggml's file type (0 all
   f32, 1 mostly f16, 7 mostly q8_0, 8 mostly q5_0), plus 1000 × the quantization format version
   (2) for quantized files;
3. mel filters: ``n_mel, n_fft`` then ``n_mel × n_fft`` float32 (whisper.cpp uses them only when it
   computes the log-mel from PCM itself);
4. vocabulary: ``n`` then ``n × (u32 length, bytes)`` — the BPE tokens below ``<|endoftext|>`` as raw
   bytes (GPT-2's byte↔unicode mapping undone); whisper.cpp names the special tokens itself from
   ``n_vocab`` (openai's layout: ``<|endoftext|>`` = 50257 in multilingual models);
5. tensors until EOF: ``n_dims, name_length, ggml_type`` then ``n_dims`` extents in ggml order
   (fastest-varying first: a torch ``[out, in]`` weight is ``[in, out]``), the name, the data.

whisper.cpp fixes each tensor's type from ``ftype``: 2-D weights (attention, MLP, token embedding)
are f32 / f16 / q8_0 / q5_0; convolution weights f16 (f32 in an f32 file); biases, layer norms and
positional embeddings f32. Conv biases are stored as ``[1, d]``. ``proj_out`` is not stored (tied
to the token embedding). k projections have no bias, as in transformers.

Quantization follows ggml's reference block formats (``ggml/src/ggml-quants.c``), from the
f16-rounded weights as whisper.cpp's ``quantize`` tool reads an f16 file:

- ``q8_0``: blocks of 32 values → ``f16 d = max|x| / 127`` and 32 × ``int8 round(x / d)``
  (rounding half away from zero) — 34 bytes;
- ``q5_0``: blocks of 32 → ``f16 d = m / -16`` (``m`` the value of largest magnitude, signed),
  ``q = min(31, trunc(x / d + 16.5))``; ``u32`` of the 5th bits (bit j: value j), 16 bytes of
  nibbles (low: value j, high: value j + 16) — 22 bytes.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from asr_eval.errors import AsrEvalError
from asr_eval.integrity import file_sha256

if TYPE_CHECKING:
    from asr_eval.models.loading import ModelFiles

GGML_CONVERTER_VERSION = 1  # bump when the output changes, so cached conversions are redone
MAGIC = 0x67676D6C
QNT_VERSION, QNT_FACTOR = 2, 1000
FILE_NAME = "ggml-model.bin"

# quantization → (file ftype, ggml type of the 2-D weights, ggml type of the conv weights)
F32, F16, Q5_0, Q8_0 = 0, 1, 6, 8  # ggml_type ids
QUANTIZATIONS: dict[str, tuple[int, int, int]] = {
    "float32": (0, F32, F32), "float16": (1, F16, F16), "q8_0": (7, Q8_0, F16), "q5_0": (8, Q5_0, F16)}
ALIASES = {"f32": "float32", "fp32": "float32", "f16": "float16", "fp16": "float16"}
BLOCK = 32
_TYPE_BYTES = {F32: (1, 4), F16: (1, 2), Q8_0: (BLOCK, 34), Q5_0: (BLOCK, 22)}  # (elements, bytes) per block
_TYPE_NAMES = {F32: "f32", F16: "f16", Q8_0: "q8_0", Q5_0: "q5_0"}

# transformers names (after ``model.``) → whisper.cpp names
_TOP = {"encoder.conv1.weight": "encoder.conv1.weight", "encoder.conv1.bias": "encoder.conv1.bias",
        "encoder.conv2.weight": "encoder.conv2.weight", "encoder.conv2.bias": "encoder.conv2.bias",
        "encoder.embed_positions.weight": "encoder.positional_embedding",
        "encoder.layer_norm.weight": "encoder.ln_post.weight", "encoder.layer_norm.bias": "encoder.ln_post.bias",
        "decoder.embed_positions.weight": "decoder.positional_embedding",
        "decoder.embed_tokens.weight": "decoder.token_embedding.weight",
        "decoder.layer_norm.weight": "decoder.ln.weight", "decoder.layer_norm.bias": "decoder.ln.bias"}
_LAYER = {"self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
          "self_attn.out_proj": "attn.out", "self_attn_layer_norm": "attn_ln",
          "encoder_attn.q_proj": "cross_attn.query", "encoder_attn.k_proj": "cross_attn.key",
          "encoder_attn.v_proj": "cross_attn.value", "encoder_attn.out_proj": "cross_attn.out",
          "encoder_attn_layer_norm": "cross_attn_ln", "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln"}


def check_quantization(q: str) -> str:
    q = ALIASES.get(q, q)
    if q not in QUANTIZATIONS:
        raise AsrEvalError(f"unknown ggml quantization {q!r}; one of {', '.join(QUANTIZATIONS)} "
                           "(f16 and f32 are accepted for float16 and float32)")
    return q


def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character of each byte, inverted (a BPE token string → its bytes)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = iter(range(256, 512))
    return {chr(b if b in printable else next(extra)): b for b in range(256)}


def vocab_bytes(tokenizer: Any) -> list[bytes]:
    """The BPE tokens below ``<|endoftext|>`` as raw bytes, in id order."""
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    dec = _byte_decoder()
    out = []
    for i, t in enumerate(tokenizer.convert_ids_to_tokens(list(range(eot)))):
        try:
            out.append(bytes(dec[c] for c in t))
        except KeyError:
            raise AsrEvalError(f"token {i} ({t!r}) is not a byte-level BPE token; whisper.cpp needs GPT-2 style "
                               "byte-level vocabularies (every Whisper tokenizer is one)") from None
    return out


def check_architecture(config: Any, tokenizer: Any) -> None:
    """What whisper.cpp's loader assumes of a model, checked before converting."""
    bad = []
    if config.encoder_ffn_dim != 4 * config.d_model or config.decoder_ffn_dim != 4 * config.d_model:
        bad.append(f"MLP width {config.encoder_ffn_dim}/{config.decoder_ffn_dim} ≠ 4 × d_model {config.d_model}")
    if getattr(config, "scale_embedding", False):
        bad.append("scale_embedding=True")
    if getattr(config, "activation_function", "gelu") != "gelu":
        bad.append(f"activation {config.activation_function}")
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if eot != (50257 if config.vocab_size >= 51865 else 50256):
        bad.append(f"<|endoftext|> is token {eot}, not openai's layout that whisper.cpp derives special ids from")
    if bad:
        raise AsrEvalError("whisper.cpp cannot run this model: " + "; ".join(bad))


def _name(hf: str) -> str | None:
    hf = hf.removeprefix("model.")
    if hf == "proj_out.weight":
        return None  # tied to decoder.embed_tokens
    if hf in _TOP:
        return _TOP[hf]
    parts = hf.split(".")
    if len(parts) >= 5 and parts[1] == "layers":
        sub = ".".join(parts[3:-1])
        if sub in _LAYER:
            return f"{parts[0]}.blocks.{parts[2]}.{_LAYER[sub]}.{parts[-1]}"
    raise AsrEvalError(f"tensor {hf!r} has no place in a whisper.cpp model (not a Whisper checkpoint?)")


def _f16_bits(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).view(np.uint16)


def quantize_q8_0(x: np.ndarray) -> bytes:
    """Rows of ``x`` (last axis a multiple of 32) in ggml's q8_0 block format."""
    b = x.astype(np.float32).reshape(-1, BLOCK)
    d = np.abs(b).max(axis=1) / np.float32(127)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    v = b * inv[:, None]
    q = np.trunc(v + np.copysign(np.float32(0.5), v)).astype(np.int8)  # C roundf: half away from zero
    out = np.empty(len(b), dtype=[("d", "<u2"), ("qs", "i1", BLOCK)])
    out["d"], out["qs"] = _f16_bits(d), q
    return out.tobytes()


def quantize_q5_0(x: np.ndarray) -> bytes:
    """Rows of ``x`` (last axis a multiple of 32) in ggml's q5_0 block format."""
    b = x.astype(np.float32).reshape(-1, BLOCK)
    m = b[np.arange(len(b)), np.abs(b).argmax(axis=1)]  # the first value of largest magnitude, signed
    d = m / np.float32(-16)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    q = np.minimum(31, np.trunc(b * inv[:, None] + np.float32(16.5)).astype(np.int8)).astype(np.uint8)
    lo, hi = q[:, :BLOCK // 2], q[:, BLOCK // 2:]
    qs = (lo & 0x0F) | ((hi & 0x0F) << 4)
    bits = ((q >> 4) & 1).astype(np.uint32)
    qh = (bits << np.arange(BLOCK, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
    out = np.empty(len(b), dtype=[("d", "<u2"), ("qh", "<u4"), ("qs", "u1", BLOCK // 2)])
    out["d"], out["qh"], out["qs"] = _f16_bits(d), qh, qs
    return out.tobytes()


def dequantize(ttype: int, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Float32 values of a tensor's raw data (``shape`` in numpy order)."""
    if ttype == F32:
        return np.frombuffer(data, "<f4").reshape(shape)
    if ttype == F16:
        return np.frombuffer(data, "<f2").astype(np.float32).reshape(shape)
    if ttype == Q8_0:
        blk = np.frombuffer(data, dtype=[("d", "<f2"), ("qs", "i1", BLOCK)])
        return (blk["d"].astype(np.float32)[:, None] * blk["qs"]).reshape(shape)
    if ttype == Q5_0:
        blk = np.frombuffer(data, dtype=[("d", "<f2"), ("qh", "<u4"), ("qs", "u1", BLOCK // 2)])
        nib = np.concatenate([blk["qs"] & 0x0F, blk["qs"] >> 4], axis=1).astype(np.int32)
        high = ((blk["qh"][:, None] >> np.arange(BLOCK, dtype=np.uint32)) & 1).astype(np.int32)
        return (blk["d"].astype(np.float32)[:, None] * ((nib | (high << 4)) - 16)).reshape(shape)
    raise AsrEvalError(f"ggml tensor type {ttype} is not read here")


def _encode(name: str, a: np.ndarray, wtype: int, ctype: int) -> tuple[int, bytes]:
    """(ggml type, bytes) of one tensor as whisper.cpp expects it in a file of this ftype."""
    two_d = a.ndim == 2 and not name.endswith(("conv1.bias", "conv2.bias", "positional_embedding"))
    t = wtype if two_d else ctype if a.ndim == 3 else F32
    if t == F32:
        return t, a.astype("<f4").tobytes()
    if t == F16:
        return t, a.astype("<f2").tobytes()
    if a.shape[-1] % BLOCK:
        raise AsrEvalError(f"tensor {name} has rows of {a.shape[-1]} values; {_TYPE_NAMES[t]} needs a multiple of "
                           f"{BLOCK} — use float16 for this model")
    f16 = a.astype(np.float16).astype(np.float32)  # as whisper.cpp's quantize tool reads an f16 file
    return t, quantize_q8_0(f16) if t == Q8_0 else quantize_q5_0(f16)


def write_ggml(files: ModelFiles, out: Path, quantization: str = "float16") -> dict[str, Any]:
    """Write ``files``' model as a whisper.cpp model file at ``out``; returns what was written."""
    import torch
    from transformers import WhisperForConditionalGeneration

    q = check_quantization(quantization)
    ftype, wtype, ctype = QUANTIZATIONS[q]
    cfg, tok = files.config, files.processor.tokenizer
    check_architecture(cfg, tok)
    fe = files.processor.feature_extractor
    filters = np.asarray(fe.mel_filters, dtype=np.float32).T  # [n_mels, n_fft/2 + 1], as whisper.cpp indexes it
    model = WhisperForConditionalGeneration.from_pretrained(files.folder, dtype=torch.float32, local_files_only=True)
    sd = model.state_dict()
    header = [cfg.vocab_size, cfg.max_source_positions, cfg.d_model, cfg.encoder_attention_heads, cfg.encoder_layers,
              cfg.max_target_positions, cfg.d_model, cfg.decoder_attention_heads, cfg.decoder_layers,
              cfg.num_mel_bins, ftype + (QNT_VERSION * QNT_FACTOR if wtype not in (F32, F16) else 0)]
    words = vocab_bytes(tok)
    n = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        f.write(struct.pack("<12i", MAGIC, *header))
        f.write(struct.pack("<2i", *filters.shape))
        f.write(filters.astype("<f4").tobytes())
        f.write(struct.pack("<i", len(words)))
        for w in words:
            f.write(struct.pack("<I", len(w)) + w)
        for hf, t in sd.items():
            name = _name(hf)
            if name is None:
                continue
            a = t.detach().float().numpy()
            if name.endswith(("conv1.bias", "conv2.bias")):
                a = a.reshape(-1, 1)
            ttype, data = _encode(name, a, wtype, ctype)
            raw = name.encode()
            f.write(struct.pack(f"<3i{a.ndim}i", a.ndim, len(raw), ttype, *reversed(a.shape)) + raw + data)
            n += 1
    return {"quantization": q, "ftype": header[-1], "tensors": n, "vocab": len(words), "bytes": out.stat().st_size}


@dataclass
class GgmlTensor:
    ttype: int
    shape: tuple[int, ...]  # numpy order (the file's extents reversed)
    data: bytes

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES.get(self.ttype, str(self.ttype))

    def values(self) -> np.ndarray:
        return dequantize(self.ttype, self.data, self.shape)


@dataclass
class GgmlModel:
    hparams: dict[str, int]
    filters: np.ndarray
    vocab: list[bytes]
    tensors: dict[str, GgmlTensor] = field(default_factory=dict)


HPARAMS = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_text_ctx", "n_text_state",
           "n_text_head", "n_text_layer", "n_mels", "ftype")


def read_ggml(path: Path) -> GgmlModel:
    """Parse a whisper.cpp model file (the layout in the module docstring)."""
    buf = Path(path).read_bytes()
    off = 0

    def take(fmt: str) -> tuple:
        nonlocal off
        size = struct.calcsize(fmt)
        if off + size > len(buf):
            raise AsrEvalError(f"{path}: truncated ggml file at byte {off}")
        vals = struct.unpack_from(fmt, buf, off)
        off += size
        return vals

    def raw(n: int) -> bytes:
        nonlocal off
        if off + n > len(buf):
            raise AsrEvalError(f"{path}: truncated ggml file at byte {off}")
        off += n
        return buf[off - n:off]

    if take("<I")[0] != MAGIC:
        raise AsrEvalError(f"{path}: not a ggml model file (bad magic)")
    hp = dict(zip(HPARAMS, take("<11i")))
    n_mel, n_fft = take("<2i")
    filters = np.frombuffer(raw(4 * n_mel * n_fft), "<f4").reshape(n_mel, n_fft)
    vocab = [raw(take("<I")[0]) for _ in range(take("<i")[0])]
    model = GgmlModel(hp, filters, vocab)
    while off < len(buf):
        n_dims, length, ttype = take("<3i")
        if not 0 <= n_dims <= 4 or ttype not in _TYPE_BYTES:
            raise AsrEvalError(f"{path}: corrupt tensor record at byte {off} (dims {n_dims}, type {ttype})")
        ne = take(f"<{n_dims}i")
        name = raw(length).decode()
        per, nbytes = _TYPE_BYTES[ttype]
        count = int(np.prod(ne)) if ne else 1
        model.tensors[name] = GgmlTensor(ttype, tuple(reversed(ne)), raw(count // per * nbytes))
    return model


def ggml_file(files: ModelFiles, quantization: str = "float16") -> Path:
    """The whisper.cpp model file of ``files`` at ``quantization``, converted once per (weights
    hash, quantization, converter version) into the cache."""
    from asr_eval.models.bundled import cache_root, cached_conversion

    q = check_quantization(quantization)
    check_architecture(files.config, files.processor.tokenizer)
    dest = cache_root() / "ggml" / f"{files.revision[:16]}-{q}-v{GGML_CONVERTER_VERSION}"

    def build(tmp: Path) -> dict:
        t0 = time.perf_counter()
        info = write_ggml(files, tmp / FILE_NAME, q)
        return {"source": files.spec.name, "model_id": files.model_id, **info,
                "sha256": file_sha256(tmp / FILE_NAME), "converter_version": GGML_CONVERTER_VERSION,
                "convert_s": round(time.perf_counter() - t0, 2)}

    folder = cached_conversion(dest, build, f"converting {files.spec.name} to whisper.cpp ggml ({q}, once) into {dest}")
    return folder / FILE_NAME


def convert_model_ggml(name: str, out: str | Path, quantization: str = "float16", force: bool = False) -> Path:
    """``asr-eval convert --to ggml``: write the whisper.cpp model file of ``name`` to ``out`` (a
    file, or a folder that gets ``ggml-model-<quantization>.bin``)."""
    import shutil

    from asr_eval.models.loading import open_model

    q = check_quantization(quantization)
    out = Path(out)
    if out.is_dir() or not out.suffix:
        out = out / f"ggml-model-{q}.bin"
    if out.exists() and not force:
        raise AsrEvalError(f"{out} exists; choose another --out or pass --force")
    src = ggml_file(open_model(name), q)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out)
    return out
