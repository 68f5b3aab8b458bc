"""Word-level tokenization shared by the exact-span index and its queries.

A word is a maximal run of Unicode word characters (`\\w+`, Python's definition), lowercased.
Matching is done on the original text and each word is lowercased afterwards, so character
offsets always refer to the original string (lowercasing can change a string's length).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WORD = re.compile(r"\w+")
TOKENIZER_VERSION = "words-v1"


@dataclass(frozen=True)
class Word:
    text: str      # lowercased
    start: int     # char offsets in the original text
    end: int


def words(text: str) -> list[str]:
    """The lowercased words of `text`."""
    return [w.lower() for w in WORD.findall(text or "")]


def words_with_offsets(text: str) -> list[Word]:
    """Lowercased words with their character offsets in `text`."""
    return [Word(m.group().lower(), m.start(), m.end()) for m in WORD.finditer(text or "")]
