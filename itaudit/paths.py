"""Where files go and how they are written: the index folder default and atomic writes.

Every file itaudit writes outside DuckDB (reports, exports, indexes, checkpoints, model folders)
is written under a hidden temporary sibling name and renamed over its target only when complete,
so a crash or Ctrl-C never leaves a half-written file under the real name.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INDEX_DIR_ENV = "ITAUDIT_INDEX_DIR"
DEFAULT_INDEX_DIR = "indexes"


def index_dir(explicit: str | os.PathLike | None = None) -> Path:
    """`explicit`, else `$ITAUDIT_INDEX_DIR`, else ./indexes."""
    return Path(explicit) if explicit else Path(os.environ.get(INDEX_DIR_ENV) or DEFAULT_INDEX_DIR)


def temp_sibling(path: str | os.PathLike) -> Path:
    """A unique hidden name next to `path` (same folder, so the final rename is atomic)."""
    p = Path(path)
    return p.with_name(f".{p.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


@contextmanager
def atomic_path(path: str | os.PathLike, *, mkdir: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write (a file, or a folder the caller creates); on success it
    replaces `path` (an existing folder there is removed first), on error it is deleted."""
    p = Path(path)
    if mkdir:
        p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(p)
    try:
        yield tmp
        if tmp.is_dir() and p.is_dir():
            _remove(p)
        os.replace(tmp, p)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
