"""Hallucination tracing: candidate spans of tuned-model responses -> ranked IT-data sources."""

from .attribute import DEFAULT_THRESHOLD, ResponseWords, Source, SpanTrace, attribute, relabel
from .candidates import STOPWORDS, Candidate, find_candidates, word_categories_from_tokens
from .control import Excess, calibrate, excess, relabel_all
from .nearcopy import NearCopy, NearCopyIndex
from .pipeline import Neighbours, ResponseTrace, TraceConfig, TraceItem, Tracer, summarize
from .ranks import category, shift_rows, token_categories, token_ranks, token_scores
from .storage import RunInfo, run_frames, save_run, save_runs

__all__ = [
    "DEFAULT_THRESHOLD", "STOPWORDS", "Candidate", "Excess", "NearCopy", "NearCopyIndex", "Neighbours",
    "ResponseTrace", "ResponseWords", "RunInfo", "Source", "SpanTrace", "TraceConfig", "TraceItem", "Tracer",
    "attribute", "calibrate", "category", "excess", "find_candidates", "relabel", "relabel_all", "run_frames",
    "save_run", "save_runs", "shift_rows", "summarize", "token_categories", "token_ranks", "token_scores",
    "word_categories_from_tokens",
]
