"""Near-copy borrowing: rare response words close to, but not equal to, rare dataset words.

A LoRA-tuned model writes "Ellowynn" for the planted "Ellowyn": no verbatim match, yet a
borrowing. The index holds the dataset vocabulary words that are rare a priori (word rarity >=
`min_rarity`, i.e. Zipf <= 2.5 by default: names and invented words, not English), at least
`min_len` letters long and in at most `max_df` instances, under a character-trigram inverted
index. A query word (itself rare a priori and not a dataset word) gets the vocabulary words
sharing enough trigrams (Dice >= 0.5), verified by Levenshtein distance <= max(1, len // 4);
`similarity = 1 - distance / max(len)`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ..spans.index import SpanIndex
from .prior import word_rarity


def trigrams(word: str) -> set[str]:
    w = f"^{word}$"
    return {w[i:i + 3] for i in range(len(w) - 2)}


def levenshtein(a: str, b: str, limit: int | None = None) -> int:
    """Edit distance (insert, delete, substitute); stops early above `limit` (returns limit + 1)."""
    if len(a) < len(b):
        a, b = b, a
    if limit is not None and len(a) - len(b) > limit:
        return limit + 1
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        if limit is not None and min(cur) > limit:
            return limit + 1
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class NearCopy:
    word: str            # the response word
    match: str           # the dataset word it is close to
    word_id: int         # id of `match` in the span index vocabulary
    distance: int
    similarity: float    # 1 - distance / max(len)
    rarity: float        # a-priori rarity of the dataset word


class NearCopyIndex:
    """Character-trigram index over the rare words of a span index's vocabulary."""

    def __init__(self, index: SpanIndex, *, min_len: int = 5, max_df: int = 20, min_rarity: float = 0.5,
                 min_dice: float = 0.5):
        self.index, self.min_len, self.min_rarity, self.min_dice = index, min_len, min_rarity, min_dice
        self.postings: dict[str, list[int]] = defaultdict(list)
        self.words: dict[int, str] = {}
        df = index.df
        for wid, w in enumerate(index.vocab):
            if wid == 0 or len(w) < min_len or not w.isalpha() or int(df[wid]) > max_df:
                continue
            if word_rarity(w) < min_rarity:
                continue
            self.words[wid] = w
            for g in trigrams(w):
                self.postings[g].append(wid)

    def __len__(self) -> int:
        return len(self.words)

    def query(self, word: str, top: int = 3) -> list[NearCopy]:
        """Dataset words near `word` (not equal to it), best first."""
        w = word.lower()
        if len(w) < self.min_len or not w.isalpha() or word_rarity(w) < self.min_rarity:
            return []
        grams = trigrams(w)
        counts: dict[int, int] = defaultdict(int)
        for g in grams:
            for wid in self.postings.get(g, ()):
                counts[wid] += 1
        limit = max(1, len(w) // 4)
        out = []
        for wid, c in counts.items():
            v = self.words[wid]
            if v == w or 2 * c / (len(grams) + len(trigrams(v))) < self.min_dice:
                continue
            d = levenshtein(w, v, limit)
            if d <= limit:
                out.append(NearCopy(w, v, wid, d, round(1 - d / max(len(w), len(v)), 4), round(word_rarity(v), 4)))
        out.sort(key=lambda n: (n.distance, -n.rarity, n.match))
        return out[:top]
