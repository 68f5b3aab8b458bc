"""Executors: map a row-parallel step over chunks of rows. They compute; they never store.

The interface every executor implements (a Ray executor plugs in here without changing steps):

    class Executor(Protocol):
        def map(self, step: Step, chunks: Iterable[tuple[int, pl.DataFrame]],
                world_size: int) -> Iterator[tuple[int, Any]]: ...

- `chunks` yields `(chunk_id, rows)`; chunk ids are 0..world_size-1 and stable across runs (the
  runner records finished ids and skips them on resume).
- For each chunk the executor calls `step.compute_chunk(rows, rank=chunk_id, world_size=world_size)`
  (datatrove's `run(data, rank, world_size)`) and yields `(chunk_id, result)`, in any order, as
  soon as each chunk is done: the runner commits each one as it arrives, so an interrupted run
  keeps every chunk already yielded.
- The step object is sent to workers as is (pickled for processes/actors): steps hold only their
  typed `Params` and lazily loaded models. `step.resources` (cpus, memory_gb, model) says what one
  worker needs; a pool sizes itself from it.
- An exception in a chunk propagates out of `map` (after pending work is cancelled).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Protocol

import polars as pl

from .base import Step


class Executor(Protocol):
    def map(self, step: Step, chunks: Iterable[tuple[int, pl.DataFrame]],
            world_size: int) -> Iterator[tuple[int, Any]]: ...


def _run_chunk(step: Step, rows: pl.DataFrame, rank: int, world_size: int) -> Any:
    return step.compute_chunk(rows, rank=rank, world_size=world_size)


class LocalExecutor:
    """In-process (`workers=1`, the default) or a pool of `workers` spawned processes."""

    def __init__(self, workers: int | None = None):
        if workers is None:
            workers = int(os.environ.get("ITAUDIT_WORKERS", "1"))
        self.workers = max(1, workers)

    def __repr__(self) -> str:
        return f"LocalExecutor(workers={self.workers})"

    def map(self, step: Step, chunks: Iterable[tuple[int, pl.DataFrame]],
            world_size: int) -> Iterator[tuple[int, Any]]:
        if self.workers == 1:
            for cid, rows in chunks:
                yield cid, _run_chunk(step, rows, cid, world_size)
            return
        # spawn, not fork: a forked torch / tokenizers runtime can deadlock
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=ctx) as pool:
            pending: dict[Future, int] = {}
            it = iter(chunks)
            try:
                while True:
                    while len(pending) < 2 * self.workers:  # bounded: chunks are read lazily
                        nxt = next(it, None)
                        if nxt is None:
                            break
                        cid, rows = nxt
                        pending[pool.submit(_run_chunk, step, rows, cid, world_size)] = cid
                    if not pending:
                        return
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        yield pending.pop(f), f.result()
            finally:
                for f in pending:
                    f.cancel()
