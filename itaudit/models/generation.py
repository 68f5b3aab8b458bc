"""Batched generation (greedy by default, left padding) and storing generations in DuckDB."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import torch

from ..errors import ItauditError
from ..progress import progress_bar
from ..store import Store
from ..threads import with_torch_threads
from .batching import pad_batch
from .loading import LoadedModel
from .prompts import PromptItem


def eos_ids(lm: LoadedModel) -> list[int]:
    ids: set[int] = set()
    gc = getattr(lm.model, "generation_config", None)
    for v in (getattr(gc, "eos_token_id", None), lm.tokenizer.eos_token_id):
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(x) for x in v)
    return sorted(ids)


def pad_id(lm: LoadedModel) -> int:
    tok = lm.tokenizer
    return int(tok.pad_token_id if tok.pad_token_id is not None else eos_ids(lm)[0])


@with_torch_threads
@torch.inference_mode()
def generate_ids(
    lm: LoadedModel,
    contexts: Sequence[Sequence[int]],
    max_new_tokens: int = 128,
    batch_size: int = 4,
    greedy: bool = True,
    show_progress: bool = True,
    *,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int = 0,
) -> list[list[int]]:
    """New token ids (EOS and padding removed) for each tokenized context, batched with left padding.

    Contexts are sorted by length so a batch wastes little padding; results come back in input order.
    """
    from transformers import GenerationConfig

    eos = eos_ids(lm)
    pad = pad_id(lm)
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=not greedy, pad_token_id=pad, eos_token_id=eos or None,
        **({} if greedy else {"temperature": temperature, "top_p": top_p}),
    )
    if not greedy:
        torch.manual_seed(seed)
    order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))
    out: list[list[int]] = [[] for _ in contexts]
    eos_set = set(eos)
    with progress_bar(f"generate {lm.model_id.split('/')[-1]}", total=len(contexts), unit="prompts",
                      enabled=show_progress) as bar:
        for s in range(0, len(order), batch_size):
            idxs = order[s : s + batch_size]
            ids, mask = pad_batch([contexts[i] for i in idxs], pad, left=True)
            width = ids.shape[1]
            gen = lm.model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
            new = gen[:, width:].tolist()
            for r, i in enumerate(idxs):
                toks = new[r]
                cut = next((k for k, t in enumerate(toks) if t in eos_set), len(toks))
                out[i] = toks[:cut]
            bar.advance(len(idxs))
    return out


def generate(
    lm: LoadedModel,
    prompts: list[str],
    max_new_tokens: int = 128,
    batch_size: int = 4,
    greedy: bool = True,
    show_progress: bool = True,
    *,
    apply_template: bool = True,
) -> list[str]:
    """Responses to `prompts`. Each prompt is an instruction passed through `lm.format_prompt`
    unless `apply_template=False` (then it is fed as is)."""
    texts = [lm.format_prompt(p) if apply_template else p for p in prompts]
    ids = generate_ids(lm, [lm.encode_prompt(t) for t in texts], max_new_tokens, batch_size, greedy, show_progress)
    return [lm.tokenizer.decode(t, skip_special_tokens=True).strip() for t in ids]


_GEN_SCHEMA = {
    "run_id": pl.Utf8, "model_id": pl.Utf8, "settings": pl.Utf8, "prompt_id": pl.Utf8, "dataset": pl.Utf8,
    "idx": pl.Int64, "instruction": pl.Utf8, "prompt": pl.Utf8, "response": pl.Utf8, "n_tokens": pl.Int32,
}


def run_generation(
    store: Store,
    lm: LoadedModel,
    items: list[PromptItem],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 4,
    greedy: bool = True,
    show_progress: bool = True,
    run_id: str | None = None,
    extra_settings: dict[str, Any] | None = None,
) -> str:
    """Generate a response per prompt item and store them in `generations`; returns the run id.

    Each batch is committed on its own, so passing the `run_id` of an interrupted run resumes it
    (prompts already answered in that run are skipped).
    """
    run_id = run_id or f"gen-{uuid.uuid4().hex[:12]}"
    prev = store.query("SELECT prompt_id FROM generations WHERE run_id = ?", [run_id])
    done = set(prev["prompt_id"].to_list()) if prev.height else set()
    todo = [it for it in items if it.prompt_id not in done]
    settings = json.dumps({"max_new_tokens": max_new_tokens, "greedy": greedy, "batch_size": batch_size,
                           "template": "chat" if lm.use_chat_template and lm.has_chat_template else "plain",
                           **(extra_settings or {})})
    texts = [lm.format_prompt(it.instruction, it.input, it.system, it.history) for it in todo]
    step = max(batch_size * 4, 16)
    with progress_bar("generate", total=len(todo), unit="prompts", enabled=show_progress) as bar:
        for s in range(0, len(todo), step):
            chunk, ctx = todo[s : s + step], texts[s : s + step]
            ids = generate_ids(lm, [lm.encode_prompt(t) for t in ctx], max_new_tokens, batch_size, greedy,
                               show_progress=False)
            rows = [{
                "run_id": run_id, "model_id": lm.model_id, "settings": settings, "prompt_id": it.prompt_id,
                "dataset": it.dataset, "idx": it.idx, "instruction": it.instruction, "prompt": t,
                "response": lm.tokenizer.decode(g, skip_special_tokens=True).strip(), "n_tokens": len(g),
            } for it, t, g in zip(chunk, ctx, ids, strict=True)]
            with store.transaction():
                store.insert_frame("generations", pl.DataFrame(rows, schema=_GEN_SCHEMA))
            bar.advance(len(chunk))
    return run_id


@dataclass
class GenerationRun:
    run_id: str
    model_id: str
    n_generations: int


def generate_run(
    store: Store,
    model: str,
    *,
    prompts: Any = None,
    dataset: str | None = None,
    adapter: str | None = None,
    limit: int | None = None,
    all_turns: bool = False,
    max_new_tokens: int = 128,
    batch_size: int = 4,
    sample: bool = False,
    plain: bool = False,
    run_id: str | None = None,
    show_progress: bool = True,
) -> GenerationRun:
    """`itaudit generate`: load `model` (+ `adapter`), answer the prompts (a file, a list, or a
    dataset's instructions) and store them in `generations`; resumable by `run_id`."""
    from .loading import load_model
    from .prompts import prompt_items

    if max_new_tokens < 1 or batch_size < 1:
        raise ItauditError("--max-new-tokens and --batch-size must be >= 1")
    items = prompt_items(store, prompts, dataset, limit=limit, first_turn_only=not all_turns)
    lm = load_model(model, adapter=str(adapter) if adapter else None, show_progress=show_progress)
    lm.use_chat_template = not plain
    rid = run_generation(store, lm, items, max_new_tokens=max_new_tokens, batch_size=batch_size,
                         greedy=not sample, show_progress=show_progress, run_id=run_id)
    n = int(store.query("SELECT count(*) AS n FROM generations WHERE run_id = ?", [rid])["n"][0])
    return GenerationRun(rid, str(lm.model_id), n)
