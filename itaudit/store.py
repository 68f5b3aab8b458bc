"""The DuckDB store: one file holds datasets, instances, and every finding.

Writes go through `Store.transaction()` so a failed step leaves the file exactly as it was.
Queries from users go through a read-only connection (`Store.read_only`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from . import sqlfiles

DEFAULT_DB = "itaudit.duckdb"


def default_db() -> str:
    return os.environ.get("ITAUDIT_DB", DEFAULT_DB)


class Store:
    """A read-write DuckDB connection with the schema migrated to the latest version."""

    def __init__(self, path: str | os.PathLike = DEFAULT_DB, *, migrate: bool = True):
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = duckdb.connect(str(self.path))
        if migrate:
            self.migrate()

    # -- lifecycle -------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

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
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN ... COMMIT, or ROLLBACK on any exception (including KeyboardInterrupt)."""
        self.conn.execute("BEGIN TRANSACTION")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

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
            raise KeyError(
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
        raise FileNotFoundError(f"database {p} does not exist; run `itaudit ingest` first")
    return duckdb.connect(str(p), read_only=True)
