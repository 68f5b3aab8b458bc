"""`itaudit audit NAME [--checks ...]`: run audit checks, store results, print a summary."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..store import Store
from .common import DbOption, console, db_path, out
from .index import IndexDirOption, index_dir_of, parse_params

# The summary column "found": the most telling count each check reports.
_FOUND_KEYS = ("n_clusters", "n_groups", "n_conflict_pairs", "n_pairs")


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit_cmd(
        name: str = typer.Argument(None, help="dataset name"),
        checks: list[str] = typer.Option(None, "--checks", "-c", help="checks to run, comma-separated or repeated [default: all default checks]"),
        set_: list[str] = typer.Option(None, "--set", "-s", help="check parameter, e.g. -s near_duplicates.threshold=0.9"),
        model: str = typer.Option(None, "--model", help="embedding model dir/name [default: all-MiniLM-L6-v2]"),
        list_checks: bool = typer.Option(False, "--list", help="list the available checks"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
        index_dir: str = IndexDirOption,
        db: str = DbOption,
    ) -> None:
        """Run audit checks on a dataset; results go to check_runs / check_rows / check_pairs."""
        from ..audit.runner import available_checks, run_checks

        if list_checks:
            for spec in available_checks():
                out.print(f"[bold]{spec.name}[/]{'' if spec.default else ' (not default)'}  {spec.description}")
            return
        if not name:
            raise typer.BadParameter("give a dataset name (or --list)")
        params: dict[str, dict] = {}
        for key, val in parse_params(set_).items():
            check, dot, p = key.partition(".")
            if not dot:
                raise typer.BadParameter(f"--set expects check.param=value, got {key!r}")
            params.setdefault(check, {})[p] = val

        def done(o) -> None:
            console.print(f"[green]✓[/] {o.check}: {int(o.result.flag.sum()):,} flagged in {o.seconds:.1f}s "
                          f"[dim](run {o.run_id})[/]")

        with Store(db_path(db)) as store:
            outcomes = run_checks(store, name, checks, index_dir=Path(index_dir_of(index_dir)), model=model,
                                  show_progress=not quiet, params=params, on_done=done)
        t = Table(title=f"audit of {name}")
        for c in ("check", "flagged", "% rows", "found", "mean score", "seconds"):
            t.add_column(c, justify="right" if c not in ("check", "found") else "left", no_wrap=c == "check")
        for o in outcomes:
            r, s = o.result, o.result.summary
            n = len(r.idx)
            found = next((f"{s[k]:,} {k.removeprefix('n_').replace('_', ' ')}" for k in _FOUND_KEYS if k in s), "")
            t.add_row(o.check, f"{int(r.flag.sum()):,}", f"{100 * r.flag.sum() / max(n, 1):.2f}", found,
                      f"{float(r.score.mean()) if n else 0:.4f}", f"{o.seconds:.1f}")
        out.print(t)
        console.print("[dim]details: itaudit query --report duplicates | near_duplicates | conflicts | checks[/]")
