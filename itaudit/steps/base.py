"""The Step protocol: one small unit of work whose computation is pure.

A step (an audit check, or the embed / shift / novelty / trace stages) is a class with

- `name`, `description`, and `default` (run by `itaudit audit NAME` without --checks);
- `Params`: a frozen dataclass of typed parameters; `Params.parse` rejects unknown keys and
  coerces command-line strings ("0.9", "a,b", "true") to the declared types;
- `requires`: names of other steps or artefacts (e.g. "embeddings:prompt") it reads; the runner
  orders work from them; `combines = True` marks a step that reads the results of every other
  check (risk), which then runs after all of them;
- `resources`: what one worker needs (cpus, memory, a model); executors use it;
- `compute(ctx)`: reads through a read-only `StepContext` and returns results; it never writes;
- for row-parallel steps, `compute_chunk(rows, rank, world_size)` maps over chunks of rows
  (datatrove's `PipelineStep.run(data, rank, world_size)`) and `combine(parts, ctx)` reduces;
  executors (local, process pool, Ray) call these, and the runner owns all storage;
- `render_text(result)` / `render_html(result)`: the step owns its display.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import polars as pl

from ..errors import ItauditError


@dataclass(frozen=True)
class Resources:
    """What one worker of a step needs; executors size pools and actors from it."""

    cpus: float = 1.0
    memory_gb: float = 1.0
    model: str | None = None      # a step that holds a model: keep it loaded in a long-lived worker


@dataclass(frozen=True)
class Params:
    """Base of every step's typed parameters (subclasses are frozen dataclasses)."""

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None, *, step: str = "") -> Params:
        """Build from a mapping; unknown keys and values of the wrong type are `ItauditError`s."""
        raw = dict(raw or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(fields))
        where = f"{step}: " if step else ""
        if unknown:
            raise ItauditError(f"{where}unknown parameter(s) {', '.join(unknown)}; "
                               f"valid: {', '.join(fields) or '(none)'}")
        hints = typing.get_type_hints(cls)
        values = {k: coerce(v, hints[k], f"{step}.{k}" if step else k) for k, v in raw.items()}
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class NoParams(Params):
    pass


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Coerce `value` to type `tp` (str from the CLI included); raise ItauditError naming `name`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return coerce(value, a, name)
            except ItauditError as e:
                errors.append(str(e))
        raise ItauditError(errors[0] if len(errors) == 1 else f"{name}: cannot read {value!r} as {tp}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ItauditError(f"{name}: expected one of {', '.join(map(repr, args))}, got {value!r}")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ItauditError(f"{name}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [coerce(v, inner, name) for v in value]
        return tuple(items) if origin is tuple or tp is tuple else list(items)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ItauditError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ItauditError(f"{name}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ItauditError(f"{name}: expected a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ItauditError(f"{name}: expected {'an integer' if tp is int else 'a number'}, got {value!r}") from None
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ItauditError(f"{name}: expected an integer, got {value!r}")
        return out
    if tp is str:
        if not isinstance(value, str):
            raise ItauditError(f"{name}: expected a string, got {value!r}")
        return value
    return value


class StepContext(Protocol):
    """The read-only view of the workspace a step computes on. It cannot write."""

    dataset: str
    show_progress: bool

    def instances(self, columns: str = ...) -> pl.DataFrame: ...
    def vectors(self, field_name: str, idx: Sequence[int] | np.ndarray | None = None) -> np.ndarray: ...
    def read(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame: ...


@dataclass
class Frames:
    """Rows for a table defined in `sql/`; the runner casts them to the table's column types.

    With `replace_dataset`, the runner first deletes the table's rows of that dataset (in the same
    transaction), so a rerun replaces rather than appends; `or_ignore` skips rows whose primary
    key exists (content-addressed caches)."""

    table: str
    frame: pl.DataFrame
    replace_dataset: str | None = None
    or_ignore: bool = False


class Step:
    """Base class of every step. Subclasses set the class attributes and implement `compute`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = NoParams
    requires: ClassVar[tuple[str, ...]] = ()
    combines: ClassVar[bool] = False
    default: ClassVar[bool] = True
    resources: ClassVar[Resources] = Resources()
    # Row-parallel steps: the columns of `instances` each chunk gets (None: the runner's default
    # columns), and the table (keyed by dataset, idx) their chunk frames are committed to; with
    # a table, an interrupted run resumes from the chunks already committed.
    chunk_columns: ClassVar[str | None] = None
    output_table: ClassVar[str | None] = None

    def __init__(self, params: Mapping[str, Any] | Params | None = None):
        self.params = params if isinstance(params, Params) else self.Params.parse(params, step=self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"

    def needs(self) -> tuple[str, ...]:
        """`requires` for these params (override when it depends on them, e.g. the embedded field)."""
        return self.requires

    @classmethod
    def row_parallel(cls) -> bool:
        return cls.compute_chunk is not Step.compute_chunk

    # -- computation (pure) ----------------------------------------------
    def compute(self, ctx: StepContext) -> Any:
        """Whole-dataset computation: return a CheckResult, a list of them, or frames."""
        raise NotImplementedError

    # Row-parallel steps override these two; executors map compute_chunk over chunks.
    def compute_chunk(self, rows: pl.DataFrame, rank: int = 0, world_size: int = 1) -> pl.DataFrame:
        raise NotImplementedError(f"{self.name} is not row-parallel")

    def combine(self, parts: list[pl.DataFrame], ctx: StepContext) -> Any:
        return pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame()

    # -- display -------------------------------------------------------------
    def render_text(self, result: Any) -> list[str]:
        """Lines for the terminal summary: the first is the "found" column of `itaudit audit`
        (the most telling count, e.g. "12 clusters"); further lines are printed as notes."""
        return []

    def render_html(self, result: Any) -> str:
        """The step's own HTML section body (findings first; params in a collapsed block).

        The report passes `result` as an `itaudit.report.view.CheckView` of the stored run (summary,
        rows, `pairs()`, `instances()`); `render_text` gets a CheckResult from the runner and the
        view from the report, so it reads only `summary`. This default is a plain escaped list of
        the `render_text` lines; steps override it for richer sections."""
        import html

        lines = self.render_text(result)
        if not lines:
            return ""
        return "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"
