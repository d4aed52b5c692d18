"""The engine-neutral transcription loop: audio checks, length-sorted batches, preprocessing,
decoding under a recipe, temperature fallback, and text clean-up. Results come back in input order.

Utterances are sorted by length so each batch holds similar durations: every input is padded to
30 s, but decoding runs until the longest transcript in the batch ends.

Temperature fallback (``Recipe.has_fallback``) follows openai-whisper's ``decode_with_fallback``:
after a pass at temperature t, an utterance whose text has a gzip compression ratio above the
threshold (a repetition loop) or an average log-prob below the threshold is decoded again at the
next temperature (sampling, best of ``best_of``). Only those utterances are re-decoded, batched.
When every temperature fails, the kept decode is — as faster-whisper does — the one with the highest
average log-prob among the attempts under the compression threshold (else among all attempts).
transformers applies its own fallback only to long-form (> 30 s) inputs, so it is never relied on.

Each result also carries the no-speech probability (``Candidate.no_speech_prob``: the softmax of the
no-speech token at ``<|startoftranscript|>``). It depends on the audio and the prompt only — not on
the temperature or the search — so, as openai-whisper's silence rule reads it, the value of the first
(temperature 0) pass is kept even when a re-decode is kept; re-decodes run in smaller batches and
would move it only in the last float bits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from asr_eval.engines.base import Candidate, DecodeRequest
from asr_eval.engines.preprocessing import SAMPLING_RATE, check_mode, preprocess
from asr_eval.engines.recipes import Recipe, compression_ratio
from asr_eval.errors import AsrEvalError

if TYPE_CHECKING:
    from asr_eval.engines.base import Engine

PROMPT_LEN = 4  # <|startoftranscript|><|lang|><|task|><|notimestamps|>


@dataclass
class BatchResult:
    texts: list[str]  # decoded text, special tokens dropped, surrounding whitespace stripped
    n_tokens: list[int]  # text tokens of the kept decode (== max_new_tokens: cut off)
    avg_logprob: list[float | None]
    n_fallbacks: list[int]  # re-decodes at a higher temperature
    temperatures: list[float]  # temperature of the kept decode
    cut_off: list[bool]  # stopped at max_new_tokens (a trailing partial character was dropped)
    proc_s: float  # preprocessing + decoding seconds (audio decoding excluded)
    # no-speech probability of the first (temperature 0) pass; None where the engine cannot give it
    no_speech_prob: list[float | None] = field(default_factory=list)


def check_audio(a: np.ndarray, i: int, max_s: float = 30.0) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise AsrEvalError(f"audio #{i} has shape {a.shape}; transcription takes mono 1-D 16 kHz arrays "
                           "(decode with asr_eval.audio, which downmixes and resamples)")
    if len(a) > max_s * SAMPLING_RATE:
        raise AsrEvalError(f"audio #{i} is {len(a) / SAMPLING_RATE:.1f} s; Whisper reads 30 s windows and "
                           "would silently drop the rest — segment it (ingest rejects > 30 s utterances)")
    return a.astype(np.float32, copy=False)


def decode_text(tokenizer, tokens: list[int]) -> tuple[str, list[int]]:
    """Text of ``tokens``; a trailing incomplete UTF-8 sequence (a multi-byte character cut in half
    by ``max_new_tokens``, decoded as U+FFFD) is dropped with the tokens that carried it."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    while text.endswith("\ufffd") and tokens:
        tokens = tokens[:-1]
        text = tokenizer.decode(tokens, skip_special_tokens=True)
    return text.strip(), tokens


def prompt_ids(tokenizer, recipe: Recipe) -> tuple[int, ...]:
    if not recipe.initial_prompt:
        return ()
    return tuple(tokenizer.encode(" " + recipe.initial_prompt.strip(), add_special_tokens=False))


def _request(recipe: Recipe, temperature: float, prompt: tuple[int, ...]) -> DecodeRequest:
    sampling = temperature > 0
    return DecodeRequest(language=recipe.language, task=recipe.task,
                         beam_size=1 if sampling else recipe.beam_size, patience=recipe.patience,
                         temperature=temperature, num_candidates=recipe.best_of if sampling else 1,
                         max_new_tokens=recipe.max_new_tokens, prompt_ids=prompt,
                         no_repeat_ngram_size=recipe.no_repeat_ngram_size,
                         repetition_penalty=recipe.repetition_penalty, seed=recipe.seed)


def _needs_fallback(recipe: Recipe, text: str, avg_logprob: float | None) -> bool:
    if recipe.compression_ratio_threshold is not None and compression_ratio(text) > recipe.compression_ratio_threshold:
        return True
    return (recipe.logprob_threshold is not None and avg_logprob is not None
            and avg_logprob < recipe.logprob_threshold)


def _best(cands: list[Candidate]) -> Candidate:
    return max(cands, key=lambda c: -np.inf if c.avg_logprob is None else c.avg_logprob)


def transcribe(engine: Engine, audios: Sequence[np.ndarray], recipe: Recipe, preprocessing: str = "pad-audio",
               batch_size: int | None = None, sort_by_length: bool = True,
               on_batch: Callable[[int, float], None] | None = None) -> BatchResult:
    """Transcribe 16 kHz float32 mono arrays with ``engine`` under ``recipe``. ``on_batch(n, audio_s)``
    is called after each decoded batch (progress)."""
    check_mode(preprocessing)
    bs = batch_size or engine.suggest_batch_size(recipe)
    if bs < 1:
        raise AsrEvalError(f"batch size {bs}: must be ≥ 1")
    tok = engine.files.processor.tokenizer
    fe = engine.files.processor.feature_extractor
    prompt = prompt_ids(tok, recipe)
    limit = engine.files.config.max_target_positions
    used = recipe.max_new_tokens + PROMPT_LEN + (len(prompt) + 1 if prompt else 0)
    if used > limit:
        raise AsrEvalError(f"max_new_tokens {recipe.max_new_tokens} + {used - recipe.max_new_tokens} prompt tokens "
                           f"exceeds the model's {limit} decoder positions; lower --max-new-tokens")
    arrays = [check_audio(a, i) for i, a in enumerate(audios)]
    n = len(arrays)
    order = sorted(range(n), key=lambda i: -len(arrays[i])) if sort_by_length else list(range(n))
    texts, ntok = [""] * n, [0] * n
    logp: list[float | None] = [None] * n
    nsp: list[float | None] = [None] * n
    nfb, temps, cut = [0] * n, [0.0] * n, [False] * n
    proc_s = 0.0
    for start in range(0, n, bs):
        idx = order[start:start + bs]
        t0 = time.perf_counter()
        feats = preprocess(fe, [arrays[i] for i in idx], preprocessing, engine.device)
        attempts: dict[int, list[tuple[str, Candidate, float]]] = {i: [] for i in idx}
        pending = list(range(len(idx)))  # rows of ``feats`` still to decode
        for k, temp in enumerate(recipe.temperatures):
            if not pending:
                break
            cands = engine.decode(feats[pending], _request(recipe, temp, prompt))
            still = []
            for row, cs in zip(pending, cands):
                c = _best(cs)
                text, c.tokens = decode_text(tok, c.tokens)
                attempts[idx[row]].append((text, c, temp))
                if recipe.has_fallback and k + 1 < len(recipe.temperatures) and _needs_fallback(recipe, text, c.avg_logprob):
                    still.append(row)
            pending = still
        for i, tries in attempts.items():
            text, c, temp = tries[-1]
            if recipe.has_fallback and _needs_fallback(recipe, text, c.avg_logprob) and len(tries) > 1:
                ok = [t for t in tries if recipe.compression_ratio_threshold is None
                      or compression_ratio(t[0]) <= recipe.compression_ratio_threshold]
                text, c, temp = max(ok or tries, key=lambda t: -np.inf if t[1].avg_logprob is None else t[1].avg_logprob)
            texts[i], ntok[i], logp[i] = text, len(c.tokens), c.avg_logprob
            nsp[i] = tries[0][1].no_speech_prob  # the first pass's (see the module docstring)
            nfb[i], temps[i], cut[i] = len(tries) - 1, temp, c.cut_off
        proc_s += time.perf_counter() - t0
        if on_batch:
            on_batch(len(idx), sum(len(arrays[i]) for i in idx) / SAMPLING_RATE)
    return BatchResult(texts, ntok, logp, nfb, temps, cut, proc_s, nsp)
