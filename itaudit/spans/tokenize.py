"""Word-level tokenization shared by the exact-span index and its queries.

A word is `itaudit.text.WORD` (a maximal run of Unicode word characters, Rust regex definition),
lowercased with `str.lower`. Matching is done on the original text and each word is lowercased
afterwards, so character offsets always refer to the original string (lowercasing can change a
string's length). The index folds raw words with the same `str.lower`, so both sides agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import text

TOKENIZER_VERSION = "words-v2"   # v2: the polars/Rust definition of \w (v1 split Devanagari at vowel signs)


@dataclass(frozen=True)
class Word:
    text: str      # lowercased
    start: int     # char offsets in the original text
    end: int


def raw_words(text_: str | None) -> list[str]:
    """The words of `text_` as written (not lowercased): what the index folds onto lowercased ids."""
    return text.words(text_, text.WORD, lower=False)


def words(text_: str | None) -> list[str]:
    """The lowercased words of `text_`."""
    return [w.lower() for w in raw_words(text_)]


def words_with_offsets(text_: str | None) -> list[Word]:
    """Lowercased words with their character offsets in `text_`."""
    return [Word(w, s, e) for w, s, e in text.word_spans(text_, text.WORD)]
