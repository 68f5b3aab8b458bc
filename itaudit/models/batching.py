"""The one padding helper: token id lists -> a padded id tensor and its attention mask."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_batch(seqs: Sequence[Sequence[int]], pad: int, *, left: bool = False,
              width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of shape (len(seqs), width), padded with `pad` on the right (default) or the
    left (generation: every row then ends at the last position). `width` defaults to the longest."""
    width = max((len(s) for s in seqs), default=0) if width is None else width
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s)
        if n == 0:
            continue
        sl = slice(width - n, width) if left else slice(0, n)
        ids[i, sl] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask
