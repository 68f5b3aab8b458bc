"""Response pattern copying: per-instance style features and over-represented openings.

A tuned model copies surface patterns of its data (openings such as "Sure! Here is", list
structure, "As an AI language model" boilerplate). This check measures them per response
(row-parallel: the runner stores each chunk's features in `style_features`), and flags rows
whose opening is over-represented in the dataset or that contain boilerplate.

Score: max(1 if any boilerplate else 0, min(1, share(opening) / (2 * min_share))) for rows
whose opening is over-represented (0 otherwise) - an opening used by `min_share` of the
rows scores 0.5, by twice that 1.0.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from ..steps.base import Params, Step
from ..store import Store
from .base import CheckResult

# name -> pattern (case-insensitive). Openers match at the start of the response only.
BOILERPLATE: dict[str, str] = {
    "as_an_ai": r"\bas an ai\b|\bas a(n)? (ai )?(large )?language model\b|\bi am an ai\b|\bi'm an ai\b",
    "sorry": r"\bi(?:'m| am) (?:so |very )?sorry\b|\bi apologi[sz]e\b",
    "cannot": r"\bi (?:cannot|can't|can not|am unable to|am not able to)\b",
    "openai": r"\bopenai\b|\bchatgpt\b",
    "hope_helps": r"\bi hope (?:this|that) helps\b|\bhope this helps\b",
    "certainly": r"^\W*certainly\b",
    "sure": r"^\W*sure\b",
    "of_course": r"^\W*of course\b",
    "great_question": r"^\W*(?:great|good|excellent) question\b",
    "absolutely": r"^\W*absolutely\b",
}
_BOILER_RE = {k: re.compile(v, re.IGNORECASE) for k, v in BOILERPLATE.items()}

_WORD = re.compile(r"[a-z0-9']+")
_BULLET = re.compile(r"^\s*(?:[-*+•])\s+\S", re.MULTILINE)
_NUMBERED = re.compile(r"^\s*\d{1,3}[.)]\s+\S", re.MULTILINE)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S", re.MULTILINE)
_FENCE = re.compile(r"^\s*```", re.MULTILINE)


def opening(text: str, n_words: int = 4) -> str:
    """The first `n_words` words, lowercased, punctuation dropped ('' for empty text)."""
    return " ".join(_WORD.findall(text.lower()[: 40 * n_words])[:n_words])


def features(text: str, n_open: int = 4) -> dict[str, Any]:
    """Style features of one response."""
    text = text or ""
    head = text[:400]
    return {
        "n_chars": len(text),
        "n_words": len(text.split()),
        "n_lines": text.count("\n") + 1 if text else 0,
        "n_bullets": len(_BULLET.findall(text)),
        "n_numbered": len(_NUMBERED.findall(text)),
        "n_headings": len(_HEADING.findall(text)),
        "n_code_blocks": len(_FENCE.findall(text)) // 2,
        "opening": opening(text, n_open),
        "boilerplate": [k for k, r in _BOILER_RE.items() if r.search(head if r.pattern.startswith("^") else text)],
    }


def _quantiles(x: np.ndarray) -> dict[str, float]:
    if not len(x):
        return {}
    q = np.quantile(x, [0.1, 0.25, 0.5, 0.75, 0.9])
    return {"mean": float(x.mean()), "p10": float(q[0]), "p25": float(q[1]), "p50": float(q[2]),
            "p75": float(q[3]), "p90": float(q[4]), "max": float(x.max())}


@dataclass(frozen=True)
class StyleParams(Params):
    n_open: int = 4            # words of the opening
    min_share: float = 0.005   # an opening is over-represented from this share of the rows ...
    min_count: int = 3         # ... and this many rows
    top: int = 20              # openings listed in the summary


_FEATURE_COLUMNS = ("n_chars", "n_words", "n_lines", "n_bullets", "n_numbered", "n_headings", "n_code_blocks",
                    "opening", "boilerplate")


class Style(Step):
    """Style features per response (row-parallel, stored in `style_features`), then flags copied patterns.

    An opening is over-represented when at least `min_count` rows and `min_share` of the rows
    start with it."""

    name = "style"
    description = "response style features, over-represented openings, boilerplate ('As an AI')"
    Params = StyleParams
    chunk_columns = "idx, response"
    output_table = "style_features"

    def compute_chunk(self, rows: pl.DataFrame, rank: int = 0, world_size: int = 1) -> pl.DataFrame:
        feats = [features(t, self.params.n_open) for t in rows["response"].to_list()]
        return pl.DataFrame({"idx": rows["idx"], **{k: [f[k] for f in feats] for k in _FEATURE_COLUMNS}},
                            schema_overrides={"opening": pl.Utf8, "boilerplate": pl.List(pl.Utf8)})

    def combine(self, parts: list[pl.DataFrame], ctx) -> CheckResult:
        cols = ["idx", *_FEATURE_COLUMNS]
        frame = (pl.concat([p.select(cols) for p in parts], how="vertical_relaxed") if parts
                 else pl.DataFrame(schema={"idx": pl.Int64}))
        feats = frame.select(_FEATURE_COLUMNS).to_dicts() if frame.height else []
        return _flag(ctx.dataset, frame["idx"].to_numpy().astype(np.int64), feats, self.params)

    def render_text(self, result: CheckResult) -> list[str]:
        s = result.summary
        lines = [f"{s['overrepresented_openings']:,} common openings, {s['n_boilerplate']:,} boilerplate rows"]
        if s.get("top_openings"):
            t = s["top_openings"][0]
            lines.append(f"most common opening {t['opening']!r}: {t['count']:,} rows ({100 * t['share']:.1f}%)")
        return lines


def style_check(store: Store, dataset: str, **params: Any) -> CheckResult:
    """Function form: features computed and stored by the step runner; the result is returned, not stored."""
    from ..steps.runner import Runner

    store.require_dataset(dataset)
    step = Style(params)
    runner = Runner(store, dataset, show_progress=False)
    return step.combine(runner.map_chunks(step), runner.ctx)


def _flag(dataset: str, idx: np.ndarray, feats: list[dict[str, Any]], p: StyleParams) -> CheckResult:
    n_open, min_share, min_count, top = p.n_open, p.min_share, p.min_count, p.top
    n = len(feats)
    opens = Counter(f["opening"] for f in feats if f["opening"])
    need = max(min_count, int(np.ceil(min_share * n)))
    over = {o: c for o, c in opens.items() if c >= need}
    flag = np.zeros(n, dtype=bool)
    score = np.zeros(n)
    details: list[dict | None] = []
    boiler_counts: Counter[str] = Counter()
    for i, f in enumerate(feats):
        b = f["boilerplate"]
        boiler_counts.update(b)
        o = f["opening"]
        s_open = min(1.0, opens[o] / n / (2 * min_share)) if o in over else 0.0
        score[i] = max(1.0 if b else 0.0, s_open)
        flag[i] = bool(b) or o in over
        d = {}
        if o in over:
            d["opening"] = o
            d["opening_count"] = opens[o]
        if b:
            d["boilerplate"] = b
        details.append(d or None)

    arr = {k: np.array([f[k] for f in feats], dtype=float) for k in
           ("n_chars", "n_words", "n_bullets", "n_numbered", "n_headings", "n_code_blocks")}
    summary = {
        "n": n,
        "n_flagged": int(flag.sum()),
        "n_boilerplate": int(sum(1 for f in feats if f["boilerplate"])),
        "n_overrepresented_opening": int(sum(1 for f in feats if f["opening"] in over)),
        "chars": _quantiles(arr["n_chars"]),
        "words": _quantiles(arr["n_words"]),
        "share_with_list": float(((arr["n_bullets"] + arr["n_numbered"]) > 0).mean()) if n else 0.0,
        "share_with_heading": float((arr["n_headings"] > 0).mean()) if n else 0.0,
        "share_with_code": float((arr["n_code_blocks"] > 0).mean()) if n else 0.0,
        "top_openings": [{"opening": o, "count": c, "share": c / n} for o, c in opens.most_common(top)],
        "overrepresented_openings": len(over),
        "boilerplate": dict(boiler_counts.most_common()),
        "distinct_openings": len(opens),
    }
    return CheckResult(
        check="style", dataset=dataset, idx=idx, flag=flag,
        score=score, summary=summary, details=details,
        params={"n_open": n_open, "min_share": min_share, "min_count": min_count},
    )
