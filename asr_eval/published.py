"""Published CERs on the standard Mandarin test sets, and what could explain a gap to ours.

The data is ``asr_eval/data/published_zh.json`` (versioned): each result names its model (a canonical
hub id), the test set key (``aishell-1/test`` …, see ``asr_eval.corpus.registry.test_sets``), the CER in
percent as published, its source (title, url, table), the table row it was read from (``evidence``) and
the scoring protocol the source states — normalization, punctuation, Traditional→Simplified, numbers,
spaces, case, decoding — with ``"unknown"`` wherever the source says nothing, plus the closest
normalizer profile of ours (``asr_eval_profile``) to re-score our hypotheses under.

* ``load_published`` reads and validates the file (an ``AsrEvalError`` names the entry, model, test set
  and field of the first bad entry);
* ``model_key`` maps what our store calls a model (``bundled:whisper-base``, ``large-v3``, a hub id, a
  ``ct2:`` folder) to the canonical Whisper id, or None when the name does not clearly say which;
* ``published_for`` lists the published results for one test set (and model);
* ``protocol_differences`` says, in plain sentences, how a source's protocol differs from one of our
  profiles (``asr_eval/text/profiles.json``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from asr_eval.errors import AsrEvalError

DATA_FILE = "published_zh.json"
SUPPORTED_VERSIONS = (1,)

# The standard test set keys (common brief of issue 29); the registry (``asr_eval.corpus.registry``)
# is preferred once readers have registered their test sets.
KNOWN_TEST_SETS: tuple[str, ...] = (
    "aishell-1/test", "aishell-1/dev",
    "aishell-2/test_ios", "aishell-2/test_android", "aishell-2/test_mic",
    "aishell-2/dev_ios", "aishell-2/dev_android", "aishell-2/dev_mic",
    "wenetspeech/test_net", "wenetspeech/test_meeting", "wenetspeech/dev",
    "kespeech/test",
    "magicdata-ramc/test", "magicdata-ramc/dev",
    "thchs-30/test",
    "aidatatang_200zh/test",
    "common-voice/zh-CN/test", "common-voice/zh-TW/test", "common-voice/zh-HK/test",
)

UNKNOWN = "unknown"
CHOICES: dict[str, tuple[str, ...]] = {
    "punctuation": ("removed", "kept", UNKNOWN),
    "t2s": ("yes", "no", UNKNOWN),
    "numbers": ("as-written", "to-chinese", "to-digits", UNKNOWN),
    "spaces": ("ignored", "counted", UNKNOWN),
    "tags": ("removed", "kept", UNKNOWN),
}
FREE_TEXT = ("normalization", "case", "decoding")


@dataclass(frozen=True)
class Source:
    id: str
    title: str
    url: str
    year: int | None
    where: str


@dataclass(frozen=True)
class Protocol:
    """A source's scoring protocol as it states it; ``"unknown"`` where it does not."""

    normalization: str = UNKNOWN
    punctuation: str = UNKNOWN  # removed | kept | unknown
    t2s: str = UNKNOWN  # yes | no | unknown
    numbers: str = UNKNOWN  # as-written | to-chinese | to-digits | unknown
    spaces: str = UNKNOWN  # ignored | counted | unknown
    case: str = UNKNOWN  # free text: as-written, lowercased, …
    decoding: str = UNKNOWN  # free text
    tags: str = UNKNOWN  # removed | kept | unknown ([noise], (笑) …)
    asr_eval_profile: str | None = None  # the closest profile of ours, or None


@dataclass(frozen=True)
class PublishedResult:
    model: str
    test_set: str
    cer: float  # percent
    source: Source
    evidence: str
    protocol: Protocol
    notes: str = ""


# --------------------------------------------------------------------------- loading and validation

def _family(key: str) -> str:
    return key.split("/", 1)[0]  # aishell-2/test_ios -> aishell-2


def known_test_sets() -> frozenset[str]:
    """The standard test set keys: the registry's for every corpus family that registered test sets,
    ``KNOWN_TEST_SETS`` for a family no reader has registered (yet)."""
    import asr_eval.corpus  # noqa: F401  (readers register their test sets on import)
    from asr_eval.corpus.registry import test_sets

    registered = frozenset(t.key for t in test_sets())
    families = {_family(k) for k in registered}
    return registered | frozenset(k for k in KNOWN_TEST_SETS if _family(k) not in families)


def _fail(where: str, field: str, problem: str, path: Path | str) -> AsrEvalError:
    return AsrEvalError(f"{path}: {where}, field {field!r}: {problem}; fix the entry (see the file's _doc)")


def _text(obj: dict, field: str, where: str, path: Path | str) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, field, f"missing or empty (got {value!r})", path)
    return value


def _parse_sources(raw: Any, path: Path | str) -> dict[str, Source]:
    if not isinstance(raw, dict) or not raw:
        raise AsrEvalError(f"{path}: 'sources' must be a non-empty object of id -> source; fix the file")
    out = {}
    for sid, s in raw.items():
        where = f"source {sid!r}"
        if not isinstance(s, dict):
            raise _fail(where, "sources", "must be an object", path)
        year = s.get("year")
        if year is not None and (not isinstance(year, int) or isinstance(year, bool) or not 1990 <= year <= 2100):
            raise _fail(where, "year", f"must be a year or null (got {year!r})", path)
        out[sid] = Source(sid, _text(s, "title", where, path), _text(s, "url", where, path), year,
                          _text(s, "where", where, path))
    return out


def _parse_protocol(raw: Any, where: str, path: Path | str, profiles: frozenset[str]) -> Protocol:
    if not isinstance(raw, dict):
        raise _fail(where, "protocol", "must be an object", path)
    unknown = set(raw) - set(CHOICES) - set(FREE_TEXT) - {"asr_eval_profile"}
    if unknown:
        raise _fail(where, "protocol." + sorted(unknown)[0], "not a protocol field", path)
    values: dict[str, Any] = {}
    for field, allowed in CHOICES.items():
        v = raw.get(field, UNKNOWN)
        if v not in allowed:
            raise _fail(where, f"protocol.{field}", f"{v!r} is not one of {', '.join(allowed)}", path)
        values[field] = v
    for field in FREE_TEXT:
        v = raw.get(field, UNKNOWN)
        if not isinstance(v, str) or not v.strip():
            raise _fail(where, f"protocol.{field}", f"must be text or 'unknown' (got {v!r})", path)
        values[field] = v
    prof = raw.get("asr_eval_profile")
    if prof is not None and prof not in profiles:
        raise _fail(where, "protocol.asr_eval_profile",
                    f"unknown profile {prof!r}; known: {', '.join(sorted(profiles))} (or null)", path)
    return Protocol(**values, asr_eval_profile=prof)


def parse_published(data: Any, path: Path | str = DATA_FILE,
                    test_sets: frozenset[str] | None = None) -> list[PublishedResult]:
    """Validate the parsed JSON of a published-results file; ``test_sets``: the keys allowed
    (default ``known_test_sets()``)."""
    from asr_eval.text import list_profiles

    if not isinstance(data, dict):
        raise AsrEvalError(f"{path}: expected a JSON object with version, sources, results; fix the file")
    if data.get("version") not in SUPPORTED_VERSIONS:
        raise AsrEvalError(f"{path}: version {data.get('version')!r} is not supported "
                           f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade asr-eval or fix the file")
    sources = _parse_sources(data.get("sources"), path)
    keys = known_test_sets() if test_sets is None else test_sets
    profiles = frozenset(list_profiles())
    rows = data.get("results")
    if not isinstance(rows, list):
        raise AsrEvalError(f"{path}: 'results' must be a list; fix the file")
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise AsrEvalError(f"{path}: entry {i}: must be an object; fix the entry")
        where = f"entry {i} (model {r.get('model')!r}, test set {r.get('test_set')!r})"
        model = _text(r, "model", where, path)
        test_set = _text(r, "test_set", where, path)
        if test_set not in keys:
            raise _fail(where, "test_set", f"unknown test set key; known: {', '.join(sorted(keys))}", path)
        cer = r.get("cer")
        if not isinstance(cer, int | float) or isinstance(cer, bool) or not 0 <= cer <= 100:
            raise _fail(where, "cer", f"must be a percentage in [0, 100] (got {cer!r})", path)
        sid = r.get("source")
        if sid not in sources:
            raise _fail(where, "source", f"unknown source id {sid!r}; known: {', '.join(sorted(sources))}", path)
        evidence = _text(r, "evidence", where, path)
        notes = r.get("notes", "")
        if not isinstance(notes, str):
            raise _fail(where, "notes", "must be text", path)
        out.append(PublishedResult(model, test_set, float(cer), sources[sid], evidence,
                                   _parse_protocol(r.get("protocol"), where, path, profiles), notes))
    return out


def load_published(path: Path | None = None) -> list[PublishedResult]:
    """The published results of ``path`` (default: the packaged ``asr_eval/data/published_zh.json``),
    validated."""
    if path is None:
        return list(_packaged())
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AsrEvalError(f"published results file {path} does not exist; give an existing file") from None
    except json.JSONDecodeError as e:
        raise AsrEvalError(f"{path}: not valid JSON ({e}); fix the file") from None
    return parse_published(data, path)


@cache
def _packaged() -> tuple[PublishedResult, ...]:
    ref = resources.files("asr_eval") / "data" / DATA_FILE
    return tuple(parse_published(json.loads(ref.read_text(encoding="utf-8")), f"asr_eval/data/{DATA_FILE}"))


def published_for(test_set: str, model: str | None = None) -> list[PublishedResult]:
    """The packaged published results on ``test_set`` (of ``model``: a canonical id or anything
    ``model_key`` understands), in file order."""
    want = None if model is None else (model_key(model) or model)
    return [r for r in _packaged() if r.test_set == test_set and (want is None or r.model == want)]


# --------------------------------------------------------------------------- model names

WHISPER_SIZES = ("tiny", "base", "small", "medium", "large", "large-v1", "large-v2", "large-v3",
                 "large-v3-turbo", "turbo")
_SIZE = "|".join(sorted((re.escape(s) for s in WHISPER_SIZES), key=len, reverse=True))
# A hub id or bare name: whisper-SIZE, openai/whisper-SIZE, SIZE, Systran/faster-whisper-SIZE (a CTranslate2
# conversion of the same weights), whisper-SIZE-ct2; a local folder: its last part, but not a bare SIZE.
_HUB = re.compile(rf"^(?:(?:openai/)?whisper-({_SIZE})(?:-ct2)?|(?:systran/)?faster-whisper-({_SIZE})|({_SIZE}))$")
_FOLDER = re.compile(rf"^(?:whisper-({_SIZE})(?:-ct2)?|faster-whisper-({_SIZE}))$")
_HF_CACHE = re.compile(rf"(?:^|/)models--(?:openai--whisper|systran--faster-whisper)-({_SIZE})(?:/|$)")
_BUNDLED = {"whisper-base": "base"}  # asr_eval.models.bundled: CTranslate2 weights of openai/whisper-base


def _canonical(size: str) -> str:
    size = {"turbo": "large-v3-turbo", "large-v1": "large"}.get(size, size)
    return f"openai/whisper-{size}"


def _size(m: re.Match[str] | None) -> str | None:
    return next((g for g in m.groups() if g), None) if m else None


def model_key(name: str) -> str | None:
    """The canonical Whisper id (``openai/whisper-large-v3``) of a model name as the store has it, or
    None when the name does not clearly say which original Whisper checkpoint it is.

    ``openai/whisper-base``, ``whisper-base``, ``base`` and ``bundled:whisper-base`` (our CTranslate2
    conversion of openai/whisper-base) → ``openai/whisper-base``; ``turbo`` → ``…-large-v3-turbo``;
    ``ct2:``/local folders only when their last part is exactly such a name (``whisper-small-ct2``,
    ``faster-whisper-small``) or they sit in a Hugging Face cache folder of openai/Systran; fine-tunes,
    other owners' hub ids and display names of fine-tuned exports → None."""
    s = (name or "").strip()
    if s.startswith("bundled:"):
        size = _BUNDLED.get(s.removeprefix("bundled:"))
        return _canonical(size) if size else None
    s = s.removeprefix("ct2:").replace("\\", "/").replace("_", "-").lower().rstrip("/")
    size = _size(_HF_CACHE.search(s))
    if size is None:
        local = s.startswith(("/", ".", "~")) or s.count("/") > 1
        size = _size(_FOLDER.match(s.rsplit("/", 1)[-1])) if local else _size(_HUB.match(s))
    return _canonical(size) if size else None


# --------------------------------------------------------------------------- protocol comparison

_NUMBERS = {"keep": "as-written", "to_chinese": "to-chinese", "to_digits": "to-digits"}
_NUMBER_WORDS = {"as-written": "score numbers as written", "to-chinese": "read digits as Chinese numerals",
                 "to-digits": "turn Chinese numerals into digits"}


def profile_protocol(profile: str = "zh-v1") -> Protocol:
    """One of our normalizer profiles described in the vocabulary of ``Protocol`` (CER never counts
    spaces in asr-eval: ``metrics.align``)."""
    from asr_eval.text import get_profile

    p = get_profile(profile)
    r = p.rules
    if r.get("external") == "whisper-basic":  # BasicTextNormalizer: punctuation/symbols → spaces, lower-case
        return Protocol(p.description or profile, "removed", "no", "as-written", "ignored", "lowercased",
                        tags="removed", asr_eval_profile=profile)
    tags = "removed" if (r.get("tag_brackets") or r.get("tag_words")) else "kept"
    return Protocol(p.description or profile, "removed" if r.get("punct") == "remove" else "kept",
                    "yes" if r.get("t2s") else "no", _NUMBERS[r.get("numbers", "keep")], "ignored",
                    "lowercased" if r.get("lowercase") else "as-written", tags=tags, asr_eval_profile=profile)


def _case_class(text: str) -> str:
    t = text.lower()
    if t == UNKNOWN:
        return UNKNOWN
    return "lowercased" if ("lower" in t and "not" not in t) else "as-written"


def _ours_summary(o: Protocol) -> str:
    numbers = {"as-written": "numbers as written", "to-chinese": "digits read as Chinese numerals",
               "to-digits": "Chinese numerals turned into digits"}[o.numbers]
    parts = ["punctuation " + o.punctuation, "T→S" if o.t2s == "yes" else "no T→S", numbers,
             "spaces " + o.spaces, "Latin lower-cased" if o.case == "lowercased" else "case kept"]
    return ", ".join(parts)


def protocol_differences(p: Protocol, ours: str = "zh-v1") -> list[str]:
    """Plain sentences comparing a source's stated protocol with our profile ``ours``: one per field
    that differs or that the source does not state, and the source's decoding; nothing for fields
    that agree."""
    o = profile_protocol(ours)
    theirs_case = _case_class(p.case)
    stated = [f for f in ("punctuation", "t2s", "numbers", "spaces") if getattr(p, f) != UNKNOWN]
    out: list[str] = []
    if not stated and theirs_case == UNKNOWN:
        out.append(f"normalization not stated by the source (ours, {ours}: {_ours_summary(o)})")
    else:
        if p.punctuation == UNKNOWN:
            out.append("punctuation handling not stated by the source")
        elif p.punctuation != o.punctuation:
            out.append("they keep punctuation; we remove it" if p.punctuation == "kept"
                       else "they remove punctuation; we keep it")
        if p.t2s == UNKNOWN:
            out.append("Traditional→Simplified conversion not stated by the source")
        elif p.t2s != o.t2s:
            out.append("they do not convert Traditional to Simplified; we do" if p.t2s == "no"
                       else "they convert Traditional to Simplified; we do not")
        if p.numbers == UNKNOWN:
            out.append("number handling not stated by the source")
        elif p.numbers != o.numbers:
            out.append(f"numbers: they {_NUMBER_WORDS[p.numbers]}; we {_NUMBER_WORDS[o.numbers]}")
        if p.spaces == UNKNOWN:
            out.append("whether spaces count as characters is not stated by the source")
        elif p.spaces != o.spaces:
            out.append("they count spaces as characters; we ignore spaces" if p.spaces == "counted"
                       else "they ignore spaces; we count them")
        if theirs_case == UNKNOWN:
            out.append("case handling not stated by the source")
        elif theirs_case != o.case:
            out.append("case: they keep Latin case; we lower-case Latin letters" if theirs_case == "as-written"
                       else "case: they lower-case Latin letters; we keep case")
    if p.tags != UNKNOWN and p.tags != o.tags:
        out.append(f"tags such as [noise] or (笑): they {'keep' if p.tags == 'kept' else 'remove'} them; "
                   f"we {'keep' if o.tags == 'kept' else 'remove'} them")
    out.append("decoding not stated by the source (we score what you ran)" if p.decoding == UNKNOWN
               else f"decoding: {p.decoding} (we score what you ran)")
    return out
