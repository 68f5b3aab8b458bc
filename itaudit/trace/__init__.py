"""Hallucination tracing: candidate spans of tuned-model responses -> ranked IT-data sources."""

from .attribute import Source, SpanTrace, attribute
from .candidates import STOPWORDS, Candidate, find_candidates, word_categories_from_tokens
from .pipeline import Neighbours, ResponseTrace, TraceConfig, TraceItem, Tracer, save_run, summarize
from .ranks import category, shift_rows, token_categories, token_ranks

__all__ = [
    "STOPWORDS", "Candidate", "Neighbours", "ResponseTrace", "Source", "SpanTrace", "TraceConfig", "TraceItem",
    "Tracer", "attribute", "category", "find_candidates", "save_run", "shift_rows", "summarize",
    "token_categories", "token_ranks", "word_categories_from_tokens",
]
