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
- two or more: surprise x (FLOOR + (1 - FLOOR) x rarity): a phrase of common words (a stock
  phrase, or one a different base model happens to find surprising) is at most 0.4.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

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


def match_prior(rarities: Sequence[float], bits: Sequence[float] | None) -> tuple[float, dict[str, float]]:
    """A-priori unlikeliness (0..1) of the content words of one verbatim match, with its factors."""
    rar = phrase_rarity(rarities)
    factors = {"rarity": round(rar, 4)}
    if bits is None:
        return rar, factors
    total = float(sum(bits))
    sur = surprise(total)
    factors.update(bits=round(total, 2), surprise=round(sur, 4))
    if len(rarities) <= 1:
        return rar * (FLOOR + (1 - FLOOR) * sur), factors
    return sur * (FLOOR + (1 - FLOOR) * rar), factors
