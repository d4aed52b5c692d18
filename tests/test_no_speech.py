"""The no-speech probability (``Candidate.no_speech_prob``) through every decode path: the
transformers engine reads it from ``generate``'s own first pass and must equal an independent
forward (softmax at ``<|startoftranscript|>``), leave tokens and log-probs untouched, and agree
with CTranslate2's ``return_no_speech_prob``; the driver keeps the first pass's value under
fallback and the long-form ``ShortBatch`` carries it. (The bundled whisper-base's values on
silence, noise and speech are pinned in tests/test_engines.py, beside its other real-model checks.)"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from asr_eval.engines import create_engine, get_recipe, preprocess
from asr_eval.engines.base import Candidate, DecodeRequest, EngineBase, no_speech_id
from asr_eval.engines.transformers_engine import TransformersEngine
from asr_eval.models import build_tiny_whisper, load

PROMPT = "以下是普通话的句子。"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_whisper(tmp_path_factory.mktemp("nsp") / "t80", num_mel_bins=80)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return TransformersEngine.from_loaded(load(str(tiny_dir), device="cpu"))


@pytest.fixture(scope="module")
def feats(tiny):
    rng = np.random.default_rng(3)
    audios = [(a * rng.standard_normal(int(s * 16000))).astype(np.float32) for s, a in ((1.0, 0.1), (0.4, 0.3))]
    return preprocess(tiny.files.processor.feature_extractor, audios, "pad-audio", "cpu")


def _prompt_ids(tok, text: str) -> tuple[int, ...]:
    return tuple(tok.encode(" " + text, add_special_tokens=False)) if text else ()


@pytest.fixture(scope="module")
def independent(tiny, feats) -> dict[str, np.ndarray]:
    """Per prompt: a full forward of the decoder prompt up to and including <|startoftranscript|>
    (after <|startofprev|> + prompt tokens when there is one); the no-speech token's softmax there."""
    tok = tiny.files.processor.tokenizer
    sot, prev = tok.convert_tokens_to_ids("<|startoftranscript|>"), tok.convert_tokens_to_ids("<|startofprev|>")
    out = {}
    for prompt in ("", PROMPT):
        ids = [prev, *_prompt_ids(tok, prompt), sot] if prompt else [sot]
        with torch.inference_mode():
            logits = tiny.lm.model(input_features=torch.as_tensor(feats),
                                   decoder_input_ids=torch.tensor([ids] * len(feats))).logits
        out[prompt] = logits[:, -1].double().softmax(-1)[:, no_speech_id(tok)].numpy()
    return out


def test_the_no_speech_token_is_found_by_name(tiny):
    tok = tiny.files.processor.tokenizer  # the bundled whisper-base's tokenizer
    assert no_speech_id(tok) == 50362 == tok.convert_tokens_to_ids("<|notimestamps|>") - 1  # <|nospeech|>

    class Old:  # an older vocabulary: <|nocaptions|> only; unknown names map to <|endoftext|>
        unk_token_id = 50256

        def convert_tokens_to_ids(self, name):
            return {"<|nocaptions|>": 50361}.get(name, 50256)

    assert no_speech_id(Old()) == 50361
    Old.convert_tokens_to_ids = lambda self, name: 50256
    assert no_speech_id(Old()) is None


def _same(a: list[list[Candidate]], b: list[list[Candidate]]) -> bool:
    return [[(c.tokens, c.avg_logprob, c.cut_off) for c in cs] for cs in a] == \
        [[(c.tokens, c.avg_logprob, c.cut_off) for c in cs] for cs in b]


@pytest.mark.parametrize("prompt", ["", PROMPT], ids=["no prompt", "prompt"])
def test_transformers_no_speech_prob_equals_an_independent_forward_and_changes_nothing(tiny, feats, independent,
                                                                                       prompt, monkeypatch):
    ids = _prompt_ids(tiny.files.processor.tokenizer, prompt)
    want = independent[prompt]
    # the random tiny model is near-uniform (p ≈ 1/51865 ≈ 2e-5), so compare relatively: the two
    # inputs differ by ~5e-4 relative and the prompt moves it by ~4 %, far beyond the 1e-5 tolerance
    assert np.all((want > 1e-5) & (want < 1e-4)) and abs(want[0] / want[1] - 1) > 1e-4
    assert abs(independent[""][0] / independent[PROMPT][0] - 1) > 1e-2
    reqs = [DecodeRequest(max_new_tokens=2, prompt_ids=ids)]
    if not prompt:  # the other row layouts of the first pass: beams, and candidates when sampling
        reqs += [DecodeRequest(max_new_tokens=2, beam_size=3),
                 DecodeRequest(max_new_tokens=2, temperature=0.7, num_candidates=2, seed=5)]
    for req in reqs:
        got = tiny.decode(feats, req)
        assert [len(cs) for cs in got] == [req.num_candidates] * len(feats)
        for cs, w in zip(got, want):
            assert all(c.no_speech_prob == pytest.approx(w, rel=1e-5, abs=0) for c in cs), req
        if req is not reqs[0]:
            continue
        with monkeypatch.context() as m:  # the decode as it was before: no capture hook on the model
            m.setattr(tiny, "no_speech_id", None)
            before = tiny.decode(feats, req)
        assert _same(got, before), req  # byte-identical tokens, the same avg_logprob and cut-off
        assert all(c.no_speech_prob is None for cs in before for c in cs)


@pytest.fixture(scope="module")
def ct2_cache(tmp_path_factory):
    old = os.environ.get("ASR_EVAL_CACHE")
    os.environ["ASR_EVAL_CACHE"] = str(tmp_path_factory.mktemp("nsp-ct2cache"))
    yield
    if old is None:
        os.environ.pop("ASR_EVAL_CACHE")
    else:
        os.environ["ASR_EVAL_CACHE"] = old


def test_ctranslate2_no_speech_prob_matches_transformers_on_the_converted_tiny_model(tiny, tiny_dir, feats,
                                                                                     independent, ct2_cache):
    ct2 = create_engine("ctranslate2", str(tiny_dir), device="cpu", compute_type="float32")
    tok = tiny.files.processor.tokenizer
    for prompt, beam in (("", 1), ("", 3), (PROMPT, 1)):
        req = DecodeRequest(max_new_tokens=2, prompt_ids=_prompt_ids(tok, prompt), beam_size=beam)
        got = np.array([cs[0].no_speech_prob for cs in ct2.decode(feats, req)])
        assert np.all((got >= 0) & (got <= 1))
        np.testing.assert_allclose(got, independent[prompt], rtol=1e-4)  # measured ≤ 3e-7 relative (fp32)


class Scripted(EngineBase):
    """Loops at temperature 0 (no-speech 0.7), answers 好的。 when sampling (no-speech 0.2)."""

    name, version, compute_type, device = "scripted", "0", "float32", "cpu"

    def __init__(self, files):
        self.files = files

    def decode(self, features, request: DecodeRequest) -> list[list[Candidate]]:
        tok = self.files.processor.tokenizer
        text, lp, nsp = ("哈哈" * 40, -0.3, 0.7) if request.temperature == 0 else ("好的。", -0.5, 0.2)
        ids = tok.encode(text, add_special_tokens=False)[:request.max_new_tokens]
        return [[Candidate(ids, lp, False, nsp)] * request.num_candidates for _ in features]

    def suggest_batch_size(self, recipe):
        return 4

    def peak_memory_bytes(self):
        return None

    def identity(self):
        return {"engine": self.name}


def test_the_driver_keeps_the_first_pass_no_speech_prob_and_short_batches_carry_it(tiny):
    from asr_eval.longform import short_transcriber

    eng = Scripted(tiny.files)
    audio = [np.zeros(16000, np.float32)]
    res = eng.transcribe(audio, get_recipe("fallback"))
    # the loop fails the compression ratio at 0; the 0.2 re-decode is kept with its log-prob …
    assert res.texts == ["好的。"] and res.temperatures == [0.2] and res.avg_logprob == [-0.5]
    assert res.no_speech_prob == [0.7]  # … and the no-speech probability of the temperature-0 pass
    short = short_transcriber(eng, get_recipe("fallback"))(audio * 2)
    assert short.texts == ["好的。"] * 2 and short.avg_logprob == [-0.5] * 2 and short.no_speech_prob == [0.7] * 2
    assert short_transcriber(eng, get_recipe("fallback"))([]).no_speech_prob == []
