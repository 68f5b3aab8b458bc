"""The DuckDB settings the ingest changes for itself (buffer cap, checkpoint threshold) are put
back afterwards, also when the ingest fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itaudit.errors import InputError
from itaudit.ingest import ingest
from itaudit.store import Store


def _settings(st: Store) -> tuple:
    return st.conn.execute(
        "SELECT current_setting('memory_limit'), current_setting('checkpoint_threshold')").fetchall()[0]


def test_settings_restored(tmp_path: Path):
    good = tmp_path / "g.jsonl"
    good.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n", encoding="utf-8")
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps({"instruction": "a", "output": 5}) + "\n", encoding="utf-8")
    with Store(tmp_path / "db.duckdb") as st:
        st.conn.execute("SET memory_limit = '2GiB'")
        st.conn.execute("SET checkpoint_threshold = '8MiB'")
        before = _settings(st)  # values that read back exactly (settings read back rounded)
        ingest(st, good, "g", show_progress=False)
        assert _settings(st) == before
        with pytest.raises(InputError):
            ingest(st, bad, "b", show_progress=False)
        assert _settings(st) == before
        assert st.query("SELECT count(*) AS n FROM instances")["n"][0] == 1
