"""Named, versioned normalizer profiles whose rules are data (``profiles.json``).

A profile compiles its rules into a list of string -> string steps. Many texts are normalized
at once by joining them with newlines and running each step once over the joined string
(every step keeps newlines and never matches across them), which is what makes rescoring a
million utterances cheap.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources
from typing import Any

from asr_eval.errors import AsrEvalError
from asr_eval.provenance import stable_hash
from asr_eval.text.chars import NOSPACE, WORD_LETTER
from asr_eval.text.numbers import chinese_to_digits, digits_to_chinese, strip_thousands

DEFAULT_PROFILE = "zh-v1"
PROFILES_FILE = "profiles.json"

RULE_TYPES: dict[str, type | tuple[type, ...]] = {
    "invisible": bool, "nfkc": bool, "nfkc_keep": str, "t2s": bool, "char_map": dict,
    "tag_brackets": list, "tag_words": list, "numbers": str, "numeral_idioms": list,
    "lowercase": bool, "punct": str, "fillers": list, "spaces": str, "nospace_extra": str,
    "erhua": (dict, type(None)),
}
RULE_CHOICES = {"numbers": ("keep", "to_chinese", "to_digits"), "punct": ("remove", "keep"),
                "spaces": ("canonical", "strip")}
# Rules a profile may leave out (absent = off), so adding one never changes existing profiles' hashes.
OPTIONAL_RULES: dict[str, type | tuple[type, ...]] = {"external": str}


def _whisper_basic() -> Callable[[str], str]:
    """OpenAI Whisper's BasicTextNormalizer, from the ``whisper-normalizer`` package (PyPI): NFKC,
    lower-case, bracketed/parenthesised spans removed, marks/symbols/punctuation → spaces,
    whitespace collapsed."""
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


# Registry of normalizers from other packages a profile can name with the rule "external";
# name -> (factory of a str -> str function, distribution whose version joins the rules hash).
EXTERNAL_NORMALIZERS: dict[str, tuple[Callable[[], Callable[[str], str]], str]] = {
    "whisper-basic": (_whisper_basic, "whisper-normalizer"),
}


def _external_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(EXTERNAL_NORMALIZERS[name][1])
    except PackageNotFoundError:
        return "not installed"


def _per_line(fn: Callable[[str], str]) -> Step:
    """An external normalizer may touch newlines (whitespace collapsing): run it line by line."""
    return lambda joined: "\n".join(fn(line).replace("\n", " ") for line in joined.split("\n"))

Step = Callable[[str], str]

# zero-width and control characters that are neither text nor whitespace
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1b\x7f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufe0e\ufe0f\ufeff]+")
_WS = re.compile(r"[^\S\n ][^\S\n]*| [^\S\n]+")  # whitespace runs other than one plain space
# Punctuation and symbols become a space, except '.' between digits (12.5), '%' after a digit
# (50%) and an apostrophe between letters (don't). Two passes keep it fast: a constant
# replacement in C for everything else, then a context check only where . % ' occur.
_PUNCT = re.compile(r"[^\w\s.%']+|_+")
_PUNCT_KEPT = re.compile(r"[.%']")
_LETTER = re.compile(WORD_LETTER)


def _kept_repl(m: re.Match[str]) -> str:
    text, i, ch = m.string, m.start(), m.group()
    before = text[i - 1] if i else ""
    after = text[i + 1] if i + 1 < len(text) else ""
    if ch == ".":
        keep = "0" <= before <= "9" and "0" <= after <= "9"
    elif ch == "%":
        keep = "0" <= before <= "9"
    else:
        keep = bool(_LETTER.match(before)) and bool(_LETTER.match(after))
    return ch if keep else " "


def _remove_punct(text: str) -> str:
    text = _PUNCT.sub(" ", text)
    return _PUNCT_KEPT.sub(_kept_repl, text) if "." in text or "%" in text or "'" in text else text


@cache
def opencc_t2s() -> Any:
    import opencc

    return opencc.OpenCC("t2s")


@cache
def _nfkc_runs() -> re.Pattern[str]:
    """Runs of characters NFKC may change: the BMP ones from Python's Unicode data (built once,
    ~0.1 s), plus every astral character, because a class with astral ranges makes the regex
    engine test ranges one by one instead of looking up a bitmap."""
    cps = {cp for cp in range(0x10000) if not 0xD800 <= cp < 0xE000
           and (unicodedata.combining(chr(cp)) or not unicodedata.is_normalized("NFKC", chr(cp)))}
    for cp in range(0x10000):  # second halves of canonical pairs compose with what precedes them
        d = unicodedata.decomposition(chr(cp)).split()
        if len(d) == 2 and not d[0].startswith("<") and int(d[1], 16) < 0x10000:
            cps.add(int(d[1], 16))
    cps.update(range(0x1161, 0x1176), range(0x11A8, 0x11C3))  # Hangul vowel/final jamo compose too
    bmp = "".join(re.escape(chr(cp)) for cp in sorted(cps))
    return re.compile(f"[{bmp}\U00010000-\U0010ffff]+")


def _nfkc(text: str) -> str:
    """NFKC, applied only to the runs that need it: normalizing a whole joined batch costs
    ~100 ns per character, most of it on characters that are already normal."""
    if unicodedata.is_normalized("NFKC", text):
        return text
    out, pos = [], 0
    for m in _nfkc_runs().finditer(text):
        a, b = m.span()
        if a > pos and text[a - 1] != "\n":  # include the base character a mark may compose with
            a -= 1
        out += [text[pos:a], unicodedata.normalize("NFKC", text[a:b])]
        pos = b
    out.append(text[pos:])
    return "".join(out)


def _nfkc_keeping(keep: str) -> Step:
    """NFKC that leaves the ``keep`` characters (full-width Chinese punctuation) untouched."""
    split = re.compile(f"([{re.escape(keep)}])")

    def step(text: str) -> str:
        if unicodedata.is_normalized("NFKC", text):
            return text
        parts = split.split(text)
        parts[::2] = [_nfkc(p) for p in parts[::2]]
        return "".join(parts)

    return step


def _sub(pattern: re.Pattern[str], repl: str) -> Step:
    return lambda text: pattern.sub(repl, text)


def _alternation(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _tag_pattern(brackets: Sequence[str], words: Sequence[str], ignore_case: bool) -> re.Pattern[str]:
    alts = [f"{re.escape(b[0])}[^{re.escape(b)}\n]*{re.escape(b[1])}" for b in brackets]
    if words:
        alts.append(rf"[(（][^\S\n]*(?:{_alternation(w.lower() for w in words)})[^\S\n]*[)）]")
    return re.compile("|".join(alts), re.IGNORECASE if ignore_case else 0)


def _filler_pattern(fillers: Sequence[str]) -> re.Pattern[str]:
    latin = [f for f in fillers if f.isascii()]
    alts = [_alternation(f for f in fillers if not f.isascii())]
    if latin:  # Latin fillers only as whole words (um, not the 'um' in 'umbrella')
        alts.append(rf"(?<![^\W\d_])(?:{_alternation(latin)})(?![^\W\d_])")
    return re.compile("|".join(a for a in alts if a))


def _erhua_pattern(keep_before: str, keep_after: str) -> re.Pattern[str]:
    """儿 right after a Han character is the erhua suffix unless a listed word (女儿, 儿子)."""
    from asr_eval.text.chars import HAN

    kb = f"(?<![{re.escape(keep_before)}])" if keep_before else ""
    ka = f"(?![{re.escape(keep_after)}])" if keep_after else ""
    return re.compile(f"(?<=[{HAN}]){kb}儿{ka}")


def _space_step(extra: str) -> Step:
    """Drop single spaces next to Han/kana (or ``extra``) characters and at line ends; the
    pattern starts with a literal space so the regex engine jumps between spaces."""
    ns = NOSPACE + re.escape(extra)
    pattern = re.compile(rf" (?:(?=[{ns}\n])|$|(?<=[{ns}\n] ))")

    def step(text: str) -> str:
        text = pattern.sub("", text)
        return text[1:] if text.startswith(" ") else text

    return step


def validate_rules(rules: dict[str, Any], where: str) -> None:
    """Raise AsrEvalError naming the profile and key when the rules are not what the code reads."""
    missing = set(RULE_TYPES) - set(rules)
    unknown = set(rules) - set(RULE_TYPES) - set(OPTIONAL_RULES)
    if missing or unknown:
        raise AsrEvalError(f"normalizer profile {where}: missing rules {sorted(missing)}, unknown rules "
                           f"{sorted(unknown)}; the rule keys are {sorted(RULE_TYPES)}")
    for key, typ in RULE_TYPES.items():
        if not isinstance(rules[key], typ):
            raise AsrEvalError(f"normalizer profile {where}: rule {key!r} = {rules[key]!r} must be {typ}")
    for key, choices in RULE_CHOICES.items():
        if rules[key] not in choices:
            raise AsrEvalError(f"normalizer profile {where}: rule {key!r} = {rules[key]!r}; use one of {choices}")
    if any(len(b) != 2 for b in rules["tag_brackets"]):
        raise AsrEvalError(f"normalizer profile {where}: tag_brackets entries are two characters like '[]'")
    ext = rules.get("external")
    if ext is not None and ext not in EXTERNAL_NORMALIZERS:
        raise AsrEvalError(f"normalizer profile {where}: external normalizer {ext!r} is unknown; "
                           f"known: {', '.join(sorted(EXTERNAL_NORMALIZERS))}")
    if rules["erhua"] is not None and set(rules["erhua"]) != {"keep_before", "keep_after"}:
        raise AsrEvalError(f"normalizer profile {where}: erhua must be null or {{keep_before, keep_after}}")


@dataclass(frozen=True)
class NormalizerProfile:
    """A named, versioned set of normalization rules (see ``profiles.json`` for the keys)."""

    name: str
    version: str
    rules: dict[str, Any] = field(repr=False)
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        validate_rules(self.rules, repr(self.name))

    def __hash__(self) -> int:
        return hash((self.name, self.rules_hash))

    def __reduce__(self):  # pickle without the compiled steps (they hold an OpenCC handle)
        return (NormalizerProfile, (self.name, self.version, self.rules, self.description))

    @cached_property
    def rules_hash(self) -> str:
        """12 hex chars identifying the resolved rules and the code that interprets them."""
        ext = self.rules.get("external")
        extra = {"external_version": _external_version(ext)} if ext else {}
        return stable_hash({"code_version": _profiles_file()["code_version"], "rules": self.rules, **extra}, 12)

    @cached_property
    def steps(self) -> list[Step]:
        """The rules compiled into string steps, in the order they run."""
        r = self.rules
        steps: list[Step] = []
        if r.get("external"):  # first: the other package's rules, then whatever this profile adds
            steps.append(_per_line(EXTERNAL_NORMALIZERS[r["external"]][0]()))
        if r["invisible"]:
            steps.append(_sub(_INVISIBLE, ""))
        if r["nfkc"]:
            steps.append(_nfkc_keeping(r["nfkc_keep"]) if r["nfkc_keep"] else _nfkc)
        if r["t2s"]:
            steps.append(opencc_t2s().convert)
        if r["char_map"]:
            table = r["char_map"]
            steps.append(_sub_map(re.compile(f"[{re.escape(''.join(table))}]"), table))
        if r["lowercase"]:  # before tags, so tag words match without IGNORECASE (slow)
            steps.append(str.lower)
        if r["tag_brackets"] or r["tag_words"]:
            steps.append(_sub(_tag_pattern(r["tag_brackets"], r["tag_words"], not r["lowercase"]), " "))
        if r["numbers"] == "to_chinese":
            steps.append(digits_to_chinese)
        else:
            steps.append(strip_thousands)
        if r["punct"] == "remove":
            steps.append(_remove_punct)
        if r["fillers"]:
            steps.append(_sub(_filler_pattern(r["fillers"]), " "))
        to_digits = (lambda text: chinese_to_digits(text, idioms)) if r["numbers"] == "to_digits" else None
        idioms = tuple(r["numeral_idioms"])
        if to_digits:  # while spaces still separate numbers (百分之 五十 二零二四年)
            steps.append(to_digits)
        if r["spaces"] == "canonical":
            steps.append(_sub(_WS, " "))
            steps.append(_space_step(r["nospace_extra"]))
        if r["erhua"] is not None:  # after spacing: 儿 must see its real left neighbour
            steps.append(_sub(_erhua_pattern(r["erhua"]["keep_before"], r["erhua"]["keep_after"]), ""))
        if to_digits:  # again once spacing joined runs (三 十 -> 三十), so a second pass changes nothing
            steps.append(to_digits)
        return steps

    def normalize(self, text: str | None) -> str:
        """Normalize one text; None (no output) becomes ''."""
        return self.normalize_many([text])[0]

    def normalize_many(self, texts: Sequence[str | None]) -> list[str]:
        """Normalize many texts in one pass per step (same result as ``normalize`` on each)."""
        if not texts:
            return []
        if not self.steps:  # 'none': nothing to join for, and newlines inside a text survive
            return [t.strip() if isinstance(t, str) else text_or_empty(t) for t in texts]
        joined = "\n".join(text_or_empty(t) for t in texts)
        for step in self.steps:
            joined = step(joined)
        out = joined.split("\n")
        if len(out) != len(texts):  # a step broke the one-line-per-text invariant: a bug, not user error
            raise RuntimeError(f"normalizer {self.name}: {len(texts)} texts in, {len(out)} out")
        return [t.strip() for t in out] if self.rules["spaces"] == "strip" else out


def text_or_empty(t: object) -> str:
    """One line of the joined batch: None (and pandas' NaN) mean no text."""
    if isinstance(t, str):
        return t.replace("\n", " ") if "\n" in t else t
    if t is None or (isinstance(t, float) and t != t):
        return ""
    raise TypeError(f"normalize expects str or None, got {type(t).__name__}: {t!r}")


def _sub_map(pattern: re.Pattern[str], table: dict[str, str]) -> Step:
    return lambda text: pattern.sub(lambda m: table[m.group()], text)


@cache
def _profiles_file() -> dict[str, Any]:
    return json.loads(resources.files("asr_eval.text").joinpath(PROFILES_FILE).read_text(encoding="utf-8"))


def _resolve(name: str, defs: dict[str, Any], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if name in seen:
        raise AsrEvalError(f"{PROFILES_FILE}: profile inheritance loop {' -> '.join(seen + (name,))}")
    d = defs[name]
    rules = _resolve(d["base"], defs, seen + (name,)) if "base" in d else {}
    return {**rules, **d["rules"]}


@cache
def _builtin(name: str) -> NormalizerProfile:
    defs = _profiles_file()["profiles"]
    d = defs[name]
    return NormalizerProfile(name, d["version"], _resolve(name, defs), d.get("description", ""))


def list_profiles() -> list[str]:
    """Names of the built-in profiles."""
    return sorted(_profiles_file()["profiles"])


def get_profile(name: str | NormalizerProfile = DEFAULT_PROFILE) -> NormalizerProfile:
    """A built-in profile by name (a NormalizerProfile passes through)."""
    if isinstance(name, NormalizerProfile):
        return name
    if name not in _profiles_file()["profiles"]:
        raise AsrEvalError(f"unknown normalizer profile {name!r}; known profiles: {', '.join(list_profiles())} "
                           f"(defined in asr_eval/text/{PROFILES_FILE})")
    return _builtin(name)


def normalize(text: str | None, profile: str | NormalizerProfile = DEFAULT_PROFILE) -> str:
    """Normalize one text with a profile (default ``zh-v1``)."""
    return get_profile(profile).normalize(text)


def normalize_many(texts: Sequence[str | None], profile: str | NormalizerProfile = DEFAULT_PROFILE) -> list[str]:
    """Normalize many texts at once (the fast path used by scoring)."""
    return get_profile(profile).normalize_many(texts)
