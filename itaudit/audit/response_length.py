"""Example of a check added from outside the core: responses of unusual length.

The whole check is this module, registered through the public API two ways:

- `register(ResponseLengthOutliers)` below, when the module is imported;
- the entry point `response_length_outliers` in the `itaudit.checks` group (pyproject.toml),
  which `itaudit audit --checks response_length_outliers` loads without importing it by hand.

It is not a default check; risk counts it when it has run (it is ordered before risk).

Method: robust z-score of log(1 + characters) of the response, z = 0.6745 (x - median) / MAD;
a row is flagged when |z| >= `z_threshold` (Iglewicz and Hoaglin's 3.5 by default). Score
min(1, |z| / (2 z_threshold)): a row at the threshold scores 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..steps.base import Params, Step
from .base import CheckResult
from .registry import register


@dataclass(frozen=True)
class ResponseLengthParams(Params):
    z_threshold: float = 3.5   # |robust z| of log length from which a row is flagged
    min_rows: int = 20         # fewer rows: nothing is flagged (the median is not meaningful)


class ResponseLengthOutliers(Step):
    name = "response_length_outliers"
    description = "responses far shorter or longer than usual in the dataset (robust z-score of log length)"
    Params = ResponseLengthParams
    default = False

    def compute(self, ctx) -> CheckResult:
        rows = ctx.instances("idx, length(coalesce(response, '')) AS n_chars")
        idx = rows["idx"].to_numpy().astype(np.int64)
        n_chars = rows["n_chars"].to_numpy().astype(np.float64)
        x = np.log1p(n_chars)
        med = float(np.median(x)) if len(x) else 0.0
        mad = float(np.median(np.abs(x - med))) if len(x) else 0.0
        z = 0.6745 * (x - med) / mad if mad > 0 else np.zeros(len(x))
        p = self.params
        flag = (np.abs(z) >= p.z_threshold) & (len(x) >= p.min_rows)
        score = np.where(len(x) >= p.min_rows, np.minimum(1.0, np.abs(z) / (2 * p.z_threshold)), 0.0)
        details = [{"n_chars": int(c), "z": round(float(v), 3)} if f else None
                   for c, v, f in zip(n_chars, z, flag, strict=True)]
        summary = {
            "median_chars": float(np.expm1(med)),
            "n_short": int((flag & (z < 0)).sum()),
            "n_long": int((flag & (z > 0)).sum()),
        }
        return CheckResult(self.name, ctx.dataset, idx, flag, score, summary=summary, params=p.as_dict(),
                           details=details)

    def render_text(self, result: CheckResult) -> list[str]:
        s = result.summary
        return [f"{s['n_short']:,} short, {s['n_long']:,} long (median {s['median_chars']:,.0f} chars)"]


register(ResponseLengthOutliers)
