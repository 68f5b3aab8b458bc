"""Base-model ranks of response tokens (for candidate spans when no shift rows are stored).

The same categories as the shift analysis (URIAL / AlignTDS): a response token is *unshifted* when
it is the base model's top-1 choice in context, *marginal* at rank 2-3 and *shifted* beyond.
Shift rows stored by `itaudit shift` (table shift_tokens) are reused when a run id is given.
"""

from __future__ import annotations

import math
from typing import Any

from ..store import Store


def category(rank: int) -> str:
    return "unshifted" if rank <= 1 else ("marginal" if rank <= 3 else "shifted")


def token_ranks(lm: Any, prompt_text: str, response: str, max_tokens: int = 1024) -> list[tuple[int, int, int]]:
    """(char_start, char_end, 1-based base rank) for each token of `response` after `prompt_text`.

    `lm` is an `itaudit.models.LoadedModel`; `prompt_text` is already formatted (template applied)."""
    return [(s, e, r) for s, e, r, _ in token_scores(lm, prompt_text, response, max_tokens)]


def token_scores(lm: Any, prompt_text: str, response: str,
                 max_tokens: int = 1024) -> list[tuple[int, int, int, float]]:
    """(char_start, char_end, 1-based rank, surprisal in bits) of each response token under `lm`.

    Scored by the shared chunked scorer (`itaudit.models.scoring`)."""
    from ..models import pad_id
    from ..models.scoring import score, scorer_for

    tok = lm.tokenizer
    p_ids = lm.encode_prompt(prompt_text)
    enc = tok(response, add_special_tokens=False, return_offsets_mapping=True)
    r_ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    room = max(0, max_tokens - len(p_ids))
    r_ids, offsets = r_ids[:room], offsets[:room]
    if not r_ids:
        return []
    [st] = score(scorer_for(lm.model), [(p_ids, r_ids)], pad_id=pad_id(lm))
    bits = st.nll / math.log(2)
    return [(int(s), int(e), int(r), round(float(b), 4))
            for (s, e), r, b in zip(offsets, st.rank.tolist(), bits.tolist(), strict=True)]


def token_categories(lm: Any, prompt_text: str, response: str, max_tokens: int = 1024) -> list[tuple[int, int, str]]:
    return [(s, e, category(r)) for s, e, r in token_ranks(lm, prompt_text, response, max_tokens)]


def shift_rows(store: Store, run_id: str) -> dict[str, tuple[str, str, list[tuple[int, int, str]]]]:
    """prompt_id -> (instruction, response, token spans with categories) from a stored shift run.

    Character offsets are rebuilt by locating each decoded token in the response, in order."""
    resp = store.query("SELECT prompt_id, instruction, response FROM shift_responses WHERE run_id = ?", [run_id])
    if resp.height == 0:
        raise KeyError(f"no shift run {run_id!r} (see table shift_runs)")
    toks = store.query(
        "SELECT prompt_id, position, token, category FROM shift_tokens WHERE run_id = ? ORDER BY prompt_id, position",
        [run_id])
    by: dict[str, list[tuple[str, str]]] = {}
    for pid, _, token, cat in toks.iter_rows():
        by.setdefault(pid, []).append((token, cat))
    out = {}
    for pid, instruction, response in resp.iter_rows():
        spans = []
        pos = 0
        for token, cat in by.get(pid, []):
            t = token.strip() or token
            k = response.find(t, pos) if t else -1
            if k < 0:
                continue
            spans.append((k, k + len(t), cat))
            pos = k + len(t)
        out[pid] = (instruction, response, spans)
    return out
