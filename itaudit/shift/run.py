"""The token distribution shift analysis (URIAL / AlignTDS), end to end, stored in DuckDB.

The tuned model answers each prompt greedily; the base model reads the same context text (the
tuned model's chat-formatted prompt) plus the response prefix, and for every response token we
record the base rank of the tuned token, both probabilities and KL(base || tuned).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ..errors import ItauditError
from ..models import LoadedModel, PromptItem, generate_ids, pad_id
from ..models.scoring import DEFAULT_BUDGET_MB, Scorer, TokenStats, score
from ..progress import progress_bar
from ..store import Store
from .words import layout


def category(rank: int) -> str:
    return "unshifted" if rank == 1 else ("marginal" if rank <= 3 else "shifted")


def same_vocabulary(a: LoadedModel, b: LoadedModel) -> bool:
    """KL needs one vocabulary: identical token->id maps and LM head sizes."""
    if a.tokenizer is b.tokenizer:
        return a.vocab_size == b.vocab_size
    return a.vocab_size == b.vocab_size and a.tokenizer.get_vocab() == b.tokenizer.get_vocab()


@dataclass
class ShiftResult:
    run_id: str
    n_prompts: int
    n_tokens: int
    seconds: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


_TOKEN_SCHEMA = {
    "run_id": pl.Utf8, "prompt_id": pl.Utf8, "position": pl.Int32, "token_id": pl.Int64, "token": pl.Utf8,
    "word_idx": pl.Int32, "word": pl.Utf8, "is_word_start": pl.Boolean, "sentence_idx": pl.Int32,
    "sentence_frac": pl.Float64, "category": pl.Utf8, "base_rank": pl.Int32, "base_prob": pl.Float64,
    "tuned_prob": pl.Float64, "kl": pl.Float64,
}
_RESP_SCHEMA = {"run_id": pl.Utf8, "prompt_id": pl.Utf8, "instruction": pl.Utf8, "prompt": pl.Utf8,
                "response": pl.Utf8, "n_tokens": pl.Int32}


def token_rows(run_id: str, prompt_id: str, tokenizer: Any, ids: list[int], st: TokenStats) -> pl.DataFrame:
    lay = layout(tokenizer, ids)
    n = len(ids)
    ranks = st.rank.astype(np.int32)
    return pl.DataFrame({
        "run_id": [run_id] * n, "prompt_id": [prompt_id] * n, "position": list(range(n)), "token_id": ids,
        "token": lay.pieces, "word_idx": lay.word_idx, "word": lay.words, "is_word_start": lay.is_word_start,
        "sentence_idx": lay.sentence_idx, "sentence_frac": lay.sentence_frac,
        "category": [category(int(r)) for r in ranks], "base_rank": ranks, "base_prob": st.base_prob,
        "tuned_prob": st.tuned_prob if st.tuned_prob is not None else [None] * n,
        "kl": st.kl if st.kl is not None else [None] * n,
    }, schema=_TOKEN_SCHEMA)


def _encode_response(lm: LoadedModel, text: str) -> list[int]:
    return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])


def analyze(
    store: Store,
    base: LoadedModel,
    items: list[PromptItem],
    *,
    tuned: LoadedModel | None = None,
    adapter_mode: bool = False,
    responses: list[str] | None = None,
    context_lm: Any = None,
    contexts: list[str] | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 4,
    reference_dataset: str | None = None,
    budget_mb: float = DEFAULT_BUDGET_MB,
    run_id: str | None = None,
    show_progress: bool = True,
    chunk_prompts: int = 16,
) -> ShiftResult:
    """Run the shift analysis and store it; returns the run id and timings.

    Modes: `tuned` (a separate model, or with `adapter_mode` the same PeftModel as `base` whose
    adapter is switched off to get the base), or `responses` (texts given; base model only).
    `context_lm` (anything with `format_prompt`) formats prompts in responses mode (default: base);
    `contexts` gives the context texts verbatim instead (e.g. the prompts stored with generations).
    Each chunk of prompts is committed on its own: rerun with the same `run_id` to resume.
    """
    if (tuned is None) == (responses is None):
        raise ItauditError("give either a tuned model or responses")
    if responses is not None and len(responses) != len(items):
        raise ItauditError(f"{len(responses)} responses for {len(items)} prompts")
    if contexts is not None and len(contexts) != len(items):
        raise ItauditError(f"{len(contexts)} contexts for {len(items)} prompts")
    mode = "responses" if tuned is None else ("adapter" if adapter_mode else "models")
    shared_vocab = tuned is not None and (adapter_mode or same_vocabulary(base, tuned))
    retokenized = tuned is None or not shared_vocab
    run_id = run_id or f"shift-{uuid.uuid4().hex[:12]}"
    settings = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "greedy": True,
                "budget_mb": budget_mb, "n_prompts": len(items)}
    existing = store.query("SELECT run_id FROM shift_runs WHERE run_id = ?", [run_id])
    if existing.height == 0:
        with store.transaction() as conn:
            conn.execute(
                "INSERT INTO shift_runs (run_id, base_model, tuned_model, mode, retokenized, kl_available,"
                " reference_dataset, settings) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, base.model_id, tuned.model_id if tuned else None, mode, retokenized, shared_vocab,
                 reference_dataset, json.dumps(settings)],
            )
    done = set(store.query("SELECT prompt_id FROM shift_responses WHERE run_id = ?", [run_id])["prompt_id"].to_list())
    todo = [(k, it) for k, it in enumerate(items) if it.prompt_id not in done]

    if adapter_mode:
        base_scorer = Scorer(tuned.model, disable_adapter=True)
        tuned_scorer: Scorer | None = Scorer(tuned.model)
    else:
        base_scorer = Scorer(base.model)
        tuned_scorer = Scorer(tuned.model) if shared_vocab else None
    fmt = tuned if tuned is not None else (context_lm or base)
    secs = {"generate": 0.0, "score": 0.0, "layout": 0.0}
    n_tokens = 0
    with progress_bar(f"shift {mode}", total=len(todo), unit="prompts", enabled=show_progress) as bar:
        for s in range(0, len(todo), chunk_prompts):
            chunk = todo[s : s + chunk_prompts]
            texts = [contexts[k] if contexts is not None else
                     fmt.format_prompt(it.instruction, it.input, it.system, it.history) for k, it in chunk]
            base_ctx = [base.encode_prompt(t) for t in texts]
            t0 = time.perf_counter()
            if tuned is not None:
                tuned_ctx = [tuned.encode_prompt(t) for t in texts]
                gen = generate_ids(tuned, tuned_ctx, max_new_tokens, batch_size, greedy=True, show_progress=False)
                resp_text = [tuned.tokenizer.decode(g, skip_special_tokens=True) for g in gen]
                base_resp = gen if shared_vocab else [_encode_response(base, r) for r in resp_text]
            else:
                resp_text = [responses[k] for k, _ in chunk]
                base_resp = [_encode_response(base, r) for r in resp_text]
            secs["generate"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            bseqs = list(zip(base_ctx, base_resp, strict=True))
            tseqs = list(zip(tuned_ctx, gen, strict=True)) if tuned_scorer is not None else None
            stats = score(base_scorer, bseqs, tuned_scorer, tseqs, batch_size=batch_size,
                          pad_id=pad_id(base), budget_mb=budget_mb)
            secs["score"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            frames = [token_rows(run_id, it.prompt_id, base.tokenizer, ids, st)
                      for (_, it), ids, st in zip(chunk, base_resp, stats, strict=True) if ids]
            resp_rows = pl.DataFrame([
                {"run_id": run_id, "prompt_id": it.prompt_id, "instruction": it.instruction, "prompt": t,
                 "response": r, "n_tokens": len(ids)}
                for (_, it), t, r, ids in zip(chunk, texts, resp_text, base_resp, strict=True)
            ], schema=_RESP_SCHEMA)
            secs["layout"] += time.perf_counter() - t0
            with store.transaction():
                if frames:
                    store.insert_frame("shift_tokens", pl.concat(frames))
                store.insert_frame("shift_responses", resp_rows)
            n_tokens += sum(len(x) for x in base_resp)
            bar.advance(len(chunk))
    summary = run_summary(store, run_id)
    summary["seconds"] = {k: round(v, 2) for k, v in secs.items()}
    summary["scored_tokens_per_s"] = round(n_tokens / secs["score"], 1) if secs["score"] else None
    with store.transaction() as conn:
        conn.execute("UPDATE shift_runs SET summary = ? WHERE run_id = ?", [json.dumps(summary), run_id])
    return ShiftResult(run_id, len(items), n_tokens, secs, summary)


def run_summary(store: Store, run_id: str) -> dict[str, Any]:
    df = store.query(
        "SELECT count(*) AS n_tokens, count(DISTINCT prompt_id) AS n_responses,"
        " avg((category = 'unshifted')::INT) AS unshifted, avg((category = 'marginal')::INT) AS marginal,"
        " avg((category = 'shifted')::INT) AS shifted, avg(kl) AS mean_kl, avg(base_prob) AS mean_base_prob"
        " FROM shift_tokens WHERE run_id = ?", [run_id])
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in df.row(0, named=True).items()}


def set_reference(store: Store, run_id: str, dataset: str) -> None:
    """Name the IT dataset the `shift_verbatim` report compares a run's words with."""
    if store.dataset_info(dataset) is None:
        raise ItauditError(f"no dataset named {dataset!r}; see `itaudit data list`")
    with store.transaction() as conn:
        conn.execute("UPDATE shift_runs SET reference_dataset = ? WHERE run_id = ?", [dataset, run_id])
