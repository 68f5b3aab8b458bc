"""Model-driven tracing inputs: generate responses with a tuned model, categorize tokens with a base model."""

from __future__ import annotations

from typing import Any

from ..progress import progress_bar
from .pipeline import TraceItem
from .ranks import token_categories


def generate_items(tuned: Any, prompts: list[Any], *, max_new_tokens: int = 96, batch_size: int = 4,
                   show_progress: bool = False) -> list[TraceItem]:
    """Greedy responses of `tuned` (a LoadedModel) to `prompts` (PromptItem list; `.response` = reference)."""
    from ..models import generate_ids

    texts = [tuned.format_prompt(p.instruction, p.input, p.system, p.history) for p in prompts]
    ids = generate_ids(tuned, [tuned.encode_prompt(t) for t in texts], max_new_tokens, batch_size, True, show_progress)
    out = []
    for p, t in zip(prompts, ids, strict=True):
        resp = tuned.tokenizer.decode(t, skip_special_tokens=True).strip()
        out.append(TraceItem(p.prompt_id, p.instruction if not p.input else f"{p.instruction}\n\n{p.input}", resp,
                             p.response))
    return out


def add_categories(items: list[TraceItem], base: Any, *, max_tokens: int = 1024, show_progress: bool = False) -> None:
    """Fill `token_spans` of each item with the base model's shift categories (in place)."""
    with progress_bar("base ranks", total=len(items), unit="responses", enabled=show_progress) as bar:
        for it in items:
            it.token_spans = token_categories(base, base.format_prompt(it.instruction), it.response, max_tokens)
            bar.advance()


def add_scores(items: list[TraceItem], base: Any, *, max_tokens: int = 1024, show_progress: bool = False) -> None:
    """Fill `token_spans` (shift categories) and `token_bits` (surprisal) under `base` (in place)."""
    from .ranks import category, token_scores

    with progress_bar("base scores", total=len(items), unit="responses", enabled=show_progress) as bar:
        for it in items:
            sc = token_scores(base, base.format_prompt(it.instruction), it.response, max_tokens)
            it.token_spans = [(s, e, category(r)) for s, e, r, _ in sc]
            it.token_bits = [(s, e, b) for s, e, _, b in sc]
            bar.advance()
