"""Per-instance risk score combining the latest run of every other check (stored as `risk`).

Formula (a weighted noisy-OR):

    risk_i = 1 - prod_c (1 - w_c * s_{c,i})

where s_{c,i} in [0, 1] is check c's score for instance i (its latest run) and w_c in [0, 1] is
the check's weight: the most risk that check can add on its own. A check that did not score a
row (e.g. novelty on a sample) contributes nothing for it. A fully contaminated row (score 1,
weight 1) has risk 1 whatever else holds; two half-risks 0.5 and 0.5 give 0.75.
Flag: risk >= `threshold`.

Default weights are measured: the precision of each check's flags as judged by hand (`MEASURED`,
documented in docs/conflicts.md), so a noisy check adds little risk and cannot fill the top of
the ranking. They are overridden by a JSON/TOML file ({"weights": {...}} or a flat mapping)
and/or a `{"check": weight}` dict / "check=w,..." string; checks never measured get
`default_weight` and are listed under "unmeasured" in the summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from ..errors import InputError
from ..steps.base import Params, Step
from ..store import Store
from .base import CheckResult

# Each weight is the measured precision of the check's flags: the share a reader judged right
# (the row has the defect the check names and is worth acting on before tuning). Laplace-smoothed
# (right + 1) / (judged + 2) so a handful of judgements cannot give 0 or 1. Where they come
# from: docs/conflicts.md, "Risk weights" (commands, samples, every judgement counted).
MEASURED: dict[str, dict[str, Any]] = {
    "contamination": {"right": 20, "judged": 20, "source": "20 of 332 flags, AlpacaEval vs self-instruct / Vicuna / "
                                                            "MT-Bench (n-grams), seeded sample"},
    "exact_duplicates": {"right": 12, "judged": 12, "source": "12 of 3,788 flags on ShareGPT (61,208 rows), seeded"},
    "verifier": {"right": 39, "judged": 47, "source": "all 17 flags on Alpaca 5,000 + 30 on ShareGPT first turns "
                                                      "(25 code of 264, seeded; 1 math; 4 JSON), held out"},
    "near_duplicates": {"right": 4, "judged": 4, "source": "all 4 flagged rows on Alpaca 5,000"},
    "duplicate_instructions": {"right": 10, "judged": 14, "source": "12 of 522 flags on ShareGPT, seeded; all 2 on "
                                                                    "CoT AQuA"},
    "conflicting_neighbors": {"right": 1, "judged": 1, "source": "all flags on Alpaca 5,000"},
    "style": {"right": 0, "judged": 20, "source": "20 of 70 flags on Alpaca 5,000, seeded: 16 story openings "
                                                  "'once upon a time', 4 words read as boilerplate"},
}
DEFAULT_OTHER = 0.3   # checks with no measurement yet (listed as "unmeasured" in the summary)


def _measured_weights() -> dict[str, float]:
    return {c: round((m["right"] + 1) / (m["judged"] + 2), 3) for c, m in MEASURED.items()}


DEFAULT_WEIGHTS: dict[str, float] = _measured_weights()
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


def _weights(weights: dict[str, float] | str | None, weights_file: str | Path | None) -> dict[str, float]:
    """Measured defaults, then a weights file, then explicit weights ("check=w,..." or a mapping)."""
    w = dict(DEFAULT_WEIGHTS)
    if weights_file:
        w.update(load_weights(weights_file))
    if isinstance(weights, str):  # "contamination=1,style=0.2"
        out = {}
        for part in (p for p in weights.split(",") if p.strip()):
            k, eq, v = part.partition("=")
            try:
                out[k.strip()] = float(v)
            except ValueError:
                raise InputError("weights", None, f"weights.{k.strip()}", f"expected check=number, got {part!r}") from None
            if not eq:
                raise InputError("weights", None, "weights", f"expected check=number, got {part!r}")
        weights = out
    if weights:
        w.update(_validate(weights, "weights"))
    return w


def combine(read: Callable[[str, list[Any]], pl.DataFrame], dataset: str, *,
            weights: dict[str, float] | str | None = None, weights_file: str | Path | None = None,
            default_weight: float = DEFAULT_OTHER, threshold: float = 0.5, top: int = 20) -> CheckResult:
    """Combine the latest scores of all other checks on `dataset`; `read(sql, params)` reads the store."""
    w = _weights(weights, weights_file)
    idx = read("SELECT idx FROM instances WHERE dataset = ? ORDER BY idx", [dataset])["idx"].to_numpy()
    n = len(idx)
    runs = read("SELECT check_name, run_id FROM latest_checks WHERE dataset = ? ORDER BY check_name", [dataset])
    runs = runs.filter(~pl.col("check_name").is_in(list(EXCLUDED)))
    keep = np.ones(n)
    contrib: dict[str, np.ndarray] = {}
    used: dict[str, dict] = {}
    pos = {int(v): i for i, v in enumerate(idx)}
    for check, run_id in runs.iter_rows():
        wc = w.get(check, default_weight)
        if wc <= 0:
            continue
        rows = read("SELECT idx, score FROM check_rows WHERE run_id = ?", [run_id])
        s = np.zeros(n)
        at = np.array([pos.get(int(i), -1) for i in rows["idx"].to_list()], dtype=np.int64)
        ok = at >= 0
        s[at[ok]] = np.clip(rows["score"].to_numpy()[ok], 0, 1)
        keep *= 1 - wc * s
        contrib[check] = wc * s
        src = ("measured" if check in MEASURED and wc == DEFAULT_WEIGHTS.get(check) else
               "set" if check in w else "unmeasured default")
        used[check] = {"run_id": run_id, "weight": wc, "rows_scored": int(ok.sum()), "weight_source": src}
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
    top_by: dict[str, int] = {}
    for i in order:
        if risk[i] > 0 and details[i]:
            top_by[details[i]["top"]] = top_by.get(details[i]["top"], 0) + 1
    summary = {
        "n": n, "n_flagged": int(flag.sum()), "share_flagged": float(flag.mean()) if n else 0.0,
        "threshold": threshold, "mean": float(risk.mean()) if n else 0.0,
        "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
        "checks": used,
        "unmeasured": sorted(c for c, u in used.items() if u["weight_source"] == "unmeasured default"),
        "mean_contribution": {c: float(v.mean()) for c, v in contrib.items()},
        "flagged_by_top_check": _count_top(details, flag),
        "top_by_check": top_by,
        "top": [{"idx": int(idx[i]), "risk": round(float(risk[i]), 4)} for i in order if risk[i] > 0],
        "formula": "risk = 1 - prod_c (1 - w_c * score_c), w_c = measured precision of check c",
    }
    return CheckResult(
        check="risk", dataset=dataset, idx=idx.astype(np.int64), flag=flag, score=risk, summary=summary,
        details=details,
        params={"weights": {c: u["weight"] for c, u in used.items()}, "default_weight": default_weight,
                "threshold": threshold},
    )


def risk_check(store: Store, dataset: str, **params: Any) -> CheckResult:
    """Combine the latest scores of all other checks on `dataset` into one risk score per row."""
    store.require_dataset(dataset)
    return combine(store.query, dataset, **params)


def _count_top(details: list[dict | None], flag: np.ndarray) -> dict[str, int]:
    out: dict[str, int] = {}
    for d, f in zip(details, flag, strict=False):
        if f and d:
            out[d["top"]] = out.get(d["top"], 0) + 1
    return out


@dataclass(frozen=True)
class RiskParams(Params):
    weights: dict[str, float] | str | None = None
    weights_file: str | None = None
    default_weight: float = DEFAULT_OTHER
    threshold: float = 0.5
    top: int = 20


class Risk(Step):
    """Per-row risk: a noisy-OR of every other check's latest scores, weighted by measured precision."""

    name: ClassVar[str] = "risk"
    description: ClassVar[str] = ("per-instance risk: 1 - prod(1 - w_c * score_c) over the latest checks, "
                                  "w_c = measured precision of check c")
    Params: ClassVar[type[Params]] = RiskParams
    combines: ClassVar[bool] = True

    def compute(self, ctx: Any) -> CheckResult:
        read = getattr(ctx, "read", None) or ctx.store.query
        return combine(read, ctx.dataset, **self.params.as_dict())

    def render_text(self, result: CheckResult) -> list[str]:
        s = result.summary
        top = ", ".join(f"{c} {k}" for c, k in sorted(s.get("top_by_check", {}).items(), key=lambda x: -x[1]))
        return [f"{s.get('n_flagged', 0)} at risk >= {s.get('threshold')}" + (f"; top {len(s.get('top', []))}: {top}"
                                                                              if top else "")]

    def render_html(self, result: CheckResult) -> str:
        import html

        s = result.summary
        rows = "".join(f"<tr><td>{html.escape(c)}</td><td>{u['weight']:.3f}</td><td>{html.escape(u['weight_source'])}"
                       f"</td><td>{s['top_by_check'].get(c, 0)}</td></tr>" for c, u in s.get("checks", {}).items())
        return (f"<p>{s.get('n_flagged', 0)} rows at risk &ge; {s.get('threshold')}.</p><table><thead><tr><th>check"
                "</th><th>weight</th><th>source</th><th>rows in the top</th></tr></thead><tbody>" + rows
                + "</tbody></table>")


def risk(ctx: Any, **params: Any) -> CheckResult:
    """Runner entry point (`register_check`): the `Risk` step."""
    return Risk(params).compute(ctx)
