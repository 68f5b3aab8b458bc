"""Per-instance risk score combining the latest run of every other check (stored as `risk`).

Formula (a weighted noisy-OR):

    risk_i = 1 - prod_c (1 - w_c * s_{c,i})

where s_{c,i} in [0, 1] is check c's score for instance i (its latest run) and w_c in [0, 1] is
the check's weight: the most risk that check can add on its own. A check that did not score a
row (e.g. novelty on a sample) contributes nothing for it. A fully contaminated row (score 1,
weight 1) has risk 1 whatever else holds; two half-risks 0.5 and 0.5 give 0.75.
Flag: risk >= `threshold`.

Weights come from DEFAULT_WEIGHTS, overridden by a JSON/TOML file ({"weights": {...}} or a
flat mapping) and/or a `{"check": weight}` dict; checks not named get `default_weight`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..errors import InputError
from ..store import Store
from .base import CheckResult

DEFAULT_WEIGHTS: dict[str, float] = {
    "contamination": 1.0,
    "near_duplicates": 0.5,
    "exact_duplicates": 0.5,
    "duplicate_instructions": 0.5,
    "conflicting_neighbors": 0.6,
    "novelty": 0.4,
    "style": 0.3,
}
DEFAULT_OTHER = 0.3
EXCLUDED = {"risk"}


def load_weights(path: str | Path) -> dict[str, float]:
    """Read weights from a .json or .toml file: {"weights": {check: w}} or {check: w}."""
    p = Path(path)
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(p.read_text(encoding="utf-8"))
        else:
            data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(str(p), None, None, "file does not exist") from None
    except Exception as e:  # json / toml syntax
        raise InputError(str(p), None, None, f"cannot parse weights: {e}") from None
    w = data.get("weights", data) if isinstance(data, dict) else None
    if not isinstance(w, dict):
        raise InputError(str(p), None, "weights", "expected a mapping of check name -> weight")
    return _validate(w, str(p))


def _validate(w: dict[str, Any], where: str) -> dict[str, float]:
    out = {}
    for k, v in w.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= float(v) <= 1:
            raise InputError(where, None, f"weights.{k}", f"weight must be a number in [0, 1], got {v!r}")
        out[str(k)] = float(v)
    return out


def risk_check(
    store: Store,
    dataset: str,
    *,
    weights: dict[str, float] | str | None = None,
    weights_file: str | Path | None = None,
    default_weight: float = DEFAULT_OTHER,
    threshold: float = 0.5,
    top: int = 20,
) -> CheckResult:
    """Combine the latest scores of all other checks on `dataset` into one risk score per row."""
    store.require_dataset(dataset)
    w = dict(DEFAULT_WEIGHTS)
    if weights_file:
        w.update(load_weights(weights_file))
    if isinstance(weights, str):  # "contamination=1,style=0.2"
        pairs = [p.split("=", 1) for p in weights.split(",") if p.strip()]
        weights = {k.strip(): float(v) for k, v in pairs}
    if weights:
        w.update(_validate(weights, "weights"))
    idx = store.query("SELECT idx FROM instances WHERE dataset = ? ORDER BY idx", [dataset])["idx"].to_numpy()
    n = len(idx)
    runs = store.query(
        "SELECT check_name, run_id FROM latest_checks WHERE dataset = ? ORDER BY check_name", [dataset])
    runs = runs.filter(~pl.col("check_name").is_in(list(EXCLUDED)))
    keep = np.ones(n)
    contrib: dict[str, np.ndarray] = {}
    used: dict[str, dict] = {}
    pos = {int(v): i for i, v in enumerate(idx)}
    for check, run_id in runs.iter_rows():
        wc = w.get(check, default_weight)
        if wc <= 0:
            continue
        rows = store.query("SELECT idx, score FROM check_rows WHERE run_id = ?", [run_id])
        s = np.zeros(n)
        at = np.array([pos.get(int(i), -1) for i in rows["idx"].to_list()], dtype=np.int64)
        ok = at >= 0
        s[at[ok]] = np.clip(rows["score"].to_numpy()[ok], 0, 1)
        keep *= 1 - wc * s
        contrib[check] = wc * s
        used[check] = {"run_id": run_id, "weight": wc, "rows_scored": int(ok.sum())}
    risk = np.clip(1 - keep, 0, 1)
    flag = risk >= threshold
    details = []
    for i in range(n):
        if risk[i] <= 0:
            details.append(None)
            continue
        parts = {c: round(float(v[i]), 4) for c, v in contrib.items() if v[i] > 0}
        details.append({"contributions": parts, "top": max(parts, key=parts.get)})
    order = np.argsort(-risk, kind="stable")[:top]
    q = np.quantile(risk, [0.5, 0.9, 0.99]) if n else [0, 0, 0]
    summary = {
        "n": n, "n_flagged": int(flag.sum()), "share_flagged": float(flag.mean()) if n else 0.0,
        "threshold": threshold, "mean": float(risk.mean()) if n else 0.0,
        "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
        "checks": used,
        "mean_contribution": {c: float(v.mean()) for c, v in contrib.items()},
        "flagged_by_top_check": _count_top(details, flag),
        "top": [{"idx": int(idx[i]), "risk": round(float(risk[i]), 4)} for i in order if risk[i] > 0],
        "formula": "risk = 1 - prod_c (1 - w_c * score_c)",
    }
    return CheckResult(
        check="risk", dataset=dataset, idx=idx.astype(np.int64), flag=flag, score=risk, summary=summary,
        details=details,
        params={"weights": {c: u["weight"] for c, u in used.items()}, "default_weight": default_weight,
                "threshold": threshold},
    )


def _count_top(details: list[dict | None], flag: np.ndarray) -> dict[str, int]:
    out: dict[str, int] = {}
    for d, f in zip(details, flag, strict=False):
        if f and d:
            out[d["top"]] = out.get(d["top"], 0) + 1
    return out


def risk(ctx, **params) -> CheckResult:
    """Runner entry point: run it after the checks it combines."""
    return risk_check(ctx.store, ctx.dataset, **params)
