"""Exact duplicates on normalized text, and duplicate instructions with different responses.

Normalization: lowercase, punctuation removed, whitespace collapsed. The key of an instance is
its system prompt + conversation history (exact) + instruction + input + response, so a
follow-up turn ("continue") only matches another with the same conversation before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from ..steps.base import Params, Step
from .base import CheckResult

_SEP = "\x1f"


def _norm_expr(col: str) -> pl.Expr:
    return (pl.col(col).fill_null("").str.to_lowercase()
            .str.replace_all(r"[^\w\s]+", " ").str.replace_all(r"\s+", " ").str.strip_chars())


def _keys(frame: pl.DataFrame) -> pl.DataFrame:
    """idx, prompt_key (system+history+instruction+input), response_key; all normalized."""
    cols = [c for c in ("system", "instruction", "input") if c in frame.columns]
    # history (an md5 from AuditContext.instances) is matched as is: normalizing it costs
    # quadratic time in long conversations
    hist = [pl.col("history").cast(pl.Utf8).fill_null("")] if "history" in frame.columns else []
    f = frame.select(
        "idx",
        pl.concat_str(hist + [_norm_expr(c) for c in cols], separator=_SEP).alias("prompt_key"),
        _norm_expr("response").alias("response_key"),
    )
    return f


class ExactDuplicates(Step):
    """Flag every copy after the first of an instance whose normalized text repeats; cluster id = first idx."""

    name = "exact_duplicates"
    description = "identical instances after normalizing case, whitespace and punctuation"

    def compute(self, ctx) -> CheckResult:
        return _exact(ctx)

    def render_text(self, result: CheckResult) -> list[str]:
        s = result.summary
        return [f"{s['n_clusters']:,} clusters"] + (
            [f"largest cluster {s['largest_cluster']:,} copies"] if s.get("largest_cluster", 0) > 2 else [])


def exact_duplicates(ctx, **params) -> CheckResult:
    """Function form of `ExactDuplicates` (for scripts)."""
    return ExactDuplicates(params).compute(ctx)


def _exact(ctx) -> CheckResult:
    frame = ctx.instances()
    keys = _keys(frame).with_columns(
        pl.concat_str(["prompt_key", "response_key"], separator=_SEP).alias("key"))
    grp = keys.group_by("key", maintain_order=True).agg(pl.col("idx"))
    grp = grp.filter(pl.col("idx").list.len() > 1)
    n = frame.height
    idx = frame["idx"].to_numpy().astype(np.int64)
    pos = {int(v): i for i, v in enumerate(idx)}
    flag = np.zeros(n, dtype=bool)
    cluster = np.full(n, -1, dtype=np.int64)
    details: list[dict | None] = [None] * n
    pa, pb = [], []
    for members in grp["idx"].to_list():
        members = sorted(members)
        first = members[0]
        for m in members:
            i = pos[m]
            cluster[i] = first
            details[i] = {"cluster_size": len(members), "first_idx": first}
            if m != first:
                flag[i] = True
                pa.append(first)
                pb.append(m)
    pairs = pl.DataFrame({"idx_a": pa, "idx_b": pb, "score": [1.0] * len(pa),
                          "evidence": ['{"match": "normalized text identical"}'] * len(pa)},
                         schema={"idx_a": pl.Int64, "idx_b": pl.Int64, "score": pl.Float64, "evidence": pl.Utf8})
    sizes = grp["idx"].list.len()
    summary = {
        "n_rows": n,
        "n_clusters": grp.height,
        "n_rows_in_clusters": int(sizes.sum()) if grp.height else 0,
        "n_redundant": int(flag.sum()),
        "pct_redundant": round(100 * flag.sum() / n, 3) if n else 0.0,
        "largest_cluster": int(sizes.max()) if grp.height else 0,
        "normalization": "lowercase, punctuation stripped, whitespace collapsed; system+history+instruction+input+response",
    }
    return CheckResult("exact_duplicates", ctx.dataset, idx, flag, flag.astype(float), summary=summary,
                       params={}, cluster_id=cluster, details=details, pairs=pairs)


@dataclass(frozen=True)
class DuplicateInstructionsParams(Params):
    max_pairs_per_group: int = 50   # evidence pairs stored per group (first row vs each other answer)


class DuplicateInstructions(Step):
    """Flag rows whose normalized prompt (system+history+instruction+input) recurs with a different response.

    score = 1 - 1/(distinct responses of that prompt): 0.5 for two answers, 0.67 for three, ...
    """

    name = "duplicate_instructions"
    description = "the same instruction (and input, context) with different responses"
    Params = DuplicateInstructionsParams

    def compute(self, ctx) -> CheckResult:
        return _dup_instructions(ctx, self.params.max_pairs_per_group)

    def render_text(self, result: CheckResult) -> list[str]:
        return [f"{result.summary['n_groups']:,} groups"]


def duplicate_instructions(ctx, **params) -> CheckResult:
    """Function form of `DuplicateInstructions` (for scripts)."""
    return DuplicateInstructions(params).compute(ctx)


def _dup_instructions(ctx, max_pairs_per_group: int) -> CheckResult:
    frame = ctx.instances()
    keys = _keys(frame)
    grp = (keys.group_by("prompt_key", maintain_order=True)
           .agg(pl.col("idx"), pl.col("response_key"), pl.col("response_key").n_unique().alias("n_resp"))
           .filter(pl.col("n_resp") > 1))
    n = frame.height
    idx = frame["idx"].to_numpy().astype(np.int64)
    pos = {int(v): i for i, v in enumerate(idx)}
    flag = np.zeros(n, dtype=bool)
    score = np.zeros(n)
    cluster = np.full(n, -1, dtype=np.int64)
    details: list[dict | None] = [None] * n
    pa, pb = [], []
    for members, resps, k in grp.select("idx", "response_key", "n_resp").iter_rows():
        order = sorted(range(len(members)), key=lambda j: members[j])
        first = members[order[0]]
        for j in order:
            i = pos[members[j]]
            flag[i], score[i], cluster[i] = True, 1 - 1 / k, first
            details[i] = {"group_size": len(members), "distinct_responses": k, "first_idx": first}
        seen = {resps[order[0]]}
        for j in order[1:]:
            if resps[j] not in seen:
                seen.add(resps[j])
                if len(seen) - 1 <= max_pairs_per_group:
                    pa.append(first)
                    pb.append(members[j])
    pairs = pl.DataFrame({"idx_a": pa, "idx_b": pb, "score": [1.0] * len(pa),
                          "evidence": ['{"instruction": "identical after normalization", "response": "different"}'] * len(pa)},
                         schema={"idx_a": pl.Int64, "idx_b": pl.Int64, "score": pl.Float64, "evidence": pl.Utf8})
    summary = {
        "n_rows": n,
        "n_groups": grp.height,
        "n_rows_flagged": int(flag.sum()),
        "pct_flagged": round(100 * flag.sum() / n, 3) if n else 0.0,
        "largest_group": int(grp["idx"].list.len().max()) if grp.height else 0,
    }
    return CheckResult("duplicate_instructions", ctx.dataset, idx, flag, score, summary=summary,
                       params={"max_pairs_per_group": max_pairs_per_group},
                       cluster_id=cluster, details=details, pairs=pairs)
