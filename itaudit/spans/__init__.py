"""Exact-span index: find every instance containing a span verbatim, and maximal matching spans."""

from .index import (
    FIELDS,
    Occurrence,
    SpanIndex,
    SpanMatch,
    StaleIndexError,
    build_from_texts,
    build_span_index,
    dataset_fingerprint,
    ensure_span_index,
    load_span_index,
    spans_dir,
    suffix_array,
    suffix_array_numpy,
)
from .tokenize import Word, words, words_with_offsets

__all__ = [
    "FIELDS", "Occurrence", "SpanIndex", "SpanMatch", "StaleIndexError", "Word", "build_from_texts",
    "build_span_index", "dataset_fingerprint", "ensure_span_index", "load_span_index", "spans_dir",
    "suffix_array", "suffix_array_numpy", "words", "words_with_offsets",
]
