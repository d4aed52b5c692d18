"""Inference: batching order, forced decoding arguments, mel bins per model, batch sizing, and
the real bundled whisper-base on the demo corpus's clean Mandarin."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import csv  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from asr_eval.errors import AsrEvalError  # noqa: E402
from asr_eval.inference import (  # noqa: E402
    CPU_BATCH_SIZE, DecodeParams, auto_batch_size, peak_gpu_memory_bytes, per_sample_bytes, transcribe_arrays,
)
from asr_eval.models import build_tiny_whisper, load  # noqa: E402

LENGTHS_S = [1.0, 7.5, 0.3, 12.0, 3.2, 0.0, 29.9]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("inf")
    return (load(str(build_tiny_whisper(d / "t80", num_mel_bins=80)), device="cpu"),
            load(str(build_tiny_whisper(d / "t128", num_mel_bins=128, seed=1)), device="cpu"))


def _audios(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in LENGTHS_S]


class Spy:
    """Stands in for ``model.generate``: records each batch and answers, for every row, the
    digits of a number computed from that row's own log-mel features — so a result that comes
    back at the wrong index is visible, whatever order the batches ran in."""

    def __init__(self, tokenizer):
        self.tok, self.calls = tokenizer, []

    def __call__(self, input_features, **kw):
        answers = [str(int(f.float().mean().abs() * 1e6)) for f in input_features]
        self.calls.append((tuple(input_features.shape), input_features.dtype, kw, answers))
        rows = [self.tok.encode(a, add_special_tokens=False) for a in answers]
        n = max(map(len, rows))
        eot = self.tok.convert_tokens_to_ids("<|endoftext|>")
        return torch.tensor([r + [eot] * (n - len(r)) for r in rows])


def test_results_come_back_in_input_order_for_mixed_lengths(tiny, monkeypatch):
    lm = tiny[0]
    audios = _audios()
    spy = Spy(lm.processor.tokenizer)
    monkeypatch.setattr(lm.model, "generate", spy)
    one_by_one = [transcribe_arrays(lm, [a], batch_size=1).texts[0] for a in audios]
    assert len(set(one_by_one)) == len(audios)  # every input is told apart, so the order check can fail
    spy.calls.clear()
    res = transcribe_arrays(lm, audios, DecodeParams(max_new_tokens=7), batch_size=3)
    assert res.texts == one_by_one
    assert res.n_tokens == [len(lm.processor.tokenizer.encode(t, add_special_tokens=False)) for t in one_by_one]
    assert [c[0] for c in spy.calls] == [(3, 80, 3000), (3, 80, 3000), (1, 80, 3000)]
    assert res.proc_s > 0
    # batches hold similar lengths: 29.9, 12.0, 7.5 s | 3.2, 1.0, 0.3 s | 0 s
    assert [c[3] for c in spy.calls] == [[one_by_one[i] for i in b] for b in ((6, 3, 1), (4, 0, 2), (5,))]
    unsorted = transcribe_arrays(lm, audios, batch_size=3, sort_by_length=False)
    assert unsorted.texts == one_by_one


def test_generate_always_gets_language_task_and_max_new_tokens(tiny, monkeypatch):
    lm = tiny[0]
    spy = Spy(lm.processor.tokenizer)
    monkeypatch.setattr(lm.model, "generate", spy)
    transcribe_arrays(lm, _audios()[:2], DecodeParams(max_new_tokens=9, num_beams=2))
    (_, dtype, kw, _), = spy.calls
    assert dtype == torch.float32
    assert kw == {"language": "zh", "task": "transcribe", "num_beams": 2, "max_new_tokens": 9,
                  "return_timestamps": False, "do_sample": False}
    spy.calls.clear()
    transcribe_arrays(lm, _audios()[:1], DecodeParams(temperature=0.7))
    assert spy.calls[0][2]["do_sample"] is True and spy.calls[0][2]["temperature"] == 0.7


def test_each_model_gets_its_own_mel_bins(tiny, monkeypatch):
    for lm, bins in zip(tiny, (80, 128)):
        spy = Spy(lm.processor.tokenizer)
        monkeypatch.setattr(lm.model, "generate", spy)
        transcribe_arrays(lm, _audios()[:2], batch_size=2)
        assert spy.calls[0][0] == (2, bins, 3000)


def test_real_generation_on_tiny_model_stops_at_max_new_tokens(tiny):
    """This random decoder does not emit <|endoftext|>, so it shows the length bound: without it
    greedy decoding would run on to the 448-position limit."""
    lm = tiny[1]
    res = transcribe_arrays(lm, _audios()[:2], DecodeParams(max_new_tokens=4), batch_size=2)
    assert len(res.texts) == 2 and all(isinstance(t, str) and t for t in res.texts)
    assert res.n_tokens == [4, 4] and res.proc_s > 0
    again = transcribe_arrays(lm, _audios()[:2], DecodeParams(max_new_tokens=4), batch_size=2)
    assert again.texts == res.texts  # greedy is deterministic


def test_bad_inputs_are_named(tiny):
    lm = tiny[0]
    with pytest.raises(AsrEvalError, match=r"audio #1 has shape \(100, 2\)"):
        transcribe_arrays(lm, [np.zeros(100, np.float32), np.zeros((100, 2), np.float32)])
    with pytest.raises(AsrEvalError, match=r"audio #0 is 31.0 s"):
        transcribe_arrays(lm, [np.zeros(31 * 16000, np.float32)])
    with pytest.raises(AsrEvalError, match="max_new_tokens 445 \\+ 4 prompt tokens exceeds"):
        transcribe_arrays(lm, [np.zeros(100, np.float32)], DecodeParams(max_new_tokens=445))
    with pytest.raises(AsrEvalError, match="invalid decode parameters"):
        DecodeParams(num_beams=0)
    assert transcribe_arrays(lm, []).texts == []


def test_decode_params_dict_is_the_stored_form():
    assert DecodeParams().to_dict() == {"language": "zh", "task": "transcribe", "num_beams": 1,
                                        "max_new_tokens": 128, "temperature": 0.0}
    assert DecodeParams(**DecodeParams(num_beams=4).to_dict()) == DecodeParams(num_beams=4)


# ───────────── batch size and GPU memory ─────────────

V3 = SimpleNamespace(max_source_positions=1500, d_model=1280, decoder_layers=32, encoder_ffn_dim=5120,
                     num_mel_bins=128, vocab_size=51866)


def test_per_sample_memory_estimate_by_hand():
    # large-v3, bf16, greedy, 128 new tokens:
    kv = 2 * 32 * (1500 + 132) * 1280                                   # 133_693_440
    enc = 1500 * (4 * 1280 + 2 * 5120) + 2 * 1500 * 1280 + 2 * 1500 * 2 * 128  # 27_648_000
    logits = 3 * 51866 * 2                                              # 311_196
    assert per_sample_bytes(V3, 2) == int(1.5 * 2 * (kv + logits + enc)) == 484_957_908
    assert per_sample_bytes(V3, 2, num_beams=4) == int(1.5 * 2 * (4 * (kv + logits) + enc))


def test_auto_batch_size_cpu_default_and_gpu_from_free_memory(tiny, monkeypatch):
    assert auto_batch_size(tiny[0], "cpu") == CPU_BATCH_SIZE == 4
    lm = SimpleNamespace(model=SimpleNamespace(config=V3), dtype="bfloat16", device="cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * 10**9, 80 * 10**9))
    assert auto_batch_size(lm) == int(0.8 * 40e9) // 484_957_908 == 65
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10**8, 80 * 10**9))
    assert auto_batch_size(lm) == 1
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10**13, 10**13))
    assert auto_batch_size(lm) == 256


def test_peak_gpu_memory_is_none_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("machine has a GPU")
    assert peak_gpu_memory_bytes() is None


# ───────────── the real bundled model on real (synthesized) Mandarin ─────────────


@pytest.mark.integration
def test_bundled_whisper_base_transcribes_clean_demo_mandarin():
    """Clean neural-voice test utterances without digits or Latin: whisper-base zero-shot, read
    through the zh-v1 normalizer (which folds Traditional output to Simplified). Measured
    pooled CER on these 12: ~0.2; the bound leaves room for CPU numeric differences."""
    from conftest import DEMO_CORPUS

    from asr_eval.audio import load as load_audio
    from asr_eval.metrics import score_pair

    if not (DEMO_CORPUS / "metadata.csv").exists():
        pytest.skip("bundled demo corpus not generated yet")
    rows = [r for r in csv.DictReader((DEMO_CORPUS / "metadata.csv").open(encoding="utf-8"))
            if r["split"] == "test" and r["voice"] == "neural" and r["noise"] == "clean"
            and r["has_digits"] == "false" and r["has_latin"] == "false"][:12]
    audios = [load_audio(DEMO_CORPUS / r["file_name"]).samples for r in rows]
    lm = load("bundled:whisper-base", device="cpu")
    t0 = time.perf_counter()
    res = transcribe_arrays(lm, audios, batch_size=CPU_BATCH_SIZE)
    wall = time.perf_counter() - t0
    scores = [score_pair(r["text"], h) for r, h in zip(rows, res.texts)]
    cer = sum(s.cer_errors for s in scores) / sum(s.cer_n for s in scores)
    audio_s = sum(len(a) for a in audios) / 16000
    print(f"\nCER {cer:.3f} on {len(rows)} utts, {audio_s:.1f} s audio, proc {res.proc_s:.1f} s "
          f"(wall {wall:.1f} s), RTFx {audio_s / res.proc_s:.2f}")
    for r, h in zip(rows, res.texts):
        print(f"  {r['text']} | {h}")
    assert cer < 0.35, cer
    assert all(n < 40 for n in res.n_tokens)  # no runaway loops on clean speech
    assert res.proc_s <= wall
