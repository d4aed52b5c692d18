"""Character classes shared by the normalizer and the metrics (regex fragments).

One place defines which code points count as Han, as "written without spaces" and as a Latin
letter, so that normalization, MER tokenization and the per-class breakdown agree.
"""

from __future__ import annotations

import re

# CJK ideographs: Extension A, the URO, compatibility ideographs, Extensions B..H, plus 〇
# (U+3007, the ideographic zero used in years such as 二〇二四).
HAN = "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
# Kana and bopomofo are also written without spaces and score one token per character.
KANA = "\u3040-\u30ff\u3100-\u312f\u31f0-\u31ff"
NOSPACE = HAN + KANA
# A letter of a "word" script: word characters that are not digits, "_" or Han/kana.
WORD_LETTER = rf"[^\W\d_{NOSPACE}]"
LATIN_LETTER = "a-zA-Z\u00c0-\u024f"

HAN_RE = re.compile(f"[{HAN}]")
LATIN_RE = re.compile(f"[{LATIN_LETTER}]")

# MER / WeNet compute-wer tokens: a digit run (with decimal points: 12.5, 1.2.3), a word of a
# spaced script (Latin, Cyrillic, Hangul, ...; apostrophes inside: don't), or any other single
# non-space character (each Han/kana character, leftover symbols).
TOKEN_RE = re.compile(rf"[0-9]+(?:\.[0-9]+)*|{WORD_LETTER}+(?:'{WORD_LETTER}+)*|\S")
# True when a text can contain a multi-character token, i.e. MER tokens may differ from characters.
MULTI_TOKEN_RE = re.compile(rf"[0-9]|{WORD_LETTER}")
