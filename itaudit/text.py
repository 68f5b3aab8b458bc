"""Words and word n-gram hashes: the one tokenizer and the one n-gram hasher of itaudit.

A *word* is a maximal run of Unicode word characters as the Rust `regex` crate (used by polars)
defines them: letters, marks, decimal digits and connector punctuation (`\\w+`, pattern `WORD`).
Python's `re` differs on non-ASCII text (it splits Devanagari words at every vowel sign), so
every function here uses one engine: polars for non-ASCII text and for bulk work, and Python's
`re` only on ASCII strings, where both engines agree (tested).

Patterns (pick one by name, never write a new word regex elsewhere):
- `WORD`: `\\w+` (exact-span index, duplicate keys);
- `ALNUM`: runs of letters/digits, `_` separates words (contamination's n-gram matching);
- `WORD_OR_PUNCT`: words with inner apostrophes ("don't") or runs of punctuation (token layout).

With `lower=True`, `words` and `word_lists` lowercase the text before matching (polars'
lowercasing on non-ASCII text); `word_spans` matches the original text and lowercases each word
with `str.lower`, so offsets refer to the original string. The two agree except on the few
characters whose lowercase differs between Python's and Rust's Unicode tables.

n-grams: `word_codes` gives each word a 64-bit code (polars' string hash), `ngram_hashes` hashes
every window of n consecutive codes (position-dependent odd multipliers summed with uint64
wrap-around, then mixed), and `shingles` keeps the top 32 bits, sorted and unique.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import polars as pl

WORD = r"\w+"
ALNUM = r"[^\W_]+"
WORD_OR_PUNCT = r"\w+(?:['’]\w+)*|[^\w\s]+"

# ASCII twins for Python's re: `\s` spelled out, because Python counts \x1c-\x1f as space and
# Rust does not.
_ASCII = {p: re.compile(p.replace(r"\s", r"\t\n\x0b\x0c\r "), re.ASCII) for p in (WORD, ALNUM, WORD_OR_PUNCT)}

_GOLDEN = 0x9E3779B97F4A7C15


def _mult(j: int) -> np.uint64:
    """The odd multiplier of window position j."""
    return np.uint64((_GOLDEN * (j + 1)) & 0xFFFFFFFFFFFFFFFF) | np.uint64(1)


def _ascii_re(pattern: str) -> re.Pattern[str]:
    rx = _ASCII.get(pattern)
    if rx is None:
        rx = _ASCII[pattern] = re.compile(pattern.replace(r"\s", r"\t\n\x0b\x0c\r "), re.ASCII)
    return rx


def words(text: str | None, pattern: str = WORD, *, lower: bool = True) -> list[str]:
    """The words of one text (lowercased unless `lower=False`)."""
    if not text:
        return []
    if text.isascii():
        return _ascii_re(pattern).findall(text.lower() if lower else text)
    return word_lists([text], pattern, lower=lower)[0].to_list()


def word_spans(text: str | None, pattern: str = WORD, *, lower: bool = True) -> list[tuple[str, int, int]]:
    """(word, start, end) of each word; offsets are characters of the original `text`."""
    if not text:
        return []
    if text.isascii():
        return [(m.group().lower() if lower else m.group(), m.start(), m.end()) for m in _ascii_re(pattern).finditer(text)]
    raw = pl.Series([text]).str.extract_all(pattern).to_list()[0] or []
    out = []
    pos = 0
    for w in raw:   # the gap before a match holds no character a match can start with: find is exact
        s = text.find(w, pos)
        pos = s + len(w)
        out.append((w, s, pos))
    return [(w.lower(), s, e) for w, s, e in out] if lower else out


def word_lists(texts: Sequence[str | None] | pl.Series, pattern: str = WORD, *, lower: bool = True) -> pl.Series:
    """Words of many texts at once (vectorised): a list[str] Series, [] for null/empty texts."""
    s = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.Utf8)
    s = s.cast(pl.Utf8).fill_null("")
    if lower:
        s = s.str.to_lowercase()
    return s.str.extract_all(pattern).fill_null([])


def word_codes(lists: pl.Series, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 code of every word, concatenated; int64 word count per text) of a list[str] Series."""
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = lists.explode().drop_nulls()
    codes = flat.hash(seed=seed).to_numpy().astype(np.uint64, copy=False) if len(flat) else np.zeros(0, np.uint64)
    return codes, lengths


def texts_codes(texts: Sequence[str | None] | pl.Series, pattern: str = WORD, *, lower: bool = True,
                seed: int = 5, chunk: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """`word_codes(word_lists(texts))`, in chunks of `chunk` texts to bound the memory of word lists."""
    n = len(texts)
    codes, lengths = [], []
    for c0 in range(0, n, chunk):
        part = texts[c0:c0 + chunk]
        c, ln = word_codes(word_lists(part, pattern, lower=lower), seed)
        codes.append(c)
        lengths.append(ln)
    if not lengths:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    return np.concatenate(codes), np.concatenate(lengths)


def ngram_hashes(codes: np.ndarray, n: int) -> np.ndarray:
    """uint64 hash of every window of `n` consecutive codes (len(codes) - n + 1 of them; none when
    fewer than n). Order-sensitive; O(len) memory."""
    if n < 1:
        raise ValueError(f"n-gram length must be >= 1, got {n}")
    codes = np.asarray(codes, dtype=np.uint64)
    if len(codes) < n:
        return np.zeros(0, dtype=np.uint64)
    m = len(codes) - n + 1
    h = np.full(m, n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h += codes[j:j + m] * _mult(j)
        h ^= h >> np.uint64(31)
        h *= np.uint64(0xBF58476D1CE4E5B9)
    return h


def shingles(codes: np.ndarray, n: int = 5) -> np.ndarray:
    """Sorted unique 32-bit hashes of the n-word shingles of one text's codes (a text shorter than
    `n` words is one shingle; an empty text has none)."""
    if len(codes) == 0:
        return np.zeros(0, dtype=np.uint32)
    return np.unique((ngram_hashes(codes, min(n, len(codes))) >> np.uint64(32)).astype(np.uint32))
