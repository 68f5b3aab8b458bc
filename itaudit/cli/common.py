"""Shared CLI pieces: the console and common options."""

from __future__ import annotations

import typer
from rich.console import Console

from ..store import default_db

console = Console(stderr=True)
out = Console()

DbOption = typer.Option(None, "--db", help="DuckDB file [default: $ITAUDIT_DB or itaudit.duckdb]")


def db_path(db: str | None) -> str:
    return db or default_db()
