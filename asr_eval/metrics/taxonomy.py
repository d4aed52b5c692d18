"""Why tokens are wrong: a Mandarin error taxonomy on MER units, and the pinyin error rate. Pure
functions (pypinyin supplies the readings).

**Units.** The taxonomy works on the units MER counts (``asr_eval.metrics.align.mer_tokens``, the one
tokenizer): each Han character, each Latin word, each number (``2024``, ``12.5``). A Latin word is
one unit, so ``hello → 哈喽`` is one confusion, not ``h → 哈`` plus four more; on pure-Han text the
units are the CER characters. The ten counts of an utterance sum to its MER errors S + D + I.

Every aligned **substitution** ``ref → hyp`` gets exactly one class, tested in this order:

``variant``        the same text after script conversion (OpenCC Traditional→Simplified, the
                   converter the normalizer uses) or Unicode NFKC + case folding: 個→个 under a
                   profile without ``t2s`` — the normalizer let a spelling difference through;
``number_format``  both sides are numerals of different writing systems (2 vs 二, 2024 vs 二零二四),
                   or two Chinese spellings of one digit (两 vs 二, 〇 vs 零);
``latin``          either side holds a Latin word;
``homophone``      same syllable and same tone (在 zài → 再 zài);
``tone``           same syllable, different tone (买 mǎi → 卖 mài);
``near_homophone`` the toneless syllables differ only in a confusable initial (z/zh, c/ch, s/sh,
                   n/l, f/h, r/l) or a confusable final (an/ang, en/eng, in/ing, ian/iang,
                   uan/uang): 四 sì → 十 shí;
``other``          anything else (including units without a reading).

**Words and numbers take what replaced them.** Inside one edit block (the units between two
matches) a substituted Latin word or number absorbs the adjacent inserted units of the hypothesis
(deleted units of the reference when the word is on the hypothesis side): the MER alignment of
``hello`` against ``哈 喽`` is ``hello→哈`` + an inserted ``喽``, and the taxonomy records one
confusion ``hello → 哈喽`` (class ``latin``) that counts for both errors. A Han↔Han substitution
stays one character against one character, with its pinyin classes.

Readings come from the sentence, not the isolated character: pypinyin reads the whole
normalized sentence (its phrase dictionary resolves polyphones: 行 is háng in 银行 and xíng in
行走) and each character takes the reading at its position. Tones are TONE3 digits, the neutral
tone as 5, no tone sandhi.

**Insertions and deletions** of the sentence particles in ``PARTICLES`` count as ``particle``
(by character, without part-of-speech tagging: a deleted 地 in 地方 counts too). The other
deletions and insertions stay ``deletion`` / ``insertion``.

**Pinyin error rate**: each MER unit becomes a token — a Han character its syllable (toneless,
or with its tone), a word or number itself — and the two token sequences are aligned with the same
Levenshtein as MER (``asr_eval.metrics.align.align``), over the reference's units. A homophone
substitution is an MER error but no pinyin error; a tone substitution is an error only with tones.
"""

from __future__ import annotations

import multiprocessing as mp
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

from asr_eval.metrics.align import EN, NUM, align, alignment_pairs, chars, count_ops, mer_tokens, token_class
from asr_eval.text.chars import MULTI_TOKEN_RE

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


# ───────────────────────────── substitution classes ─────────────────────────────


@lru_cache(maxsize=8192)
def _canonical(text: str) -> str:
    from asr_eval.text.normalizer import opencc_t2s

    return opencc_t2s().convert(unicodedata.normalize("NFKC", text)).casefold()


def is_variant(ref: str, hyp: str) -> bool:
    """Two spellings of one character or word (Traditional/Simplified, full/half width, case)."""
    return ref != hyp and _canonical(ref) == _canonical(hyp)


def _numeral_system(text: str) -> str | None:
    """``digit`` (2, 2024, 12.5), ``han`` (二, 二零二四, 三点五) or None."""
    if not text:
        return None
    if text[0].isdigit() and all(c.isdigit() or c == "." for c in text):
        return "digit"
    if all(c in _CN_NUMERALS or c == "点" for c in text) and any(c in _CN_NUMERALS for c in text):
        return "han"
    return None


def _numeral_value(ch: str) -> int | None:
    if ch.isdigit():
        return unicodedata.digit(ch, None)
    return _CN_VALUES.get(ch)


def is_number_format(ref: str, hyp: str) -> bool:
    """Numerals of different writing systems (2 ↔ 二, 2024 ↔ 二零二四), or two Chinese spellings
    of the same digit (两/二, 〇/零, 幺/一). Two different numbers of one system (四 → 十, 7 → 8)
    are not a format difference and fall through to the phonetic classes."""
    a, b = _numeral_system(ref), _numeral_system(hyp)
    if a is None or b is None:
        return False
    if a != b:
        return True
    if a == "han" and len(ref) == len(hyp) == 1:
        va, vb = _numeral_value(ref), _numeral_value(hyp)
        return va is not None and va == vb
    return False


def is_latin(text: str) -> bool:
    """``text`` holds a Latin letter (a Latin word, or one letter)."""
    from asr_eval.text.chars import LATIN_RE

    return bool(LATIN_RE.search(text))


def classify_substitution(ref: str, hyp: str, ref_reading: str | None, hyp_reading: str | None) -> str:
    """The class of one substitution ``ref → hyp`` (units, or a word with what replaced it), with
    the readings of its sides (None off Han; module docstring for the order of the tests)."""
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
    """One substitution occurrence (MER units; a word with the units that replaced it) with the
    readings its sides had in their sentences (syllables space-separated; None off Han)."""

    ref: str
    hyp: str
    ref_pinyin: str | None
    hyp_pinyin: str | None
    cls: str


@dataclass
class UtteranceErrors:
    """The taxonomy of one utterance: ``counts`` over ``ALL_BUCKETS`` (sum = MER S + D + I), the
    substitutions with their readings, and the pinyin error counts (``py_n`` reference units;
    errors without and with tones)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ALL_BUCKETS, 0))
    confusions: list[Confusion] = field(default_factory=list)
    py_n: int = 0
    py_err: int = 0
    pyt_err: int = 0

    @property
    def errors(self) -> int:
        return sum(self.counts.values())


# ───────────────────────────── units ─────────────────────────────


def units(text: str) -> Sequence[str]:
    """The MER units of a normalized text (``align.mer_tokens``: Han characters, Latin words,
    numbers); text without digits or word letters is returned as its characters (the same units,
    aligned as a string: faster)."""
    if MULTI_TOKEN_RE.search(text):
        return mer_tokens(text)
    return chars(text)


def is_word(unit: str) -> bool:
    """A Latin word or a number (any unit longer than one character), not a Han character."""
    return len(unit) > 1 or token_class(unit) in (EN, NUM)


def join_units(us: Sequence[str]) -> str:
    """Units as text: a space between two words (``new york``), none next to Han characters."""
    out: list[str] = []
    prev = False
    for u in us:
        w = is_word(u)
        if out and w and prev:
            out.append(" ")
        out.append(u)
        prev = w
    return "".join(out)


def unit_readings(us: Sequence[str]) -> list[str | None]:
    """The reading of each unit in its sentence (``readings`` of the joined text): a Han
    character's syllable, None for words, numbers and characters without a reading."""
    if isinstance(us, str):
        return list(readings(us))
    rd = readings("".join(us))
    out: list[str | None] = []
    k = 0
    for u in us:
        out.append(rd[k] if len(u) == 1 else None)
        k += len(u)
    return out


def replacement_cap(us: Sequence[str]) -> int:
    """The most units that can have replaced these (a word and its neighbours in one edit): one
    per letter or digit, at least two — ``hello`` → up to 5 (哈喽: 2), ``2024`` → 4 (二零二四), ``cd``
    → 2. A longer run (a repetition loop after the word) stays insertions or deletions."""
    return max(2, sum(len(u) for u in us))


def _joined(rs: Sequence[str | None]) -> str | None:
    return " ".join(rs) if rs and all(rs) else None  # type: ignore[arg-type]


# ───────────────────────────── classification ─────────────────────────────

_Unit = tuple[str, "str | None"]  # a unit and its reading in its sentence
_Group = tuple[list[_Unit], list[_Unit], int]  # reference side, hypothesis side, MER errors it stands for


def _edit_blocks(ref: Sequence[str], hyp: Sequence[str]) -> list[list[tuple[str, _Unit, _Unit]]]:
    """The MER alignment's edits (op, reference unit, hypothesis unit), cut into blocks at every match."""
    rr, hr = unit_readings(ref), unit_readings(hyp)
    blocks: list[list[tuple[str, _Unit, _Unit]]] = []
    cur: list[tuple[str, _Unit, _Unit]] = []
    i = j = 0
    for op, r, h in alignment_pairs(ref, hyp, align(ref, hyp)):
        if op == "=":
            if cur:
                blocks.append(cur)
                cur = []
            i, j = i + 1, j + 1
            continue
        cur.append((op, (r, rr[i] if op != "I" else None), (h, hr[j] if op != "D" else None)))
        i += op != "I"
        j += op != "D"
    if cur:
        blocks.append(cur)
    return blocks


def _absorbing(block: list[tuple[str, _Unit, _Unit]]) -> list[_Group]:
    """A substituted word with the adjacent inserted units (reference side is a word) or deleted
    units (hypothesis side is a word) of its block; every other edit alone."""
    n = len(block)
    taken = [False] * n
    spans: dict[int, int] = {}
    for p, (op, (r, _), (h, _)) in enumerate(block):
        if op != "S" or taken[p] or not (is_word(r) or is_word(h)):
            continue
        absorb = ({"I"} if is_word(r) else set()) | ({"D"} if is_word(h) else set())
        room = replacement_cap([u for u in (r, h) if is_word(u)]) - 1
        lo, hi = p, p + 1
        while room and hi < n and not taken[hi] and block[hi][0] in absorb:
            hi, room = hi + 1, room - 1
        while room and lo > 0 and not taken[lo - 1] and block[lo - 1][0] in absorb:
            lo, room = lo - 1, room - 1
        taken[lo:hi] = [True] * (hi - lo)
        spans[lo] = hi
    out: list[_Group] = []
    k = 0
    while k < n:
        hi = spans.get(k, k + 1)
        items = block[k:hi]
        out.append(([x[1] for x in items if x[0] != "I"], [x[2] for x in items if x[0] != "D"], hi - k))
        k = hi
    return out


def _groups(block: list[tuple[str, _Unit, _Unit]]) -> list[_Group]:
    """One edit block as groups. When only one side holds words (the code-switching case: hello
    against 哈喽), the Han units before its first word and after its last pair one to one with the
    other side's first and last units, and the words in between take what is left between them —
    up to ``replacement_cap`` units, the rest stay insertions (deletions); otherwise (words on both
    sides, or one side too short) ``_absorbing``. Either way the groups' errors sum to the block's."""
    rs = [x[1] for x in block if x[0] != "I"]
    hs = [x[2] for x in block if x[0] != "D"]
    rw, hw = any(is_word(u) for u, _ in rs), any(is_word(u) for u, _ in hs)
    if rw == hw:
        return _absorbing(block)
    w, o = (rs, hs) if rw else (hs, rs)
    at = [k for k, (u, _) in enumerate(w) if is_word(u)]
    a, b = at[0], at[-1] + 1
    tail = len(w) - b
    rem = len(o) - a - tail
    if rem < 1:
        return _absorbing(block)
    take = min(rem, replacement_cap([u for u, _ in w[a:b]]))
    parts = ([([w[k]], [o[k]], 1) for k in range(a)] + [(w[a:b], o[a:a + take], max(b - a, take))]
             + [([], [o[a + k]], 1) for k in range(take, rem)]
             + [([w[b + k]], [o[a + rem + k]], 1) for k in range(tail)])
    return parts if rw else [(y, x, e) for x, y, e in parts]


def unit_edits(ref_norm: str, hyp_norm: str) -> list[tuple[str, str, str]]:
    """The edits of two normalized texts on MER units, grouped as the taxonomy groups them: ``('S',
    ref, hyp)`` (a Latin word or number with the units that replaced it is one: ``hello → 哈喽``),
    ``('D', unit, '')`` and ``('I', '', unit)`` — what the report's top confusions count."""
    ref, hyp = units(ref_norm), units(hyp_norm)
    out: list[tuple[str, str, str]] = []
    for block in _edit_blocks(ref, hyp):
        for rs, hs, _ in _groups(block):
            r, h = join_units([u for u, _ in rs]), join_units([u for u, _ in hs])
            out.append(("S" if r and h else "D" if r else "I", r, h))
    return out


def classify_units(ref: Sequence[str], hyp: Sequence[str]) -> UtteranceErrors:
    """The taxonomy and pinyin errors of two unit sequences (``units`` of normalized texts)."""
    out = UtteranceErrors(py_n=len(ref))
    if list(ref) == list(hyp):
        return out
    for block in _edit_blocks(ref, hyp):
        for rs, hs, n_err in _groups(block):
            if not hs:
                out.counts[PARTICLE if rs[0][0] in PARTICLES else DELETION] += n_err
            elif not rs:
                out.counts[PARTICLE if hs[0][0] in PARTICLES else INSERTION] += n_err
            else:
                r, h = join_units([u for u, _ in rs]), join_units([u for u, _ in hs])
                rp, hp = _joined([x for _, x in rs]), _joined([x for _, x in hs])
                cls = classify_substitution(r, h, rp, hp)
                out.counts[cls] += n_err
                out.confusions.append(Confusion(r, h, rp, hp, cls))
    for tones in (False, True):
        s, d, ins = _pinyin_ops(ref, hyp, tones)
        if tones:
            out.pyt_err = s + d + ins
        else:
            out.py_err = s + d + ins
    return out


def classify_pair(ref_norm: str, hyp_norm: str) -> UtteranceErrors:
    """The taxonomy of two normalized texts, aligned on MER units as the scorer aligns them for MER."""
    return classify_units(units(ref_norm), units(hyp_norm))


# ───────────────────────────── pinyin error rate ─────────────────────────────


def _pinyin_units(us: Sequence[str], tones: bool) -> list[str]:
    return [u if x is None else (x if tones else toneless(x)) for u, x in zip(us, unit_readings(us))]


def _pinyin_ops(ref: Sequence[str], hyp: Sequence[str], tones: bool) -> tuple[int, int, int]:
    rt, ht = _pinyin_units(ref, tones), _pinyin_units(hyp, tones)
    return count_ops(align(rt, ht)) if rt != ht else (0, 0, 0)


def pinyin_tokens(text: str, tones: bool = False) -> list[str]:
    """One token per MER unit of a normalized text: its syllable (toneless unless ``tones``) for a
    Han character with a reading, the unit itself otherwise (a word, a number)."""
    return _pinyin_units(units(text), tones)


def pinyin_counts(ref: str, hyp: str, tones: bool = False) -> tuple[int, int]:
    """(reference units, errors S + D + I) of the pinyin alignment of two normalized texts."""
    ru, hu = units(ref), units(hyp)
    return len(ru), sum(_pinyin_ops(ru, hu, tones))


def pinyin_error_rate(refs: Sequence[str], hyps: Sequence[str], tones: bool = False) -> float:
    """Pooled pinyin error rate of normalized pairs: Σ errors / Σ reference units."""
    n = e = 0
    for r, h in zip(refs, hyps, strict=True):
        a, b = pinyin_counts(r, h, tones)
        n, e = n + a, e + b
    return e / n if n else (0.0 if e == 0 else float("inf"))


# ───────────────────────────── many utterances ─────────────────────────────

CHUNK = 20_000            # pairs per worker task
PARALLEL_MIN = 3 * CHUNK  # below this, worker start-up costs more than it saves


def _classify_chunk(pairs: Sequence[tuple[str, str]]) -> list[UtteranceErrors]:
    return [classify_pair(r or "", h or "") for r, h in pairs]


def classify_many(pairs: Sequence[tuple[str, str]], workers: int | None = None) -> list[UtteranceErrors]:
    """``classify_pair`` of many (normalized reference, normalized hypothesis) pairs, over worker
    processes for big inputs like ``metrics.score.score_many`` (the readings' cache is per process)."""
    from asr_eval.metrics.score import default_workers

    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(pairs) < PARALLEL_MIN:
        return _classify_chunk(pairs)
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    out: list[UtteranceErrors] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futs = [pool.submit(_classify_chunk, list(pairs[a:a + CHUNK])) for a in range(0, len(pairs), CHUNK)]
        for f in futs:
            out += f.result()
    return out


def shares(counts: dict[str, int]) -> dict[str, float | None]:
    """Each bucket's share of the errors (None without errors)."""
    total = sum(counts.values())
    return {k: (v / total if total else None) for k, v in counts.items()}
