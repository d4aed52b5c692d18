"""Engine ``transformers``: ``WhisperForConditionalGeneration.generate`` (PyTorch), the engine
that fine-tuning uses and that ``pipeline()`` wraps."""

from __future__ import annotations

import logging
import resource
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np

from asr_eval.engines.base import Candidate, DecodeRequest, EngineBase, no_speech_id, register_engine
from asr_eval.errors import AsrEvalError

# On CPU throughput is flat in batch size (whisper-base, measured: batch 1, 4, 8 within noise,
# 16 slower): the fixed 30 s encoder pass is ~2/3 of each utterance's compute and batching does
# not shrink it. A small batch keeps memory low and still amortises the decoder's per-step cost.
CPU_BATCH_SIZE = 4
MAX_AUTO_BATCH = 256

# transformers 5 warns on every Whisper batch about things that do not apply here: its own
# generate passes suppress tokens next to a generation config; a max_length default it fills in
# itself; and a missing attention mask, which Whisper does not need (every input is padded to
# 30 s and every decoder prompt is the same length); and, once per model, that ``output_scores``
# "may be ignored" — Whisper's generate checks its config before it sets return_dict_in_generate,
# and the scores do come back (avg_logprob is computed from them, tested). Only these exact
# messages are dropped.
_BENIGN = ("Passing `generation_config` together with generation-related arguments",
           "Both `max_new_tokens`", "The attention mask is not set",
           "The following generation flags are not valid and may be ignored: ['output_scores']")


class _DropBenign(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_BENIGN)


for _name in ("transformers.generation.utils", "transformers.generation.configuration_utils"):
    logging.getLogger(_name).addFilter(_DropBenign())


def per_sample_bytes(config: Any, dtype_bytes: int, num_beams: int = 1, max_new_tokens: int = 128) -> int:
    """Upper estimate of the GPU memory one utterance needs during ``generate``: cross- and
    self-attention KV caches, the encoder's live activations, and fp32 logits/scores."""
    s, d, layers = config.max_source_positions, config.d_model, config.decoder_layers
    t = max_new_tokens + 4
    kv = 2 * layers * (s + t) * d
    encoder = s * (4 * d + 2 * config.encoder_ffn_dim) + 2 * s * d + 2 * s * 2 * config.num_mel_bins
    logits_fp32 = 3 * config.vocab_size * 2  # logits, processed scores, softmax — fp32, counted in dtype units
    scores = t * config.vocab_size * 2  # the per-step scores kept for log-probs
    return int(1.5 * dtype_bytes * (num_beams * (kv + logits_fp32 + scores) + encoder))


def gpu_batch_size(config: Any, device: str, dtype_bytes: int, num_beams: int, max_new_tokens: int) -> int:
    """As many utterances as 80 % of the free GPU memory holds (weights already loaded), ≤ 256."""
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    per = per_sample_bytes(config, dtype_bytes, num_beams, max_new_tokens)
    return max(1, min(MAX_AUTO_BATCH, int(0.8 * free) // per))


def peak_process_memory(device: str) -> int | None:
    """Peak CUDA memory allocated by this process on a GPU, else the process's peak RSS."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_initialized() else None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@register_engine("transformers")
class TransformersEngine(EngineBase):
    """transformers WhisperForConditionalGeneration.generate (PyTorch)."""

    name = "transformers"

    def __init__(self, files, device: str = "cpu", compute_type: str = "float32", threads: int = 0,
                 loaded: Any = None, options: dict[str, Any] | None = None):
        import torch
        import transformers

        from asr_eval.engines.options import resolve
        from asr_eval.models.loading import load

        if threads:
            torch.set_num_threads(threads)
        self.options = resolve(self.name, options)
        if self.options["compile"] and not device.startswith("cuda") and not (shutil.which("g++") or shutil.which("c++")):
            raise AsrEvalError("engine option compile=true on CPU builds C++ kernels (torch inductor) and no C++ compiler "
                               "was found; install one (`apt-get install g++`) or drop compile=true")
        self.lm = loaded or load(files.spec.name, device=device, dtype=compute_type, files=files,
                                 attn=self.options["attn"])
        self.files = files
        self.device, self.compute_type = self.lm.device, self.lm.dtype
        self.version = transformers.__version__
        self.threads = torch.get_num_threads()
        self.assistant = (load_assistant(self.options["assistant"], self.lm, files)
                          if self.options["assistant"] else None)
        self.no_speech_id = no_speech_id(files.processor.tokenizer)

    @classmethod
    def from_loaded(cls, lm: Any) -> TransformersEngine:
        """Wrap an already loaded model (``asr_eval.models.load``)."""
        from asr_eval.models.loading import ModelFiles

        files = ModelFiles(lm.spec, lm.spec.path, None, lm.model.config, lm.processor)
        files.__dict__["revision"] = lm.revision
        return cls(files, lm.device, lm.dtype, loaded=lm)

    def identity(self) -> dict[str, Any]:
        import torch

        ident: dict[str, Any] = {"engine": self.name, "transformers": self.version, "torch": torch.__version__,
                                 "device": self.device, "compute_type": self.compute_type, "threads": self.threads,
                                 "attn_implementation": getattr(self.lm.model.config, "_attn_implementation", None),
                                 "cache": self.options["cache"], "compile": self.options["compile"]}
        if self.assistant is not None:
            ident["assistant"] = {"name": self.options["assistant"], "model_id": self.assistant.model_id,
                                  "class": type(self.assistant.model).__name__}
        if self.device.startswith("cuda"):
            ident["gpu"] = torch.cuda.get_device_name(torch.device(self.device))
        return ident

    def suggest_batch_size(self, recipe) -> int:
        import torch

        if self.assistant is not None:
            return 1  # transformers' assisted generation takes one sequence at a time
        if not self.device.startswith("cuda"):
            return CPU_BATCH_SIZE
        return gpu_batch_size(self.lm.model.config, self.device, getattr(torch, self.compute_type).itemsize,
                              recipe.beam_size, recipe.max_new_tokens)

    def peak_memory_bytes(self) -> int | None:
        return peak_process_memory(self.device)

    def _speed_kwargs(self, request: DecodeRequest) -> dict[str, Any]:
        """``generate`` arguments of the engine options (cache, compile, assistant)."""
        opts, kw = self.options, {}
        if opts["cache"] == "none":
            kw["use_cache"] = False
        elif opts["cache"] == "static":
            kw["cache_implementation"] = "static"
            if opts["compile"]:
                kw["compile_config"] = compile_config(self.device)
            else:
                kw["disable_compile"] = True  # transformers compiles a static cache on GPUs by itself
        if self.assistant is not None:
            if request.temperature > 0 or request.beam_size > 1:
                raise AsrEvalError(f"engine option assistant={opts['assistant']} works with greedy decoding only; "
                                   f"this pass asks for beam {request.beam_size} at temperature {request.temperature} "
                                   "(a fallback recipe samples) — use --recipe greedy")
            kw["assistant_model"] = self.assistant.model
        return kw

    def decode(self, features, request: DecodeRequest) -> list[list[Candidate]]:
        import torch

        if self.assistant is not None and len(features) > 1:  # assisted generation: one sequence at a time
            return [c for i in range(len(features)) for c in self.decode(features[i:i + 1], request)]

        model, gc = self.lm.model, self.lm.model.generation_config
        eot, sot = gc.eos_token_id, gc.decoder_start_token_id
        feats = torch.as_tensor(features).to(self.device, getattr(torch, self.compute_type))
        kw: dict[str, Any] = {"language": request.language, "task": request.task, "num_beams": request.beam_size,
                              "max_new_tokens": request.max_new_tokens, "return_timestamps": False,
                              "output_scores": True, "return_dict_in_generate": True,
                              "num_return_sequences": request.num_candidates}
        if request.temperature > 0:
            kw.update(do_sample=True, temperature=request.temperature, top_k=0)
            torch.manual_seed(request.seed)
        else:
            kw["do_sample"] = False
        if request.no_repeat_ngram_size:
            kw["no_repeat_ngram_size"] = request.no_repeat_ngram_size
        if request.repetition_penalty != 1.0:
            kw["repetition_penalty"] = request.repetition_penalty
        if request.prompt_ids:
            prev = gc.prev_sot_token_id if getattr(gc, "prev_sot_token_id", None) is not None else \
                self.files.processor.tokenizer.convert_tokens_to_ids("<|startofprev|>")
            kw["prompt_ids"] = torch.tensor([prev, *request.prompt_ids], device=self.device)
        kw.update(self._speed_kwargs(request))
        sot_probs = (NoSpeechCapture(model, sot, len(kw["prompt_ids"]) if request.prompt_ids else 0, self.no_speech_id)
                     if self.no_speech_id is not None else None)
        try:
            with torch.inference_mode():
                out = model.generate(input_features=feats, **kw)
        finally:
            if sot_probs is not None:
                sot_probs.remove()
        nsp = sot_probs.per_input(len(feats)) if sot_probs is not None else [None] * len(feats)
        seqs = (out.sequences if hasattr(out, "sequences") else out).cpu()  # .cpu() also waits for the GPU
        logps = beam_scores = None
        if request.beam_size > 1 and getattr(out, "sequences_scores", None) is not None:
            # beam search keeps the length-normalized sum of log-probs (EOT included) of each hypothesis
            beam_scores = out.sequences_scores.float().cpu().numpy()
        elif getattr(out, "scores", None):
            logps = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).float().cpu().numpy()
        gen_len = logps.shape[1] if logps is not None else None
        rows: list[Candidate] = []
        for r, seq in enumerate(seqs.tolist()):
            # text tokens: after the last <|startoftranscript|> (a prompt comes before it), below EOT
            gen = seq[len(seq) - seq[::-1].index(sot):] if sot in seq else seq
            end = gen.index(eot) if eot in gen else len(gen)
            tokens = [t for t in gen[:end] if t < eot]
            cut = eot not in gen and len(tokens) >= request.max_new_tokens
            avg = float(beam_scores[r]) if beam_scores is not None else None
            if logps is not None and gen_len:
                g = seq[len(seq) - gen_len:]
                k = g.index(eot) if eot in g else len(g) - 1  # through the first EOT (pads repeat it)
                lp = logps[r, :k + 1]
                lp = lp[np.isfinite(lp)]
                avg = float(lp.sum() / (len(tokens) + 1))
            rows.append(Candidate(tokens, avg, cut, nsp[r // request.num_candidates]))
        n = request.num_candidates
        return [rows[i * n:(i + 1) * n] for i in range(len(rows) // n)]


class NoSpeechCapture:
    """The no-speech probability of each input, read from ``generate``'s own first forward pass.

    That pass (the prefill) runs the whole decoder prompt — ``<|startofprev|>`` + prompt tokens when
    there is a prompt, then ``<|startoftranscript|>``, language, task, ``<|notimestamps|>`` — and
    Whisper's forward computes logits at every position (it has no ``logits_to_keep``). The decoder is
    causal, so the logits at the ``<|startoftranscript|>`` position are exactly those of a forward over
    the prompt up to it: the softmax there, of the no-speech token, is openai-whisper's
    ``no_speech_prob`` (raw logits: before suppression, temperature or sampling). Nothing is computed
    twice: the hook reads one row of logits and removes itself, so the compiled decoding steps and
    the tokens are those of a plain ``generate``. Rows of the pass are the inputs repeated (beams,
    candidates) in order; the first of each input's block is kept. When the first pass is not what
    is expected (no ``<|startoftranscript|>`` at ``pos``, logits not per position), the values are
    None. Nothing is read back from the device until ``generate`` has finished."""

    def __init__(self, model: Any, sot: int, pos: int, no_speech: int):
        self.sot, self.pos, self.no_speech = sot, pos, no_speech  # pos: <|startoftranscript|>'s index
        self.probs: Any = None  # tensor [rows of the first pass]
        self.at_sot: Any = None  # tensor: every row has <|startoftranscript|> at pos
        self.seen = False
        self.handle = model.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        self.remove()  # the first pass only: later steps (maybe compiled) run without a hook
        if self.seen:
            return
        self.seen = True
        ids, logits = kwargs.get("decoder_input_ids"), getattr(output, "logits", None)
        if (ids is None or logits is None or logits.dim() != 3 or logits.shape[1] != ids.shape[1]
                or ids.shape[1] <= self.pos):
            return
        self.at_sot = (ids[:, self.pos] == self.sot).all()
        self.probs = logits[:, self.pos].float().softmax(-1)[:, self.no_speech]

    def remove(self) -> None:
        self.handle.remove()

    def per_input(self, n: int) -> list[float | None]:
        """One value per input of the batch of ``n`` (None where the pass could not give it)."""
        if self.probs is None or len(self.probs) % n or not bool(self.at_sot):
            return [None] * n
        return [float(p) for p in self.probs[::len(self.probs) // n].cpu().tolist()]


def compile_config(device: str) -> Any:
    """How the decoder step is compiled: transformers' own path for Whisper (static cache +
    ``torch.compile`` of the forward in ``generate``). CUDA graphs (``reduce-overhead``) on a GPU;
    plain inductor on CPU, where transformers only compiles when told to (``_compile_all_devices``)."""
    from transformers import CompileConfig

    cfg = CompileConfig(mode="reduce-overhead" if device.startswith("cuda") else "default")
    if not device.startswith("cuda"):
        cfg._compile_all_devices = True
    return cfg


@dataclass
class Assistant:
    model: Any
    model_id: str


def load_assistant(name: str, main: Any, files: Any) -> Assistant:
    """The draft model of speculative decoding: a Whisper (its own encoder, same mel bins) or a
    decoder-only ``WhisperForCausalLM`` that reads the scored model's encoder output (distil-whisper's
    layout). Its tokenizer must be the scored model's, token for token — else drafts mean other text."""
    import torch
    from transformers import WhisperForCausalLM, WhisperForConditionalGeneration

    from asr_eval.models.loading import open_model

    af = open_model(name)
    if af.processor.tokenizer.get_vocab() != files.processor.tokenizer.get_vocab():
        raise AsrEvalError(f"engine option assistant={name}: its tokenizer differs from {files.spec.name}'s "
                           f"({len(af.processor.tokenizer)} vs {len(files.processor.tokenizer)} tokens, or other ids); "
                           "speculative decoding needs the same vocabulary — pick an assistant of the same family")
    decoder_only = "WhisperForCausalLM" in (af.config.architectures or [])
    if not decoder_only and af.config.num_mel_bins != files.config.num_mel_bins:
        raise AsrEvalError(f"engine option assistant={name}: it reads {af.config.num_mel_bins} mel bins, "
                           f"{files.spec.name} {files.config.num_mel_bins}; its encoder cannot read the same features")
    cls = WhisperForCausalLM if decoder_only else WhisperForConditionalGeneration
    model = cls.from_pretrained(af.folder, dtype=getattr(torch, main.dtype), attn_implementation="sdpa",
                                local_files_only=True)
    model.to(main.device).eval()
    model.generation_config = main.model.generation_config  # the same forced language, task and suppression
    return Assistant(model, af.model_id)
