"""`itaudit report`: a self-contained HTML report and/or a terminal summary of a dataset's audit."""

from __future__ import annotations

from pathlib import Path

import typer

from ..report import print_summary, write_report
from ..store import Store
from .common import DbOption, console, db_path, out


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        name: str = typer.Argument(..., help="dataset name"),
        html: Path = typer.Option(None, "--html", help="write a self-contained HTML report here"),
        db: str = DbOption,
    ) -> None:
        """Summarize a dataset's audit results (terminal), and write an HTML report with --html."""
        with Store(db_path(db)) as store:
            print_summary(store, name, console=out)
            if html:
                p = write_report(store, name, html)
                console.print(f"wrote {p} ({p.stat().st_size / 1024:,.0f} KiB, no external assets)")
