"""The one result shape every audit check emits, and how it is stored.

Like cleanlab's Datalab issue managers: a boolean flag and a 0-1 score per row (higher means
more of an issue), a dataset-level summary, and optional pair evidence (near-duplicates,
conflicting neighbours, contamination).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ..store import Store


@dataclass
class CheckResult:
    check: str
    dataset: str
    idx: np.ndarray                     # instance idx, int64
    flag: np.ndarray                    # bool
    score: np.ndarray                   # float in [0, 1]
    summary: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    cluster_id: np.ndarray | None = None  # int64, -1 / NaN for none
    details: list[dict[str, Any] | None] | None = None
    pairs: pl.DataFrame | None = None   # idx_a, idx_b, score, evidence (JSON str), [other_dataset]

    def __post_init__(self) -> None:
        n = len(self.idx)
        for name in ("flag", "score"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{self.check}: {name} has {len(getattr(self, name))} rows, idx has {n}")
        s = np.asarray(self.score, dtype=float)
        if n and (np.isnan(s).any() or s.min() < 0 or s.max() > 1):
            raise ValueError(f"{self.check}: scores must lie in [0, 1]")

    def frame(self) -> pl.DataFrame:
        cols: dict[str, Any] = {
            "idx": np.asarray(self.idx, dtype=np.int64),
            "flag": np.asarray(self.flag, dtype=bool),
            "score": np.asarray(self.score, dtype=np.float64),
        }
        if self.cluster_id is not None:
            cid = np.asarray(self.cluster_id, dtype=np.float64).copy()  # -1 / NaN -> NULL
            cid[cid < 0] = np.nan
            cols["cluster_id"] = pl.Series(cid, nan_to_null=True).cast(pl.Int64)
        else:
            cols["cluster_id"] = pl.Series([None] * len(self.idx), dtype=pl.Int64)
        cols["details"] = [json.dumps(d) if d is not None else None for d in self.details] if (
            self.details is not None
        ) else pl.Series([None] * len(self.idx), dtype=pl.Utf8)
        return pl.DataFrame(cols)


def save_result(store: Store, result: CheckResult) -> str:
    """Store a check result atomically (via the step runner's writer); returns its run id."""
    from ..steps.runner import commit

    return commit(store, [result])[0]
