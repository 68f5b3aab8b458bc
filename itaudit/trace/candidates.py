"""Candidate spans: the words of a response that look hallucinated or borrowed.

Following the token-distribution-shift view (URIAL; the paper's finding that ~89% of the tokens of
borrowed phrases are shifted or marginal), a candidate is a run of words whose first token is
*shifted* (base-model rank > 3) or *marginal* (rank 2-3) under the base model, trimmed of
function/style words and kept only if it holds a content word. Without a base model the
candidates are the runs of content words (lexical mode). A reference answer, when given, adds a
disagreement term: content words of the span that the reference does not contain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..spans.tokenize import Word, words, words_with_offsets

#: Function words and stock style words of assistant answers; never the heart of a borrowed fact.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each either else etc even ever
every few for from further had has have having he her here hers herself him himself his how however
i if in into is it its itself just let like may me might more most must my myself no nor not now of
off on once one only or other our ours ourselves out over own per same shall she should so some
such than that the their theirs them themselves then there these they this those through thus to
too under until up upon us very via was we were what when where which while who whom whose why
will with within without would yes yet you your yours yourself yourselves s t d ll m re ve
sure certainly course indeed please thank thanks hello hi okay ok great good well really
here's there's it's i'm i'll you're let's following example answer question help hope glad
""".split())

CATEGORY_WEIGHT = {"shifted": 1.0, "marginal": 0.5, "unshifted": 0.0}
# A gap between two words containing one of these ends a run (sentence or clause boundary).
_BREAK = re.compile(r"[,;:!?()\[\]{}\"\n]|\.\s|\.$")


@dataclass
class Candidate:
    word_start: int            # word range [word_start, word_end) in the response
    word_end: int
    char_start: int
    char_end: int
    text: str
    score: float               # 0..1, higher = more likely hallucinated / borrowed
    shift_share: float | None  # weighted share of shifted/marginal content words; None in lexical mode
    disagreement: float | None # share of content words absent from the reference; None without one
    categories: list[str] | None
    content: list[bool] | None = None  # per word of the span: content word not echoed from the prompt


def is_content(word: str) -> bool:
    return word not in STOPWORDS and not (len(word) == 1 and not word.isdigit())


def _breaks(text: str, words_: list[Word]) -> list[bool]:
    """breaks[i]: a clause boundary lies between word i-1 and word i."""
    out = [True]
    for a, b in zip(words_, words_[1:], strict=False):
        out.append(bool(_BREAK.search(text[a.end:b.start])))
    return out


def word_categories_from_tokens(words_: list[Word], token_spans: list[tuple[int, int, str]]) -> list[str]:
    """Category of each word = category of the token covering the word's first character.

    `token_spans` are (char_start, char_end, category) of the response tokens, in order."""
    cats: list[str] = []
    j = 0
    n = len(token_spans)
    for w in words_:
        while j < n and token_spans[j][1] <= w.start:
            j += 1
        cats.append(token_spans[j][2] if j < n else "unshifted")
    return cats


def find_candidates(text: str, categories: list[str] | None = None, reference: str | None = None,
                    max_words: int = 8, words_: list[Word] | None = None,
                    prompt: str | None = None) -> list[Candidate]:
    """Candidate spans of `text`. `categories` (one per word of `words_with_offsets(text)`) enables
    shift mode; otherwise runs of content words are candidates (lexical mode). Words echoed from
    `prompt` are not content (a span is never a candidate for repeating the question)."""
    ws = words_ if words_ is not None else words_with_offsets(text)
    if categories is not None and len(categories) != len(ws):
        raise ValueError(f"{len(categories)} categories for {len(ws)} words")
    ref = set(words(reference)) if reference else None
    brk = _breaks(text, ws)
    echo = set(words(prompt)) if prompt else set()
    content = [is_content(w.text) and w.text not in echo for w in ws]
    if categories is not None:
        inrun = [c != "unshifted" for c in categories]
    else:
        inrun = content
    out: list[Candidate] = []
    i, n = 0, len(ws)
    while i < n:
        if not inrun[i]:
            i += 1
            continue
        j = i + 1
        while j < n and inrun[j] and not brk[j] and j - i < max_words:
            j += 1
        a, b = i, j
        while a < b and not content[a]:
            a += 1
        while b > a and not content[b - 1]:
            b -= 1
        if b > a:
            out.append(_candidate(text, ws, a, b, categories, content, ref))
        i = j
    return out


def _candidate(text: str, ws: list[Word], a: int, b: int, categories: list[str] | None,
               content: list[bool], ref: set[str] | None) -> Candidate:
    cw = [k for k in range(a, b) if content[k]]
    shift = None
    if categories is not None:
        shift = sum(CATEGORY_WEIGHT.get(categories[k], 0.0) for k in cw) / len(cw)
    disagree = None
    if ref is not None:
        disagree = sum(ws[k].text not in ref for k in cw) / len(cw)
    content_frac = len(cw) / (b - a)
    base = shift if shift is not None else 0.5
    score = base * (0.75 + 0.25 * content_frac)
    if disagree is not None:
        score = 0.7 * score + 0.3 * disagree
    return Candidate(a, b, ws[a].start, ws[b - 1].end, text[ws[a].start:ws[b - 1].end], round(score, 6),
                     None if shift is None else round(shift, 6), None if disagree is None else round(disagree, 6),
                     None if categories is None else categories[a:b], content[a:b])
