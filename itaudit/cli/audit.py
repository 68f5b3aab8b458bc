"""`itaudit audit NAME [--checks ...]`: run audit checks, store results, print a summary."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..store import Store
from .common import DbOption, ExecutorOption, RayAddressOption, console, db_path, make_executor, out
from .index import IndexDirOption, index_dir_of


def parse_sets(items: list[str] | None) -> dict[str, dict[str, str]]:
    """`check.param=value` strings -> {check: {param: "value"}}; each check's `Params.parse`
    types the values (lists as `a,b`) and rejects unknown keys."""
    params: dict[str, dict[str, str]] = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        check, dot, p = key.strip().partition(".")
        if not sep or not dot or not check or not p:
            raise typer.BadParameter(f"--set expects check.param=value, got {item!r}")
        params.setdefault(check, {})[p] = val.strip()
    return params


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
        executor: str = ExecutorOption,
        ray_address: str = RayAddressOption,
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
        params = parse_sets(set_)

        def done(o) -> None:
            console.print(f"[green]✓[/] {o.check}: {int(o.result.flag.sum()):,} flagged in {o.seconds:.1f}s "
                          f"[dim](run {o.run_id})[/]")

        with Store(db_path(db)) as store:
            outcomes = run_checks(store, name, checks, index_dir=Path(index_dir_of(index_dir)), model=model,
                                  show_progress=not quiet, params=params, on_done=done,
                                  executor=make_executor(executor, ray_address))
        t = Table(title=f"audit of {name}")
        for c in ("check", "flagged", "% rows", "found", "mean score", "seconds"):
            t.add_column(c, justify="right" if c not in ("check", "found") else "left", no_wrap=c == "check")
        for o in outcomes:
            r = o.result
            n = len(r.idx)
            lines = o.render_text()
            found = lines[0] if lines else ""
            t.add_row(o.check, f"{int(r.flag.sum()):,}", f"{100 * r.flag.sum() / max(n, 1):.2f}", found,
                      f"{float(r.score.mean()) if n else 0:.4f}", f"{o.seconds:.1f}")
        out.print(t)
        for o in outcomes:
            for note in o.render_text()[1:]:
                out.print(f"[dim]{o.check}:[/] {note}", highlight=False)
        console.print("[dim]details: itaudit query --report duplicates | near_duplicates | conflicts | checks[/]")
