"""User-supplied SQL without filesystem access.

DuckDB reads and writes files from SQL (`COPY ... TO 'f'`, `read_csv('/etc/passwd')`, `ATTACH`,
`INSTALL`). SQL typed by a user (`itaudit query`, filter predicates, tune `--where`) runs with
DuckDB's `enable_external_access = false` unless the user asks for files (`--allow-files`):

- `connect_readonly(db)`: the database file, read-only, no other file reachable;
- `sandbox(tables)`: an in-memory database holding only the given frames (the predicate's
  view of the data), no file reachable. The setting cannot be turned back on inside a running
  database, so predicates never run on the read-write store connection.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

NO_FILES_HINT = "user SQL cannot read or write files; pass --allow-files (allow_files=True) to permit it"


def connect_readonly(path: str | os.PathLike, *, allow_files: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection to `path` that cannot write the database (nor touch files unless allowed)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"database {p} does not exist; run `itaudit ingest` first")
    config = {} if allow_files else {"enable_external_access": False}
    from .store import connect  # waits for a busy file, then names the process holding it

    return connect(p, read_only=True, config=config)


def sandbox(tables: Mapping[str, pl.DataFrame | pa.Table]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with `tables` registered by name and external access off."""
    conn = duckdb.connect(":memory:", config={"enable_external_access": False})
    for name, t in tables.items():
        conn.register(name, t.to_arrow() if isinstance(t, pl.DataFrame) else t)
    return conn


def sandboxed_query(conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None, *,
                    row_filters: Mapping[str, tuple[str, Any]] | None = None) -> pl.DataFrame:
    """Run `sql` on copies of the database tables it names, in a sandbox without file access.

    `row_filters` copies only some rows of a table: {"instances": ("dataset", "alpaca")}.
    Every table or view of `conn` whose name occurs in `sql` is copied (views as their rows); files
    and table functions are not, so they fail.
    """
    row_filters = row_filters or {}
    have = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql)}
    names = {t for t in have if t.lower() in words}   # tables and views the SQL may name
    frames: dict[str, pa.Table] = {}
    for name in sorted(names):
        col, value = row_filters.get(name, (None, None))
        q = f'SELECT * FROM "{name}"' + (f' WHERE "{col}" = ?' if col else "")
        frames[name] = (conn.sql(q, params=[value]) if col else conn.sql(q)).to_arrow_table()
    box = sandbox(frames)
    try:
        rel = box.sql(sql, params=params) if params else box.sql(sql)
        return pl.DataFrame() if rel is None else pl.from_arrow(rel.to_arrow_table())
    finally:
        box.close()


def is_file_access_error(e: BaseException) -> bool:
    """True when DuckDB refused a statement because external access is off."""
    return isinstance(e, duckdb.PermissionException) or "disabled by configuration" in str(e)
