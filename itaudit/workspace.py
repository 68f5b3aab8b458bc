"""The Python API: `itaudit.open(db)` returns a `Workspace` with every command of the CLI.

    import itaudit
    with itaudit.open("audit.duckdb") as ws:
        ws.ingest([{"instruction": "...", "output": "..."}], "mine")      # or a path, a DataFrame, a Dataset
        ws.audit("mine")                                                  # polars frame: one row per check
        kept = ws.filter("mine", policy="default", as_dataset=True)       # datasets.Dataset
        ws.report("mine", html="report.html")

Each method calls the library function the CLI command calls and returns a polars frame or a
typed result (`IngestReport`, `ShiftResult`, `TuneResult`, `TraceOutcome`, `FilterResult`).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from . import sqlfiles
from .errors import ItauditError
from .ingest import IngestReport
from .ingest import ingest as _ingest
from .store import Store, default_db, to_polars
from .usersql import connect_readonly

if TYPE_CHECKING:
    import datasets

    from .filter import FilterResult, Policy


class Workspace:
    """A DuckDB file with datasets and findings, plus a folder of indexes."""

    def __init__(self, db: str | os.PathLike | None = None, index_dir: str | os.PathLike | None = None):
        self.db_path = Path(db or default_db())
        from .paths import index_dir as default_index_dir

        self.index_dir = default_index_dir(index_dir)
        self.store = Store(self.db_path)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- data ----------------------------------------------------------------------------------
    def ingest(self, data: Any, name: str, format: str = "auto", *, skip_invalid: bool = False,
               split: str | None = None, progress: bool = False) -> IngestReport:
        """Normalize `data` into dataset `name`: `itaudit ingest`.

        `data` is a path (json, jsonl, csv, parquet, HF dataset dir), or in memory: a
        `datasets.Dataset`, a polars or pandas DataFrame, or a list of dicts. In-memory data is
        saved once under `<db>.inputs/` (named by its content, so re-ingesting the same data is
        a no-op) and read from there: errors name its row numbers.
        """
        if not isinstance(data, (str, os.PathLike)):
            data = self._materialize(data, name)
        return _ingest(self.store, data, name, format, skip_invalid=skip_invalid, split=split, show_progress=progress)

    def _materialize(self, data: Any, name: str) -> Path:
        from .hashing import file_sha256

        folder = self.db_path.parent / f"{self.db_path.name}.inputs"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        kind = type(data).__module__.split(".")[0]
        if kind == "datasets" and hasattr(data, "to_parquet"):
            data.to_parquet(str(tmp))
            ext = "parquet"
        elif isinstance(data, pl.DataFrame):
            data.write_parquet(tmp)
            ext = "parquet"
        elif kind == "pandas" and hasattr(data, "to_dict"):
            pl.from_pandas(data).write_parquet(tmp)
            ext = "parquet"
        elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)) and all(isinstance(r, Mapping) for r in data):
            with tmp.open("w", encoding="utf-8") as f:
                for r in data:
                    f.write(json.dumps(dict(r), ensure_ascii=False, default=str) + "\n")
            ext = "jsonl"
        else:
            raise ItauditError(f"ingest: cannot read {type(data).__name__}; give a path, a datasets.Dataset, "
                               "a polars/pandas DataFrame or a list of dicts")
        out = folder / f"{name}-{file_sha256(tmp)[:16]}.{ext}"
        os.replace(tmp, out)
        return out

    def datasets(self) -> pl.DataFrame:
        return self.query(report="datasets")

    def instances(self, dataset: str) -> pl.DataFrame:
        return self.store.instances(dataset)

    # -- SQL -----------------------------------------------------------------------------------
    def query(self, sql: str | None = None, params: list | None = None, *, report: str | None = None) -> pl.DataFrame:
        """Run SQL, or the canned report `sql/reports/NAME.sql` (`report=`): `itaudit query`.

        Python code already has the filesystem, so this runs on the workspace's own connection
        (reads and writes); the CLI runs user SQL read-only and without file access."""
        if (sql is None) == (report is None):
            raise ItauditError("give either SQL or report=NAME")
        return self.store.query(sqlfiles.report_sql(report) if report else sql, params)

    # -- index and audit -----------------------------------------------------------------------
    def index(self, dataset: str, field: str = "instruction", kind: str = "flat", **params):
        """Embed `field` (cached) and build a FAISS index under `index_dir`: `itaudit index`."""
        from .index import build_index

        return build_index(self.store, dataset, field, kind, index_dir=self.index_dir, **params)

    def neighbors(self, dataset: str, text: str | list[str], k: int = 10, field: str = "instruction") -> pl.DataFrame:
        """Nearest instances to `text` with scores and instance ids: `itaudit neighbors`."""
        from .index import neighbors

        return neighbors(self.store, dataset, text, k, field=field, index_dir=self.index_dir)

    def audit(self, dataset: str, checks: list[str] | None = None, params: dict | None = None,
              progress: bool = False) -> pl.DataFrame:
        """Run audit checks (default set when None) and return the per-check summary: `itaudit audit`."""
        from .audit.runner import run_checks

        run_checks(self.store, dataset, checks, index_dir=self.index_dir, params=params, show_progress=progress)
        return self.store.query(
            "SELECT * FROM (" + sqlfiles.report_sql("checks").rstrip().rstrip(";") + ") WHERE dataset = ?", [dataset])

    def findings(self, dataset: str) -> pl.DataFrame:
        """One row per instance with `<check>_flag/_score/_cluster` columns (what filter predicates see)."""
        from .filter import audit_view_sql

        sql, params = audit_view_sql(self.store, dataset)
        return self.store.query(sql, params)

    # -- models --------------------------------------------------------------------------------
    def generate(self, model: str, prompts: Any = None, *, dataset: str | None = None, adapter: str | None = None,
                 limit: int | None = None, max_new_tokens: int = 128, batch_size: int = 4, sample: bool = False,
                 run_id: str | None = None, progress: bool = False) -> pl.DataFrame:
        """Answer prompts (a file, a list of strings/dicts, or a dataset's instructions): `itaudit generate`.

        Returns the run's generations (run_id, model_id, prompt_id, instruction, response, n_tokens)."""
        from .models import generate_run

        run = generate_run(self.store, model, prompts=prompts, dataset=dataset, adapter=adapter, limit=limit,
                           max_new_tokens=max_new_tokens, batch_size=batch_size, sample=sample, run_id=run_id,
                           show_progress=progress)
        return self.store.query("SELECT run_id, model_id, prompt_id, instruction, response, n_tokens FROM generations "
                                "WHERE run_id = ? ORDER BY prompt_id", [run.run_id])

    def shift(self, base: str, prompts: Any = None, *, progress: bool = False, **options: Any):
        """Token distribution shift of answers under the `base` model: `itaudit shift`.

        Answers come from `tuned=MODEL`, `adapter=DIR` (base + LoRA), `responses=FILE`,
        `generations=RUN`, or the responses held by `prompts` (a file or a list of dicts) or
        `dataset=NAME`; other options as `itaudit.shift.api.run_shift` (limit, max_new_tokens,
        reference, run_id, ...). Returns a `ShiftResult`; `shift_categories(run_id)` gives shares."""
        from .shift.api import run_shift

        return run_shift(self.store, base, prompts=prompts, show_progress=progress, **options)

    def shift_categories(self, run_id: str) -> pl.DataFrame:
        """Tokens per category (unshifted / marginal / shifted) of a shift run: count, share (%), mean KL."""
        from .shift.api import shift_categories

        return shift_categories(self.store, run_id)

    def tune(self, base: str, dataset: str, out: str | os.PathLike, *, progress: bool = False, **config: Any):
        """Fine-tune `base` on `dataset` (LoRA by default; any `TuneConfig` field): `itaudit tune`.

        Returns a `TuneResult` (run_id, out, losses, ...)."""
        from .tune import TuneConfig
        from .tune import tune as run_tune

        cfg = TuneConfig(base=base, dataset=dataset, out=Path(out), **config)
        return run_tune(self.store, cfg, show_progress=progress)

    def trace(self, dataset: str, *, progress: bool = False, **request: Any):
        """Trace likely hallucinated spans of responses back to `dataset`: `itaudit trace`.

        `request` holds the fields of `itaudit.trace.api.TraceRequest` (responses=FILE,
        tuned=MODEL + prompts=FILE, generations=RUN, shift_run=RUN, base=, control=, ...).
        Returns a `TraceOutcome` (run_id, summary, excess over the control, ...)."""
        from .trace.api import TraceRequest, trace_dataset

        for key in ("responses", "prompts", "adapter", "index_dir"):
            if request.get(key) is not None:
                request[key] = Path(request[key])
        request.setdefault("index_dir", self.index_dir)
        return trace_dataset(self.store, TraceRequest(dataset=dataset, **request), show_progress=progress)

    def trace_spans(self, run_id: str) -> pl.DataFrame:
        """The candidate spans of a trace run with their top source (one row per span)."""
        return self.store.query("SELECT * FROM trace_spans WHERE run_id = ? ORDER BY response_id, span_id", [run_id])

    # -- filter and report ---------------------------------------------------------------------
    def filter(self, dataset: str, out: str | os.PathLike | None = None, *,
               policy: str | os.PathLike | Mapping | Policy | None = None, where: Sequence[str] = (),
               drop: Sequence[str] = (), format: str = "jsonl", normalized: bool = False,
               multi_turn: str | None = None, allow_files: bool = False,
               as_dataset: bool = False) -> FilterResult | datasets.Dataset:
        """Keep/drop instances by rules over the audit results: `itaudit filter`.

        `policy` is "default", a policy file, a dict or a `Policy`; `where` keeps rows matching SQL
        predicates, `drop` drops them. With `out`, exports (jsonl/parquet/hf) and writes a
        manifest: returns a `FilterResult`. With `as_dataset=True` returns the kept records as a
        `datasets.Dataset` (original records, or normalized ones with `normalized=True`)."""
        from .filter import Policy, filter_dataset, load_policy, parse_policy

        if isinstance(policy, Policy):
            pol = policy
        elif isinstance(policy, Mapping):
            pol = parse_policy(dict(policy), "policy")
        elif policy is not None:
            pol = load_policy(Path(policy))
        else:
            pol = Policy(name="api")
        extra = [{"name": f"where[{i}] {w}", "keep_where": w} for i, w in enumerate(where)]
        extra += [{"name": f"drop[{i}] {d}", "drop_where": d} for i, d in enumerate(drop)]
        if extra:
            pol.rules.extend(parse_policy({"rules": extra}, "arguments").rules)
        if multi_turn is not None:
            pol.multi_turn = multi_turn
        if as_dataset:
            import datasets

            from .filter.select import _columns, kept_records

            records = kept_records(self.store, dataset, pol, normalized=normalized, allow_files=allow_files)
            if not records:
                raise ItauditError(f"filter: every instance of {dataset!r} was dropped")
            datasets.disable_progress_bars()
            return datasets.Dataset.from_dict(_columns(records))
        if out is None:
            raise ItauditError("filter: give out=PATH to export, or as_dataset=True")
        return filter_dataset(self.store, dataset, pol, out, format, normalized=normalized, allow_files=allow_files)

    def report(self, dataset: str, html: str | os.PathLike | None = None, *,
               screenshot: str | os.PathLike | None = None) -> pl.DataFrame:
        """Per-check summary of `dataset` (and the HTML report with `html=`): `itaudit report`.

        Returns one row per check: check, scored, flagged, share, finding (in words)."""
        from .report import write_report
        from .report.html import check_views
        from .report.summary import finding_lines

        self.store.require_dataset(dataset)
        views = check_views(self.store, dataset)
        frame = pl.DataFrame({
            "check": [v.check for v in views], "scored": [v.n for v in views], "flagged": [v.flagged for v in views],
            "share": [v.flagged / v.n if v.n else 0.0 for v in views],
            "finding": ["; ".join(finding_lines(v)) for v in views],
        }, schema={"check": pl.Utf8, "scored": pl.Int64, "flagged": pl.Int64, "share": pl.Float64, "finding": pl.Utf8})
        if html is not None:
            write_report(self.store, dataset, html)
            if screenshot is not None:
                from .report.browser import screenshot as shoot

                shoot(html, screenshot)
        return frame


def open(db: str | os.PathLike | None = None, index_dir: str | os.PathLike | None = None) -> Workspace:  # noqa: A001
    return Workspace(db, index_dir)


def query_readonly(db: str | os.PathLike, sql: str, *, allow_files: bool = False) -> pl.DataFrame:
    """Run user SQL on a connection that cannot write the database, nor touch files unless allowed."""
    conn = connect_readonly(db, allow_files=allow_files)
    try:
        return to_polars(conn, sql)
    finally:
        conn.close()
