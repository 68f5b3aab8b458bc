"""Select instances with a policy, export them, and write a manifest.

Granularity. Rules decide per instance. An export in the original format writes whole source
records (`raw`), so for multi-turn records (several instances per source row):
- `multi_turn="whole"` (default): a record is written only if ALL its instances are kept; the
  other instances of a dropped record are dropped with reason `same record as a dropped turn`.
- `multi_turn="any"`: a record is written if ANY of its instances is kept (it is written whole).
A normalized export (`normalized=True`) writes one record per kept instance and ignores
`multi_turn`. The counts in the manifest are final (after the record rule).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from ..errors import ItauditError
from ..hashing import file_sha256
from ..store import Store
from ..usersql import NO_FILES_HINT, is_file_access_error, sandbox
from .policy import Policy, Rule, column_name

EXPORT_FORMATS = ("jsonl", "parquet", "hf")
_BASE_COLS = ("dataset", "idx", "instance_id", "source_row", "turn", "system", "history", "instruction",
              "input", "response", "category", "source", "content_hash")


@dataclass
class FilterResult:
    out: Path
    manifest_path: Path
    manifest: dict[str, Any]

    @property
    def n_kept(self) -> int:
        return self.manifest["counts"]["instances_kept"]

    @property
    def n_dropped(self) -> int:
        return self.manifest["counts"]["instances_dropped"]


def audit_checks(store: Store, dataset: str) -> dict[str, str]:
    """check name -> latest run id, for the checks with results on `dataset`."""
    df = store.query("SELECT check_name, run_id FROM latest_checks WHERE dataset = ? ORDER BY check_name", [dataset])
    return dict(df.iter_rows())


def audit_view_sql(store: Store, dataset: str) -> tuple[str, list[Any]]:
    """A SELECT giving one row per instance with `<check>_flag/_score/_cluster` columns."""
    checks = audit_checks(store, dataset)
    cols = [f"i.{c}" for c in _BASE_COLS]
    joins = []
    params: list[Any] = []
    for n, (check, run_id) in enumerate(checks.items()):
        a, c = f"c{n}", column_name(check)
        cols += [f"coalesce({a}.flag, FALSE) AS {c}_flag", f"{a}.score AS {c}_score", f"{a}.cluster_id AS {c}_cluster"]
        joins.append(f"LEFT JOIN check_rows {a} ON {a}.run_id = ? AND {a}.idx = i.idx")
        params.append(run_id)
    sql = f"SELECT {', '.join(cols)} FROM instances i {' '.join(joins)} WHERE i.dataset = ?"
    return sql, params + [dataset]


def _select_idx(store: Store, view: str, vparams: list[Any], predicate: str, rule: Rule,
                box: duckdb.DuckDBPyConnection | None = None) -> set[int]:
    """idx of the audit-view rows matching `predicate`: in the file-less sandbox `box` unless None."""
    try:
        if box is not None:
            rows = box.execute(f"SELECT idx FROM audit WHERE coalesce(({predicate}), FALSE)").fetchall()
        else:
            sql = f"WITH audit AS ({view}) SELECT idx FROM audit WHERE coalesce(({predicate}), FALSE)"
            store.conn.execute("BEGIN TRANSACTION")
            try:
                rows = store.conn.execute(sql, vparams).fetchall()
            finally:
                store.conn.execute("ROLLBACK")  # predicates never change the database
    except duckdb.Error as e:
        hint = f" ({NO_FILES_HINT})" if is_file_access_error(e) else ""
        raise ItauditError(f"filter rule {rule.name!r}: cannot evaluate {predicate!r}: {e}".splitlines()[0] + hint) from None
    return {int(r[0]) for r in rows}


def _require_check(checks: dict[str, str], check: str, rule: Rule, dataset: str) -> str:
    if check not in checks:
        raise ItauditError(
            f"filter rule {rule.name!r} needs check {check!r}, which has no results on {dataset!r}"
            f" (have: {', '.join(checks) or 'none'}); run `itaudit audit {dataset} --checks {check}` first")
    return column_name(check)


def apply_policy(store: Store, dataset: str, policy: Policy, *, allow_files: bool = False) -> dict[int, str]:
    """idx -> reason for every dropped instance (first rule that dropped it).

    Predicates run on a copy of the audit view in an in-memory DuckDB without file access
    (`itaudit.usersql`), unless `allow_files`: then on the store's connection, in a rolled-back
    transaction.
    """
    checks = audit_checks(store, dataset)
    view, vparams = audit_view_sql(store, dataset)
    dropped: dict[int, str] = {}
    box = None
    if not allow_files and any(r.kind in ("drop_where", "keep_where") for r in policy.rules):
        box = sandbox({"audit": store.query(view, vparams)})
    deduped: list[str] = []   # clustering checks whose clusters a dedupe rule already resolved
    for rule in policy.rules:
        if rule.optional and any(c not in checks for c in rule.checks()):
            continue
        if rule.kind == "max_score" and "risk" in rule.arg and deduped:
            # The copy a dedupe rule kept must not be dropped again for the duplication that rule
            # resolved: risk is compared without the contributions of the deduped checks.
            _require_check(checks, "risk", rule, dataset)
            for idx in _risk_without(store, dataset, deduped, float(rule.arg["risk"])):
                dropped.setdefault(idx, rule.name)
            rest = {ch: t for ch, t in rule.arg.items() if ch != "risk"}
            if not rest:
                continue
            rule = Rule(rule.name, rule.kind, rest, rule.optional)
        if rule.kind == "dedupe":
            deduped.append(rule.arg)
            c = _require_check(checks, rule.arg, rule, dataset)
            order = "risk_score ASC NULLS LAST, " if "risk" in checks else ""
            df = store.query(f"WITH audit AS ({view}) SELECT idx, {c}_cluster AS cl FROM audit "
                             f"WHERE {c}_cluster IS NOT NULL AND {c}_cluster >= 0 ORDER BY cl, {order}idx", vparams)
            seen: set[int] = set()
            for idx, cl in df.iter_rows():
                if idx in dropped:
                    continue
                if cl in seen:
                    dropped[idx] = rule.name
                else:
                    seen.add(cl)
            continue
        if rule.kind == "drop_where":
            pred = rule.arg
        elif rule.kind == "keep_where":
            pred = f"NOT coalesce(({rule.arg}), FALSE)"
        elif rule.kind == "drop_flagged":
            pred = " OR ".join(f"{_require_check(checks, ch, rule, dataset)}_flag" for ch in rule.arg)
        else:  # max_score
            pred = " OR ".join(f"{_require_check(checks, ch, rule, dataset)}_score > {float(t)!r}"
                               for ch, t in rule.arg.items())
        for idx in _select_idx(store, view, vparams, pred, rule, box):
            dropped.setdefault(idx, rule.name)
    if box is not None:
        box.close()
    return dropped


def _risk_without(store: Store, dataset: str, excluded: list[str], threshold: float) -> list[int]:
    """Rows whose risk, recombined without the contributions of `excluded` checks, is above `threshold`.

    Risk is a noisy-OR, 1 - prod_c (1 - contribution_c), with each row's contributions stored in
    its details; a row stored without contributions keeps its score.
    """
    df = store.query("SELECT idx, score, details FROM check_results WHERE dataset = ? AND check_name = 'risk' "
                     "ORDER BY idx", [dataset])
    out = []
    for idx, score, details in df.iter_rows():
        parts = (json.loads(details) or {}).get("contributions") if details else None
        if parts is None:
            risk = float(score)
        else:
            keep = 1.0
            for check, c in parts.items():
                if check not in excluded:
                    keep *= 1.0 - float(c)
            risk = 1.0 - keep
        if risk > threshold:
            out.append(int(idx))
    return out


def filter_dataset(
    store: Store,
    dataset: str,
    policy: Policy,
    out: str | Path,
    fmt: str = "jsonl",
    *,
    normalized: bool = False,
    manifest_path: str | Path | None = None,
    allow_files: bool = False,
) -> FilterResult:
    """Apply `policy`, export the kept data to `out` (atomically), write the manifest."""
    if fmt not in EXPORT_FORMATS:
        raise ItauditError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    info = store.require_dataset(dataset)
    out = Path(out)
    if out.resolve() == Path(info["source_path"]).resolve():
        raise ItauditError(f"refusing to overwrite the source of {dataset!r} ({out}); choose another --out")
    manifest_path = Path(manifest_path) if manifest_path else out.with_name(out.name + ".manifest.json")
    dropped, by_rule, inst = _select(store, dataset, info, policy, normalized, allow_files)
    n_total = inst.height
    n_source_rows = inst["source_row"].n_unique()
    kept = [i for i in inst["idx"].to_list() if i not in dropped]
    records = _records(store, dataset, kept, normalized)
    n_written = _export(records, out, fmt)
    row_of = dict(zip(inst["idx"].to_list(), zip(inst["instance_id"].to_list(), inst["source_row"].to_list(), strict=False), strict=False))
    manifest = {
        "manifest_id": uuid.uuid4().hex,
        "dataset": dataset,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"path": info["source_path"], "format": info["format"], "fingerprint": info["fingerprint"],
                   "n_source": info["n_source"], "n_rejected_at_ingest": info["n_rejected"]},
        "output": {"path": str(out.resolve()), "format": fmt, "normalized": normalized,
                   "records": n_written, "sha256": file_sha256(out) if out.is_file() else None,
                   "reingest_format": _reingest_format(info["format"], normalized)},
        "policy": policy.as_dict(),
        "skipped_rules": [r.name for r in policy.rules
                          if r.optional and any(c not in audit_checks(store, dataset) for c in r.checks())],
        "checks": audit_checks(store, dataset),
        "counts": {
            "instances_total": n_total, "instances_kept": len(kept), "instances_dropped": len(dropped),
            "source_rows_total": n_source_rows, "records_written": n_written,
            "dropped_by_rule": by_rule, "dropped_by_reason": _count(dropped.values()),
        },
        "dropped": [{"idx": i, "instance_id": row_of[i][0], "source_row": row_of[i][1], "reason": r}
                    for i, r in sorted(dropped.items())],
    }
    _write_text(manifest_path, json.dumps(manifest, indent=1, ensure_ascii=False))
    with store.transaction():
        store.conn.execute(
            "INSERT INTO filter_manifests (manifest_id, dataset, out_path, export_format, normalized, n_kept, "
            "n_dropped, source_fingerprint, manifest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [manifest["manifest_id"], dataset, str(out.resolve()), fmt, normalized, len(kept), len(dropped),
             info["fingerprint"], json.dumps(manifest, ensure_ascii=False)])
    return FilterResult(out, manifest_path, manifest)


def _select(store: Store, dataset: str, info: dict[str, Any], policy: Policy, normalized: bool,
            allow_files: bool) -> tuple[dict[int, str], dict[str, int], pl.DataFrame]:
    """(idx -> drop reason after the multi-turn record rule, drops by rule, instances frame)."""
    dropped = apply_policy(store, dataset, policy, allow_files=allow_files)
    by_rule = _count(dropped.values())
    inst = store.query("SELECT idx, instance_id, source_row, turn FROM instances WHERE dataset = ? ORDER BY idx", [dataset])
    if not normalized:
        if info["format"] == "oasst" and _is_flat_oasst(store, dataset):
            raise ItauditError(
                "OASST message rows cannot be exported in the original format (a kept reply needs "
                "its dropped parents); use --normalized")
        groups: dict[int, list[int]] = {}
        for idx, sr in zip(inst["idx"].to_list(), inst["source_row"].to_list(), strict=False):
            groups.setdefault(sr, []).append(idx)
        for members in groups.values():
            bad = [i for i in members if i in dropped]
            if not bad:
                continue
            if policy.multi_turn == "whole" or len(bad) == len(members):
                for i in members:
                    dropped.setdefault(i, f"same record as a dropped turn ({dropped[bad[0]]})")
            else:  # any: the record survives through its kept turns
                for i in bad:
                    dropped.pop(i)
    return dropped, by_rule, inst


def kept_records(store: Store, dataset: str, policy: Policy, *, normalized: bool = False,
                 allow_files: bool = False) -> list[dict[str, Any]]:
    """The records `filter_dataset` would export (in memory, no file, no manifest)."""
    info = store.require_dataset(dataset)
    dropped, _, inst = _select(store, dataset, info, policy, normalized, allow_files)
    return _records(store, dataset, [i for i in inst["idx"].to_list() if i not in dropped], normalized)


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _reingest_format(fmt: str, normalized: bool) -> str:
    if normalized:
        return "prompts" if fmt == "prompts" else "alpaca"
    return fmt


def _is_flat_oasst(store: Store, dataset: str) -> bool:
    raw = store.query("SELECT raw FROM records WHERE dataset = ? LIMIT 1", [dataset])["raw"][0]
    try:
        return not isinstance(json.loads(raw).get("prompt"), dict)
    except (TypeError, ValueError, AttributeError):
        return True


def _history_pairs(history: str | None) -> list[list[str]]:
    """[{role, content}] -> [[user, assistant], ...] (consecutive turns of one role joined)."""
    if not history:
        return []
    msgs = json.loads(history)
    pairs: list[list[str]] = []
    users: list[str] = []
    for m in msgs:
        if m.get("role") == "assistant":
            pairs.append(["\n\n".join(users), m.get("content", "")])
            users = []
        elif m.get("role") == "user":
            users.append(m.get("content", ""))
    return pairs


def _records(store: Store, dataset: str, kept: list[int], normalized: bool) -> list[dict[str, Any]]:
    store.conn.register("_itaudit_keep", pl.DataFrame({"idx": kept}, schema={"idx": pl.Int64}).to_arrow())
    try:
        if normalized:
            df = store.query(
                "SELECT i.instance_id, i.system, i.history, i.instruction, i.input, i.response, i.category, i.source "
                "FROM instances i JOIN _itaudit_keep k USING (idx) WHERE i.dataset = ? ORDER BY i.idx", [dataset])
            recs = []
            for r in df.iter_rows(named=True):
                rec = {"instruction": r["instruction"], "input": r["input"] or "", "output": r["response"]}
                if r["system"]:
                    rec["system"] = r["system"]
                hist = _history_pairs(r["history"])
                if hist:
                    rec["history"] = hist
                for k in ("category", "source"):
                    if r[k] is not None:
                        rec[k] = r[k]
                rec["instance_id"] = r["instance_id"]
                recs.append(rec)
            return recs
        df = store.query(
            "SELECT r.raw FROM records r JOIN (SELECT DISTINCT i.source_row FROM instances i JOIN _itaudit_keep k "
            "USING (idx) WHERE i.dataset = ?) s USING (source_row) WHERE r.dataset = ? ORDER BY r.source_row",
            [dataset, dataset])
        return [json.loads(r) for r in df["raw"].to_list()]
    finally:
        store.conn.unregister("_itaudit_keep")


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _export(records: list[dict[str, Any]], out: Path, fmt: str) -> int:
    """Write records atomically (temp name, then rename). Returns the number written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(out)
    try:
        if fmt == "jsonl":
            with tmp.open("w", encoding="utf-8") as f:
                for r in records:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        elif fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                table = pa.table(_columns(records))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise ItauditError(f"these records do not fit one parquet schema ({e}); use --format jsonl") from None
            pq.write_table(table, tmp)
        else:
            import datasets

            datasets.disable_progress_bars()
            if not records:
                raise ItauditError("nothing to export: every instance was dropped")
            try:
                ds = datasets.Dataset.from_dict(_columns(records))
            except Exception as e:  # arrow type errors surface as various exceptions
                raise ItauditError(f"these records do not fit one HF dataset schema ({e}); use --format jsonl") from None
            ds.save_to_disk(str(tmp))
        if out.is_dir():
            old = _tmp_name(out)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise
    return len(records)


def _columns(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Column lists over the union of the records' keys (in first-seen order; missing -> None).

    pyarrow's and datasets' from_pylist/from_list take the columns of the FIRST record only,
    which silently drops fields (e.g. `history`) that the first record lacks.
    """
    keys: dict[str, None] = {}
    for r in records:
        for k in r:
            keys.setdefault(k, None)
    return {k: [r.get(k) for r in records] for k in keys}

