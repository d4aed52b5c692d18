"""Character overlap of a text with a body of training texts: exact match, longest shared
character n-gram, share of its character n-grams found — all from one suffix array.

``TextIndex`` joins the training texts with a separator no normalized text contains, so no match
crosses two texts, and sorts the suffixes once (prefix doubling on numpy arrays: O(N log N) per
round, a handful of rounds for natural text). For every position i of a query, the longest prefix
of ``query[i:]`` that occurs in the training texts (its *matching statistic*) comes from a binary
search among the sorted suffixes: the best match is a neighbour of the query suffix's insertion
point. Then

- the longest shared n-gram is the largest matching statistic;
- an n-gram starting at i occurs in the training texts iff the matching statistic at i is ≥ n.

A query of m characters costs O(m log N) slice comparisons; memory is a few int64 arrays of N
(the characters of all training texts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

SEP = "\n"  # never inside a normalized text (the normalizer joins batches on it)
NGRAM = 8
DEFAULT_THRESHOLD = 0.5
EXACT, OVERLAP, CLEAN = "exact", "overlap", "clean"


def suffix_array(text: str) -> np.ndarray:
    """Start positions of the suffixes of ``text`` in code-point order (prefix doubling)."""
    n = len(text)
    if n == 0:
        return np.zeros(0, np.int64)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    _, rank = np.unique(codes, return_inverse=True)
    rank = rank.astype(np.int64)
    k = 1
    while True:
        second = np.zeros(n, np.int64)
        second[: n - k] = rank[k:] + 1  # 0: past the end (sorts first)
        key = rank * (n + 1) + second
        sa = np.argsort(key, kind="stable")
        sk = key[sa]
        new = np.empty(n, np.int64)
        new[sa] = np.concatenate(([0], np.cumsum(sk[1:] != sk[:-1])))
        rank = new
        if rank[sa[-1]] == n - 1 or k >= n:
            return sa
        k *= 2


def _lcp(a: str, b: str) -> int:
    k = min(len(a), len(b))
    i = 0
    while i < k and a[i] == b[i]:
        i += 1
    return i


class TextIndex:
    """The training texts, searchable for shared substrings (module docstring)."""

    def __init__(self, texts: Iterable[str]) -> None:
        kept = [t for t in texts if t]
        self.texts = frozenset(kept)
        self.n_texts = len(kept)
        self.text = SEP.join(kept) + SEP if kept else ""
        self.sa: list[int] = suffix_array(self.text).tolist()

    @property
    def n_chars(self) -> int:
        return len(self.text) - self.n_texts

    def matching_lengths(self, query: str) -> list[int]:
        """For each position i, the length of the longest prefix of ``query[i:]`` found in the texts."""
        text, sa = self.text, self.sa
        out = []
        for i in range(len(query)):
            s = query[i:]
            m = len(s)
            lo, hi = 0, len(sa)
            while lo < hi:  # first suffix >= s
                mid = (lo + hi) // 2
                p = sa[mid]
                if text[p:p + m] < s:
                    lo = mid + 1
                else:
                    hi = mid
            best = 0
            for j in (lo - 1, lo):
                if 0 <= j < len(sa):
                    p = sa[j]
                    best = max(best, _lcp(text[p:p + m], s))
            out.append(best)
        return out


@dataclass(frozen=True)
class Overlap:
    """One evaluation text against the training texts."""

    exact: bool
    longest_ngram: int
    ngram_share: float | None  # share of its character n-grams found (None: shorter than n)
    flag: str  # 'exact' | 'overlap' | 'clean'


def overlap(index: TextIndex, text: str, n: int = NGRAM, threshold: float = DEFAULT_THRESHOLD) -> Overlap:
    """Exact match, longest shared n-gram and n-gram share of one normalized text (no spaces);
    flagged ``exact``, else ``overlap`` when the share is at least ``threshold``, else ``clean``.
    An empty text is clean; a text shorter than ``n`` has no share and is clean unless exact."""
    if not text:
        return Overlap(False, 0, None, CLEAN)
    ms = index.matching_lengths(text) if index.sa else [0] * len(text)
    exact = text in index.texts
    k = len(text) - n + 1
    share = sum(1 for v in ms[:k] if v >= n) / k if k > 0 else None
    flag = EXACT if exact else OVERLAP if share is not None and share >= threshold else CLEAN
    return Overlap(exact, max(ms), share, flag)


def overlaps(index: TextIndex, texts: Sequence[str], n: int = NGRAM,
             threshold: float = DEFAULT_THRESHOLD) -> list[Overlap]:
    return [overlap(index, t, n, threshold) for t in texts]
