"""Run all benchmarks (or those named with --only) and print one table of results.

Each `bench/bench_<topic>.py` defines `run(data_dir: Path, quick: bool) -> list[dict]`; a row is
{"bench", "metric", "itaudit", "baseline", "ratio", "unit", "note"}: the ratio compares itaudit
against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    ap.add_argument("--only", nargs="*", help="topics to run, e.g. ingest index")
    ap.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        sys.exit(f"benchmark data folder {data} not found (pass --data)")
    here = Path(__file__).resolve().parent
    mods = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if args.only:
        mods = [m for m in mods if m.removeprefix("bench_") in args.only]
    console = Console(width=None if sys.stdout.isatty() else 220)
    rows: list[dict] = []
    for name in mods:
        console.print(f"[bold]== {name}[/]")
        t0 = time.perf_counter()
        mod = importlib.import_module(f"bench.{name}")
        got = mod.run(data, args.quick)
        console.print(f"[dim]{name} took {time.perf_counter() - t0:.1f}s[/]")
        rows += got
    t = Table(title="itaudit benchmarks (ratio = itaudit / baseline, same run)")
    for c in ("bench", "metric", "itaudit", "baseline", "ratio", "unit", "note"):
        t.add_column(c)
    for r in rows:
        t.add_row(*[_fmt(r.get(c)) for c in ("bench", "metric", "itaudit", "baseline", "ratio", "unit", "note")])
    console.print(t)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


if __name__ == "__main__":
    main()
