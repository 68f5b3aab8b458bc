"""Locate and load the `.sql` files shipped in the top-level `sql/` folder (schema, migrations, reports)."""

from __future__ import annotations

import os
import re
from pathlib import Path


def sql_dir() -> Path:
    """The `sql/` folder: `$ITAUDIT_SQL_DIR`, else the one next to the package."""
    env = os.environ.get("ITAUDIT_SQL_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent / "sql"
    if here.is_dir():
        return here
    raise FileNotFoundError("cannot find the itaudit sql/ folder; set ITAUDIT_SQL_DIR")


def read_sql(relpath: str) -> str:
    return (sql_dir() / relpath).read_text(encoding="utf-8")


_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in sql/migrations, in version order (schema.sql is 1)."""
    out = [(1, "schema", read_sql("schema.sql"))]
    mig_dir = sql_dir() / "migrations"
    if mig_dir.is_dir():
        for f in sorted(mig_dir.iterdir()):
            m = _MIGRATION.match(f.name)
            if m:
                out.append((int(m.group(1)), m.group(2), f.read_text(encoding="utf-8")))
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {mig_dir}: {versions}")
    return sorted(out)


def report_names() -> list[str]:
    return sorted(p.stem for p in (sql_dir() / "reports").glob("*.sql"))


def report_sql(name: str) -> str:
    path = sql_dir() / "reports" / f"{name}.sql"
    if not path.is_file():
        from .errors import ItauditError

        raise ItauditError(f"no report named {name!r}; available: {', '.join(report_names())}")
    return path.read_text(encoding="utf-8")
