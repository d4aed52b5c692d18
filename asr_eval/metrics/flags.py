"""Pathology flags per utterance: the ways Whisper fails that an error rate alone hides.

- repetition: a unit of 1-15 characters repeated at least 4 times in a row, the run at least
  8 characters long, and that run is not in the reference (谢谢谢谢谢谢谢谢, 我们我们我们我们);
- insertion_heavy: the hypothesis has more than 3x the reference's characters;
- hallucination: contains one of Whisper's stock phrases (hallucinations_zh.txt) that the
  reference does not;
- traditional_script: the raw output has characters OpenCC t2s converts (Whisper often
  answers Mandarin in Traditional script);
- wrong_language: the reference is mostly Han but most hypothesis tokens are words of a
  spaced script (English translation instead of transcription);
- empty: the hypothesis normalizes to nothing while the reference does not.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from asr_eval.metrics.align import chars, mer_tokens
from asr_eval.text import DEFAULT_PROFILE, NormalizerProfile, get_profile
from asr_eval.text.chars import HAN_RE, WORD_LETTER
from asr_eval.text.normalizer import opencc_t2s

FLAGS = ("repetition", "insertion_heavy", "hallucination", "traditional_script", "wrong_language", "empty")
HALLUCINATIONS_FILE = "hallucinations_zh.txt"
REPEAT_MIN_COPIES = 4
REPEAT_MIN_SPAN = 8
INSERTION_FACTOR = 3
_REPEAT = re.compile(rf"(.{{1,15}}?)\1{{{REPEAT_MIN_COPIES - 1},}}", re.S)
_WORD = re.compile(f"{WORD_LETTER}")
_NON_WORD = re.compile(r"[\W_]+")


def hallucination_phrases() -> list[str]:
    """The stock phrases, as listed in the data file."""
    text = resources.files("asr_eval.metrics").joinpath(HALLUCINATIONS_FILE).read_text(encoding="utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def skeleton(text: str) -> str:
    """Letters, digits and Han only, lower-cased: what phrase matching compares."""
    return _NON_WORD.sub("", text.lower())


@cache
def _phrase_re(profile: NormalizerProfile) -> re.Pattern[str]:
    keys = {skeleton(k) for k in profile.normalize_many(hallucination_phrases())} - {""}
    return re.compile("|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True)))


def is_traditional(hyp_raw: str | None) -> bool:
    """True when OpenCC t2s would change the raw text."""
    return isinstance(hyp_raw, str) and bool(hyp_raw) and opencc_t2s().convert(hyp_raw) != hyp_raw


def _repetition(hyp_c: str, ref_c: str) -> bool:
    # A qualifying run repeats at least 3/4 of its characters; the set size rules most texts out cheaply.
    if len(hyp_c) - len(set(hyp_c)) < REPEAT_MIN_SPAN - REPEAT_MIN_SPAN // REPEAT_MIN_COPIES:
        return False
    return any(len(m.group()) >= REPEAT_MIN_SPAN and m.group() not in ref_c for m in _REPEAT.finditer(hyp_c))


def _hallucination(hyp_c: str, ref_c: str, profile: NormalizerProfile) -> bool:
    hs = hyp_c.lower() if hyp_c.isalnum() else skeleton(hyp_c)
    if not hs or not (found := _phrase_re(profile).findall(hs)):
        return False
    rs = skeleton(ref_c)
    return any(k not in rs for k in found)


def _wrong_language(ref_norm: str, ref_c: str, hyp_norm: str) -> bool:
    if not _WORD.search(hyp_norm) or not ref_c:
        return False
    hyp_toks = mer_tokens(hyp_norm)
    foreign = sum(1 for t in hyp_toks if _WORD.match(t))
    if 2 * foreign <= len(hyp_toks):
        return False
    return 2 * len(HAN_RE.findall(ref_c)) >= len(mer_tokens(ref_norm))


def pathology_flags(hyp_raw: str | None, ref_norm: str, hyp_norm: str,
                    profile: str | NormalizerProfile = DEFAULT_PROFILE, *,
                    traditional: bool | None = None) -> list[str]:
    """Flags (subset of FLAGS, in that order) for one utterance. ``profile`` is the one that
    produced ref_norm/hyp_norm (stock phrases are normalized with it); ``traditional`` may be
    passed when already computed for a batch."""
    return flags_for(hyp_raw, ref_norm, hyp_norm, chars(ref_norm), chars(hyp_norm), get_profile(profile), traditional)


def flags_for(hyp_raw: str | None, ref_norm: str, hyp_norm: str, ref_c: str, hyp_c: str,
              profile: NormalizerProfile, traditional: bool | None) -> list[str]:
    """``pathology_flags`` with the character strings already computed (the scoring hot path)."""
    out = []
    if len(hyp_c) >= REPEAT_MIN_SPAN and _repetition(hyp_c, ref_c):
        out.append("repetition")
    if len(hyp_c) > INSERTION_FACTOR * len(ref_c):
        out.append("insertion_heavy")
    if _hallucination(hyp_c, ref_c, profile):
        out.append("hallucination")
    if traditional if traditional is not None else is_traditional(hyp_raw):
        out.append("traditional_script")
    if _wrong_language(ref_norm, ref_c, hyp_norm):
        out.append("wrong_language")
    if not hyp_c and ref_c:
        out.append("empty")
    return out
