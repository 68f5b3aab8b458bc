"""Content hashes of files, streamed in 4 MiB blocks."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path, h: hashlib._Hash | None = None) -> str:
    """sha256 hex digest of a file; with `h`, feed that running hash instead and return its digest."""
    h = h or hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()
