"""The registry of audit checks and `run_checks`, which runs some or all and stores each result.

Adding a check is one line in `_BUILTIN` ("name": ("module:function", "description")) or, from
anywhere, `register_check("name", "module:function", "description")`. A check is a function
`fn(ctx: AuditContext, **params) -> CheckResult` (or a list of them; `ctx` gives the store, the
dataset, a shared embedder and cached embeddings, so checks that embed the same field share work),
or `fn(store, dataset, **params) -> CheckResult` (first parameter not named `ctx`).
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..errors import ItauditError
from ..store import Store
from .base import CheckResult, save_result


@dataclass
class CheckSpec:
    name: str
    target: str | Callable[..., Any]   # "package.module:function" (imported lazily) or the function
    description: str = ""
    default: bool = True               # run by `itaudit audit NAME` without --checks

    def load(self) -> Callable[..., Any]:
        if callable(self.target):
            return self.target
        mod, _, fn = self.target.partition(":")
        return getattr(importlib.import_module(mod), fn)


CHECKS: dict[str, CheckSpec] = {}


def register_check(name: str, target: str | Callable[..., Any], description: str = "", *,
                   default: bool = True) -> None:
    """Make check `name` available to `run_checks` / `itaudit audit --checks name`."""
    CHECKS[name] = CheckSpec(name, target, description, default)


# One line per check: name -> ("module:function", description).
_BUILTIN: dict[str, tuple[str, str]] = {
    "exact_duplicates": ("itaudit.audit.duplicates:exact_duplicates",
                         "identical instances after normalizing case, whitespace and punctuation"),
    "duplicate_instructions": ("itaudit.audit.duplicates:duplicate_instructions",
                               "the same instruction (and input, context) with different responses"),
    "near_duplicates": ("itaudit.audit.near_duplicates:near_duplicates",
                        "embedding range search + MinHash LSH, clustered transitively"),
    "conflicting_neighbors": ("itaudit.audit.conflicts:conflicting_neighbors",
                              "close instructions whose responses disagree (low similarity, other numbers/names)"),
}
for _name, (_target, _desc) in _BUILTIN.items():
    register_check(_name, _target, _desc)
# issue 7 (risk last, so that a default run combines the checks before it)
register_check("contamination", "itaudit.audit.contamination:contamination", "13-gram overlap + embedding near-matches with eval sets (-s contamination.against=mmlu,gsm8k)", default=False)
register_check("style", "itaudit.audit.style:style", "response style features, over-represented openings, boilerplate ('As an AI')")
register_check("novelty", "itaudit.audit.novelty:novelty", "base-model bits per byte of the response (gemma3-270m; slow on CPU: -s novelty.limit=500)", default=False)
register_check("risk", "itaudit.audit.risk:risk", "per-instance risk: 1 - prod(1 - w_c * score_c) over the latest checks")


DEFAULT_COLUMNS = (
    "idx, system, CASE WHEN history IS NULL OR CAST(history AS VARCHAR) IN ('[]', 'null') THEN '' "
    "ELSE md5(CAST(history AS VARCHAR)) END AS history, instruction, input, response"
)


@dataclass
class AuditContext:
    """What a check gets: the store, the dataset, and shared, lazily computed embeddings."""

    store: Store
    dataset: str
    index_dir: Path = Path("indexes")
    model: str | None = None
    show_progress: bool = True
    _embedder: Any = None
    _vectors: dict[str, np.ndarray] = field(default_factory=dict)
    _frames: dict[str, pl.DataFrame] = field(default_factory=dict)

    @property
    def embedder(self):
        if self._embedder is None:
            from ..embed import Embedder

            self._embedder = Embedder(self.model)
        return self._embedder

    def vectors(self, field_name: str, idx: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Embeddings of `field_name` (all rows, aligned with idx; or just rows `idx`), cached."""
        from ..embed import embed_dataset

        if idx is None:
            if field_name not in self._vectors:
                self._vectors[field_name] = embed_dataset(self.store, self.dataset, field_name, self.embedder,
                                                          show_progress=self.show_progress)
            return self._vectors[field_name]
        if field_name in self._vectors:
            return self._vectors[field_name][np.asarray(idx, dtype=np.int64)]
        return embed_dataset(self.store, self.dataset, field_name, self.embedder,
                             show_progress=self.show_progress, idx=idx)

    def instances(self, columns: str = DEFAULT_COLUMNS) -> pl.DataFrame:
        """Rows of the dataset in idx order (`history` as an md5, '' when there is none: it can be large)."""
        if columns not in self._frames:
            self._frames[columns] = self.store.instances(self.dataset, columns)
        return self._frames[columns]


@dataclass
class CheckOutcome:
    check: str
    run_id: str
    result: CheckResult
    seconds: float


def _call(fn: Callable[..., Any], ctx: AuditContext, params: dict[str, Any]) -> Any:
    """Checks take `(ctx, **params)`, or `(store, dataset, **params)` (then `show_progress` is passed if accepted)."""
    sig = inspect.signature(fn)
    names = list(sig.parameters)
    if names and names[0] == "ctx":
        return fn(ctx, **params)
    if "show_progress" in sig.parameters and "show_progress" not in params:
        params = {**params, "show_progress": ctx.show_progress}
    return fn(ctx.store, ctx.dataset, **params)


def available_checks() -> list[CheckSpec]:
    return list(CHECKS.values())


def resolve(checks: Sequence[str] | None) -> list[CheckSpec]:
    if not checks:
        return [c for c in CHECKS.values() if c.default]
    names = [n.strip() for c in checks for n in c.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ItauditError(f"unknown check(s) {', '.join(unknown)}; available: {', '.join(CHECKS)}")
    # Registration order, not the order asked for: combiners such as `risk` are registered last
    # and must see the results of the checks they combine.
    return [c for n, c in CHECKS.items() if n in set(names)]


def run_checks(store: Store, dataset: str, checks: Sequence[str] | None = None, *,
               index_dir: str | Path = "indexes", model: str | None = None, show_progress: bool = True,
               params: dict[str, dict[str, Any]] | None = None, context: AuditContext | None = None,
               on_done: Callable[[CheckOutcome], None] | None = None) -> list[CheckOutcome]:
    """Run `checks` (default: every default check) on `dataset`; each result is saved as it finishes.

    `params` maps a check name to keyword overrides, e.g. {"near_duplicates": {"threshold": 0.9}}.
    """
    store.require_dataset(dataset)
    specs = resolve(checks)
    ctx = context or AuditContext(store, dataset, Path(index_dir), model, show_progress)
    params = params or {}
    outcomes: list[CheckOutcome] = []
    for spec in specs:
        t0 = time.perf_counter()
        got = _call(spec.load(), ctx, params.get(spec.name, {}))
        results = got if isinstance(got, list) else [got]
        secs = time.perf_counter() - t0
        for r in results:
            r.summary.setdefault("seconds", round(secs, 2))
            run_id = save_result(store, r)
            o = CheckOutcome(r.check, run_id, r, secs)
            outcomes.append(o)
            if on_done:
                on_done(o)
    return outcomes
