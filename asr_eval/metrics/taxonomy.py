"""Why characters are wrong: a Mandarin error taxonomy over the stored CER alignment, and the
pinyin error rate. Pure functions (pypinyin supplies the readings).

Every aligned **substitution** ``ref → hyp`` gets exactly one class, tested in this order:

``variant``        the same character after script conversion (OpenCC Traditional→Simplified, the
                   converter the normalizer uses) or Unicode NFKC + case folding: 個→个 under a
                   profile without ``t2s`` — the normalizer let a spelling difference through;
``number_format``  both sides are numerals of different writing systems (2 vs 二, 两 vs 二, 〇 vs 零);
``latin``          either side is a Latin letter;
``homophone``      same syllable and same tone (在 zài → 再 zài);
``tone``           same syllable, different tone (买 mǎi → 卖 mài);
``near_homophone`` the toneless syllables differ only in a confusable initial (z/zh, c/ch, s/sh,
                   n/l, f/h, r/l) or a confusable final (an/ang, en/eng, in/ing, ian/iang,
                   uan/uang): 四 sì → 十 shí;
``other``          anything else (including characters without a reading).

Readings come from the sentence, not the isolated character: pypinyin reads the whole
normalized sentence (its phrase dictionary resolves polyphones: 行 is háng in 银行 and xíng in
行走) and each character takes the reading at its position. Tones are TONE3 digits, the neutral
tone as 5, no tone sandhi.

**Insertions and deletions** of the sentence particles in ``PARTICLES`` count as ``particle``
(by character, without part-of-speech tagging: a deleted 地 in 地方 counts too). The other
deletions and insertions stay ``deletion`` / ``insertion``, so the ten counts of an utterance
sum to its character errors S + D + I.

**Pinyin error rate**: each character becomes a token — a Han character its syllable (toneless,
or with its tone), anything else itself — and the two token sequences are aligned with the same
Levenshtein as CER (``asr_eval.metrics.align.align``). A homophone substitution is a CER error but
no pinyin error; a tone substitution is an error only with tones.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

from asr_eval.metrics.align import align, alignment_pairs, chars, count_ops

HOMOPHONE, TONE, NEAR_HOMOPHONE = "homophone", "tone", "near_homophone"
VARIANT, NUMBER_FORMAT, LATIN, OTHER = "variant", "number_format", "latin", "other"
PARTICLE, DELETION, INSERTION = "particle", "deletion", "insertion"
SUBSTITUTION_CLASSES = (HOMOPHONE, TONE, NEAR_HOMOPHONE, VARIANT, NUMBER_FORMAT, LATIN, OTHER)
CLASSES = (*SUBSTITUTION_CLASSES, PARTICLE)  # the taxonomy (JSON keys of `asr-eval errors --json`)
ALL_BUCKETS = (*CLASSES, DELETION, INSERTION)  # sums to S + D + I
LABELS = {HOMOPHONE: "homophone", TONE: "tone", NEAR_HOMOPHONE: "near-homophone", VARIANT: "variant",
          NUMBER_FORMAT: "number format", LATIN: "Latin", OTHER: "other substitution", PARTICLE: "particle",
          DELETION: "other deletion", INSERTION: "other insertion"}

# Sentence-final and structural particles and interjections whose insertion or deletion is
# counted as `particle` (documented in docs/errors.md).
PARTICLES = frozenset("的了吗呢吧啊得地着过嘛呀哦啦哇呗嘞喽哟呐么欸诶噢")

# Confusable pairs (Southern-Mandarin and common ASR mergers).
CONFUSABLE_INITIALS = (("z", "zh"), ("c", "ch"), ("s", "sh"), ("n", "l"), ("f", "h"), ("r", "l"))
CONFUSABLE_FINALS = (("an", "ang"), ("en", "eng"), ("in", "ing"), ("ian", "iang"), ("uan", "uang"))
_INITIALS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "r", "z",
             "c", "s", "y", "w")
_PAIRS_I = {frozenset(p) for p in CONFUSABLE_INITIALS}
_PAIRS_F = {frozenset(p) for p in CONFUSABLE_FINALS}

_CN_NUMERALS = frozenset("零〇一二三四五六七八九十百千万亿两幺壹贰叁肆伍陆柒捌玖拾佰仟")
_CN_VALUES = {"零": 0, "〇": 0, "一": 1, "幺": 1, "壹": 1, "二": 2, "两": 2, "贰": 2, "三": 3, "叁": 3, "四": 4,
              "肆": 4, "五": 5, "伍": 5, "六": 6, "陆": 6, "七": 7, "柒": 7, "八": 8, "捌": 8, "九": 9, "玖": 9,
              "十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
_NO_READING = "\x00"


# ───────────────────────────── readings ─────────────────────────────


@lru_cache(maxsize=65536)
def readings(text: str) -> tuple[str | None, ...]:
    """The TONE3 reading (``hang2``; neutral tone ``5``) of every character of ``text`` read as one
    sentence — polyphones resolved by pypinyin's phrase dictionary in context; None for characters
    without a reading (Latin, digits, punctuation)."""
    from pypinyin import Style, lazy_pinyin

    if not text:
        return ()
    out = lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True,
                      errors=lambda s: [_NO_READING] * len(s))
    if len(out) != len(text):  # never seen; read character by character rather than misalign
        out = [lazy_pinyin(c, style=Style.TONE3, neutral_tone_with_five=True,
                           errors=lambda s: [_NO_READING] * len(s))[0] for c in text]
    return tuple(None if r == _NO_READING else r for r in out)


def pinyin_version() -> str:
    """The pypinyin release (its phrase dictionary decides the readings): stored with every row."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pypinyin")
    except PackageNotFoundError:
        return "unknown"


def toneless(syllable: str) -> str:
    """``hang2`` → ``hang``."""
    return syllable.rstrip("012345")


def split_syllable(syllable: str) -> tuple[str, str]:
    """(initial, final) of a toneless syllable; y and w count as initials (``yan`` → y + an)."""
    s = toneless(syllable)
    for ini in _INITIALS:
        if s.startswith(ini) and len(s) > len(ini):
            return ini, s[len(ini):]
    return "", s


def near_homophones(a: str, b: str) -> bool:
    """The toneless syllables differ only in a confusable initial or only in a confusable final."""
    (ia, fa), (ib, fb) = split_syllable(a), split_syllable(b)
    if fa == fb and ia != ib:
        return frozenset((ia, ib)) in _PAIRS_I
    if ia == ib and fa != fb:
        return frozenset((fa, fb)) in _PAIRS_F
    return False


# ───────────────────────────── classification ─────────────────────────────


@lru_cache(maxsize=8192)
def _canonical(ch: str) -> str:
    from asr_eval.text.normalizer import opencc_t2s

    return opencc_t2s().convert(unicodedata.normalize("NFKC", ch)).casefold()


def is_variant(ref: str, hyp: str) -> bool:
    """Two spellings of one character (Traditional/Simplified, full/half width, case)."""
    return ref != hyp and _canonical(ref) == _canonical(hyp)


def _numeral_system(ch: str) -> str | None:
    if ch.isdigit():
        return "digit"
    return "han" if ch in _CN_NUMERALS else None


def _numeral_value(ch: str) -> int | None:
    if ch.isdigit():
        return unicodedata.digit(ch, None)
    return _CN_VALUES.get(ch)


def is_number_format(ref: str, hyp: str) -> bool:
    """Numerals of different writing systems (2 ↔ 二, 0 ↔ 十 inside 20 ↔ 二十), or two Chinese
    spellings of the same digit (两/二, 〇/零, 幺/一). Two different numbers of one system
    (四 → 十) are not a format difference and fall through to the phonetic classes."""
    a, b = _numeral_system(ref), _numeral_system(hyp)
    if a is None or b is None:
        return False
    if a != b:
        return True
    va, vb = _numeral_value(ref), _numeral_value(hyp)
    return a == "han" and va is not None and va == vb


def is_latin(ch: str) -> bool:
    from asr_eval.text.chars import LATIN_RE

    return bool(LATIN_RE.match(ch))


def classify_substitution(ref: str, hyp: str, ref_reading: str | None, hyp_reading: str | None) -> str:
    """The class of one substituted character (module docstring for the order of the tests)."""
    if is_variant(ref, hyp):
        return VARIANT
    if is_number_format(ref, hyp):
        return NUMBER_FORMAT
    if is_latin(ref) or is_latin(hyp):
        return LATIN
    if ref_reading and hyp_reading:
        if ref_reading == hyp_reading:
            return HOMOPHONE
        if toneless(ref_reading) == toneless(hyp_reading):
            return TONE
        if near_homophones(ref_reading, hyp_reading):
            return NEAR_HOMOPHONE
    return OTHER


@dataclass(frozen=True)
class Confusion:
    """One substitution occurrence with the readings the characters had in their sentences."""

    ref: str
    hyp: str
    ref_pinyin: str | None
    hyp_pinyin: str | None
    cls: str


@dataclass
class UtteranceErrors:
    """The taxonomy of one utterance: ``counts`` over ``ALL_BUCKETS`` (sum = S + D + I), the
    substitutions with their readings, and the pinyin error counts (``py_n`` reference
    syllables; errors without and with tones)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ALL_BUCKETS, 0))
    confusions: list[Confusion] = field(default_factory=list)
    py_n: int = 0
    py_err: int = 0
    pyt_err: int = 0

    @property
    def errors(self) -> int:
        return sum(self.counts.values())


def parse_alignment(alignment: str | Sequence | None) -> list[tuple[str, str, str]]:
    """A stored alignment (JSON text or already a list) as (op, ref_tok, hyp_tok) triples."""
    if alignment is None:
        return []
    data = json.loads(alignment) if isinstance(alignment, str) else alignment
    return [(str(op), r or "", h or "") for op, r, h in data]


def pinyin_tokens(text: str, tones: bool = False) -> list[str]:
    """One token per character: its syllable (toneless unless ``tones``) for a Han character with
    a reading, the character itself otherwise."""
    rd = readings(text)
    return [c if r is None else (r if tones else toneless(r)) for c, r in zip(text, rd)]


def pinyin_counts(ref: str, hyp: str, tones: bool = False) -> tuple[int, int]:
    """(reference syllables, errors S + D + I) of the pinyin alignment of two normalized texts."""
    rt, ht = pinyin_tokens(chars(ref), tones), pinyin_tokens(chars(hyp), tones)
    if rt == ht:
        return len(rt), 0
    s, d, i = count_ops(align(rt, ht))
    return len(rt), s + d + i


def pinyin_error_rate(refs: Sequence[str], hyps: Sequence[str], tones: bool = False) -> float:
    """Pooled pinyin error rate of normalized pairs: Σ errors / Σ reference syllables."""
    n = e = 0
    for r, h in zip(refs, hyps, strict=True):
        a, b = pinyin_counts(r, h, tones)
        n, e = n + a, e + b
    return e / n if n else (0.0 if e == 0 else float("inf"))


def classify_alignment(alignment: Sequence[tuple[str, str, str]]) -> UtteranceErrors:
    """The taxonomy and pinyin errors of one CER alignment; the sentences whose readings are used
    are the alignment's own reference and hypothesis sides (the normalized texts without spaces)."""
    ref = "".join(r for op, r, _ in alignment if op != "I")
    hyp = "".join(h for op, _, h in alignment if op != "D")
    out = UtteranceErrors(py_n=len(ref))
    if all(op == "=" for op, _, _ in alignment):
        return out
    rr, hr = readings(ref), readings(hyp)
    i = j = 0
    for op, r, h in alignment:
        if op == "=":
            i, j = i + 1, j + 1
        elif op == "S":
            cls = classify_substitution(r, h, rr[i], hr[j])
            out.counts[cls] += 1
            out.confusions.append(Confusion(r, h, rr[i], hr[j], cls))
            i, j = i + 1, j + 1
        elif op == "D":
            out.counts[PARTICLE if r in PARTICLES else DELETION] += 1
            i += 1
        else:
            out.counts[PARTICLE if h in PARTICLES else INSERTION] += 1
            j += 1
    for tones in (False, True):
        rt = [c if x is None else (x if tones else toneless(x)) for c, x in zip(ref, rr)]
        ht = [c if x is None else (x if tones else toneless(x)) for c, x in zip(hyp, hr)]
        s, d, ins = count_ops(align(rt, ht)) if rt != ht else (0, 0, 0)
        if tones:
            out.pyt_err = s + d + ins
        else:
            out.py_err = s + d + ins
    return out


CHUNK = 20_000            # alignments per worker task
PARALLEL_MIN = 3 * CHUNK  # below this, worker start-up costs more than it saves


def _classify_chunk(alignments: Sequence[str | Sequence | None]) -> list[UtteranceErrors]:
    return [classify_alignment(parse_alignment(a)) for a in alignments]


def classify_many(alignments: Sequence[str | Sequence | None], workers: int | None = None) -> list[UtteranceErrors]:
    """``classify_alignment`` of many stored alignments (JSON text), over worker processes for big
    inputs like ``metrics.score.score_many`` (the readings' cache is per process)."""
    from asr_eval.metrics.score import default_workers

    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(alignments) < PARALLEL_MIN:
        return _classify_chunk(alignments)
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    out: list[UtteranceErrors] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futs = [pool.submit(_classify_chunk, list(alignments[a:a + CHUNK])) for a in range(0, len(alignments), CHUNK)]
        for f in futs:
            out += f.result()
    return out


def classify_pair(ref_norm: str, hyp_norm: str) -> UtteranceErrors:
    """The taxonomy of two normalized texts (aligned here, as the scorer aligns them)."""
    rc, hc = chars(ref_norm), chars(hyp_norm)
    return classify_alignment(alignment_pairs(rc, hc, align(rc, hc)))


def shares(counts: dict[str, int]) -> dict[str, float | None]:
    """Each bucket's share of the character errors (None without errors)."""
    total = sum(counts.values())
    return {k: (v / total if total else None) for k, v in counts.items()}
