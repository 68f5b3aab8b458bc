"""Torch's intra-op threads, set around each torch computation and restored afterwards.

torch and FAISS share one OpenMP runtime when torch is imported first, so FAISS's one-thread
setting (`itaudit.index.vector`: its spinning threads slow small searches on a shared machine)
also made every torch computation run on one core. Torch work therefore runs inside
`torch_threads()`, which sets the threads it wants and puts the previous value back.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def wanted() -> int:
    """`ITAUDIT_TORCH_THREADS`, else `OMP_NUM_THREADS` (Ray sets it to a worker's CPUs), else the
    CPUs this process may run on."""
    for var in ("ITAUDIT_TORCH_THREADS", "OMP_NUM_THREADS"):
        n = os.environ.get(var, "")
        if n.isdigit() and int(n) > 0:
            return int(n)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Run the block with `n` (default `wanted()`) torch threads; restore the previous count."""
    import torch

    prev, want = torch.get_num_threads(), n or wanted()
    if want != prev:
        torch.set_num_threads(want)
    try:
        yield want
    finally:
        if want != prev:
            torch.set_num_threads(prev)


def with_torch_threads(fn: F) -> F:
    """Decorator form of `torch_threads()`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch_threads():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
