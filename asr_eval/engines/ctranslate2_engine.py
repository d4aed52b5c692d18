"""Engine ``ctranslate2``: ``ctranslate2.models.Whisper.generate`` — the C++ engine under
faster-whisper — called directly with features from our preprocessing (no faster-whisper
transcribe loop). The model is converted once per (weights hash, quantization) and cached
(``models/convert.py``); an existing CT2 folder is used as it is (``ct2:PATH``)."""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np

from asr_eval.engines.base import Candidate, DecodeRequest, EngineBase, no_speech_id, register_engine
from asr_eval.engines.transformers_engine import gpu_batch_size, peak_process_memory
from asr_eval.errors import AsrEvalError

# Measured on the 2-core CPU (whisper-base, 60 demo utterances): int8 RTFx 5.53 at batch 1 and
# 4.70 at batch 8 — batching costs on CPU, so one utterance at a time.
CPU_BATCH_SIZE = 1


@register_engine("ctranslate2")
class CTranslate2Engine(EngineBase):
    """ctranslate2.models.Whisper.generate (CTranslate2; the engine under faster-whisper)."""

    name = "ctranslate2"

    def __init__(self, files, device: str = "cpu", compute_type: str = "float32", threads: int = 0,
                 options: dict[str, Any] | None = None):
        import ctranslate2

        from asr_eval.engines.options import resolve
        from asr_eval.models.convert import ct2_folder

        self.files, self.device, self.compute_type = files, device, compute_type
        self.options = resolve(self.name, options)
        self.version = ctranslate2.__version__
        self.folder = ct2_folder(files, compute_type)
        kind, _, index = device.partition(":")
        self.workers = self.options["inter_threads"]
        # threads per worker: the option, else --threads, else the cores shared among the workers
        cores = len(os.sched_getaffinity(0)) if kind == "cpu" else 0
        self.threads = self.options["intra_threads"] or threads or (max(1, cores // self.workers) if cores else 0)
        self.model = ctranslate2.models.Whisper(str(self.folder), device=kind, device_index=int(index or 0),
                                                compute_type=compute_type, intra_threads=self.threads,
                                                inter_threads=self.workers)
        tok = files.processor.tokenizer
        self._ids = {t: tok.convert_tokens_to_ids(t) for t in
                     ("<|startoftranscript|>", "<|transcribe|>", "<|translate|>", "<|notimestamps|>",
                      "<|startofprev|>", "<|endoftext|>")}
        # CTranslate2 falls back to <|endoftext|>'s probability when the vocabulary has no no-speech token
        self._has_no_speech = no_speech_id(tok) is not None

    def identity(self) -> dict[str, Any]:
        return {"engine": self.name, "ctranslate2": self.version, "device": self.device,
                "compute_type": self.compute_type, "intra_threads": self.threads, "inter_threads": self.workers,
                "ct2_folder": str(self.folder)}

    def suggest_batch_size(self, recipe) -> int:
        if not self.device.startswith("cuda"):
            return CPU_BATCH_SIZE * self.workers  # one utterance per worker
        dtype_bytes = 1 if self.compute_type.startswith("int8") else 4 if self.compute_type == "float32" else 2
        return gpu_batch_size(self.files.config, self.device, max(2, dtype_bytes), recipe.beam_size,
                              recipe.max_new_tokens)

    def peak_memory_bytes(self) -> int | None:
        return None if self.device.startswith("cuda") else peak_process_memory("cpu")

    def max_new_tokens_cap(self, recipe) -> int:
        # CTranslate2 generates at most max_length // 2 tokens (see ``decode``)
        return min(super().max_new_tokens_cap(recipe), self.files.config.max_target_positions // 2)

    def _prompt(self, request: DecodeRequest) -> list[int]:
        tok = self.files.processor.tokenizer
        lang = tok.convert_tokens_to_ids(f"<|{request.language}|>")
        p = [self._ids["<|startoftranscript|>"], lang, self._ids[f"<|{request.task}|>"], self._ids["<|notimestamps|>"]]
        if request.prompt_ids:
            p = [self._ids["<|startofprev|>"], *request.prompt_ids, *p]
        return p

    def decode(self, features, request: DecodeRequest) -> list[list[Candidate]]:
        import ctranslate2

        if hasattr(features, "detach"):
            features = features.detach()
            features = features.float().cpu().numpy() if not self.device.startswith("cuda") else features.float()
        prompt = self._prompt(request)
        m = request.max_new_tokens
        # CTranslate2's Whisper generates at most min(max_length // 2, max_length - len(prompt) + 1) tokens
        # (openai-whisper's sample_len = n_text_ctx // 2), so this max_length allows exactly m.
        max_length = max(2 * m, m + len(prompt) - 1)
        limit = self.files.config.max_target_positions
        if max_length > limit:
            raise AsrEvalError(f"engine ctranslate2 generates at most {limit // 2} tokens after a {len(prompt)}-token "
                               f"prompt on this model; lower --max-new-tokens (asked {m})")
        sampling = request.temperature > 0
        if sampling:
            ctranslate2.set_random_seed(request.seed)
        kw = dict(beam_size=request.beam_size, patience=request.patience,
                  num_hypotheses=request.num_candidates, repetition_penalty=request.repetition_penalty,
                  no_repeat_ngram_size=request.no_repeat_ngram_size, max_length=max_length,
                  return_scores=True, return_no_speech_prob=self._has_no_speech,
                  sampling_topk=0 if sampling else 1,
                  sampling_temperature=request.temperature if sampling else 1.0)
        n = len(features)
        if self.workers > 1 and n > 1 and not sampling:  # (sampling stays one call: one seeded random stream)
            # inter_threads: the batch is split into one part per worker, submitted at once, decoded in parallel
            bounds = np.linspace(0, n, min(self.workers, n) + 1).astype(int)
            pending = [self.model.generate(_view(features[a:b]), [prompt] * (b - a), asynchronous=True, **kw)
                       for a, b in itertools.pairwise(bounds)]
            results = [r.result() for part in pending for r in part]
        else:
            results = self.model.generate(_view(features), [prompt] * n, **kw)
        eot = self._ids["<|endoftext|>"]
        out: list[list[Candidate]] = []
        for res in results:
            cands = []
            # softmax at <|startoftranscript|> of the no-speech token (CTranslate2 finds it by name:
            # <|nospeech|>, else <|nocaptions|>) — one value per input, shared by its candidates
            nsp = float(res.no_speech_prob) if self._has_no_speech else None
            for ids, score in zip(res.sequences_ids, res.scores):
                ids = list(ids)[:m]
                tokens = [t for t in ids if t < eot]
                # CT2 scores are the cumulative log-prob (EOT included) divided by length ** length_penalty (1)
                avg = float(score) * len(ids) / (len(ids) + 1) if ids else float(score)
                cands.append(Candidate(tokens, avg, len(ids) >= m, nsp))
            out.append(cands)
        return out


def _view(features: Any) -> Any:
    """A StorageView of a batch of features (numpy on CPU, a torch tensor on a GPU)."""
    import ctranslate2

    return ctranslate2.StorageView.from_array(np.ascontiguousarray(features) if isinstance(features, np.ndarray)
                                              else features.contiguous())
