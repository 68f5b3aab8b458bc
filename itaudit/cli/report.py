"""`itaudit report`: a self-contained HTML report and/or a terminal summary of a dataset's audit."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ItauditError
from ..report import print_summary, write_report
from ..store import Store
from .common import DbOption, console, db_path, out


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        name: str = typer.Argument(..., help="dataset name"),
        html: Path = typer.Option(None, "--html", help="write a self-contained HTML report here"),
        screenshot: Path = typer.Option(None, "--screenshot", help="also render it in headless Chromium to this PNG"),
        db: str = DbOption,
    ) -> None:
        """Summarize a dataset's audit results (terminal), and write an HTML report with --html."""
        if screenshot and not html:
            raise ItauditError("--screenshot needs --html FILE")
        with Store(db_path(db)) as store:
            print_summary(store, name, console=out)
            if html:
                p = write_report(store, name, html)
                console.print(f"wrote {p} ({p.stat().st_size / 1024:,.0f} KiB, no external assets)")
        if screenshot:
            from ..report.browser import screenshot as shoot

            view = shoot(html, screenshot)
            problems = view.console_errors + [f"external request {u}" for u in view.external_requests]
            console.print(f"wrote {screenshot} ({view.height:,} px tall)"
                          + (f"; [yellow]{len(problems)} problems[/]: {'; '.join(problems[:3])}" if problems else ""))
