"""Decode recipes: named, stored with every run (part of its id), comparable.

A recipe is data; the loop that applies it (temperature fallback included) is ``driver.transcribe``,
the same for every engine. Options (``max_new_tokens``, ``no_repeat_ngram_size``,
``repetition_penalty``, …) override a recipe's defaults and are stored with it.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from asr_eval.errors import AsrEvalError

FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str = ""
    beam_size: int = 1
    patience: float = 1.0
    temperatures: tuple[float, ...] = (0.0,)  # first is the main pass; the rest are fallbacks
    best_of: int = 5  # candidates sampled at a fallback temperature > 0 (highest avg log-prob kept)
    compression_ratio_threshold: float | None = None  # re-decode when gzip ratio of the text is above
    logprob_threshold: float | None = None  # re-decode when the average log-prob is below
    initial_prompt: str | None = None  # previous-text prompt (<|startofprev|> …)
    max_new_tokens: int = 128
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    language: str = "zh"
    task: str = "transcribe"
    seed: int = 0  # sampling seed, so fallback runs are reproducible
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = []
        if self.beam_size < 1:
            bad.append(f"beam_size {self.beam_size} (≥ 1)")
        if self.max_new_tokens < 1:
            bad.append(f"max_new_tokens {self.max_new_tokens} (≥ 1)")
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            bad.append(f"temperatures {self.temperatures} (non-empty, ≥ 0)")
        if self.best_of < 1:
            bad.append(f"best_of {self.best_of} (≥ 1)")
        if self.repetition_penalty <= 0:
            bad.append(f"repetition_penalty {self.repetition_penalty} (> 0)")
        if self.no_repeat_ngram_size < 0:
            bad.append(f"no_repeat_ngram_size {self.no_repeat_ngram_size} (≥ 0)")
        if bad:
            raise AsrEvalError(f"recipe {self.name!r}: invalid " + ", ".join(bad))

    @property
    def has_fallback(self) -> bool:
        return len(self.temperatures) > 1 and (self.compression_ratio_threshold is not None
                                               or self.logprob_threshold is not None)

    def to_dict(self) -> dict[str, Any]:
        """The stored form (part of the run id): every field but the summary."""
        d = asdict(self)
        d.pop("summary")
        d["temperatures"] = list(self.temperatures)
        return d

    def with_options(self, **overrides: Any) -> Recipe:
        """The recipe with options overridden (None values are ignored)."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise AsrEvalError(f"unknown recipe options {sorted(unknown)}; known: {sorted(known - {'name', 'summary'})}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("greedy", "greedy search, one pass (transformers' default; today's scorer)"),
    Recipe("beam5", "beam search, 5 beams, one pass (openai-whisper CLI / faster-whisper beam at temperature 0)",
           beam_size=5),
    Recipe("fallback", "greedy, then OpenAI's temperature fallback: re-decode at 0.2, 0.4 … 1.0 (best of 5 "
           "samples) while the text's gzip compression ratio > 2.4 or its average log-prob < −1.0",
           temperatures=FALLBACK_TEMPERATURES, compression_ratio_threshold=2.4, logprob_threshold=-1.0),
    Recipe("beam5-fallback", "faster-whisper's defaults: beam 5 at temperature 0, then the same fallback",
           beam_size=5, temperatures=FALLBACK_TEMPERATURES, compression_ratio_threshold=2.4, logprob_threshold=-1.0),
    Recipe("prompt-simplified", "greedy with the initial prompt 以下是普通话的句子。 (steers Whisper towards "
           "Simplified script and punctuation)", initial_prompt="以下是普通话的句子。"),
)}


def register_recipe(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str, **overrides: Any) -> Recipe:
    if name not in RECIPES:
        raise AsrEvalError(f"unknown decode recipe {name!r}; available: {', '.join(RECIPES)}")
    return RECIPES[name].with_options(**overrides)


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    """Inverse of ``Recipe.to_dict`` (workers receive recipes as JSON)."""
    d = dict(d)
    base = RECIPES.get(d.get("name", ""))
    d["temperatures"] = tuple(d.get("temperatures", (0.0,)))
    return Recipe(summary=base.summary if base else "", **d)


def compression_ratio(text: str) -> float:
    """gzip compression ratio of the UTF-8 text, as OpenAI's decoder computes it (loops compress well)."""
    b = text.encode("utf-8")
    return len(b) / len(zlib.compress(b)) if b else 0.0
