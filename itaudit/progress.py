"""One progress bar for all long work (rich), quiet when not wanted or not a terminal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Bar:
    """A handle on one task of a rich progress display; cheap to call in tight loops."""

    def __init__(self, progress: Progress | None, task: int | None):
        self._p, self._t, self.count = progress, task, 0
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        self.count += n
        if self._p is not None:
            now = time.monotonic()
            if now - self._last >= 0.1:  # rich redraws ~10x/s anyway: skip the bookkeeping between
                self._last = now
                self._p.update(self._t, completed=self.count)

    def update(self, completed: int | None = None, description: str | None = None) -> None:
        """Set the position (e.g. a resumed step) and/or the description, and redraw."""
        if completed is not None:
            self.count = completed
        if self._p is not None:
            kw = {"description": description} if description is not None else {}
            self._p.update(self._t, completed=self.count, **kw)


@contextmanager
def progress_bar(description: str, total: int | None = None, unit: str = "items", enabled: bool = True) -> Iterator[Bar]:
    """`with progress_bar("embed", total=n) as bar: bar.advance(k)` — renders to stderr."""
    if not enabled:
        yield Bar(None, None)
        return
    cols = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn(unit), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, console=Console(stderr=True), transient=False) as p:
        task = p.add_task(description, total=total)
        bar = Bar(p, task)
        yield bar
        p.update(task, completed=bar.count, total=total if total is not None else bar.count)
