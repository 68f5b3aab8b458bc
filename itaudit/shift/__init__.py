"""Token distribution shift between a base and a tuned model (URIAL / AlignTDS analysis).

    from itaudit.shift import analyze
    res = analyze(store, base_lm, items, tuned=tuned_lm, max_new_tokens=64)
    store.query("SELECT * FROM shift_tokens WHERE run_id = ?", [res.run_id])
"""

from ..models.scoring import Scorer, TokenStats, chunk_size, score, score_batch
from .run import (
    ShiftChunk,
    ShiftParams,
    ShiftResult,
    ShiftStep,
    analyze,
    category,
    items_frame,
    run_summary,
    same_vocabulary,
    save_frames,
    set_reference,
)
from .words import TokenLayout, layout, token_spans

__all__ = [
    "Scorer", "ShiftChunk", "ShiftParams", "ShiftResult", "ShiftStep", "items_frame", "save_frames", "TokenLayout", "TokenStats", "analyze", "category", "chunk_size", "layout",
    "run_summary", "same_vocabulary", "score", "score_batch", "set_reference", "token_spans",
]
