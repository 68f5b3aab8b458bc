"""Shared CLI pieces: the console and common options."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from ..store import default_db

# Piped output is not squeezed into 80 columns: wide tables stay readable in logs and files.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
out = Console(width=None if sys.stdout.isatty() else 200)

DbOption = typer.Option(None, "--db", help="DuckDB file [default: $ITAUDIT_DB or itaudit.duckdb]")


def db_path(db: str | None) -> str:
    return db or default_db()
