"""The one tokenizer and n-gram hasher (itaudit.text)."""

from __future__ import annotations

import random
import string

import numpy as np
import polars as pl
import pytest

from itaudit import text as T

PATTERNS = (T.WORD, T.ALNUM, T.WORD_OR_PUNCT)


def _polars_words(t: str, pattern: str) -> list[str]:
    return pl.Series([t]).str.to_lowercase().str.extract_all(pattern).to_list()[0] or []


def test_ascii_fast_path_agrees_with_polars_engine():
    # Python's re runs on ASCII text; it must tokenize exactly as polars (Rust regex) does,
    # including control characters Python would call space (\x1c-\x1f) and underscores.
    rng = random.Random(0)
    alphabet = string.printable + "\x1c\x1d\x1f\x00'_"
    for _ in range(2000):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 50)))
        for p in PATTERNS:
            assert T.words(t, p) == _polars_words(t, p), (p, t)
            assert [w for w, _, _ in T.word_spans(t, p)] == T.words(t, p)


def test_words_patterns_and_unicode():
    assert T.words("Don't stop_now, 42x!") == ["don", "t", "stop_now", "42x"]
    assert T.words("Don't stop_now, 42x!", T.ALNUM) == ["don", "t", "stop", "now", "42x"]
    assert T.words("Don't stop_now, 42x!", T.WORD_OR_PUNCT, lower=False) == ["Don't", "stop_now", ",", "42x", "!"]
    # Devanagari vowel signs are marks: one word each (Python's re would split them apart)
    assert T.words("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert T.words(None) == [] and T.words("") == []


def test_word_spans_point_into_the_original_text():
    t = "İstanbul ist groß — ΣΑΣ; हिन्दी_x"   # İ lowercases to two characters
    for p in PATTERNS:
        spans = T.word_spans(t, p, lower=False)
        assert spans and all(t[s:e] == w for w, s, e in spans)
        low = T.word_spans(t, p)
        assert [(s, e) for _, s, e in low] == [(s, e) for _, s, e in spans]
        assert [w for w, _, _ in low] == T.words(t, p)


def test_word_lists_bulk_matches_per_string():
    texts = ["A b c", None, "", "naïve café_x", "हिन्दी भाषा"]
    for p in PATTERNS:
        assert T.word_lists(texts, p).to_list() == [T.words(t, p) for t in texts]


def test_texts_codes_chunks_and_equal_words_equal_codes():
    texts = ["the cat sat", None, "The CAT", "dog"]
    codes, lengths = T.texts_codes(texts, chunk=2)
    assert lengths.tolist() == [3, 0, 2, 1]
    assert codes[0] == codes[3] and codes[1] == codes[4]       # lowercased: same words, same codes
    assert len(set(codes[[0, 1, 2, 5]].tolist())) == 4


def test_ngram_hashes_windows_order_and_equality():
    rng = np.random.default_rng(0)
    c = rng.integers(1, 2**63, size=40, dtype=np.uint64)
    h = T.ngram_hashes(c, 5)
    assert len(h) == 36 and len(np.unique(h)) == 36
    twice = T.ngram_hashes(np.concatenate([c[:10], c[:10]]), 5)
    assert np.array_equal(twice[:6], twice[10:])                 # same window, same hash
    assert T.ngram_hashes(c[[1, 0, 2, 3, 4]], 5)[0] != h[0]       # order matters
    assert len(T.ngram_hashes(c[:4], 5)) == 0
    with pytest.raises(ValueError):
        T.ngram_hashes(c, 0)


def test_shingles_short_text_is_one_shingle():
    c = np.array([7, 9, 11], dtype=np.uint64)
    assert len(T.shingles(c, 5)) == 1
    assert len(T.shingles(np.zeros(0, np.uint64), 5)) == 0
    long = np.arange(1, 21, dtype=np.uint64)
    s = T.shingles(long, 5)
    assert s.dtype == np.uint32 and len(s) == 16 and np.all(np.diff(s.astype(np.int64)) > 0)
