"""Alignment and error counting on normalized text (rapidfuzz Levenshtein underneath).

Three token levels, one alignment engine:
- CER: every non-space character (spaces are never counted);
- MER: WeNet compute-wer tokens: each CJK character, each Latin word, each number;
- WER: whitespace tokens (meaningless on unsegmented Chinese; kept for completeness).

rapidfuzz's opcodes on Python strings are C++ fast; token lists are aligned as lists of
hashables (no token-to-character mapping, so no collisions are possible).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein

from asr_eval.text.chars import HAN, LATIN_RE, MULTI_TOKEN_RE, TOKEN_RE
from asr_eval.text.numbers import NUMERAL_RUN_RE, numeral_spans

ZH, EN, NUM, OTHER = 0, 1, 2, 3
CLASS_NAMES = ("zh", "en", "num", "other")
_ALL_HAN = re.compile(f"[{HAN}]*")
_UNSAFE_JSON = re.compile(r'["\\\x00-\x1f\u2028\u2029]')
Counts = tuple[int, int, int, int]  # n, substitutions, deletions, insertions


def chars(text: str) -> str:
    """The CER units of a normalized text: its characters without whitespace."""
    return "".join(text.split()) if " " in text or not text.isprintable() else text


def mer_tokens(text: str) -> list[str]:
    """MER tokens: CJK characters, Latin words, numbers (12.5, 50%), other single characters."""
    return TOKEN_RE.findall(text)


def token_class(tok: str) -> int:
    """Mandarin / English / Number / Other class of one MER token (Chinese numerals: see ref_classes)."""
    c = tok[0]
    if "0" <= c <= "9":
        return NUM
    if _ALL_HAN.fullmatch(c):
        return ZH
    return EN if LATIN_RE.match(c) else OTHER


def ref_classes(text: str, idioms: tuple[str, ...] = ()) -> tuple[list[str], list[int]]:
    """MER tokens of a reference and their classes. Han characters inside a Chinese numeral that
    the strict numeral grammar accepts (三十, 二零二四, 百分之五十; not 一起, 万一) count as Number."""
    spans = numeral_spans(text, idioms) if NUMERAL_RUN_RE.search(text) else []
    if not MULTI_TOKEN_RE.search(text):  # one token per character
        toks = [c for c in text if not c.isspace()]
        if _ALL_HAN.fullmatch(text):
            classes = [ZH] * len(toks)
            for a, b in spans:  # no spaces, so character and token positions coincide
                classes[a:b] = [NUM] * (b - a)
            return toks, classes
    toks, classes = [], []
    for m in TOKEN_RE.finditer(text):
        tok = m.group()
        cls = token_class(tok)
        if cls == ZH and spans and any(a <= m.start() < b for a, b in spans):
            cls = NUM
        toks.append(tok)
        classes.append(cls)
    return toks, classes


def count_ops(ops: Sequence[tuple[str, int, int, int, int]]) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of rapidfuzz opcodes."""
    s = d = i = 0
    for tag, i1, i2, j1, j2 in ops:
        if tag == "replace":
            s += i2 - i1
        elif tag == "delete":
            d += i2 - i1
        elif tag == "insert":
            i += j2 - j1
    return s, d, i


def align(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[str, int, int, int, int]]:
    """Levenshtein opcodes (tag, i1, i2, j1, j2) of two strings or token lists."""
    return Levenshtein.opcodes(ref, hyp).as_list()


def alignment_pairs(ref: Sequence[str], hyp: Sequence[str], ops) -> list[tuple[str, str, str]]:
    """Per-token alignment [(op, ref_tok, hyp_tok)], op in '=', 'S', 'D', 'I' ('' for the missing side)."""
    out: list[tuple[str, str, str]] = []
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            out += [("=", c, c) for c in ref[i1:i2]]
        elif tag == "replace":
            out += [("S", a, b) for a, b in zip(ref[i1:i2], hyp[j1:j2])]
        elif tag == "delete":
            out += [("D", a, "") for a in ref[i1:i2]]
        else:
            out += [("I", "", b) for b in hyp[j1:j2]]
    return out


class _Entries(dict):
    """str.translate table: character -> its JSON alignment entry, filled on first use."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.fmt = fmt

    def __missing__(self, cp: int) -> str:
        self[cp] = entry = self.fmt.format(chr(cp))
        return entry


_EQ, _DEL, _INS = _Entries('["=","{0}","{0}"],'), _Entries('["D","{0}",""],'), _Entries('["I","","{0}"],')


def alignment_json(ref: str, hyp: str, ops) -> str:
    """``json.dumps(alignment_pairs(...))`` built with str.translate: the hot path of rescoring."""
    if _UNSAFE_JSON.search(ref) or _UNSAFE_JSON.search(hyp):
        return json.dumps(alignment_pairs(ref, hyp, ops), ensure_ascii=False)
    out = []
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            out.append(ref[i1:i2].translate(_EQ))
        elif tag == "replace":
            out += [f'["S","{a}","{b}"],' for a, b in zip(ref[i1:i2], hyp[j1:j2])]
        elif tag == "delete":
            out.append(ref[i1:i2].translate(_DEL))
        else:
            out.append(hyp[j1:j2].translate(_INS))
    return "[" + "".join(out)[:-1] + "]"


def class_errors(classes: Sequence[int], hyp_tokens: Sequence[str], ops) -> list[int]:
    """Errors per class (zh, en, num, other) from a MER alignment.

    Substitutions and deletions count against the class of the reference token. An insertion
    has no reference token; it goes to a neighbouring reference token's class: the neighbour
    (before or after the insertion point) whose class equals the inserted token's class if
    there is one, else the preceding reference token, else the following one; with an empty
    reference, to the inserted token's own class. So the four counts always sum to S+D+I.
    """
    err = [0, 0, 0, 0]
    n = len(classes)
    for tag, i1, i2, j1, j2 in ops:
        if tag == "replace" or tag == "delete":
            for c in classes[i1:i2]:
                err[c] += 1
        elif tag == "insert":
            prev = classes[i1 - 1] if i1 > 0 else None
            nxt = classes[i1] if i1 < n else None
            for tok in hyp_tokens[j1:j2]:
                own = token_class(tok)
                if own == prev or own == nxt or (prev is None and nxt is None):
                    err[own] += 1
                else:
                    err[prev if prev is not None else nxt] += 1
    return err


def mer_counts(ref: str, hyp: str, ref_c: str, hyp_c: str, cer_ops, cer: Counts,
               idioms: tuple[str, ...] = ()) -> tuple[Counts, list[int], list[int]]:
    """MER counts (n, S, D, I), and per-class reference tokens and errors (zh, en, num, other).

    When neither side has a digit or a word letter, MER tokens are exactly the CER characters,
    so the CER alignment is reused (the common case of pure-Chinese text).
    """
    if MULTI_TOKEN_RE.search(ref) or MULTI_TOKEN_RE.search(hyp):
        ref_toks, classes = ref_classes(ref, idioms)
        hyp_toks: Sequence[str] = mer_tokens(hyp)
        ops = align(ref_toks, hyp_toks)
        counts = (len(ref_toks), *count_ops(ops))
    elif ref_c and _ALL_HAN.fullmatch(ref_c) and not NUMERAL_RUN_RE.search(ref_c):
        # all Mandarin: every error, insertions included, is a Mandarin error
        return cer, [len(ref_c), 0, 0, 0], [cer[1] + cer[2] + cer[3], 0, 0, 0]
    else:
        hyp_toks, ops, counts = hyp_c, cer_ops, cer
        classes = ref_classes(ref_c, idioms)[1]
    n_cls = [0, 0, 0, 0]
    for c in classes:
        n_cls[c] += 1
    return counts, n_cls, class_errors(classes, hyp_toks, ops)


def wer_counts(ref: str, hyp: str) -> Counts:
    """Counts on whitespace tokens of the normalized texts."""
    rw, hw = ref.split(), hyp.split()
    if len(rw) <= 1 and len(hw) <= 1:  # unsegmented Chinese: one 'word' per utterance
        if rw and hw:
            return 1, int(rw[0] != hw[0]), 0, 0
        return len(rw), 0, len(rw), len(hw)
    s, d, i = count_ops(align(rw, hw))
    return len(rw), s, d, i
