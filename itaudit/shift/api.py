"""`itaudit shift` as a library call: pick the prompts and answers, load the models, run, summarise.

The CLI (`itaudit.cli.shift`) and `Workspace.shift` both call `run_shift`; `shift_categories`
gives the per-category token counts the CLI prints.
"""

from __future__ import annotations

import os
from typing import Any

import polars as pl

from ..errors import ItauditError
from ..models.scoring import DEFAULT_BUDGET_MB
from ..store import Store
from .run import ShiftResult, analyze, load_shift_models


def run_shift(
    store: Store,
    base: str,
    *,
    tuned: str | None = None,
    adapter: str | os.PathLike | None = None,
    responses: str | os.PathLike | None = None,
    generations: str | None = None,
    prompts: Any = None,
    dataset: str | None = None,
    limit: int | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 4,
    reference: str | None = None,
    template_from: str | None = None,
    plain: bool = False,
    budget_mb: float = DEFAULT_BUDGET_MB,
    run_id: str | None = None,
    first_turn_only: bool = False,
    show_progress: bool = True,
    executor: Any = None,
) -> ShiftResult:
    """Token distribution shift of answers under the `base` model; stored, returns the run.

    Answers come from one of: `tuned` (a model), `adapter` (base + LoRA), `responses` (a file of
    prompt + response records), `generations` (a stored `itaudit generate` run); or, with none of
    them, the responses held by `prompts` (a file or a list of dicts) or `dataset`. `executor`
    (itaudit.steps.executor, e.g. RayExecutor): where chunks of prompts are scored; its workers
    load the models from their specs once each.
    """
    from ..models import PromptItem, prompt_items, read_prompts

    n_answers = sum(x is not None for x in (tuned, adapter, responses, generations))
    if n_answers > 1:
        raise ItauditError("give only one of --tuned, --adapter, --responses, --generations")
    if max_new_tokens < 1 or batch_size < 1:
        raise ItauditError("--max-new-tokens and --batch-size must be >= 1")
    contexts: list[str] | None = None
    given: list[str] | None = None
    if responses is not None:
        items = read_prompts(responses, limit=limit)
        missing = [it.prompt_id for it in items if not it.response]
        if missing:
            raise ItauditError(f"{responses}: {len(missing)} records have no response (e.g. {missing[0]})")
        given = [it.response or "" for it in items]
    elif generations is not None:
        df = store.query("SELECT prompt_id, instruction, prompt, response FROM generations WHERE run_id = ?"
                         " ORDER BY prompt_id" + (f" LIMIT {int(limit)}" if limit else ""), [generations])
        if df.height == 0:
            raise ItauditError(f"no generations with run id {generations!r}")
        items = [PromptItem(r["prompt_id"], r["instruction"]) for r in df.iter_rows(named=True)]
        contexts, given = df["prompt"].to_list(), df["response"].to_list()
    else:
        if prompts is None and dataset is None:
            raise ItauditError("give --tuned M, --adapter DIR, --responses FILE, --generations RUN or --dataset NAME"
                               if n_answers == 0 else "give --prompts FILE or --dataset NAME")
        # a prompt file gives its first turns (MT-Bench); a dataset every instance unless first_turn_only
        items = prompt_items(store, prompts, dataset, limit=limit,
                             first_turn_only=first_turn_only or isinstance(prompts, (str, os.PathLike)))
        if tuned is None and adapter is None:
            given = [it.response or "" for it in items]
            if not any(given):
                raise ItauditError("no responses to analyse: give --tuned M, --adapter DIR, --responses FILE "
                                   "or --generations RUN")
    if reference is not None:
        store.require_dataset(reference)

    base_lm, tuned_lm, context_lm = load_shift_models(
        base, tuned=tuned, adapter=str(adapter) if adapter is not None else None, template_from=template_from,
        plain=plain, show_progress=show_progress)
    specs = {"base": base, "tuned": tuned, "adapter": str(adapter) if adapter is not None else None,
             "template_from": template_from, "plain": plain}
    return analyze(store, base_lm, items, tuned=tuned_lm, adapter_mode=adapter is not None, responses=given,
                   context_lm=context_lm, contexts=contexts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                   reference_dataset=reference, budget_mb=budget_mb, run_id=run_id, show_progress=show_progress,
                   executor=executor, specs=specs)


def shift_categories(store: Store, run_id: str) -> pl.DataFrame:
    """Tokens per category (unshifted / marginal / shifted) of a run: count, share (%), mean KL."""
    return store.query(
        "SELECT category, count(*) AS tokens, round(100.0 * count(*) / sum(count(*)) OVER (), 2) AS pct,"
        " avg(kl) AS mean_kl FROM shift_tokens WHERE run_id = ? GROUP BY category"
        " ORDER BY list_position(['unshifted', 'marginal', 'shifted'], category)", [run_id])


def run_info(store: Store, run_id: str) -> dict[str, Any]:
    """The shift_runs row of `run_id`."""
    df = store.query("SELECT * FROM shift_runs WHERE run_id = ?", [run_id])
    if df.height == 0:
        raise ItauditError(f"no shift run {run_id!r} (see table shift_runs)")
    return df.row(0, named=True)
