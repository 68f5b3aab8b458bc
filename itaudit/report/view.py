"""`CheckView`: one stored check run as the report sees it (what `Step.render_html` receives)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ..store import Store


@dataclass
class CheckView:
    """The latest run of one check on one dataset, read back from the database.

    `rows` has idx, flag, score, cluster_id, details (JSON text); `pairs(...)` reads check_pairs;
    `instances(idx)` the instance texts. A step's `render_html(view)` builds its section from it
    (e.g. with `itaudit.report.render_template`).
    """

    store: Store
    dataset: str
    check: str
    run_id: str
    params: dict[str, Any]
    summary: dict[str, Any]
    created_at: Any
    rows: pl.DataFrame
    n: int = 0
    flagged: int = 0
    _cache: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, store: Store, dataset: str, run: dict[str, Any]) -> CheckView:
        rows = store.query("SELECT idx, flag, score, cluster_id, details FROM check_rows WHERE run_id = ?", [run["run_id"]])
        return cls(store, dataset, run["check_name"], run["run_id"],
                   json.loads(run["params"]) if run.get("params") else {},
                   json.loads(run["summary"]) if run.get("summary") else {},
                   run.get("created_at"), rows, rows.height, int(rows["flag"].sum()) if rows.height else 0)

    def top_flagged(self, k: int) -> pl.DataFrame:
        return self.rows.filter(pl.col("flag")).sort(["score", "idx"], descending=[True, False]).head(k)

    def pairs(self, idx: list[int] | None = None, limit: int | None = None) -> pl.DataFrame:
        """check_pairs of this run (best first), optionally only those whose idx_a is in `idx`."""
        sql = "SELECT idx_a, idx_b, other_dataset, score, evidence FROM check_pairs WHERE run_id = ?"
        params: list[Any] = [self.run_id]
        if idx is not None:
            sql += " AND idx_a IN (SELECT unnest(?::BIGINT[]))"
            params.append([int(i) for i in idx])
        sql += " ORDER BY score DESC, idx_a, idx_b"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self.store.query(sql, params)

    def instances(self, idx: list[int], dataset: str | None = None) -> dict[int, dict[str, Any]]:
        """idx -> {instruction, input, response, ...} of `dataset` (default: this one)."""
        ds = dataset or self.dataset
        want = [int(i) for i in idx if (ds, int(i)) not in self._cache]
        if want:
            df = self.store.query(
                "SELECT idx, instance_id, instruction, input, response, category FROM instances "
                "WHERE dataset = ? AND idx IN (SELECT unnest(?::BIGINT[]))", [ds, want])
            for r in df.iter_rows(named=True):
                self._cache[(ds, int(r["idx"]))] = r
        return {int(i): self._cache[(ds, int(i))] for i in idx if (ds, int(i)) in self._cache}

    def table_exists(self, name: str) -> bool:
        return bool(self.store.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = ?",
                                     [name])["n"][0])
