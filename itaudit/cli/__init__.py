"""The `itaudit` command line. Each module in this package registers its commands.

A command module defines `register(app: typer.Typer) -> None`; modules are discovered, so adding
a capability never means editing this file.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import typer

from ..errors import ItauditError
from .common import console

app = typer.Typer(
    name="itaudit",
    help="Audit instruction-tuning datasets and trace borrowed hallucinations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _mod.name != "common":
        importlib.import_module(f"{__name__}.{_mod.name}").register(app)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # User errors are ItauditError (exit 2, no traceback); ITAUDIT_DEBUG=1 shows tracebacks for them too.
    try:
        code = app(args=argv, standalone_mode=False)  # a raised typer.Exit(n) comes back as n
        if isinstance(code, int) and code:
            sys.exit(code)
    except ItauditError as e:
        if os.environ.get("ITAUDIT_DEBUG"):
            raise
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except FileNotFoundError as e:  # a path the user gave; other exceptions are bugs: traceback
        if os.environ.get("ITAUDIT_DEBUG"):
            raise
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]; finished work is saved, rerun to resume")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # click usage errors
        import click

        # typer >= 0.25 vendors click: its usage errors are typer._click exceptions
        if isinstance(e, (click.ClickException, typer._click.ClickException)):
            e.show()
            sys.exit(e.exit_code)
        raise
