"""A-priori likelihood of matched words: is this phrase unlikely *before* looking at the dataset?

A verbatim match between a response and one instance is evidence of borrowing only when the
matched words are unlikely a priori: "breathtaking" or "hope this message finds you well" shared
with one row of a 5,000-row dataset is chance overlap, "Quenby Arkwhistle" is not. Two background
models give the prior:

- general-language word frequency, `wordfreq` (English Zipf scale: log10 of occurrences per
  billion words; "the" 7.7, "message" 5.0, "breathtaking" 3.6, "guacamole" 2.9, unknown words 0).
  A word's *rarity* is 0 at Zipf >= 4 (ten per million words and more: common English) and rises
  linearly to 1 at Zipf <= 1 (numbers: at most FLOOR); a phrase's rarity is the noisy-OR of its content words' rarities, so
  one rare word is enough and a phrase of common words is never rare;
- the base model's surprisal of the matched words given the prompt and the preceding response
  (bits, summed over their tokens; the URIAL/AlignTDS notion), when token scores are available.
  A phrase costing <= 8 bits (p >= 1/256) is predictable, >= 24 bits (p <= 6e-8) unlikely; linear
  between. It counts for matches of two or more content words only: a single word must also be
  rare in general language, so a single common word is never evidence on its own, whatever a
  (possibly different) base model thinks of it. Words the base model predicts well are not
  evidence even when rare in general language (a known fact such as "Charlotte Brontë").

prior of one match (0..1), with FLOOR = 0.4 (below the default likely threshold 0.5):
- no base model: the phrase rarity;
- one content word: rarity x (FLOOR + (1 - FLOOR) x surprise): a common word is 0, a rare word the
  base model predicts is at most 0.4;
- two or more: surprise x (FLOOR + (1 - FLOOR) x max(rarity, co-occurrence)): a phrase of common
  words (a stock phrase, or one a different base model happens to find surprising) is at most 0.4
  unless its words are also a rare *combination* in the dataset.

co-occurrence (`cooccurrence_rarity`, needs the dataset's document frequencies): "salmon and cheese
... rivers in Egypt" is made of common words, yet a row holding all of them is unlikely by chance.
With df(w) instances of N holding word w, N x prod(df/N) instances would hold the whole set if the
words occurred independently; the factor puts that expected count on the specificity scale (0 at
>= 1 expected instance, 1 at <= 1/N). The set's rarest word is left out (leave-one-out), so one
word unique to a row - the in-dataset rarity that made "breathtaking" a likely source - is never
enough: a pair of words has co-occurrence 0, and a set counts only when its other words are a rare
combination too. Words of one topic ("fresh fruits, vegetables and whole grains") share rows more
often than independence says, so the factor counts only when a single instance holds all the words
(anywhere in it; attribute.py). It only lifts phrases the base model already finds surprising (it multiplies
surprise), and is not used without a base model (lexical mode keeps the word-frequency prior).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from math import log

Z_COMMON = 4.0        # Zipf at and above which a word is common English (rarity 0)
Z_RARE = 1.0          # Zipf at and below which a word is as rare as an unknown word (rarity 1)
BITS_PREDICTABLE = 8.0
BITS_UNLIKELY = 24.0
FLOOR = 0.4           # the most a common phrase or a predictable rare word can weigh
LANG = "en"


@lru_cache(maxsize=200_000)
def zipf(word: str, lang: str = LANG) -> float:
    """Zipf frequency of a word in general language (0 when unknown)."""
    from wordfreq import zipf_frequency

    return float(zipf_frequency(word, lang))


def word_rarity(word: str, lang: str = LANG) -> float:
    """0 for common words (Zipf >= 4), 1 for words unknown to general language (Zipf <= 1).

    A number (digits only) is at most FLOOR: any one year or count is rare, but numbers are a small
    closed class a model picks from by chance, so a number alone is never a likely source."""
    z = zipf(word, lang)
    r = min(1.0, max(0.0, (Z_COMMON - z) / (Z_COMMON - Z_RARE)))
    return min(r, FLOOR) if word.isdigit() else r


def phrase_rarity(rarities: Sequence[float]) -> float:
    """Noisy-OR of word rarities: one rare word makes a rare phrase; common words add nothing."""
    p = 1.0
    for r in rarities:
        p *= 1.0 - r
    return 1.0 - p


def surprise(bits: float) -> float:
    """0 for predictable phrases (<= 8 bits under the base model), 1 for unlikely ones (>= 24 bits)."""
    return min(1.0, max(0.0, (bits - BITS_PREDICTABLE) / (BITS_UNLIKELY - BITS_PREDICTABLE)))


def cooccurrence_rarity(dfs: Sequence[int], n_total: int) -> float:
    """0..1: how unlikely it is that one instance holds all these (distinct) words by chance.

    `dfs`: instances holding each word. Leave-one-out: the rarest word is dropped first, so fewer
    than three words give 0. Expected instances under independence: N x prod(df/N) over the rest;
    0 at >= 1, 1 at <= 1/N (log scale)."""
    if len(dfs) < 3 or n_total < 2:
        return 0.0
    rest = sorted(dfs)[1:]
    log_expected = log(n_total) + sum(log(max(1, d) / n_total) for d in rest)
    return min(1.0, max(0.0, -log_expected / log(n_total)))


def match_prior(rarities: Sequence[float], bits: Sequence[float] | None,
                cooccurrence: float | None = None) -> tuple[float, dict[str, float]]:
    """A-priori unlikeliness (0..1) of the content words of one verbatim match, with its factors.

    `cooccurrence`: `cooccurrence_rarity` of the match's distinct content words (used with a base
    model, for two or more content words)."""
    rar = phrase_rarity(rarities)
    factors = {"rarity": round(rar, 4)}
    if bits is None:
        return rar, factors
    total = float(sum(bits))
    sur = surprise(total)
    factors.update(bits=round(total, 2), surprise=round(sur, 4))
    if len(rarities) <= 1:
        return rar * (FLOOR + (1 - FLOOR) * sur), factors
    co = cooccurrence or 0.0
    if cooccurrence is not None:
        factors["cooccurrence"] = round(co, 4)
    return sur * (FLOOR + (1 - FLOOR) * max(rar, co)), factors
