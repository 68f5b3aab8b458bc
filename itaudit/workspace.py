"""The Python API: `itaudit.open(db)` returns a `Workspace` mirroring the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from . import sqlfiles
from .ingest import IngestReport
from .ingest import ingest as _ingest
from .store import Store, default_db, to_polars
from .usersql import connect_readonly


class Workspace:
    """A DuckDB file with datasets and findings, plus a folder of indexes."""

    def __init__(self, db: str | os.PathLike | None = None, index_dir: str | os.PathLike | None = None):
        self.db_path = Path(db or default_db())
        self.index_dir = Path(index_dir or os.environ.get("ITAUDIT_INDEX_DIR", "indexes"))
        self.store = Store(self.db_path)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ingest(self, path: str | os.PathLike, name: str, format: str = "auto", *,
               skip_invalid: bool = False, split: str | None = None, progress: bool = False) -> IngestReport:
        return _ingest(self.store, path, name, format, skip_invalid=skip_invalid, split=split, show_progress=progress)

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        """Run SQL on this workspace's connection (read and write)."""
        return self.store.query(sql, params)

    def report(self, name: str) -> pl.DataFrame:
        return self.store.query(sqlfiles.report_sql(name))

    def datasets(self) -> pl.DataFrame:
        return self.report("datasets")

    def instances(self, dataset: str) -> pl.DataFrame:
        return self.store.instances(dataset)

    def index(self, dataset: str, field: str = "instruction", kind: str = "flat", **params):
        """Embed `field` (cached) and build a FAISS index under `index_dir`: `itaudit index`."""
        from .index import build_index

        return build_index(self.store, dataset, field, kind, index_dir=self.index_dir, **params)

    def neighbors(self, dataset: str, text: str | list[str], k: int = 10, field: str = "instruction") -> pl.DataFrame:
        """Nearest instances to `text` with scores and instance ids: `itaudit neighbors`."""
        from .index import neighbors

        return neighbors(self.store, dataset, text, k, field=field, index_dir=self.index_dir)

    def audit(self, dataset: str, checks: list[str] | None = None, params: dict | None = None,
              progress: bool = False) -> pl.DataFrame:
        """Run audit checks (default set when None) and return the per-check summary: `itaudit audit`."""
        from .audit.runner import run_checks

        run_checks(self.store, dataset, checks, index_dir=self.index_dir, params=params, show_progress=progress)
        return self.query(
            "SELECT * FROM (" + sqlfiles.report_sql("checks").rstrip().rstrip(";") + ") WHERE dataset = ?", [dataset]
        )


def open(db: str | os.PathLike | None = None, index_dir: str | os.PathLike | None = None) -> Workspace:  # noqa: A001
    return Workspace(db, index_dir)


def query_readonly(db: str | os.PathLike, sql: str, *, allow_files: bool = False) -> pl.DataFrame:
    """Run user SQL on a connection that cannot write the database, nor touch files unless allowed."""
    conn = connect_readonly(db, allow_files=allow_files)
    try:
        return to_polars(conn, sql)
    finally:
        conn.close()
