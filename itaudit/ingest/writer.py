"""Batches of normalized rows inserted on a worker thread while the next batch is normalized.

DuckDB releases the GIL while it executes, so its INSERT (Arrow scan, compression, writing) of
batch k overlaps the Python normalization and hashing of batch k+1 on the other core. One insert
runs at a time, on the ingest's own connection and transaction; `submit` waits for the previous
one first, so at most two batches are held (the one being written and the one being built).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import polars as pl

from ..store import Store


class Inserts:
    def __init__(self, store: Store, pool: ThreadPoolExecutor):
        self.store, self.pool = store, pool
        self.pending: Future | None = None

    def submit(self, table: str, frame: pl.DataFrame) -> None:
        self.wait()
        self.pending = self.pool.submit(self.store.insert_frame, table, frame)

    def wait(self) -> None:
        """Block until the running insert is done (re-raising its error)."""
        if self.pending is not None:
            f, self.pending = self.pending, None
            f.result()


@contextmanager
def background_inserts(store: Store) -> Iterator[Inserts]:
    """Entered inside the ingest's transaction: on leaving, no statement is left running on the
    connection, so COMMIT or ROLLBACK (an error, Ctrl-C) always comes after the last insert."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="itaudit-insert")
    ins = Inserts(store, pool)
    try:
        yield ins
        ins.wait()
    except BaseException:
        if ins.pending is not None:
            try:
                store.conn.interrupt()  # an insert still running is stopped; it is rolled back
            except Exception:  # noqa: BLE001 - best effort, the wait below is what matters
                pass
            try:
                ins.wait()
            except BaseException:  # noqa: BLE001 - the first error is the one reported
                pass
        raise
    finally:
        pool.shutdown(wait=True)
