"""The embedding stage as a step: encode texts in chunks; the runner commits each chunk to `embedding_cache`.

`EmbedTexts.compute_chunk(rows)` takes rows `(text_hash, text)` of texts not yet cached and
returns `(model, text_hash, dim, vec)` rows; `embed_missing` maps it over chunks with an executor
and commits every chunk as it arrives (the cache is keyed by text hash, so an interrupted run
resumes where it stopped). `itaudit.embed.embed_dataset` / `encode_cached` use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import polars as pl

from ..store import Store
from .base import Frames, Resources, Step
from .executor import Executor, LocalExecutor


class EmbedTexts(Step):
    """Row-parallel: vectors of a chunk of texts (rows `text_hash`, `text`)."""

    name = "embed"
    description = "sentence embeddings of texts, cached by model and text hash"
    default = False
    resources: ClassVar[Resources] = Resources(cpus=1.0, memory_gb=1.0, model="embedder")

    def __init__(self, embedder: Any, batch_size: int = 64):
        super().__init__()
        self.embedder, self.batch_size = embedder, batch_size

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for an executor's workers as the model's spec (each worker loads it once), not its weights."""
        state = dict(self.__dict__)
        emb = state.pop("embedder")
        state["_spec"] = (getattr(emb, "model_arg", None), getattr(emb, "max_length", None),
                          getattr(emb, "backend", "torch"), emb.cache_key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.embedder = None

    def _model(self) -> Any:
        if self.embedder is None:
            from ..embed import Embedder

            model_arg, max_length, backend, key = self._spec
            self.embedder = Embedder(model_arg, max_length=max_length, backend=backend)
            if self.embedder.cache_key != key:  # another model file on this worker: vectors would differ
                from ..errors import ItauditError

                raise ItauditError(f"worker loaded embedding model {self.embedder.cache_key}, the driver has {key}")
        return self.embedder

    def compute_chunk(self, rows: pl.DataFrame, rank: int = 0, world_size: int = 1) -> pl.DataFrame:
        emb = self._model()
        vecs = np.ascontiguousarray(emb.encode(rows["text"].to_list(), batch_size=self.batch_size), dtype="<f4")
        n = rows.height
        return pl.DataFrame({
            "model": [emb.cache_key] * n,
            "text_hash": rows["text_hash"],
            "dim": [vecs.shape[1]] * n,
            "vec": [r.tobytes() for r in vecs],
        })


def embed_missing(store: Store, embedder: Any, hashes: Sequence[str], texts: Sequence[str], *,
                  chunk_size: int = 512, batch_size: int = 64, executor: Executor | None = None,
                  on_chunk: Callable[[int, np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    """Encode `texts` (their `hashes` given, none cached yet) in chunks, each committed by the runner.

    Returns hash -> vector. `on_chunk(n_texts, vecs)` is called after each committed chunk."""
    from .runner import commit

    step = EmbedTexts(embedder, batch_size)
    n = len(texts)
    n_chunks = -(-n // chunk_size)
    chunks = ((c, pl.DataFrame({"text_hash": list(hashes[c * chunk_size:(c + 1) * chunk_size]),
                                "text": list(texts[c * chunk_size:(c + 1) * chunk_size])},
                               schema={"text_hash": pl.Utf8, "text": pl.Utf8}))
              for c in range(n_chunks))
    out: dict[str, np.ndarray] = {}
    store.release()  # encoding holds no connection; each chunk opens one to commit
    for _, frame in (executor or LocalExecutor(1)).map(step, chunks, n_chunks):
        commit(store, [Frames("embedding_cache", frame, or_ignore=True)])
        dim = int(frame["dim"][0]) if frame.height else 0
        vecs = np.frombuffer(b"".join(frame["vec"].to_list()), dtype="<f4").reshape(frame.height, dim)
        out.update(zip(frame["text_hash"].to_list(), vecs, strict=True))
        if on_chunk:
            on_chunk(frame.height, vecs)
    return out
