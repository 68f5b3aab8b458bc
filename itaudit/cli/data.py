"""`itaudit ingest`, `itaudit datasets`, `itaudit query`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import polars as pl
import typer
from rich.table import Table

from .. import sqlfiles
from ..errors import InputError
from ..ingest import ingest as run_ingest
from ..ingest.formats import FORMATS
from ..store import Store
from ..usersql import NO_FILES_HINT, is_file_access_error
from ..workspace import query_readonly
from .common import DbOption, console, db_path, out

FormatChoice = Enum("FormatChoice", {f: f for f in ("auto", *FORMATS)}, type=str)


class OutFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def print_frame(df: pl.DataFrame, title: str | None = None, max_rows: int = 50, max_width: int = 80) -> None:
    """Render a polars frame as a rich table (cells shortened)."""
    t = Table(title=title, show_lines=False)
    for c in df.columns:
        t.add_column(c, overflow="fold")
    for row in df.head(max_rows).iter_rows():
        t.add_row(*[_cell(v, max_width) for v in row])
    out.print(t)
    if df.height > max_rows:
        console.print(f"[dim]… {df.height - max_rows} more rows (use --format csv/json/parquet --out FILE)[/]")


def _cell(v: object, width: int) -> str:
    s = "∅" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    s = s.replace("\n", "⏎ ")
    return s if len(s) <= width else s[: width - 1] + "…"


def register(app: typer.Typer) -> None:
    @app.command()
    def ingest(
        path: Path = typer.Argument(..., help="json, jsonl, parquet, csv file or HF dataset directory"),
        name: str = typer.Option(..., "--name", "-n", help="dataset name in the database"),
        format: FormatChoice = typer.Option("auto", "--format", "-f", help="source format (auto-detected from fields)"),
        db: str = DbOption,
        skip_invalid: bool = typer.Option(False, "--skip-invalid", help="record bad rows in rejected_rows and go on"),
        split: str = typer.Option(None, "--split", help="split of a HF DatasetDict [default: train]"),
    ) -> None:
        """Normalize an IT dataset into the database (atomic; idempotent)."""
        if not path.exists():  # before opening (and maybe creating) the database
            raise InputError(str(path), None, None, "file does not exist")
        with Store(db_path(db)) as store:
            try:
                r = run_ingest(store, path, name, format.value, skip_invalid=skip_invalid, split=split)
            except InputError as e:
                if skip_invalid or not e.skippable:   # whole-file problems: skipping records cannot help
                    raise
                raise InputError(e.file, e.location, e.field,
                                 f"{e.reason}\n(nothing was ingested; to record bad rows in rejected_rows and "
                                 f"ingest the rest, rerun with --skip-invalid)") from None
        if r.unchanged:
            console.print(f"[green]{name}[/]: unchanged ({r.n_rows} instances), nothing to do")
            return
        console.print(
            f"[green]{name}[/]: {r.n_rows:,} instances from {r.n_source:,} {r.format} records"
            f" in {r.seconds:.1f}s" + (f", [yellow]{r.n_rejected:,} rejected[/] (see report 'rejected')" if r.n_rejected else "")
        )

    @app.command()
    def datasets(db: str = DbOption) -> None:
        """List datasets with row counts."""
        print_frame(query_readonly(db_path(db), sqlfiles.report_sql("datasets")), title="datasets")

    @app.command()
    def query(
        sql: str = typer.Argument(None, help="SQL to run on a read-only connection"),
        report: str = typer.Option(None, "--report", "-r", help="run sql/reports/NAME.sql"),
        format: OutFormat = typer.Option(OutFormat.table, "--format", "-f"),
        out_file: Path = typer.Option(None, "--out", "-o", help="write the result here"),
        list_reports: bool = typer.Option(False, "--list", help="list the canned reports"),
        allow_files: bool = typer.Option(False, "--allow-files", help="let the SQL read/write files (read_csv, COPY ... TO)"),
        db: str = DbOption,
    ) -> None:
        """Run SQL (read-only; no file access unless --allow-files) or a canned report."""
        if list_reports:
            for n in sqlfiles.report_names():
                first = sqlfiles.report_sql(n).splitlines()[0].lstrip("- ")
                out.print(f"[bold]{n}[/]  {first}")
            return
        if (sql is None) == (report is None):
            raise typer.BadParameter("give either SQL or --report NAME")
        text = sqlfiles.report_sql(report) if report else sql
        try:
            df = query_readonly(db_path(db), text, allow_files=allow_files)
        except Exception as e:  # duckdb errors: show the message, not a traceback
            import duckdb

            if isinstance(e, duckdb.Error):
                hint = f"\n{NO_FILES_HINT}" if is_file_access_error(e) else ""
                console.print(f"[bold red]query failed:[/] {e}{hint}", highlight=False)
                raise typer.Exit(2) from None
            raise
        write_frame(df, format.value, out_file, title=report)


def write_frame(df: pl.DataFrame, fmt: str, out_file: Path | None, title: str | None = None) -> None:
    if fmt == "table":
        if out_file:
            raise typer.BadParameter("--out needs --format csv, json or parquet")
        print_frame(df, title=title)
        return
    if fmt == "parquet" and out_file is None:
        raise typer.BadParameter("--format parquet needs --out FILE")
    if out_file:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        {"csv": df.write_csv, "json": df.write_ndjson, "parquet": df.write_parquet}[fmt](out_file)
        console.print(f"wrote {df.height:,} rows to {out_file}")
    else:
        import sys

        sys.stdout.write(df.write_csv() if fmt == "csv" else df.write_ndjson())
