"""Knowledge novelty: base-model loss of each response given its instruction, in bits per byte.

    bpb = sum over response tokens of -ln p(token | prompt, earlier tokens) / ln 2 / UTF-8 bytes

Bits per byte do not depend on the tokenizer, so models compare. A response the base model
finds surprising holds knowledge (or phrasing) it does not have; fine-tuning on many such
responses is tied to knowledge degradation and hallucination (the paper's argument).

The model reads the plain "### Instruction: ... ### Response:" template (a base model has no
chat format). Scores are cached in `novelty_scores` per (row content, model, max_tokens) and
reused; `limit` scores a seeded random sample only (the check then covers those rows).
`Novelty` is the Step (pure compute, the runner stores); `novelty_check` is the library path
that commits scores every few batches, so an interrupted long run resumes.
Score = percentile rank of bpb among the scored rows (high = novel); flag = top `flag_share`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
import polars as pl

from ..errors import ItauditError
from ..progress import progress_bar
from ..steps.base import Frames, Params, Resources, Step, StepContext
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
    NLLs come from the shared chunked scorer (`itaudit.models.scoring`): at most
    `logits_budget_mb` of float32 logits exist at once, whatever the vocabulary.
    """
    from ..models.scoring import score, scorer_for

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
    stats = score(scorer_for(model), [(p_ids, r_ids) for p_ids, r_ids, _, _ in items], batch_size=batch_size,
                  pad_id=int(pad), budget_mb=logits_budget_mb, ranks=False)
    out = []
    for (_, r_ids, n_bytes, truncated), st in zip(items, stats, strict=True):
        nll_sum = float(st.nll.sum())
        out.append({"nll_sum": nll_sum, "n_tokens": len(r_ids), "n_bytes": int(n_bytes),
                    "bpb": nll_sum / LN2 / n_bytes, "truncated": truncated})
    return out


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


_ROWS_SQL = ("SELECT idx, instruction, input, system, response, content_hash FROM instances "
             "WHERE dataset = ? ORDER BY idx")
_SCORE_COLS = ("nll_sum", "n_tokens", "n_bytes", "bpb", "truncated")


@dataclass(frozen=True)
class NoveltyParams(Params):
    model: str = DEFAULT_MODEL          # alias / HF dir / .gguf for itaudit.models.load_model
    limit: int | None = None            # score a seeded random sample of this many rows
    seed: int = 0
    batch_size: int = 8
    max_tokens: int = 512
    flag_share: float = 0.1             # flag the top share by bpb
    chat_template: bool = False         # base models read the plain template
    logits_budget_mb: int = 256


def sample_rows(rows: pl.DataFrame, limit: int | None, seed: int) -> pl.DataFrame:
    """Rows with a non-blank response; a seeded random `limit` of them (idx order kept)."""
    rows = rows.filter(pl.col("response").str.strip_chars() != "")
    if limit is not None and limit < rows.height:
        pick = np.sort(np.random.default_rng(seed).choice(rows.height, size=limit, replace=False))
        rows = rows[pick]
    return rows


def not_scored(rows: pl.DataFrame, cached: pl.DataFrame) -> pl.DataFrame:
    """`rows` without a cached score for the same (idx, content_hash)."""
    if cached.height == 0:
        return rows
    return rows.join(cached.select("idx", "content_hash"), on=["idx", "content_hash"], how="anti")


def score_rows(lm: Any, rows: pl.DataFrame, *, dataset: str, p: NoveltyParams) -> pl.DataFrame:
    """novelty_scores rows for `rows` (idx, instruction, input, system, response, content_hash). Pure."""
    prompts = [_prompt(lm, a, b, s, p.chat_template) for a, b, s in
               zip(rows["instruction"].to_list(), rows["input"].to_list(), rows["system"].to_list(), strict=False)]
    res = response_nll(lm.model, lm.tokenizer, prompts, rows["response"].to_list(), max_tokens=p.max_tokens,
                       batch_size=p.batch_size, logits_budget_mb=p.logits_budget_mb) if rows.height else []
    return pl.DataFrame({
        "dataset": [dataset] * rows.height, "idx": rows["idx"], "model_id": [str(lm.model_id)] * rows.height,
        "max_tokens": [p.max_tokens] * rows.height, "content_hash": rows["content_hash"],
        **{k: [r[k] for r in res] for k in _SCORE_COLS},
    }, schema_overrides={"nll_sum": pl.Float64, "n_tokens": pl.Int64, "n_bytes": pl.Int64, "bpb": pl.Float64,
                         "truncated": pl.Boolean})


def novelty_result(dataset: str, scored: pl.DataFrame, n_rows: int, model_id: str, p: NoveltyParams) -> CheckResult:
    """The check result from the scores of the checked rows (idx, bpb, truncated; any order)."""
    scored = scored.sort("idx")
    bpb = scored["bpb"].to_numpy().astype(float)
    score = np.clip(percentile_rank(bpb), 0, 1)
    flag = score >= 1 - p.flag_share if len(score) > 1 else np.zeros(len(score), dtype=bool)
    q = np.quantile(bpb, [0.1, 0.5, 0.9]) if len(bpb) else [float("nan")] * 3
    summary = {
        "n_scored": int(len(bpb)), "n_rows": int(n_rows),
        "model_id": model_id, "sampled": p.limit is not None, "n_flagged": int(flag.sum()),
        "bpb_mean": float(bpb.mean()) if len(bpb) else None,
        "bpb_p10": float(q[0]), "bpb_p50": float(q[1]), "bpb_p90": float(q[2]),
        "bpb_flag_threshold": float(np.min(bpb[flag])) if flag.any() else None,
        "n_truncated": int(scored["truncated"].sum()) if scored.height else 0,
    }
    return CheckResult(
        check="novelty", dataset=dataset, idx=scored["idx"].to_numpy().astype(np.int64), flag=flag, score=score,
        summary=summary, details=[{"bpb": round(float(b), 4)} for b in bpb],
        params={"model": model_id, "limit": p.limit, "seed": p.seed, "max_tokens": p.max_tokens,
                "flag_share": p.flag_share, "chat_template": p.chat_template},
    )


def _load(model: str | Any, show_progress: bool) -> Any:
    if not isinstance(model, str):
        return model
    from ..models import load_model

    return load_model(model, show_progress=show_progress)


class Novelty(Step):
    """Knowledge novelty as a Step: pure compute; the runner stores the result and the scores.

    Scores already in `novelty_scores` for the same row content, model and max_tokens are reused.
    `compute` returns the CheckResult and the dataset's full `novelty_scores` rows (cached + new,
    stale ones dropped) as `Frames(replace_dataset=...)`, committed in one transaction.
    """

    name: ClassVar[str] = "novelty"
    description: ClassVar[str] = ("base-model bits per byte of the response (gemma3-270m; slow on CPU: "
                                  "-s novelty.limit=500)")
    Params: ClassVar[type[Params]] = NoveltyParams
    default: ClassVar[bool] = False
    resources: ClassVar[Resources] = Resources(cpus=1.0, memory_gb=2.0, model=DEFAULT_MODEL)

    def __init__(self, params: Any = None, *, lm: Any = None):
        super().__init__(params)
        self._lm = lm   # an already loaded model (else params.model is loaded on first use)

    def lm(self, show_progress: bool = False) -> Any:
        if self._lm is None:
            self._lm = _load(self.params.model, show_progress)
        return self._lm

    def compute(self, ctx: StepContext) -> list[Any]:
        p: NoveltyParams = self.params  # type: ignore[assignment]
        all_rows = ctx.read(_ROWS_SQL, [ctx.dataset])
        if all_rows.height == 0:
            raise ItauditError(f"dataset {ctx.dataset!r} has no rows")
        rows = sample_rows(all_rows, p.limit, p.seed)
        lm = self.lm(ctx.show_progress)
        model_id = str(lm.model_id)
        stored = ctx.read("SELECT * FROM novelty_scores WHERE dataset = ?", [ctx.dataset])
        same = (pl.col("model_id") == model_id) & (pl.col("max_tokens") == p.max_tokens)
        valid = stored.filter(same).join(all_rows.select("idx", "content_hash"), on=["idx", "content_hash"], how="semi")
        todo = not_scored(rows, valid)
        parts = []
        chunk = max(1, p.batch_size) * 4
        with progress_bar(f"novelty {ctx.dataset}", total=todo.height, unit="rows", enabled=ctx.show_progress) as bar:
            for c0 in range(0, todo.height, chunk):
                part = todo.slice(c0, chunk)
                parts.append(score_rows(lm, part, dataset=ctx.dataset, p=p))
                bar.advance(part.height)
        now = pl.lit(datetime.now()).cast(stored.schema["scored_at"])
        new = [f.with_columns(now.alias("scored_at")).select(stored.columns) for f in parts]
        mine = pl.concat([valid, *new], how="vertical_relaxed")
        result = novelty_result(ctx.dataset, mine.join(rows.select("idx"), on="idx", how="semi"), all_rows.height,
                                model_id, p)
        # the dataset's whole table: other models' scores, this model's valid ones, the new ones
        table = pl.concat([stored.filter(~same), mine], how="vertical_relaxed")
        return [result, Frames("novelty_scores", table, replace_dataset=ctx.dataset)]

    def render_text(self, result: CheckResult) -> list[str]:
        s = result.summary
        found = f"{s.get('n_flagged', 0)} novel of {s.get('n_scored', 0)} scored"
        return [found, f"bpb median {s.get('bpb_p50', float('nan')):.3f} ({s.get('model_id')})"]


def save_scores(store: Store, frame: pl.DataFrame) -> None:
    """Store novelty_scores rows in one transaction, replacing earlier scores of the same rows."""
    if frame.height == 0:
        return
    with store.transaction() as conn:
        for (dataset, model_id, max_tokens), part in frame.group_by(["dataset", "model_id", "max_tokens"]):
            conn.execute(
                "DELETE FROM novelty_scores WHERE dataset = ? AND model_id = ? AND max_tokens = ? AND idx IN "
                "(SELECT unnest(?::BIGINT[]))", [dataset, model_id, max_tokens, part["idx"].to_list()])
        store.insert_frame("novelty_scores", frame)


def novelty_check(
    store: Store,
    dataset: str,
    *,
    model: str | Any = DEFAULT_MODEL,
    show_progress: bool = True,
    persist_every: int = 1,
    **params: Any,
) -> CheckResult:
    """Score (a sample of) the dataset's responses and return the check result (not stored).

    The library path for long runs: the same pure pieces as the `Novelty` step, with scores
    committed (`save_scores`) every `persist_every` batches, so an interrupted run resumes.
    `model` is an alias/path or an already loaded `LoadedModel` (anything with `.model`,
    `.tokenizer`, `.model_id`); other keyword arguments are `NoveltyParams`.
    """
    p = NoveltyParams.parse({**params, **({"model": model} if isinstance(model, str) else {})}, step="novelty")
    store.require_dataset(dataset)
    all_rows = store.query(_ROWS_SQL, [dataset])
    if all_rows.height == 0:
        raise ItauditError(f"dataset {dataset!r} has no rows")
    rows = sample_rows(all_rows, p.limit, p.seed)
    lm = _load(model, show_progress)
    model_id = str(lm.model_id)
    q = ("SELECT idx, content_hash, bpb, truncated FROM novelty_scores "
         "WHERE dataset = ? AND model_id = ? AND max_tokens = ?")
    todo = not_scored(rows, store.query(q, [dataset, model_id, p.max_tokens]))
    chunk = p.batch_size * max(1, persist_every)
    with progress_bar(f"novelty {dataset}", total=todo.height, unit="rows", enabled=show_progress) as bar:
        for c0 in range(0, todo.height, chunk):
            part = todo.slice(c0, chunk)
            save_scores(store, score_rows(lm, part, dataset=dataset, p=p))
            bar.advance(part.height)
    scored = store.query(q, [dataset, model_id, p.max_tokens]).join(rows.select("idx", "content_hash"),
                                                                    on=["idx", "content_hash"], how="semi")
    return novelty_result(dataset, scored, all_rows.height, model_id, p)
