"""The DuckDB store: one file holds datasets, instances, and every finding.

DuckDB allows one writing process per file, so connections are opened on demand and held briefly:

- `Store.writer()` opens (waiting for a busy file), runs one transaction, and releases the file
  if it opened it; the step runner commits every result this way, so another command can use
  the database while a long step computes.
- `Store.conn` / `Store.transaction()` / `Store.query()` keep the legacy behaviour (a connection
  opened on first use and kept until `close()` or `release()`).
- A file held by another process is waited for up to `$ITAUDIT_LOCK_TIMEOUT` seconds (default
  30), then an `ItauditError` names the process holding it.
- Queries from users go through a read-only connection (`read_only`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from . import sqlfiles
from .errors import ItauditError

DEFAULT_DB = "itaudit.duckdb"
_LOCK_PID = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")


def lock_timeout() -> float:
    """Seconds to wait for a database another process holds (`$ITAUDIT_LOCK_TIMEOUT`, default 30)."""
    raw = os.environ.get("ITAUDIT_LOCK_TIMEOUT", "30")
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ItauditError(f"ITAUDIT_LOCK_TIMEOUT must be a number of seconds, got {raw!r}") from None


def connect(path: str | os.PathLike, *, read_only: bool = False, timeout: float | None = None,
            config: dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    """Open `path`, waiting up to `timeout` seconds while another process holds its lock."""
    timeout = lock_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config or {})
        except duckdb.IOException as e:
            m = _LOCK_PID.search(str(e))
            if m is None:
                raise
            if time.monotonic() >= deadline:
                raise ItauditError(
                    f"database {path} is busy: process {m.group(2)} ({m.group(1)}) holds it; waited "
                    f"{timeout:g}s (set ITAUDIT_LOCK_TIMEOUT to wait longer)") from None
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)


def default_db() -> str:
    return os.environ.get("ITAUDIT_DB", DEFAULT_DB)


class Store:
    """A read-write DuckDB connection with the schema migrated to the latest version."""

    def __init__(self, path: str | os.PathLike = DEFAULT_DB, *, migrate: bool = True):
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._tx_depth = 0
        if migrate:
            self.migrate()

    # -- lifecycle -------------------------------------------------------
    @property
    def conn(self) -> duckdb.DuckDBPyConnection:
        """The legacy long-lived connection, opened on first use (waits for a busy file)."""
        if self._conn is None:
            self._conn = connect(self.path)
        return self._conn

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def release(self) -> None:
        """Close the connection so other processes can open the file; the next use reopens it.

        A no-op inside `transaction()` (its work must stay on one connection)."""
        if self._conn is not None and not self._tx_depth:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ------------------------------------------------------------
    def schema_version(self) -> int:
        exists = self.conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
        ).fetchall()[0][0]
        if not exists:
            return 0
        return self.conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]

    def migrate(self) -> int:
        """Apply pending forward migrations, each atomically. Returns the resulting version."""
        current = self.schema_version()
        # Versions land out of order in a shared tree: apply every version not yet recorded.
        applied = {r[0] for r in self.conn.execute("SELECT version FROM schema_version").fetchall()} if current else set()
        for version, name, sql in sqlfiles.migrations():
            if version in applied:
                continue
            with self.transaction():
                self.conn.execute(sql)
                self.conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, name]
                )
            current = max(current, version)
        return current

    # -- writing -------------------------------------------------------------
    @contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction on a connection held only for its duration (unless one was already open)."""
        opened = self._conn is None
        try:
            with self.transaction() as conn:
                yield conn
        finally:
            if opened:
                self.release()

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for a few reads, released afterwards unless one was already open."""
        opened = self._conn is None
        try:
            yield self.conn
        finally:
            if opened:
                self.release()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN ... COMMIT, or ROLLBACK on any exception (including KeyboardInterrupt)."""
        conn = self.conn
        conn.execute("BEGIN TRANSACTION")
        self._tx_depth += 1
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
        finally:
            self._tx_depth -= 1

    def insert_frame(self, table: str, frame: pl.DataFrame) -> None:
        """Append a polars frame to `table`, matching columns by name."""
        if frame.height == 0:
            return
        cols = ", ".join(f'"{c}"' for c in frame.columns)
        # A replacement scan of a local variable, not `conn.register`: a registered Arrow table
        # stays alive until the transaction ends, so a long ingest would hold every batch in RAM.
        _itaudit_frame = frame.to_arrow()  # noqa: F841 (read by DuckDB by name)
        self.conn.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _itaudit_frame")

    # -- reading ---------------------------------------------------------------
    def query(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        return to_polars(self.conn, sql, params)

    def dataset_info(self, name: str) -> dict[str, Any] | None:
        df = self.query("SELECT * FROM datasets WHERE name = ?", [name])
        return df.row(0, named=True) if df.height else None

    def require_dataset(self, name: str) -> dict[str, Any]:
        info = self.dataset_info(name)
        if info is None:
            known = self.query("SELECT name FROM datasets ORDER BY name")["name"].to_list()
            raise ItauditError(
                f"no dataset named {name!r} in {self.path}; known: {', '.join(known) or '(none)'}"
            )
        return info

    def instances(self, dataset: str, columns: str = "*") -> pl.DataFrame:
        return self.query(
            f"SELECT {columns} FROM instances WHERE dataset = ? ORDER BY idx", [dataset]
        )


def to_polars(conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
    """Run one statement and return its result as a polars frame (via Arrow)."""
    rel = conn.sql(sql, params=params) if params else conn.sql(sql)
    return pl.DataFrame() if rel is None else pl.from_arrow(rel.to_arrow_table())


def read_only(path: str | os.PathLike) -> duckdb.DuckDBPyConnection:
    """A connection that cannot write: for user-supplied SQL."""
    p = Path(path)
    if not p.exists():
        raise ItauditError(f"database {p} does not exist; run `itaudit ingest` first")
    return connect(p, read_only=True)
