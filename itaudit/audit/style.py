"""Response pattern copying: per-instance style features and over-represented openings.

A tuned model copies surface patterns of its data (openings such as "Sure! Here is", list
structure, "As an AI language model" boilerplate). This check measures them per response,
stores them in `style_features`, and flags rows whose opening is over-represented in the
dataset or that contain boilerplate.

Score: max(1 if any boilerplate else 0, min(1, share(opening) / (2 * min_share))) for rows
whose opening is over-represented (0 otherwise) - an opening used by `min_share` of the
rows scores 0.5, by twice that 1.0.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
import polars as pl

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


def style_check(
    store: Store,
    dataset: str,
    *,
    n_open: int = 4,
    min_share: float = 0.005,
    min_count: int = 3,
    top: int = 20,
) -> CheckResult:
    """Compute style features, store them in `style_features`, flag copied patterns.

    An opening is over-represented when at least `min_count` rows and `min_share` of the rows
    start with it.
    """
    store.require_dataset(dataset)
    df = store.query("SELECT idx, response FROM instances WHERE dataset = ? ORDER BY idx", [dataset])
    feats = [features(t, n_open) for t in df["response"].to_list()]
    n = len(feats)
    fdf = pl.DataFrame(
        {"dataset": [dataset] * n, "idx": df["idx"], **{k: [f[k] for f in feats] for k in feats[0]}}
        if n else {"dataset": [], "idx": []},
        schema_overrides={"boilerplate": pl.List(pl.Utf8)} if n else None,
    )
    with store.transaction():
        store.conn.execute("DELETE FROM style_features WHERE dataset = ?", [dataset])
        store.insert_frame("style_features", fdf)

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
        check="style", dataset=dataset, idx=df["idx"].to_numpy().astype(np.int64), flag=flag,
        score=score, summary=summary, details=details,
        params={"n_open": n_open, "min_share": min_share, "min_count": min_count},
    )


def style(ctx, **params) -> CheckResult:
    """Runner entry point (`itaudit audit NAME --checks style`)."""
    return style_check(ctx.store, ctx.dataset, **params)
