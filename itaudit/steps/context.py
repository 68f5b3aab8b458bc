"""`RunContext`: the read-only view of a workspace a step computes on.

Steps read through `instances()`, `vectors(field)` and `read(sql, params)`; none of them writes
(embeddings a step declares in `requires` are computed and committed by the runner beforehand).
Each read opens the database only for its duration when no connection is open, so another
process can write while a step computes.

Legacy function checks (registered with `register_check`) still get `ctx.store` and
`ctx.embedder`; `AuditContext` is the same class under its old name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..store import Store

DEFAULT_COLUMNS = (
    "idx, system, CASE WHEN history IS NULL OR CAST(history AS VARCHAR) IN ('[]', 'null') THEN '' "
    "ELSE md5(CAST(history AS VARCHAR)) END AS history, instruction, input, response"
)


@dataclass
class RunContext:
    """What a step gets: the dataset, read accessors, a shared embedder and cached vectors."""

    store: Store
    dataset: str
    index_dir: Path = Path("indexes")
    model: str | None = None
    show_progress: bool = True
    _embedder: Any = None
    _vectors: dict[str, np.ndarray] = field(default_factory=dict)
    _frames: dict[str, pl.DataFrame] = field(default_factory=dict)

    @property
    def embedder(self):
        if self._embedder is None:
            from ..embed import Embedder

            self._embedder = Embedder(self.model)
        return self._embedder

    def read(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        """One query (reads only are expected; steps never write)."""
        with self.store.reader():
            return self.store.query(sql, params)

    def instances(self, columns: str = DEFAULT_COLUMNS) -> pl.DataFrame:
        """Rows of the dataset in idx order (`history` as an md5, '' when there is none: it can be large)."""
        if columns not in self._frames:
            with self.store.reader():
                self._frames[columns] = self.store.instances(self.dataset, columns)
        return self._frames[columns]

    def ensure_vectors(self, field_name: str, executor: Any = None) -> None:
        """Embed `field_name` for every row; the runner calls this for `requires = ("embeddings:F",)`.

        Missing vectors are computed in chunks (on `executor`, default this process), each
        committed by the runner's writer as it finishes (resumable: the cache is keyed by text hash)."""
        if field_name not in self._vectors:
            from ..embed import embed_dataset

            self._vectors[field_name] = embed_dataset(self.store, self.dataset, field_name, self.embedder,
                                                      show_progress=self.show_progress, executor=executor)
            self.store.release()

    def vectors(self, field_name: str, idx: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Embeddings of `field_name` (all rows, aligned with idx; or just rows `idx`)."""
        if idx is None:
            self.ensure_vectors(field_name)
            return self._vectors[field_name]
        if field_name in self._vectors:
            return self._vectors[field_name][np.asarray(idx, dtype=np.int64)]
        from ..embed import embed_dataset

        out = embed_dataset(self.store, self.dataset, field_name, self.embedder,
                            show_progress=self.show_progress, idx=idx)
        self.store.release()
        return out


AuditContext = RunContext
