"""Map response tokens to character spans, words and sentences.

Words are `itaudit.text.WORD_OR_PUNCT`: runs of word characters (with inner apostrophes:
"don't") or runs of punctuation.
Sentences end after `.`, `!` or `?` followed by whitespace (or the end), and at every newline;
a token belongs to the word and sentence of its first non-space character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..text import WORD_OR_PUNCT, word_spans

SENT_END_RE = re.compile(r"[.!?]+(?=\s|$)|\n")


@dataclass
class TokenLayout:
    text: str                      # the decoded response
    spans: list[tuple[int, int]]   # character span of each token in `text`
    pieces: list[str]              # each token decoded on its own
    word_idx: list[int | None]
    words: list[str | None]
    is_word_start: list[bool]
    sentence_idx: list[int]
    sentence_frac: list[float]


def token_spans(tokenizer: Any, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """Decode prefixes to find each token's characters; tokens holding part of a multi-byte
    character get an empty span and the token completing it gets the character."""
    spans: list[tuple[int, int]] = []
    prev = 0
    text = ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        stable = len(text.rstrip("\ufffd")) if i < len(ids) - 1 else len(text)
        end = max(prev, stable)
        spans.append((prev, end))
        prev = end
    return text, spans


def layout(tokenizer: Any, ids: list[int]) -> TokenLayout:
    text, spans = token_spans(tokenizer, ids)
    pieces = [tokenizer.decode([t], skip_special_tokens=False, clean_up_tokenization_spaces=False) for t in ids]
    n = len(text)
    # character -> word index
    char_word = [-1] * n
    word_list: list[tuple[int, int]] = []
    for _, ws, we in word_spans(text, WORD_OR_PUNCT, lower=False):
        for c in range(ws, we):
            char_word[c] = len(word_list)
        word_list.append((ws, we))
    # character -> sentence index (a new sentence starts at the first non-space char after an end)
    char_sent = [0] * n
    ends = sorted(m.end() for m in SENT_END_RE.finditer(text))
    sent, k, pending = 0, 0, False
    for c in range(n):
        while k < len(ends) and ends[k] <= c:
            pending, k = True, k + 1
        if pending and not text[c].isspace():
            sent, pending = sent + 1, False
        char_sent[c] = sent
    widx: list[int | None] = []
    words: list[str | None] = []
    starts: list[bool] = []
    sents: list[int] = []
    last_sent = 0
    seen_start: set[int] = set()
    for s, e in spans:
        first = next((c for c in range(s, e) if not text[c].isspace()), None)
        if first is None:
            widx.append(None)
            words.append(None)
            starts.append(False)
            sents.append(last_sent)
            continue
        w = char_word[first]
        ws, we = word_list[w]
        widx.append(w)
        words.append(text[ws:we])
        is_start = s <= ws < e and w not in seen_start
        seen_start.add(w)
        starts.append(is_start)
        last_sent = char_sent[first]
        sents.append(last_sent)
    # position of each token inside its sentence, as a fraction of the sentence's token count
    counts: dict[int, int] = {}
    for s in sents:
        counts[s] = counts.get(s, 0) + 1
    seen: dict[int, int] = {}
    frac: list[float] = []
    for s in sents:
        k = seen.get(s, 0)
        frac.append(k / counts[s])
        seen[s] = k + 1
    return TokenLayout(text, spans, pieces, widx, words, starts, sents, frac)
