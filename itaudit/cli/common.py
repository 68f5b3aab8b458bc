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


ExecutorOption = typer.Option("local", "--executor",
                              help="where row-parallel stages run: local (this machine) or ray (needs itaudit[ray])")
RayAddressOption = typer.Option(None, "--ray-address",
                                help="Ray cluster to join (e.g. auto, ray://head:10001) [default: $ITAUDIT_RAY_ADDRESS, "
                                     "else a local cluster]")


def make_executor(kind: str, ray_address: str | None = None):
    """The executor named on the command line (`--executor`, `--ray-address`)."""
    from ..errors import ItauditError

    if kind == "local":
        if ray_address:
            raise ItauditError("--ray-address needs --executor ray")
        from ..steps.executor import LocalExecutor

        return LocalExecutor()
    if kind == "ray":
        from ..steps.executor_ray import RayExecutor

        return RayExecutor(ray_address)
    raise ItauditError(f"unknown executor {kind!r}; choose local or ray")
