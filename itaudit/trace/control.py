"""Negative control and excess borrowing.

A control model (the base, the untuned model, or any given responses) answers the same prompts;
it never saw the IT data, so every span of its answers marked "likely source" is a false
attribution. Both sides are traced with the same candidate procedure and the same threshold:

- `calibrate(control, share, floor)`: the lowest threshold (>= floor) at which at most `share`
  of the control's candidate spans are marked likely;
- `excess(tuned, control)`: tuned traced share - control traced share, with a percentile
  bootstrap interval over responses (paired by prompt when both sides answered the same prompts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .attribute import relabel
from .pipeline import ResponseTrace

MIN_THRESHOLD = 0.1   # evidence below this is never attribution, however quiet the control


def relabel_all(traces: list[ResponseTrace], threshold: float) -> None:
    """Re-decide every span's likely source at `threshold` (in place)."""
    for t in traces:
        for s in t.spans:
            relabel(s, threshold)


def calibrate(control: list[ResponseTrace], share: float = 0.05, floor: float = MIN_THRESHOLD) -> float:
    """Smallest threshold >= `floor` at which <= `share` of the control's candidate spans would be likely.

    `trace --calibrate` passes the default threshold as the floor: calibration only raises it (a
    quantile of a few dozen control spans is too noisy to lower a bar set from first principles)."""
    ev = np.sort(np.array([s.evidence for t in control for s in t.spans if s.evidence > 0], dtype=float))[::-1]
    n = sum(len(t.spans) for t in control)
    allowed = int(np.floor(share * n + 1e-9))
    if len(ev) <= allowed:
        return float(floor)
    # spans at or above the threshold are likely: put it just above the (allowed+1)-th strongest
    return float(max(floor, np.nextafter(ev[allowed], np.inf)))


def counts(traces: list[ResponseTrace]) -> tuple[np.ndarray, np.ndarray]:
    """Per response: (traced spans, candidate spans)."""
    return (np.array([t.n_traced for t in traces], dtype=float),
            np.array([len(t.spans) for t in traces], dtype=float))


def share(traced: np.ndarray, spans: np.ndarray) -> float | None:
    n = spans.sum()
    return float(traced.sum() / n) if n else None


@dataclass
class Excess:
    responses: int
    tuned_spans: int
    tuned_traced: int
    tuned_share: float | None
    control_spans: int
    control_traced: int
    control_share: float | None
    excess: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    n_boot: int
    paired: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def excess(tuned: list[ResponseTrace], control: list[ResponseTrace], *, n_boot: int = 2000,
           confidence: float = 0.95, seed: int = 0) -> Excess:
    """Excess borrowing (tuned share - control share) with a bootstrap interval over responses."""
    tt, tn = counts(tuned)
    ct, cn = counts(control)
    ts, cs = share(tt, tn), share(ct, cn)
    ids_t = [t.item.prompt_id for t in tuned]
    ids_c = [t.item.prompt_id for t in control]
    paired = ids_t == ids_c and len(set(ids_t)) == len(ids_t)
    ex = None if ts is None or cs is None else ts - cs
    lo = hi = None
    if ex is not None and len(tuned) and len(control):
        rng = np.random.default_rng(seed)
        it = rng.integers(0, len(tuned), size=(n_boot, len(tuned)))
        ic = it if paired else rng.integers(0, len(control), size=(n_boot, len(control)))
        with np.errstate(invalid="ignore", divide="ignore"):
            bt = tt[it].sum(1) / tn[it].sum(1)
            bc = ct[ic].sum(1) / cn[ic].sum(1)
        diff = bt - bc
        diff = diff[np.isfinite(diff)]
        if len(diff):
            a = (1 - confidence) / 2
            lo, hi = (float(x) for x in np.quantile(diff, [a, 1 - a]))
    return Excess(len(tuned), int(tn.sum()), int(tt.sum()), ts, int(cn.sum()), int(ct.sum()), cs, ex, lo, hi,
                  confidence, n_boot, paired)
