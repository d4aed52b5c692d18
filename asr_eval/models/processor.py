"""The non-weight parts of a Whisper checkpoint, built from a ``tokenizer.json``: tokenizer,
feature extractor, processor and a generation config that ``generate(language=…, task=…)``
accepts in transformers 5 (``lang_to_id``, ``task_to_id``, ``no_timestamps_token_id``)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asr_eval.errors import AsrEvalError

MIN_VOCAB = 50000  # every Whisper tokenizer has ≥ 51864 entries; fewer means it loaded empty
SAMPLING_RATE = 16000


def check_tokenizer(tokenizer: Any, where: str) -> None:
    """transformers 5 returns a 1-token tokenizer, without error, when its files are missing."""
    if len(tokenizer) <= MIN_VOCAB:
        raise AsrEvalError(f"{where}: the tokenizer has {len(tokenizer)} tokens (a Whisper tokenizer has > {MIN_VOCAB}); "
                           "its files (tokenizer.json or vocab.json + merges.txt) are missing or incomplete — "
                           "re-download the model or copy the tokenizer files from its base model")


def make_tokenizer(tokenizer_json: str | Path, model_max_length: int = 448):
    """WhisperTokenizer from a full HF ``tokenizer.json``. The special tokens up to
    ``<|notimestamps|>`` are registered as such, so ``skip_special_tokens`` drops language/task
    tokens and timestamp tokens start right after the last special id (as on the Hub)."""
    from transformers import WhisperTokenizer

    added = json.loads(Path(tokenizer_json).read_text(encoding="utf-8")).get("added_tokens", [])
    specials = [t["content"] for t in sorted(added, key=lambda t: t["id"]) if t.get("special")]
    tok = WhisperTokenizer(tokenizer_file=str(tokenizer_json), pad_token="<|endoftext|>", extra_special_tokens=specials,
                           model_max_length=model_max_length, predict_timestamps=False)
    check_tokenizer(tok, str(tokenizer_json))
    return tok


def make_feature_extractor(num_mel_bins: int):
    """Log-mel front end for a model with ``num_mel_bins`` (80 up to large-v2, 128 for large-v3)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=SAMPLING_RATE)


def make_processor(tokenizer_json: str | Path, num_mel_bins: int, model_max_length: int = 448):
    from transformers import WhisperProcessor

    return WhisperProcessor(make_feature_extractor(num_mel_bins), make_tokenizer(tokenizer_json, model_max_length))


def special_ids(tokenizer: Any) -> dict[str, int]:
    """Token ids the model and generation configs refer to, looked up by their text."""
    ids = {
        "bos_token_id": "<|endoftext|>", "eos_token_id": "<|endoftext|>", "pad_token_id": "<|endoftext|>",
        "decoder_start_token_id": "<|startoftranscript|>", "no_timestamps_token_id": "<|notimestamps|>",
        "prev_sot_token_id": "<|startofprev|>", "transcribe": "<|transcribe|>", "translate": "<|translate|>",
    }
    out = {k: tokenizer.convert_tokens_to_ids(t) for k, t in ids.items()}
    # an unknown token maps to unk (= <|endoftext|> in Whisper), so only that one may share its id
    missing = [ids[k] for k, v in out.items() if v is None or (v == tokenizer.unk_token_id and ids[k] != "<|endoftext|>")]
    if missing:
        raise AsrEvalError(f"tokenizer lacks Whisper special tokens {missing}; it is not a Whisper tokenizer")
    return out


def lang_to_id(tokenizer: Any, lang_ids: Sequence[int] | None = None) -> dict[str, int]:
    """``{"<|zh|>": 50260, …}``: from explicit ids (a CT2 config) or every ``<|code|>`` token
    whose code is a Whisper language."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    if lang_ids is not None:
        return {tokenizer.convert_ids_to_tokens(i): int(i) for i in lang_ids}
    found = {f"<|{c}|>": tokenizer.convert_tokens_to_ids(f"<|{c}|>") for c in LANGUAGES}
    return {t: i for t, i in found.items() if i is not None and i != tokenizer.unk_token_id}


def make_generation_config(tokenizer: Any, config: Any, *, lang_ids: Sequence[int] | None = None,
                           alignment_heads: Sequence[Sequence[int]] | None = None,
                           suppress_tokens: Sequence[int] | None = None,
                           begin_suppress_tokens: Sequence[int] | None = None):
    """A complete Whisper generation config, shaped like the Hub's openai/whisper-* ones."""
    from transformers import GenerationConfig

    ids = special_ids(tokenizer)
    langs = lang_to_id(tokenizer, lang_ids)
    if alignment_heads is None:  # ctranslate2's default: every head of the second half of the decoder
        n, h = config.decoder_layers, config.decoder_attention_heads
        alignment_heads = list(itertools.product(range(n // 2, n), range(h)))
    return GenerationConfig(
        bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"],
        decoder_start_token_id=ids["decoder_start_token_id"], no_timestamps_token_id=ids["no_timestamps_token_id"],
        prev_sot_token_id=ids["prev_sot_token_id"],
        task_to_id={"transcribe": ids["transcribe"], "translate": ids["translate"]},
        lang_to_id=langs, is_multilingual=len(langs) > 1,
        alignment_heads=[list(map(int, a)) for a in alignment_heads],
        suppress_tokens=list(suppress_tokens or []), begin_suppress_tokens=list(begin_suppress_tokens or []),
        max_initial_timestamp_index=50, return_timestamps=False, max_length=config.max_target_positions,
    )
