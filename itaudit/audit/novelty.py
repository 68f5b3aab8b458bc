"""Knowledge novelty: base-model loss of each response given its instruction, in bits per byte.

    bpb = sum over response tokens of -ln p(token | prompt, earlier tokens) / ln 2 / UTF-8 bytes

Bits per byte do not depend on the tokenizer, so models compare. A response the base model
finds surprising holds knowledge (or phrasing) it does not have; fine-tuning on many such
responses is tied to knowledge degradation and hallucination (the paper's argument).

The model reads the plain "### Instruction: ... ### Response:" template (a base model has no
chat format). Scores are persisted batch by batch in `novelty_scores`, so an interrupted run
resumes; `limit` scores a seeded random sample only (the check then covers those rows).
Score = percentile rank of bpb among the scored rows (high = novel); flag = top `flag_share`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from ..errors import ItauditError
from ..progress import progress_bar
from ..store import Store
from .base import CheckResult

LN2 = math.log(2.0)
DEFAULT_MODEL = "gemma3-270m"


def _prompt(lm: Any, instruction: str, input: str | None, system: str | None, chat: bool) -> str:
    if hasattr(lm, "format_prompt"):
        old = getattr(lm, "use_chat_template", True)
        lm.use_chat_template = chat
        try:
            return lm.format_prompt(instruction, input, system=system)
        finally:
            lm.use_chat_template = old
    body = f"### Instruction:\n{instruction}\n\n" + (f"### Input:\n{input}\n\n" if input else "")
    return (f"{system.strip()}\n\n" if system else "") + body + "### Response:\n"


def response_nll(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    max_tokens: int = 512,
    batch_size: int = 8,
    logits_budget_mb: int = 256,
) -> list[dict[str, Any]]:
    """Per pair: nll_sum (nats), n_tokens, n_bytes, bpb, truncated. Pure mechanics, no storage.

    The prompt is tokenized with special tokens (BOS), the response without, and the two id
    lists are concatenated so the response tokens are exactly those of the response text.
    When prompt + response exceed `max_tokens`, the prompt is cut from the left (to at most
    half) and then the response from the right; bytes count only the scored response text.
    Batches hold at most `batch_size` rows and at most `logits_budget_mb` of float32 logits
    (a 262k-word vocabulary makes 8 rows x 512 tokens of logits 4 GB).
    """
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    items = []
    for p, r in zip(prompts, responses, strict=False):
        p_ids = list(tokenizer(p, add_special_tokens=True)["input_ids"])
        r_ids = list(tokenizer(r, add_special_tokens=False)["input_ids"])
        truncated = False
        if len(p_ids) + len(r_ids) > max_tokens:
            keep_p = max(1, min(len(p_ids), max_tokens // 2, max_tokens - len(r_ids)))
            p_ids = p_ids[:1] + p_ids[len(p_ids) - keep_p + 1:] if keep_p < len(p_ids) else p_ids
            if len(p_ids) + len(r_ids) > max_tokens:
                r_ids = r_ids[: max_tokens - len(p_ids)]
                truncated = True
        text = r if not truncated else tokenizer.decode(r_ids, skip_special_tokens=True)
        items.append((p_ids, r_ids, max(1, len(text.encode("utf-8"))), truncated))
    out: list[dict[str, Any] | None] = [None] * len(items)
    order = sorted(range(len(items)), key=lambda i: -(len(items[i][0]) + len(items[i][1])))
    device = next(model.parameters()).device
    for batch in _batches(order, items, batch_size, _vocab_size(model, tokenizer), logits_budget_mb):
        seqs = [items[i][0] + items[i][1] for i in batch]
        width = max(len(s) for s in seqs)
        # Left padding: every response ends at the last position, so the logits of only the
        # last `keep` positions are needed (large vocabularies make full logits huge).
        keep = max(len(items[i][1]) for i in batch) + 1
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        tgt = torch.full((len(batch), keep - 1), -100, dtype=torch.long)
        for row, (i, s) in enumerate(zip(batch, seqs, strict=True)):
            ids[row, width - len(s):] = torch.tensor(s)
            mask[row, width - len(s):] = 1
            r_ids = items[i][1]
            if r_ids:
                tgt[row, keep - 1 - len(r_ids):] = torch.tensor(r_ids, dtype=torch.long)
        pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with torch.inference_mode():
            kw = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": pos.to(device)}
            try:
                logits = model(**kw, logits_to_keep=keep).logits
            except TypeError:  # models without logits_to_keep
                logits = model(**kw).logits
            logits = logits[:, -keep:-1]
            sums, counts = [], []
            for row in range(len(batch)):  # one row at a time bounds the float32 copy
                t = tgt[row].to(device)
                nll = torch.nn.functional.cross_entropy(logits[row].float(), t, ignore_index=-100, reduction="sum")
                sums.append(float(nll))
                counts.append(int((t != -100).sum()))
        for row, i in enumerate(batch):
            n_bytes = items[i][2]
            out[i] = {"nll_sum": sums[row], "n_tokens": counts[row], "n_bytes": int(n_bytes),
                      "bpb": sums[row] / LN2 / n_bytes, "truncated": items[i][3]}
    return out  # type: ignore[return-value]


def _vocab_size(model: Any, tokenizer: Any) -> int:
    try:
        return int(model.get_output_embeddings().weight.shape[0])
    except (AttributeError, TypeError):
        return len(tokenizer)


def _batches(order: list[int], items: list, batch_size: int, vocab: int, budget_mb: int):
    """Greedy batches in `order` bounded by rows and by the logits they need (response tokens)."""
    budget = budget_mb * 2**20 / (4 * max(vocab, 1))   # response positions that fit
    batch: list[int] = []
    keep = 0
    for i in order:
        k = len(items[i][1]) + 1
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * max(keep, k) > budget):
            yield batch
            batch, keep = [], 0
        batch.append(i)
        keep = max(keep, k)
    if batch:
        yield batch


def percentile_rank(x: np.ndarray) -> np.ndarray:
    """Rank in [0, 1] (ties share the mean rank); a single value gets 0.5."""
    n = len(x)
    if n == 0:
        return np.zeros(0)
    if n == 1:
        return np.array([0.5])
    order = np.argsort(x, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n)
    # average ranks of ties
    vals, inv = np.unique(x, return_inverse=True)
    sums = np.bincount(inv, weights=ranks)
    cnt = np.bincount(inv)
    return (sums / cnt)[inv] / (n - 1)


def novelty_check(
    store: Store,
    dataset: str,
    *,
    model: str | Any = DEFAULT_MODEL,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    max_tokens: int = 512,
    flag_share: float = 0.1,
    chat_template: bool = False,
    show_progress: bool = True,
    persist_every: int = 1,
    logits_budget_mb: int = 256,
) -> CheckResult:
    """Score (a sample of) the dataset's responses with a base model; resumes from `novelty_scores`.

    `model` is an alias/path for `itaudit.models.load_model` or an already loaded `LoadedModel`
    (or any object with `.model`, `.tokenizer`, `.model_id`).
    """
    store.require_dataset(dataset)
    rows = store.query(
        "SELECT idx, instruction, input, system, response, content_hash FROM instances WHERE dataset = ? ORDER BY idx",
        [dataset],
    )
    if rows.height == 0:
        raise ItauditError(f"dataset {dataset!r} has no rows")
    rows = rows.filter(pl.col("response").str.strip_chars() != "")
    if limit is not None and limit < rows.height:
        pick = np.sort(np.random.default_rng(seed).choice(rows.height, size=limit, replace=False))
        rows = rows[pick]
    if isinstance(model, str):
        from ..models import load_model

        lm = load_model(model, show_progress=show_progress)
    else:
        lm = model
    model_id = str(lm.model_id)

    done = store.query(
        "SELECT idx, content_hash FROM novelty_scores WHERE dataset = ? AND model_id = ? AND max_tokens = ?",
        [dataset, model_id, max_tokens],
    )
    done_set = set(zip(done["idx"].to_list(), done["content_hash"].to_list(), strict=False)) if done.height else set()
    todo = rows.filter(~pl.Series([(i, h) in done_set for i, h in zip(rows["idx"].to_list(), rows["content_hash"].to_list(), strict=False)], dtype=pl.Boolean))
    # long rows first inside each persisted chunk keeps padding low; chunks follow idx order
    chunk = batch_size * max(1, persist_every)
    with progress_bar(f"novelty {dataset}", total=todo.height, unit="rows", enabled=show_progress) as bar:
        for c0 in range(0, todo.height, chunk):
            part = todo.slice(c0, chunk)
            prompts = [_prompt(lm, a, b, s, chat_template) for a, b, s in
                       zip(part["instruction"].to_list(), part["input"].to_list(), part["system"].to_list(), strict=False)]
            res = response_nll(lm.model, lm.tokenizer, prompts, part["response"].to_list(),
                               max_tokens=max_tokens, batch_size=batch_size, logits_budget_mb=logits_budget_mb)
            frame = pl.DataFrame({
                "dataset": [dataset] * part.height, "idx": part["idx"], "model_id": [model_id] * part.height,
                "max_tokens": [max_tokens] * part.height, "content_hash": part["content_hash"],
                **{k: [r[k] for r in res] for k in ("nll_sum", "n_tokens", "n_bytes", "bpb", "truncated")},
            })
            with store.transaction() as conn:
                conn.execute(
                    "DELETE FROM novelty_scores WHERE dataset = ? AND model_id = ? AND max_tokens = ? AND idx IN "
                    "(SELECT unnest(?::BIGINT[]))", [dataset, model_id, max_tokens, part["idx"].to_list()])
                store.insert_frame("novelty_scores", frame)
            bar.advance(part.height)

    scored = store.query(
        "SELECT n.idx, n.bpb, n.n_tokens, n.truncated FROM novelty_scores n "
        "JOIN instances i ON i.dataset = n.dataset AND i.idx = n.idx AND i.content_hash = n.content_hash "
        "WHERE n.dataset = ? AND n.model_id = ? AND n.max_tokens = ? AND n.idx IN (SELECT unnest(?::BIGINT[])) "
        "ORDER BY n.idx",
        [dataset, model_id, max_tokens, rows["idx"].to_list()],
    )
    bpb = scored["bpb"].to_numpy().astype(float)
    score = np.clip(percentile_rank(bpb), 0, 1)
    flag = score >= 1 - flag_share if len(score) > 1 else np.zeros(len(score), dtype=bool)
    q = np.quantile(bpb, [0.1, 0.5, 0.9]) if len(bpb) else [float("nan")] * 3
    summary = {
        "n_scored": int(len(bpb)), "n_rows": int(store.query(
            "SELECT count(*) AS n FROM instances WHERE dataset = ?", [dataset])["n"][0]),
        "model_id": model_id, "sampled": limit is not None, "n_flagged": int(flag.sum()),
        "bpb_mean": float(bpb.mean()) if len(bpb) else None,
        "bpb_p10": float(q[0]), "bpb_p50": float(q[1]), "bpb_p90": float(q[2]),
        "bpb_flag_threshold": float(np.min(bpb[flag])) if flag.any() else None,
        "n_truncated": int(scored["truncated"].sum()) if scored.height else 0,
    }
    details = [{"bpb": round(float(b), 4)} for b in bpb]
    return CheckResult(
        check="novelty", dataset=dataset, idx=scored["idx"].to_numpy().astype(np.int64), flag=flag, score=score,
        summary=summary, details=details,
        params={"model": model_id, "limit": limit, "seed": seed, "max_tokens": max_tokens,
                "flag_share": flag_share, "chat_template": chat_template},
    )


def novelty(ctx, **params) -> CheckResult:
    """Runner entry point (`itaudit audit NAME --checks novelty`); slow on CPU, see `limit`."""
    params.setdefault("show_progress", ctx.show_progress)
    return novelty_check(ctx.store, ctx.dataset, **params)
