"""`itaudit filter`: keep/drop instances by rules over the audit tables and export them."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from ..filter import Policy, Rule, filter_dataset, load_policy
from ..store import Store
from .common import DbOption, console, db_path


class ExportFormat(str, Enum):
    jsonl = "jsonl"
    parquet = "parquet"
    hf = "hf"


def register(app: typer.Typer) -> None:
    @app.command("filter")
    def filter_cmd(
        name: str = typer.Argument(..., help="dataset name"),
        out: Path = typer.Option(..., "--out", "-o", help="output file (jsonl/parquet) or directory (hf)"),
        where: list[str] = typer.Option(None, "--where", help="KEEP rows matching this SQL predicate (repeatable)"),
        drop: list[str] = typer.Option(None, "--drop", help="DROP rows matching this SQL predicate (repeatable)"),
        policy: Path = typer.Option(None, "--policy", "-p", help="policy file (.json or .toml) with ordered rules, or `default` (built in)"),
        format: ExportFormat = typer.Option(ExportFormat.jsonl, "--format", "-f", help="export format"),
        normalized: bool = typer.Option(False, "--normalized", help="export normalized instances (alpaca-style) instead of the original records"),
        multi_turn: str = typer.Option(None, "--multi-turn", help="original-format export of multi-turn records: whole (drop a record if any turn is dropped) | any"),
        manifest: Path = typer.Option(None, "--manifest", help="manifest path [default: OUT.manifest.json]"),
        allow_files: bool = typer.Option(False, "--allow-files", help="let SQL predicates read/write files (read_csv, COPY)"),
        db: str = DbOption,
    ) -> None:
        """Filter a dataset by its audit results; export the kept rows and a manifest.

        Predicates see one row per instance: the instances columns plus <check>_flag,
        <check>_score and <check>_cluster for every check that ran (e.g. "risk_score > 0.7",
        "NOT contamination_flag"). Predicates cannot touch files unless --allow-files.
        """
        pol = load_policy(policy) if policy else Policy(name="cli")
        for i, w in enumerate(where or []):
            pol.rules.append(_rule(f"where[{i}]", "keep_where", w))
        for i, d in enumerate(drop or []):
            pol.rules.append(_rule(f"drop[{i}]", "drop_where", d))
        if multi_turn:
            if multi_turn not in ("whole", "any"):
                raise typer.BadParameter("--multi-turn must be whole or any")
            pol.multi_turn = multi_turn
        with Store(db_path(db)) as store:
            r = filter_dataset(store, name, pol, out, format.value, normalized=normalized, manifest_path=manifest,
                              allow_files=allow_files)
        c = r.manifest["counts"]
        console.print(f"[green]{name}[/]: kept {c['instances_kept']:,} of {c['instances_total']:,} instances, "
                      f"wrote {c['records_written']:,} records to {out} ({format.value}"
                      f"{', normalized' if normalized else ''})")
        for reason, n in c["dropped_by_reason"].items():
            console.print(f"  dropped {n:,}: {reason}")
        console.print(f"manifest: {r.manifest_path}  (re-ingest with --format {r.manifest['output']['reingest_format']})")


def _rule(name: str, kind: str, pred: str) -> Rule:
    from ..filter import parse_policy

    return parse_policy({"rules": [{"name": f"{name} {pred}", kind: pred}]}, "command line").rules[0]
