"""The whisper.cpp engine and our ggml conversion: the file round-trips through our reader (header,
mel filters, vocabulary, every tensor's name, type, shape and values), ggml's q8_0/q5_0 blocks,
the cache per (weights, quantization), whisper.cpp loading and decoding our file on our features
like transformers, and the errors raised before any model loads."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import private_cache  # noqa: E402

from asr_eval.engines import create_engine, get_recipe  # noqa: E402
from asr_eval.engines.options import canonical  # noqa: E402
from asr_eval.errors import AsrEvalError  # noqa: E402
from asr_eval.integrity import file_sha256  # noqa: E402
from asr_eval.models import build_tiny_whisper  # noqa: E402
from asr_eval.models import ggml  # noqa: E402
from asr_eval.models.loading import open_model  # noqa: E402

# whisper.cpp's loader sizes the MLP as 4 × d_model: the tiny model gets that width
TINY_CPP = {"encoder_ffn_dim": 256, "decoder_ffn_dim": 256}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with private_cache(tmp_path_factory, "ggmlcache") as folder:
        yield folder


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_whisper(tmp_path_factory.mktemp("cpp") / "t", **TINY_CPP)


def _audios(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in (2.0, 5.5, 9.0)[:n]]


def test_f16_file_round_trips_through_our_reader(tiny_dir, tmp_path):
    import torch
    from transformers import WhisperForConditionalGeneration

    files = open_model(str(tiny_dir))
    info = ggml.write_ggml(files, tmp_path / "m.bin", "f16")
    m = ggml.read_ggml(tmp_path / "m.bin")
    cfg = files.config
    assert m.hparams == {"n_vocab": 51865, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 4,
                         "n_audio_layer": 2, "n_text_ctx": 448, "n_text_state": 64, "n_text_head": 4,
                         "n_text_layer": 2, "n_mels": 80, "ftype": 1}
    assert np.array_equal(m.filters, np.asarray(files.processor.feature_extractor.mel_filters, np.float32).T)
    assert len(m.vocab) == 50257 and m.vocab[220] == b" " and m.vocab[0] == b"!"
    # 5 encoder tensors + 15 per encoder layer, 5 decoder tensors + 24 per decoder layer, no proj_out
    assert len(m.tensors) == info["tensors"] == 5 + 2 + 15 * 2 + 4 + 24 * 2
    sd = WhisperForConditionalGeneration.from_pretrained(tiny_dir, dtype=torch.float32).state_dict()
    q = m.tensors["decoder.blocks.1.cross_attn.query.weight"]
    assert q.type_name == "f16" and q.shape == (64, 64)
    assert np.array_equal(q.values(), sd["model.decoder.layers.1.encoder_attn.q_proj.weight"].half().float().numpy())
    pe = m.tensors["encoder.positional_embedding"]
    assert pe.type_name == "f32" and np.array_equal(pe.values(), sd["model.encoder.embed_positions.weight"].numpy())
    b = m.tensors["encoder.conv1.bias"]
    assert b.type_name == "f32" and b.shape == (64, 1)
    assert m.tensors["encoder.conv2.weight"].type_name == "f16" and m.tensors["encoder.conv2.weight"].shape == (64, 64, 3)
    assert m.tensors["decoder.token_embedding.weight"].shape == (51865, 64)
    assert "encoder.blocks.0.attn.key.bias" not in m.tensors and "encoder.blocks.0.attn.value.bias" in m.tensors
    assert cfg.max_target_positions == 448


def test_q8_0_and_q5_0_blocks_follow_ggml_reference():
    x = np.array([np.arange(32) - 16, np.linspace(-1, 3, 32)], dtype=np.float32)
    d8 = np.abs(x).max(1) / 127
    q8 = np.frombuffer(ggml.quantize_q8_0(x), dtype=[("d", "<f2"), ("qs", "i1", 32)])
    assert q8["d"].astype(np.float32) == pytest.approx(d8, rel=1e-3)
    assert q8["qs"][0].tolist() == np.trunc((x[0] * (127 / 16)) + np.copysign(0.5, x[0])).astype(int).tolist()
    assert q8["qs"][0][0] == -127 and q8["qs"][1][-1] == 127
    back = ggml.dequantize(ggml.Q8_0, ggml.quantize_q8_0(x), x.shape)
    assert np.abs(back - x).max() <= (0.5 * d8.max()) * 1.01
    # q5_0: d = (largest-magnitude value) / -16, q = min(31, trunc(x / d + 16.5)); that value maps to 0
    raw = ggml.quantize_q5_0(x)
    assert len(raw) == 2 * 22
    blk = np.frombuffer(raw, dtype=[("d", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)])
    assert blk["d"][1] == np.float16(3 / -16)
    back5 = ggml.dequantize(ggml.Q5_0, raw, x.shape)
    assert back5[1][-1] == pytest.approx(3, rel=1e-3) and back5[0][0] == pytest.approx(-16, rel=1e-3)
    assert np.abs(back5 - x).max() <= np.abs(x).max(1).max() / 16 * 1.01


@pytest.mark.parametrize("q", ["q8_0", "q5_0"])
def test_quantized_file_stores_weight_blocks_and_keeps_the_rest(tiny_dir, tmp_path, q):
    files = open_model(str(tiny_dir))
    ggml.write_ggml(files, tmp_path / "m.bin", q)
    m = ggml.read_ggml(tmp_path / "m.bin")
    assert m.hparams["ftype"] == 2000 + {"q8_0": 7, "q5_0": 8}[q]  # quantization format version 2
    w = m.tensors["encoder.blocks.0.mlp.0.weight"]
    assert w.type_name == q and w.shape == (256, 64) and len(w.data) == 256 * 64 // 32 * {"q8_0": 34, "q5_0": 22}[q]
    assert m.tensors["decoder.token_embedding.weight"].type_name == q
    assert m.tensors["encoder.conv1.weight"].type_name == "f16"  # whisper.cpp keeps convolutions f16
    assert m.tensors["decoder.positional_embedding"].type_name == "f32"
    assert m.tensors["decoder.blocks.0.mlp_ln.bias"].type_name == "f32"


def test_conversion_is_cached_per_weights_and_quantization(tiny_dir, cache, monkeypatch):
    calls = []
    real = ggml.write_ggml
    monkeypatch.setattr(ggml, "write_ggml", lambda f, out, q: (calls.append(q), real(f, out, q))[1])
    files = open_model(str(tiny_dir))
    a = ggml.ggml_file(files, "float16")
    assert ggml.ggml_file(files, "f16") == a and calls == ["float16"]
    b = ggml.ggml_file(files, "q8_0")
    assert b != a and calls == ["float16", "q8_0"]
    assert a.parent.name.startswith(files.revision[:16])
    meta = (a.parent / "asr_eval_conversion.json").read_text()
    assert file_sha256(a) in meta


pywhispercpp = pytest.importorskip("_pywhispercpp", reason="the whispercpp extra is not installed")


def test_whispercpp_decodes_our_file_on_our_features_like_transformers(tiny_dir, cache):
    tr = create_engine("transformers", str(tiny_dir), device="cpu", compute_type="float32")
    cpp = create_engine("whispercpp", str(tiny_dir), device="cpu")  # auto: float16
    assert cpp.compute_type == "float16" and cpp.files.model_id == tr.files.model_id
    r = get_recipe("greedy", max_new_tokens=6)
    for mode in ("pad-audio", "pad-features"):
        a, b = tr.transcribe(_audios(), r, mode), cpp.transcribe(_audios(), r, mode)
        assert b.n_tokens == [6, 6, 6] and b.cut_off == [True] * 3
        assert a.texts == b.texts
        assert np.allclose(a.avg_logprob, b.avg_logprob, atol=0.05)
    ident = cpp.identity()
    assert ident["whisper.cpp"] and ident["pywhispercpp"] and ident["quantization"] == "float16"
    assert ident["ggml_sha256"] == file_sha256(cpp.path) and ident["cpu_isa"]
    q8 = create_engine("whispercpp", str(tiny_dir), device="cpu", compute_type="q8_0")
    assert q8.transcribe(_audios(1), get_recipe("beam5", max_new_tokens=4)).n_tokens == [4]


def test_a_process_that_used_whispercpp_exits_cleanly(tiny_dir, cache):
    """whisper.cpp's log callback is handed back at exit: held by a C++ static at finalization, it aborted
    CPython (rc 134, or 139) after every CLI run and after the whole suite."""
    import subprocess
    import sys

    path = create_engine("whispercpp", str(tiny_dir), device="cpu").path  # the cached conversion
    code = ("import sys, _pywhispercpp as pw; from asr_eval.engines.whispercpp_engine import _quiet_logs; "
            "_quiet_logs(); p = pw.whisper_context_default_params(); p.use_gpu = False; "
            "ctx = pw.whisper_init_from_file_with_params(sys.argv[1], p); print(ctx is not None)")
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert (res.returncode, res.stdout.strip()) == (0, "True"), res.stderr[-2000:]


def test_errors_come_before_any_model_loads(tiny_dir, tmp_path, cache, monkeypatch):
    calls = []
    monkeypatch.setattr(ggml, "write_ggml", lambda *a: calls.append(a))
    with pytest.raises(AsrEvalError, match="runs compute types float16, q8_0, q5_0; not 'float32'"):
        create_engine("whispercpp", str(tiny_dir), device="cpu", compute_type="float32")
    with pytest.raises(AsrEvalError, match="no_repeat_ngram_size 3 .*repetition_penalty 1.2"):
        canonical("whispercpp", {}, get_recipe("greedy", repetition_penalty=1.2, no_repeat_ngram_size=3))
    with pytest.raises(AsrEvalError, match="max_new_tokens 300 .*at most 220"):
        canonical("whispercpp", {}, get_recipe("beam5", max_new_tokens=300))
    assert canonical("whispercpp", {"flash_attn": "true"}, get_recipe("beam5-fallback")) == {"flash_attn": True}
    assert canonical("whispercpp", {"flash_attn": "false"}, get_recipe("greedy")) == {}  # the default: dropped
    with pytest.raises(AsrEvalError, match="unknown ggml quantization 'q4_k'"):
        ggml.convert_model_ggml(str(tiny_dir), tmp_path / "x", "q4_k")
    narrow = build_tiny_whisper(tmp_path / "narrow")  # MLP 2 × d_model: whisper.cpp cannot hold it
    with pytest.raises(AsrEvalError, match="MLP width 128/128"):
        create_engine("whispercpp", str(narrow), device="cpu")
    monkeypatch.setitem(__import__("sys").modules, "_pywhispercpp", None)
    with pytest.raises(AsrEvalError, match=r"pip install 'asr-eval\[whispercpp\]'"):
        create_engine("whispercpp", str(tiny_dir), device="cpu", compute_type="q5_0")
    assert calls == []


def test_convert_cli_writes_a_ggml_file(tiny_dir, tmp_path, cache):
    from typer.testing import CliRunner

    from asr_eval.cli import _register_commands, app

    _register_commands()
    res = CliRunner().invoke(app, ["convert", str(tiny_dir), "--to", "ggml", "--quantization", "q8_0",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "ggml-model-q8_0.bin"
    assert ggml.read_ggml(out).hparams["ftype"] == 2007
    with pytest.raises(AsrEvalError, match="exists"):
        ggml.convert_model_ggml(str(tiny_dir), out, "q8_0")
