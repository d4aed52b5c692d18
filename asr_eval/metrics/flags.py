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

Long-form flags, per recording (an item over 30 s; ``long_form_flags``):

- dropped_window: at least ``DROP_MIN_CHARS`` reference characters deleted in one run (a run
  may swallow stray 1-2 character matches): a window Whisper skipped (~10 s of Mandarin);
- repeated_block: a block of at least ``BLOCK_MIN_CHARS`` characters occurs again later in the
  hypothesis, more often than in the reference (a window transcribed twice, a looping decoder);
- text_over_silence: a hypothesis segment with text lies mostly outside the reference's speech
  (its segment times, padded by ``SPEECH_PAD_S``): text produced over silence or noise. Needs
  both segment lists; items without reference segment times are not judged;
- wrong_language_window: a window of ``WINDOW_TOKENS`` hypothesis tokens is mostly words of a
  spaced script while the reference is Mandarin (a window translated, not transcribed).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from asr_eval.metrics.align import chars, mer_tokens
from asr_eval.text import DEFAULT_PROFILE, NormalizerProfile, get_profile
from asr_eval.text.chars import HAN_RE, WORD_LETTER
from asr_eval.text.normalizer import opencc_t2s

LONG_FORM_FLAGS = ("dropped_window", "repeated_block", "text_over_silence", "wrong_language_window")
FLAGS = ("repetition", "insertion_heavy", "hallucination", "traditional_script", "wrong_language", "empty",
         *LONG_FORM_FLAGS)
DROP_MIN_CHARS = 40
DROP_BRIDGE_CHARS = 2  # stray matches / substitutions this short do not end a deletion run
BLOCK_MIN_CHARS = 16
SPEECH_PAD_S = 1.0
SILENCE_MAX_OVERLAP = 0.1  # a hypothesis segment at most this share inside speech is over silence
WINDOW_TOKENS = 40
HALLUCINATIONS_FILE = "hallucinations_zh.txt"
REPEAT_MIN_COPIES = 4
REPEAT_MIN_SPAN = 8
INSERTION_FACTOR = 3
REPEATED_UNIT = re.compile(rf"(.{{1,15}}?)\1{{{REPEAT_MIN_COPIES - 1},}}", re.S)
_REPEAT = REPEATED_UNIT
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


# ───────────────────────── long-form (per recording) ─────────────────────────

Segments = list[tuple[float, float, str]] | list[list]


def _dropped_window(ops) -> bool:
    run = 0
    for tag, i1, i2, j1, j2 in ops:
        if tag == "delete":
            run += i2 - i1
        elif max(i2 - i1, j2 - j1) <= DROP_BRIDGE_CHARS:
            continue  # a stray short match or substitution inside a gap
        else:
            run = 0
        if run >= DROP_MIN_CHARS:
            return True
    return False


def _repeated_block(hyp_c: str, ref_c: str, k: int = BLOCK_MIN_CHARS) -> bool:
    first: dict[str, int] = {}
    checked: set[str] = set()
    for i in range(len(hyp_c) - k + 1):
        block = hyp_c[i:i + k]
        j = first.setdefault(block, i)
        if i - j >= k and block not in checked:
            checked.add(block)
            if hyp_c.count(block) > ref_c.count(block):
                return True
    return False


def _speech(segments: Segments, pad: float = SPEECH_PAD_S) -> list[tuple[float, float]]:
    """Union of the (padded) reference segment spans, sorted."""
    out: list[list[float]] = []
    for a, b, *_ in sorted((float(s[0]), float(s[1])) for s in segments):
        a, b = a - pad, b + pad
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _text_over_silence(hyp_segments: Segments, ref_segments: Segments) -> bool:
    speech = _speech(ref_segments)
    for seg in hyp_segments:
        a, b, text = float(seg[0]), float(seg[1]), seg[2]
        if len(skeleton(text or "")) < 2:
            continue
        if b <= a:  # no extent: judge its start point
            if not any(x <= a <= y for x, y in speech):
                return True
            continue
        inside = sum(max(0.0, min(b, y) - max(a, x)) for x, y in speech)
        if inside <= SILENCE_MAX_OVERLAP * (b - a):
            return True
    return False


def _wrong_language_window(ref_norm: str, ref_c: str, hyp_norm: str) -> bool:
    if not _WORD.search(hyp_norm) or not ref_c:
        return False
    ref_toks = mer_tokens(ref_norm)
    if 10 * sum(1 for t in ref_toks if _WORD.match(t)) > len(ref_toks):  # the reference itself mixes scripts
        return False
    toks = mer_tokens(hyp_norm)
    foreign = [1 if _WORD.match(t) else 0 for t in toks]
    w = min(WINDOW_TOKENS, len(toks))
    run = sum(foreign[:w])
    for i in range(len(toks) - w + 1):
        if i:
            run += foreign[i + w - 1] - foreign[i - 1]
        if 2 * run > w and run >= 3:
            return True
    return False


def long_form_flags(ref_norm: str, hyp_norm: str, ref_c: str, hyp_c: str, ops,
                    ref_segments: Segments | None = None, hyp_segments: Segments | None = None) -> list[str]:
    """Long-form flags (subset of ``LONG_FORM_FLAGS``, in that order) of one recording, from its
    CER opcodes and, for text over silence, the reference's and the hypothesis's segment times."""
    out = []
    if len(ref_c) >= DROP_MIN_CHARS and _dropped_window(ops):
        out.append("dropped_window")
    if len(hyp_c) >= 2 * BLOCK_MIN_CHARS and _repeated_block(hyp_c, ref_c):
        out.append("repeated_block")
    if ref_segments and hyp_segments and _text_over_silence(hyp_segments, ref_segments):
        out.append("text_over_silence")
    if _wrong_language_window(ref_norm, ref_c, hyp_norm):
        out.append("wrong_language_window")
    return out
