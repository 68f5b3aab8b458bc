"""FAISS vector indexes over a dataset's embeddings, persisted with metadata under `indexes/`.

`build_index(store, dataset, field, kind)` embeds (cached) and builds `flat` (exact inner
product), `hnsw` or `ivfpq` with parameters chosen from the row count; `load_index` reads it back
and, given the store, refuses a stale one (the dataset changed since the build).
"""

from __future__ import annotations

from .vector import (
    KINDS,
    StaleIndexError,
    VectorIndex,
    auto_params,
    build_index,
    exact_index,
    index_paths,
    list_indexes,
    load_index,
    make_index,
    neighbors,
    recall_at_k,
)

__all__ = ["KINDS", "StaleIndexError", "VectorIndex", "auto_params", "build_index", "exact_index", "index_paths",
           "list_indexes", "load_index", "make_index", "neighbors", "recall_at_k"]
