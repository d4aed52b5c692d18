"""Engine options: *how* an engine computes — the decoder's key/value cache, ``torch.compile``,
the attention kernel, speculative decoding with an assistant, CTranslate2's threads and workers,
the batch size — as opposed to *what* it computes (model, compute type, preprocessing, recipe).

Each option claims to leave transcripts unchanged (``output_preserving``). A claim is not a fact:
a run with such an option is part of its own run id (so it is stored next to the run without it)
and ``asr-eval score`` also scores that baseline and compares the two through the engine-parity
machinery (``scoring.parity``): "identical on N/N", or the utterances that differ.

Options are data in a registry per engine (``EngineEntry.options`` in ``engines.base``); the
engines read the resolved values (``resolve``). Only non-default values are stored and hashed
(``canonical``), so a run without options keeps the id it always had.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asr_eval.errors import AsrEvalError

if TYPE_CHECKING:
    from asr_eval.engines.recipes import Recipe


def _bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _int_at_least(lo: int) -> Callable[[str], int]:
    def parse(s: str) -> int:
        v = int(s)
        if v < lo:
            raise ValueError(f"expected an integer ≥ {lo}")
        return v

    return parse


def _text(s: str) -> str:
    if not s.strip():
        raise ValueError("expected a non-empty value")
    return s.strip()


def _model_name(s: str) -> str:
    """A model name in its canonical form (a local folder as an absolute path), as the scorer names models."""
    from asr_eval.models.loading import resolve

    return resolve(_text(s)).name


@dataclass(frozen=True)
class EngineOption:
    name: str
    summary: str
    default: Any  # None: decided by the engine (e.g. the batch size it suggests)
    parse: Callable[[str], Any] = _text
    choices: tuple[str, ...] = ()
    output_preserving: bool = True  # claimed: verified against the run without it
    greedy_only: bool = False  # refused with a beam or sampling recipe
    hint: str = ""  # what a value looks like, when there are no choices

    @property
    def values(self) -> str:
        return ", ".join(self.choices) if self.choices else "true, false" if self.parse is _bool else self.hint

    def value(self, raw: Any) -> Any:
        """``raw`` (a string from the command line, or an already typed value) → the typed value."""
        if raw is None or not isinstance(raw, str):
            if self.parse is _bool and not isinstance(raw, bool):
                raise AsrEvalError(f"engine option {self.name}={raw!r}: expected true or false")
            return raw
        if self.choices and raw.strip() not in self.choices:
            raise AsrEvalError(f"engine option {self.name}={raw!r}: choose one of {', '.join(self.choices)}")
        try:
            return self.parse(raw)
        except ValueError as e:
            raise AsrEvalError(f"engine option {self.name}={raw!r}: {e}") from None


@dataclass(frozen=True)
class OptionSet:
    """An engine's options and the rules that tie them together (``check(options, recipe)``)."""

    options: dict[str, EngineOption] = field(default_factory=dict)
    check: Callable[[dict[str, Any], Recipe | None], None] | None = None


# Every engine has a batch size; as an option it becomes part of the run id (so batch 1 and batch 8
# are two runs whose transcripts are compared). ``--batch-size`` stays a knob outside the run id.
BATCH_SIZE = EngineOption("batch_size", "utterances per decode call, as a compared axis (default: the engine's "
                          "own choice, or --batch-size, which is not part of the run id)", None, _int_at_least(1),
                          hint="integer ≥ 1")


def _check_transformers(opts: dict[str, Any], recipe: Recipe | None) -> None:
    if opts["compile"] and opts["cache"] != "static":
        raise AsrEvalError("engine option compile=true compiles the decoder step over a static cache: add "
                           "cache=static (transformers recompiles a dynamic cache at every length)")
    if opts["assistant"]:
        if opts["cache"] != "dynamic":
            raise AsrEvalError(f"engine option assistant=… decodes with transformers' assisted generation, which "
                               f"needs the dynamic cache; drop cache={opts['cache']}")
        if opts.get("batch_size") not in (None, 1):
            raise AsrEvalError("engine option assistant=… decodes one utterance at a time (transformers' assisted "
                               f"generation takes batch size 1); drop batch_size={opts['batch_size']}")


TRANSFORMERS = OptionSet({
    "cache": EngineOption("cache", "decoder key/value cache: dynamic (grows per token; transformers' default), "
                          "static (preallocated, what compile needs), none (recompute the whole prefix every token)",
                          "dynamic", choices=("dynamic", "static", "none")),
    "compile": EngineOption("compile", "torch.compile the decoder step (with cache=static; compiled on first use, "
                            "again for each new batch shape)", False, _bool),
    "attn": EngineOption("attn", "attention kernel: sdpa (torch's scaled_dot_product_attention) or eager "
                         "(transformers' matmul + softmax)", "sdpa", choices=("sdpa", "eager")),
    "assistant": EngineOption("assistant", "speculative decoding: a small model with the same tokenizer drafts "
                              "tokens, the scored model verifies them (greedy recipes only; batch size 1)",
                              None, _model_name, greedy_only=True, hint="a model name (folder, hub id, …)"),
}, _check_transformers)

CTRANSLATE2 = OptionSet({
    "intra_threads": EngineOption("intra_threads", "OpenMP threads per worker (default: --threads, else the "
                                  "cores divided among the workers)", None, _int_at_least(1), hint="integer ≥ 1"),
    "inter_threads": EngineOption("inter_threads", "parallel workers: a batch is split into this many parts "
                                  "decoded at the same time", 1, _int_at_least(1), hint="integer ≥ 1"),
})


def all_options(option_set: OptionSet) -> dict[str, EngineOption]:
    return {"batch_size": BATCH_SIZE, **option_set.options}


def _set(engine: str) -> OptionSet:
    from asr_eval.engines.base import engine_entry

    return engine_entry(engine).options


def canonical(engine: str, opts: Mapping[str, Any] | None, recipe: Recipe | None = None) -> dict[str, Any]:
    """Typed, checked, defaults dropped, keys sorted: the stored and hashed form."""
    oset = _set(engine)
    known = all_options(oset)
    typed: dict[str, Any] = {}
    for k, raw in (opts or {}).items():
        if k not in known:
            raise AsrEvalError(f"engine {engine} has no option {k!r}; its options: {', '.join(sorted(known))} "
                               "(`asr-eval engines` lists them)")
        typed[k] = known[k].value(raw)
    full = {k: o.default for k, o in known.items()} | typed
    if oset.check:
        oset.check(full, recipe)
    if recipe is not None:
        greedy = recipe.beam_size == 1 and tuple(recipe.temperatures) == (0.0,)
        for k, o in known.items():
            if o.greedy_only and full[k] not in (None, o.default) and not greedy:
                raise AsrEvalError(f"engine option {k} works with greedy decoding only (it is lossless under greedy "
                                   f"search); recipe {recipe.name!r} has beam {recipe.beam_size}, temperatures "
                                   f"{list(recipe.temperatures)} — use --recipe greedy or drop {k}")
    return {k: full[k] for k in sorted(full) if full[k] != known[k].default}


def resolve(engine: str, opts: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every option of ``engine`` with its value (defaults filled in) — what an engine reads."""
    known = all_options(_set(engine))
    return {k: o.default for k, o in known.items()} | canonical(engine, opts)


def expand(engine: str, items: Iterable[str]) -> list[dict[str, Any]]:
    """``["cache=dynamic,static", "compile=true"]`` → one option dict per combination (each
    comma-separated value list is an axis, like --engine or --recipe). Values stay strings here;
    ``canonical`` types and checks them per engine."""
    axes: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise AsrEvalError(f"engine option {item!r}: write KEY=VALUE (e.g. cache=static; `asr-eval engines` lists "
                               "each engine's options)")
        if key in axes:
            raise AsrEvalError(f"engine option {key} given twice; give one KEY=V1,V2 to compare values")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise AsrEvalError(f"engine option {item!r}: no value")
        axes[key] = vals
    if not axes:
        return [{}]
    known = all_options(_set(engine))
    for k in axes:
        if k not in known:
            raise AsrEvalError(f"engine {engine} has no option {k!r}; its options: {', '.join(sorted(known))}")
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def for_engine(engines: Sequence[str], items: Sequence[str]) -> dict[str, list[str]]:
    """``KEY=VALUES`` items per engine: each engine gets the ones it has (``--engine
    transformers,ctranslate2 -O cache=static`` runs ctranslate2 without it); an option that no
    chosen engine has is an error."""
    pairs = [(item.partition("=")[0].strip(), item) for item in items]
    # a malformed item goes to every engine, so ``expand`` names what is wrong with it
    out = {e: [it for k, it in pairs if k in all_options(_set(e)) or "=" not in it or not k] for e in engines}
    unused = list(dict.fromkeys(k for k, it in pairs if not any(it in v for v in out.values())))
    if unused:
        known = sorted({o for e in engines for o in all_options(_set(e))})
        raise AsrEvalError(f"engine option(s) {', '.join(unused)}: no chosen engine ({', '.join(engines)}) has them; "
                           f"their options: {', '.join(known)} (`asr-eval engines` lists them)")
    return out


def baseline(engine: str, opts: Mapping[str, Any]) -> dict[str, Any]:
    """``opts`` without its output-preserving options: the run they are verified against."""
    known = all_options(_set(engine))
    return {k: v for k, v in opts.items() if not known[k].output_preserving}


def describe(opts: Mapping[str, Any] | None) -> str:
    """``cache=static compile=true`` (``defaults`` when empty)."""
    if not opts:
        return "defaults"
    return " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in sorted(opts.items()))
