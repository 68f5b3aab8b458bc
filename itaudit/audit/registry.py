"""The registry of audit checks, and the order they run in.

Public API:

- `register(StepClass)` (also usable as a class decorator) makes a check available to
  `itaudit audit --checks NAME`, `run_checks` and `Workspace.audit`. Packages outside itaudit
  can also declare checks as entry points in the group `itaudit.checks`
  (`name = "package.module:StepClass"`); they are loaded on first use of the registry.
- `register_check(name, "module:function", description)` keeps old function checks
  (`fn(ctx, **params)` or `fn(store, dataset, **params)`) working through `FunctionStep`.
- `order(names)` returns step classes: dependencies (`requires` naming other checks) before the
  steps needing them, combiners (`combines = True`, e.g. risk) after every other check, ties
  in registration order. A check registered from outside therefore runs before risk, which
  counts it.

Built-in checks are listed lazily ("module:attr"): a module is imported only when its check is
used. When the module defines a `Step` subclass whose `name` is the check's name, that class is
used, else the attribute (a function) is wrapped in a `FunctionStep`.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

from ..errors import ItauditError
from ..steps.base import Params, Step, coerce


@dataclass
class _Lazy:
    target: str
    description: str
    default: bool = True
    combines: bool = False


_STEPS: dict[str, type[Step] | _Lazy] = {}
_entry_points_loaded = False

# name -> ("module:attr", description, default, combines), in run order for ties.
_BUILTIN: list[tuple[str, str, str, bool, bool]] = [
    ("exact_duplicates", "itaudit.audit.duplicates:exact_duplicates",
     "identical instances after normalizing case, whitespace and punctuation", True, False),
    ("duplicate_instructions", "itaudit.audit.duplicates:duplicate_instructions",
     "the same instruction (and input, context) with different responses", True, False),
    ("near_duplicates", "itaudit.audit.near_duplicates:near_duplicates",
     "embedding range search + MinHash LSH, clustered transitively", True, False),
    ("conflicting_neighbors", "itaudit.audit.conflicts:conflicting_neighbors",
     "the same task answered with contradictory claims (numbers, names, yes/no, negation, order)", True, False),
    ("contamination", "itaudit.audit.contamination:contamination",
     "eval questions verbatim, reworded or wrapped: aligned IDF-weighted overlap, ambiguous pairs confirmed by "
     "embeddings (-s contamination.against=mmlu,path/to/gsm8k/test.jsonl)", False, False),
    ("style", "itaudit.audit.style:style",
     "response style features, over-represented openings, boilerplate ('As an AI')", True, False),
    ("novelty", "itaudit.audit.novelty:novelty",
     "base-model bits per byte of the response (gemma3-270m; slow on CPU: -s novelty.limit=500)", False, False),
    ("verifier", "itaudit.audit.verifier:verifier",
     "mechanically checkable wrong answers: arithmetic, statistics, sorting, primes, unit conversion, "
     "Python that does not parse, JSON not given", True, False),
    ("risk", "itaudit.audit.risk:risk",
     "per-instance risk: 1 - prod(1 - w_c * score_c) over the latest checks", True, True),
]
for _n, _t, _d, _def, _comb in _BUILTIN:
    _STEPS[_n] = _Lazy(_t, _d, _def, _comb)


def register(step_cls: type[Step]) -> type[Step]:
    """Make `step_cls` available as the check `step_cls.name` (replacing one of that name)."""
    if not (isinstance(step_cls, type) and issubclass(step_cls, Step)):
        raise TypeError(f"register() takes a Step subclass, got {step_cls!r}")
    if not step_cls.name:
        raise ValueError(f"{step_cls.__name__} has no name")
    _STEPS[step_cls.name] = step_cls
    return step_cls


def unregister(name: str) -> None:
    _STEPS.pop(name, None)


# -- legacy function checks -------------------------------------------------------------------
class FunctionStep(Step):
    """Adapter for a function check; its parameters are its keyword arguments (typed by their
    annotation or default); unknown keys are rejected unless the function takes **params."""

    target: ClassVar[str | Callable[..., Any]] = ""

    @classmethod
    def function(cls) -> Callable[..., Any]:
        t = cls.target
        if callable(t):
            return t
        mod, _, attr = t.partition(":")
        return getattr(importlib.import_module(mod), attr)

    def __init__(self, params: Mapping[str, Any] | None = None):
        raw = dict(params.as_dict() if isinstance(params, Params) else params or {})
        fn = self.function()
        sig = inspect.signature(fn)
        names = list(sig.parameters)
        self._takes_ctx = bool(names) and names[0] == "ctx"
        skip = {"ctx"} if self._takes_ctx else {names[0], names[1]} if len(names) > 1 else set(names)
        kw = {k: p for k, p in sig.parameters.items() if k not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        open_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        unknown = sorted(set(raw) - set(kw) - {"show_progress"})
        if unknown and not open_kw:
            raise ItauditError(f"{self.name}: unknown parameter(s) {', '.join(unknown)}; "
                               f"valid: {', '.join(k for k in kw if k != 'show_progress') or '(none)'}")
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # unresolvable annotations: fall back to the defaults' types
            hints = {}
        values = {}
        for k, v in raw.items():
            p = kw.get(k)
            tp = hints.get(k) or (type(p.default) if p is not None and p.default not in (p.empty, None) else Any)
            values[k] = coerce(v, tp, f"{self.name}.{k}") if tp is not Any else _guess(v)
        self.params = Params()
        self.kwargs = values

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, {self.kwargs})"

    def compute(self, ctx) -> Any:
        fn = self.function()
        params = dict(self.kwargs)
        if self._takes_ctx:
            return fn(ctx, **params)
        if "show_progress" in inspect.signature(fn).parameters and "show_progress" not in params:
            params["show_progress"] = ctx.show_progress
        return fn(ctx.store, ctx.dataset, **params)

    def render_text(self, result: Any) -> list[str]:
        # Transitional: a ported check renders itself; this shows the usual count keys.
        s = getattr(result, "summary", {}) or {}
        for k in ("n_clusters", "n_groups", "n_conflict_pairs", "n_pairs"):
            if k in s:
                return [f"{s[k]:,} {k.removeprefix('n_').replace('_', ' ')}"]
        return []


def _guess(v: Any) -> Any:
    """An untyped command-line value: int, float or bool where it reads as one (the old behaviour)."""
    if not isinstance(v, str):
        return v
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            continue
    return {"true": True, "false": False}.get(v, v)


def _function_step(name: str, target: str | Callable[..., Any], description: str, default: bool,
                   combines: bool) -> type[Step]:
    return type(f"FunctionStep_{name}", (FunctionStep,), {
        "name": name, "target": target, "description": description, "default": default, "combines": combines,
    })


def register_check(name: str, target: str | Callable[..., Any], description: str = "", *,
                   default: bool = True, combines: bool = False) -> None:
    """Old API: register a function check (see `FunctionStep`). Prefer `register(StepClass)`."""
    _STEPS[name] = _function_step(name, target, description, default, combines)


# -- lookup ------------------------------------------------------------------------------------
def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group="itaudit.checks"):
        obj = ep.load()
        if isinstance(obj, type) and issubclass(obj, Step):
            register(obj)
        elif callable(obj):
            register_check(ep.name, obj)


def _materialize(name: str, entry: _Lazy) -> type[Step]:
    mod, _, attr = entry.target.partition(":")
    module = importlib.import_module(mod)
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, Step) and obj is not Step and obj.name == name:
            return obj
    return _function_step(name, entry.target, entry.description, entry.default, entry.combines)


def get(name: str) -> type[Step]:
    _load_entry_points()
    entry = _STEPS.get(name)
    if entry is None:
        raise ItauditError(f"unknown check {name!r}; available: {', '.join(_STEPS)}")
    if isinstance(entry, _Lazy):
        entry = _STEPS[name] = _materialize(name, entry)
    return entry


def names() -> list[str]:
    _load_entry_points()
    return list(_STEPS)


def describe() -> list[tuple[str, str, bool]]:
    """(name, description, default) of every check, without importing the lazy ones."""
    _load_entry_points()
    out = []
    for n, e in _STEPS.items():
        out.append((n, e.description, e.default))
    return out


def _is_default(e: type[Step] | _Lazy) -> bool:
    return e.default


def order(checks: Sequence[str] | None = None) -> list[type[Step]]:
    """Step classes to run for `checks` (None: every default check), in a valid run order."""
    _load_entry_points()
    if not checks:
        wanted = [n for n, e in _STEPS.items() if _is_default(e)]
    else:
        asked = [n.strip() for c in checks for n in c.split(",") if n.strip()]
        unknown = [n for n in asked if n not in _STEPS]
        if unknown:
            raise ItauditError(f"unknown check(s) {', '.join(unknown)}; available: {', '.join(_STEPS)}")
        wanted = [n for n in _STEPS if n in set(asked)]  # deduplicated, registration order
    classes = {n: get(n) for n in wanted}
    plain = [n for n in wanted if not classes[n].combines]
    combiners = [n for n in wanted if classes[n].combines]
    return [classes[n] for n in _toposort(plain, classes) + _toposort(combiners, classes)]


def _toposort(names_: Iterable[str], classes: Mapping[str, type[Step]]) -> list[str]:
    names_ = list(names_)
    out: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, path: tuple[str, ...]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise ItauditError(f"checks require each other in a cycle: {' -> '.join(path + (n,))}")
        state[n] = 1
        for dep in classes[n].requires:
            if dep in classes and dep in names_:
                visit(dep, path + (n,))
        state[n] = 2
        out.append(n)

    for n in names_:
        visit(n, ())
    return out
