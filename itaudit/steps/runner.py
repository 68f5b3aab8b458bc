"""The runner: orders steps, runs their pure computation, and owns all storage.

- Each step result is committed in one transaction (`commit`): check results go to
  check_runs / check_rows / check_pairs, `Frames` to their tables. Frames are cast to the live
  table's column types (read with DESCRIBE: the schema lives only in `sql/`).
- Row-parallel steps (`compute_chunk`) are mapped over chunks of rows by an `Executor`; each
  chunk's frame and its completion marker (`step_chunks`) are committed together as it arrives,
  and a rerun with the same params and data skips the marked chunks.
- The write connection is held only while committing (`Store.writer()`): between commits the
  database is free for `itaudit query` or another command.
- Embeddings a step declares (`requires = ("embeddings:all",)` or `needs()`) are computed before
  it, in chunks committed to `embedding_cache` by the same writer.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import polars as pl

from ..audit.base import CheckResult
from ..progress import progress_bar
from ..store import Store
from .base import Frames, Step
from .context import DEFAULT_COLUMNS, RunContext
from .executor import Executor, LocalExecutor


@dataclass
class CheckOutcome:
    check: str
    run_id: str
    result: CheckResult
    seconds: float
    step: Step | None = None

    def render_text(self) -> list[str]:
        return self.step.render_text(self.result) if self.step is not None else []


# -- storage --------------------------------------------------------------------------------------
def column_types(conn: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """Column name -> DuckDB type of the live `table` (as created by `sql/`)."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
        "ORDER BY ordinal_position", [table]).fetchall()
    if not rows:
        raise ValueError(f"no table {table!r} in the database (tables are defined in sql/)")
    return dict(rows)


def insert_cast(conn: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, *, or_ignore: bool = False) -> None:
    """Append `frame` to `table`, each column cast to the table's type (columns matched by name)."""
    if frame.height == 0:
        return
    types = column_types(conn, table)
    extra = [c for c in frame.columns if c not in types]
    if extra:
        raise ValueError(f"{table}: frame has columns the table lacks: {', '.join(extra)}")
    cols = ", ".join(f'"{c}"' for c in frame.columns)
    sel = ", ".join(f'CAST("{c}" AS {types[c]}) AS "{c}"' for c in frame.columns)
    _itaudit_frame = frame.to_arrow()  # noqa: F841 (a replacement scan reads it by name)
    verb = "INSERT OR IGNORE" if or_ignore else "INSERT"
    conn.execute(f"{verb} INTO {table} ({cols}) SELECT {sel} FROM _itaudit_frame")


def normalize_summary(result: CheckResult) -> None:
    """Every check's summary has n_rows, n_flagged and share_flagged."""
    n = len(result.idx)
    flagged = int(np.asarray(result.flag, dtype=bool).sum())
    s = result.summary
    s.setdefault("n_rows", n)
    s["n_flagged"] = flagged
    s["share_flagged"] = flagged / s["n_rows"] if s["n_rows"] else 0.0


def _write_result(conn: duckdb.DuckDBPyConnection, result: CheckResult) -> str:
    run_id = f"{result.check}-{uuid.uuid4().hex[:12]}"
    tags = [pl.lit(run_id).alias("run_id"), pl.lit(result.dataset).alias("dataset"),
            pl.lit(result.check).alias("check_name")]
    runs = pl.DataFrame({"run_id": [run_id], "dataset": [result.dataset], "check_name": [result.check],
                         "params": [json.dumps(result.params, default=str)],
                         "summary": [json.dumps(result.summary, default=str)]})
    insert_cast(conn, "check_runs", runs)
    insert_cast(conn, "check_rows", result.frame().with_columns(tags))
    if result.pairs is not None and result.pairs.height:
        insert_cast(conn, "check_pairs", result.pairs.with_columns(tags))
    return run_id


def commit(store: Store, items: Sequence[CheckResult | Frames]) -> list[str]:
    """Store check results and frames in one transaction; returns the run ids of the results."""
    ids: list[str] = []
    with store.writer() as conn:
        for it in items:
            if isinstance(it, CheckResult):
                ids.append(_write_result(conn, it))
            elif isinstance(it, Frames):
                if it.replace_dataset is not None:
                    conn.execute(f"DELETE FROM {it.table} WHERE dataset = ?", [it.replace_dataset])
                insert_cast(conn, it.table, it.frame, or_ignore=it.or_ignore)
            else:
                raise TypeError(f"a step returned {type(it).__name__}; expected CheckResult or Frames")
    return ids


def _items(out: Any) -> list[CheckResult | Frames]:
    if out is None:
        return []
    if isinstance(out, (CheckResult, Frames)):
        return [out]
    if isinstance(out, (list, tuple)):
        return [x for o in out for x in _items(o)]
    raise TypeError(f"a step returned {type(out).__name__}; expected CheckResult, Frames or a list of them")


# -- running --------------------------------------------------------------------------------------
class Runner:
    """Runs steps on one dataset; the only writer of their results."""

    def __init__(self, store: Store, dataset: str, *, context: RunContext | None = None,
                 executor: Executor | None = None, chunk_rows: int = 2048, show_progress: bool = True):
        self.store, self.dataset = store, dataset
        self.ctx = context or RunContext(store, dataset, show_progress=show_progress)
        self.executor = executor or LocalExecutor()
        self.chunk_rows = chunk_rows

    def run(self, steps: Sequence[Step], on_done: Callable[[CheckOutcome], None] | None = None) -> list[CheckOutcome]:
        outcomes: list[CheckOutcome] = []
        for step in steps:
            for o in self.run_step(step):
                outcomes.append(o)
                if on_done:
                    on_done(o)
        return outcomes

    def prepare(self, step: Step) -> None:
        for need in step.needs():
            kind, _, arg = need.partition(":")
            if kind == "embeddings" and arg:
                self.ctx.ensure_vectors(arg, executor=self.executor)

    def run_step(self, step: Step) -> list[CheckOutcome]:
        self.prepare(step)
        self.store.release()  # compute holds no connection
        t0 = time.perf_counter()
        if step.row_parallel():
            out = step.combine(self.map_chunks(step), self.ctx)
        else:
            out = step.compute(self.ctx)
        secs = time.perf_counter() - t0
        items = _items(out)
        results = [r for r in items if isinstance(r, CheckResult)]
        for r in results:
            r.summary.setdefault("seconds", round(secs, 2))
            if not r.params:
                r.params = step.params.as_dict()
            normalize_summary(r)
        ids = commit(self.store, items)
        return [CheckOutcome(r.check, i, r, secs, step) for r, i in zip(results, ids, strict=True)]

    # -- row-parallel steps ---------------------------------------------------------------------
    def _run_key(self, step: Step, n_chunks: int) -> str:
        fp = self.ctx.read("SELECT fingerprint FROM datasets WHERE name = ?", [self.dataset])
        raw = json.dumps([step.name, step.params.as_dict(), fp["fingerprint"].to_list(), self.chunk_rows, n_chunks],
                         default=str, sort_keys=True)
        return hashlib.sha1(raw.encode()).hexdigest()[:16]

    def map_chunks(self, step: Step) -> list[pl.DataFrame]:
        """Run `step.compute_chunk` over chunks of the dataset; commit each chunk as it arrives.

        Returns the chunk frames in chunk order (chunks finished by an earlier, interrupted run
        are read back from `step.output_table`)."""
        frame = self.ctx.instances(step.chunk_columns or DEFAULT_COLUMNS)
        size = max(1, self.chunk_rows)
        n_chunks = -(-frame.height // size)
        table = step.output_table
        key = self._run_key(step, n_chunks)
        done: set[int] = set()
        if table:
            marks = self.ctx.read("SELECT chunk_id FROM step_chunks WHERE dataset = ? AND step = ? AND run_key = ?",
                                  [self.dataset, step.name, key])
            done = set(marks["chunk_id"].to_list())
            if not done:  # a fresh run replaces the step's earlier output for this dataset
                with self.store.writer() as conn:
                    conn.execute(f"DELETE FROM {table} WHERE dataset = ?", [self.dataset])
                    conn.execute("DELETE FROM step_chunks WHERE dataset = ? AND step = ?", [self.dataset, step.name])
        parts: dict[int, pl.DataFrame] = {}
        todo = ((c, frame.slice(c * size, size)) for c in range(n_chunks) if c not in done)
        with progress_bar(step.name, total=frame.height, unit="rows", enabled=self.ctx.show_progress) as bar:
            bar.advance(sum(min(size, frame.height - c * size) for c in done))
            for cid, part in self.executor.map(step, todo, n_chunks):
                n_rows = min(size, frame.height - cid * size)
                if table:
                    if "dataset" not in part.columns:
                        part = part.with_columns(pl.lit(self.dataset).alias("dataset"))
                    marker = pl.DataFrame({"dataset": [self.dataset], "step": [step.name], "run_key": [key],
                                           "chunk_id": [cid], "n_chunks": [n_chunks], "n_rows": [n_rows]})
                    with self.store.writer() as conn:
                        insert_cast(conn, table, part)
                        insert_cast(conn, "step_chunks", marker)
                parts[cid] = part
                bar.advance(n_rows)
        for cid in sorted(done):
            lo = int(frame["idx"][cid * size])
            hi = int(frame["idx"][min(frame.height, (cid + 1) * size) - 1])
            parts[cid] = self.ctx.read(f"SELECT * FROM {table} WHERE dataset = ? AND idx BETWEEN ? AND ? ORDER BY idx",
                                       [self.dataset, lo, hi])
        return [parts[c] for c in range(n_chunks)]
