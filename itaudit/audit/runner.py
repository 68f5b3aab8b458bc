"""`run_checks`: run some or all registered audit checks on a dataset and store each result.

Checks are `Step`s registered in `itaudit.audit.registry` (`register(StepClass)`; old function
checks via `register_check`). Ordering, computation and storage are the step runner's
(`itaudit.steps.runner.Runner`); this module is the audit-facing entry point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..steps.context import DEFAULT_COLUMNS, AuditContext, RunContext
from ..steps.executor import Executor
from ..steps.runner import CheckOutcome, Runner
from ..store import Store
from . import registry
from .registry import FunctionStep, register, register_check

CHECKS = registry._STEPS  # name -> step class (or its lazy entry), in registration order

__all__ = ["CHECKS", "DEFAULT_COLUMNS", "AuditContext", "CheckInfo", "CheckOutcome", "FunctionStep", "RunContext",
           "available_checks", "register", "register_check", "resolve", "run_checks"]


@dataclass(frozen=True)
class CheckInfo:
    name: str
    description: str
    default: bool


def available_checks() -> list[CheckInfo]:
    return [CheckInfo(n, d, df) for n, d, df in registry.describe()]


def resolve(checks: Sequence[str] | None):
    """Step classes for `checks` (None: the default ones) in run order (combiners such as risk last)."""
    return registry.order(checks)


def run_checks(store: Store, dataset: str, checks: Sequence[str] | None = None, *,
               index_dir: str | Path = "indexes", model: str | None = None, show_progress: bool = True,
               params: dict[str, dict[str, Any]] | None = None, context: RunContext | None = None,
               executor: Executor | None = None,
               on_done: Callable[[CheckOutcome], None] | None = None) -> list[CheckOutcome]:
    """Run `checks` (default: every default check) on `dataset`; each result is stored as it finishes.

    `params` maps a check name to its parameters, e.g. {"near_duplicates": {"threshold": 0.9}};
    they are validated (unknown keys and wrong types are `ItauditError`s) before anything runs.
    """
    store.require_dataset(dataset)
    classes = resolve(checks)
    params = params or {}
    stray = sorted(set(params) - set(registry.names()))
    if stray:
        from ..errors import ItauditError

        raise ItauditError(f"parameters given for unknown check(s) {', '.join(stray)}; "
                           f"available: {', '.join(registry.names())}")
    steps = [c(params.get(c.name, {})) for c in classes]
    ctx = context or RunContext(store, dataset, Path(index_dir), model, show_progress)
    return Runner(store, dataset, context=ctx, executor=executor).run(steps, on_done)
