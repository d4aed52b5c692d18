"""Number policies of the normalizer: Arabic digits <-> Chinese numerals.

``digits_to_chinese`` reads every digit run (the direction of the default profile): a digit
is always a number, so this direction can never damage a word. ``chinese_to_digits`` is the
risky direction (一起, 万一, 一点, 十分 are words, not numbers); it converts only runs that
parse under a strict numeral grammar and are at least two characters long, never idioms from
the profile's exception list. See docs/text_metrics.md for the policy discussion.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache

DIGITS = "零一二三四五六七八九"
_SEQ = str.maketrans("0123456789", DIGITS)
_CN_DIGIT = {"零": 0, "〇": 0, "一": 1, "幺": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5,
             "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNIT = {"十": 10, "百": 100, "千": 1000}
MAX_CARDINAL_DIGITS = 8  # longer digit runs (ids, phone numbers) are read digit by digit


# ───────────────────────── digits → Chinese ─────────────────────────


def read_digits(s: str) -> str:
    """Digit by digit: '2024' -> 二零二四 (years, codes, phone numbers)."""
    return s.translate(_SEQ)


def _section(n: int) -> str:
    """0 < n < 10000 in Chinese, with 零 for inner gaps: 1005 -> 一千零五."""
    out: list[str] = []
    gap = False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d = n // value % 10
        if d == 0:
            gap = bool(out)
            continue
        if gap:
            out.append("零")
            gap = False
        out.append(DIGITS[d] + unit)
    return "".join(out)


def int_to_chinese(n: int) -> str:
    """Cardinal reading of a non-negative integer: 110 -> 一百一十, 20000 -> 两万, 100010 -> 十万零一十."""
    if n == 0:
        return "零"
    if n >= 10**16:  # beyond 万亿: nobody reads these as cardinals
        return read_digits(str(n))
    groups = []
    while n:
        groups.append(n % 10000)
        n //= 10000
    big = ("", "万", "亿", "万亿")
    out = ""
    pending_zero = False
    for i in range(len(groups) - 1, -1, -1):
        sec = groups[i]
        if sec == 0:
            pending_zero = bool(out)
            continue
        if out and (pending_zero or sec < 1000):
            out += "零"
        out += _section(sec) + big[i]
        pending_zero = False
    if out.startswith("一十"):  # 10..19 at the front are read 十, 十五 (not 一十五)
        out = out[1:]
    if out[0] == "二" and len(out) > 1 and out[1] in "千万亿":  # spoken 两千, 两万, 两亿
        out = "两" + out[1:]
    return out


def number_to_chinese(s: str) -> str:
    """'12.5' -> 十二点五; integer part cardinal (or digit by digit if very long / zero-led)."""
    whole, _, frac = s.partition(".")
    head = read_digits(whole) if _read_as_sequence(whole) else int_to_chinese(int(whole))
    return head + ("点" + read_digits(frac) if frac else "")


def _read_as_sequence(digits: str) -> bool:
    return len(digits) > MAX_CARDINAL_DIGITS or (len(digits) > 1 and digits[0] == "0")


_NUM = r"[0-9]+(?:\.[0-9]+)?"
# Order matters: the most specific context wins (alternation is tried left to right).
_DIGIT_RULES = re.compile(
    rf"(?P<pct>{_NUM})%"                                            # 50% -> 百分之五十
    r"|(?P<year>[0-9]{4})(?=年)"                                     # 2024年 -> 二零二四年
    r"|(?<![0-9])(?P<y>[0-9]{4})(?P<sep>[-/.])(?P<mo>1[0-2]|0?[1-9])(?P=sep)(?P<d>3[01]|[12][0-9]|0?[1-9])(?![0-9])"
    #                                                                   2024-05-01 -> 二零二四年五月一日
    r"|(?<![0-9:])(?P<hh>[0-9]{1,2}):(?P<mm>[0-5][0-9])(?![0-9:])"  # 10:30 -> 十点三十
    r"|(?<![0-9:])(?P<ra>[0-9]+):(?P<rb>[0-9]+)(?![0-9:])"          # 3:2 -> 三比二
    r"|(?<![0-9/])(?P<fa>[0-9]+)/(?P<fb>[0-9]+)(?![0-9/])"          # 1/2 -> 二分之一
    r"|(?P<tel>[0-9]+(?:-[0-9]+)+)"                                  # 138-0013-8000, 5-10
    r"|(?<=[A-Za-z])(?P<code>[0-9]+)"                                # ABC123, GPT4: digit by digit
    rf"|(?P<num>{_NUM})"
)
_THOUSANDS = re.compile(r"(?<![0-9,])[0-9]{1,3}(?:,[0-9]{3})+(?![0-9]|,[0-9])")


def _digit_rule(m: re.Match[str]) -> str:
    if m["pct"] is not None:
        return "百分之" + number_to_chinese(m["pct"])
    if m["year"] is not None:
        return read_digits(m["year"])
    if m["y"] is not None:
        return read_digits(m["y"]) + "年" + int_to_chinese(int(m["mo"])) + "月" + int_to_chinese(int(m["d"])) + "日"
    if m["hh"] is not None:
        hh, mm = int(m["hh"]), m["mm"]
        if hh > 24:
            return number_to_chinese(m["hh"]) + "比" + number_to_chinese(mm)
        minutes = "" if mm == "00" else "零" + DIGITS[int(mm[1])] if mm[0] == "0" else int_to_chinese(int(mm))
        return ("两" if hh == 2 else int_to_chinese(hh)) + "点" + minutes
    if m["ra"] is not None:
        return number_to_chinese(m["ra"]) + "比" + number_to_chinese(m["rb"])
    if m["fa"] is not None:
        return number_to_chinese(m["fb"]) + "分之" + number_to_chinese(m["fa"])
    if m["tel"] is not None:
        groups = m["tel"].split("-")
        if len(groups) >= 3 or sum(map(len, groups)) >= 10:  # phone numbers: digit by digit
            return read_digits("".join(groups))
        return "到".join(number_to_chinese(g) for g in groups)  # 5-10个 is read 五到十个
    if m["code"] is not None:
        return read_digits(m["code"])
    return number_to_chinese(m["num"])


def strip_thousands(text: str) -> str:
    """1,000,000 -> 1000000 (a thousands separator is not a pause between two numbers)."""
    return _THOUSANDS.sub(lambda m: m.group().replace(",", ""), text) if "," in text else text


_DIGIT = re.compile("[0-9]")


def digits_to_chinese(text: str) -> str:
    """Rewrite every ASCII digit run as Chinese; context picks the reading (year, %, time, ratio).

    The rule regex (lookbehinds, many alternatives) is slow to scan, so on a joined batch it
    runs only on the lines that contain a digit."""
    m = _DIGIT.search(text)
    out, pos = [], 0
    while m:
        a = text.rfind("\n", 0, m.start()) + 1
        b = text.find("\n", m.start())
        b = len(text) if b < 0 else b
        out += [text[pos:a], _DIGIT_RULES.sub(_digit_rule, strip_thousands(text[a:b]))]
        pos = b
        m = _DIGIT.search(text, b)
    return "".join(out) + text[pos:] if out else text


# ───────────────────────── Chinese → digits ─────────────────────────

_NUMERAL = "零〇一幺二两三四五六七八九十百千万亿"
_SEQ_DIGITS = "零〇一幺二两三四五六七八九"
# A numeral run, optionally with a decimal part (十二点五) and a percent prefix (百分之五十).
# A lone numeral character (一 in 一起, 十 in 十分) never converts, so it is not even matched
# unless a decimal part or 百分之 follows/precedes it: keeps the common case cheap.
NUMERAL_RUN_RE = re.compile(
    rf"(?P<pct>百分之)?(?P<int>(?(pct)[{_NUMERAL}]+|[{_NUMERAL}](?:[{_NUMERAL}]+|(?=点[{_SEQ_DIGITS}]))))"
    rf"(?:点(?P<frac>[{_SEQ_DIGITS}]+))?")


def _parse_section(s: str, leading: bool) -> int | None:
    """A section below 10000 ('三千零五', '十五', '三百五' = 350). None if not well formed."""
    value, last_unit, digit, zero = 0, 10000, None, False
    for ch in s:
        if ch in _CN_DIGIT:
            if digit is not None:  # two digits in a row: 二三 (approximation) or 九九 (idiom)
                return None
            if _CN_DIGIT[ch] == 0:
                zero = True
                continue
            digit = _CN_DIGIT[ch]
        else:
            unit = _CN_UNIT.get(ch, 10000)  # a second 万/亿 (一万一万) is not well formed
            if unit >= last_unit:
                return None
            if digit is None:
                if ch != "十" or value or zero or not leading:  # only a leading 十 stands alone
                    return None
                digit = 1
            value += digit * unit
            last_unit, digit, zero = unit, None, False
    if digit is not None:
        # colloquial trailing digit: 三百五 = 350, 两千三 = 2300; after 零 or 十 it is units
        value += digit * (last_unit // 10 if not zero and 100 <= last_unit < 10000 else 1)
    elif zero and value == 0:
        return None
    return value


def parse_chinese_int(s: str) -> int | None:
    """Strict parse of a numeral with units (十/百/千/万/亿); None if not well formed."""
    if not s or s[0] not in _CN_DIGIT and s[0] != "十":
        return None  # 万一, 千万 (as in 千万别) start with a unit: not numbers
    total = 0
    rest = s
    for big, scale in (("亿", 10**8), ("万", 10**4)):
        if big in rest:
            head, rest = rest.split(big, 1)
            v = _parse_big(head, total == 0)
            if v is None or v == 0:
                return None
            total += v * scale
            if len(rest) == 1 and rest in _CN_DIGIT and rest not in "零〇":  # 一万五 = 15000
                return total + _CN_DIGIT[rest] * scale // 10
    if rest:
        v = _parse_section(rest, total == 0)
        if v is None:
            return None
        total += v
    return total


def _parse_big(head: str, leading: bool) -> int | None:
    if "万" in head:  # 一万亿
        hi, lo = head.split("万", 1)
        h = _parse_section(hi, leading)
        low = _parse_section(lo, False) if lo else 0
        return None if h is None or low is None else h * 10**4 + low
    return _parse_section(head, leading) if head else None


@cache
def _idiom_re(idioms: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(map(re.escape, sorted(idioms, key=len, reverse=True)))) if idioms else None


def _converted_runs(text: str, idioms: tuple[str, ...]) -> Iterator[tuple[re.Match[str], str]]:
    """Numeral runs of ``text`` that convert, with their digits; idioms and words are skipped."""
    pat = _idiom_re(idioms)
    protected = [m.span() for m in pat.finditer(text)] if pat else []
    for m in NUMERAL_RUN_RE.finditer(text):
        if any(a < m.end() and m.start() < b for a, b in protected):
            continue
        digits = _run_digits(m, text[m.end():m.end() + 1])
        if digits is not None:
            yield m, digits


def _run_digits(m: re.Match[str], following: str) -> str | None:
    """Digits for a numeral-run match, or None when it must stay as written (a word like 一起)."""
    run = m["int"]
    if any(c in _CN_UNIT or c in "万亿" for c in run):
        value = parse_chinese_int(run)
        if value is None or (len(run) < 2 and not m["frac"] and not m["pct"]):
            return None
        head = str(value)
    else:
        # digit sequences: 二零二四 -> 2024, but 五六 (an approximation) and 一一 stay
        long_enough = len(run) >= 3 or (len(run) == 2 and following == "年") or m["frac"] or m["pct"]
        if not long_enough or "两" in run:
            return None
        head = "".join(str(_CN_DIGIT[c]) for c in run)
    frac = "." + "".join(str(_CN_DIGIT[c]) for c in m["frac"]) if m["frac"] else ""
    return head + frac + ("%" if m["pct"] else "")


def chinese_to_digits(text: str, idioms: tuple[str, ...] = ()) -> str:
    """Rewrite well-formed Chinese numerals as digits; leaves 一起, 万一, 十分, 一点 alone."""
    out: list[str] = []
    pos = 0
    for m, digits in _converted_runs(text, idioms):
        start, end = m.span()
        # keep digit runs apart: 5三十 must not become 530
        before = " " if start and (text[start - 1].isdigit() or text[start - 1] == ".") else ""
        after = " " if end < len(text) and text[end].isdigit() else ""
        out += [text[pos:start], before, digits, after]
        pos = end
    return "".join(out) + text[pos:] if out else text


def numeral_spans(text: str, idioms: tuple[str, ...] = ()) -> list[tuple[int, int]]:
    """Character spans of the Chinese numerals ``chinese_to_digits`` would convert."""
    return [m.span() for m, _ in _converted_runs(text, idioms)]
