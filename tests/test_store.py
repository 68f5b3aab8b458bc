"""The DuckDB store: migrations, transactions, frame inserts."""

from __future__ import annotations

import gc
import weakref

import duckdb
import polars as pl
import pytest

from itaudit import sqlfiles
from itaudit.errors import ItauditError
from itaudit.store import Store, read_only


def test_schema_migrated_once(db_path):
    expected = [v for v, _, _ in sqlfiles.migrations()]
    with Store(db_path) as s:
        got = s.query("SELECT version FROM schema_version ORDER BY version")["version"].to_list()
        assert got == expected and s.schema_version() == max(expected)
        tables = set(s.query("SELECT table_name FROM information_schema.tables")["table_name"].to_list())
        assert {"datasets", "instances", "rejected_rows", "check_runs", "check_rows", "check_pairs"} <= tables
        applied = s.query("SELECT version, applied_at FROM schema_version ORDER BY version")
    with Store(db_path) as s:  # reopening applies nothing again
        assert s.migrate() == max(expected)
        assert s.query("SELECT version, applied_at FROM schema_version ORDER BY version").equals(applied)


def test_transaction_rolls_back_on_error(store):
    frame = pl.DataFrame({"dataset": ["d"], "file": ["f"], "location": ["line 1"], "field": [None], "reason": ["r"],
                          "raw": ["{}"]}, schema={k: pl.Utf8 for k in ("dataset", "file", "location", "field", "reason", "raw")})
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_frame("rejected_rows", frame)
        assert store.query("SELECT count(*) AS n FROM rejected_rows")["n"][0] == 1
        raise RuntimeError("boom")
    assert store.query("SELECT count(*) AS n FROM rejected_rows")["n"][0] == 0
    with store.transaction():
        store.insert_frame("rejected_rows", frame)
    assert store.query("SELECT count(*) AS n FROM rejected_rows")["n"][0] == 1


def test_insert_frame_matches_columns_by_name(store):
    store.conn.execute("CREATE TEMP TABLE t (a INTEGER, b VARCHAR DEFAULT 'dflt', c DOUBLE)")
    store.insert_frame("t", pl.DataFrame({"c": [1.5, 2.5], "a": [1, 2]}))
    store.insert_frame("t", pl.DataFrame({"a": []}, schema={"a": pl.Int32}))  # empty: no-op
    assert store.query("SELECT * FROM t ORDER BY a").rows() == [(1, "dflt", 1.5), (2, "dflt", 2.5)]


def test_insert_frame_does_not_keep_batches_alive(store, monkeypatch):
    """Regression: with conn.register, every Arrow batch stayed referenced until COMMIT."""
    refs = []
    real = pl.DataFrame.to_arrow

    def spy(self, *a, **k):
        t = real(self, *a, **k)
        refs.append(weakref.ref(t))
        return t

    monkeypatch.setattr(pl.DataFrame, "to_arrow", spy)
    store.conn.execute("CREATE TEMP TABLE t (a BIGINT, s VARCHAR)")
    with store.transaction():
        for i in range(5):
            store.insert_frame("t", pl.DataFrame({"a": list(range(i * 100, i * 100 + 100)), "s": ["x" * 50] * 100}))
        gc.collect()
        assert len(refs) == 5 and all(r() is None for r in refs)
    assert store.query("SELECT count(*) AS n FROM t")["n"][0] == 500


def test_read_only_connection(db_path):
    Store(db_path).close()
    con = read_only(db_path)
    try:
        for sql in ("INSERT INTO datasets VALUES ('x', 'p', 'alpaca', 'f', 1, 1, 0, now())",
                    "CREATE TABLE evil (a INT)", "DROP TABLE instances", "DELETE FROM schema_version"):
            with pytest.raises(duckdb.Error, match="read-only"):
                con.execute(sql)
        with pytest.raises(duckdb.Error):
            con.execute(f"ATTACH '{db_path}' AS rw (READ_WRITE)")
    finally:
        con.close()
    with pytest.raises(ItauditError, match="does not exist"):
        read_only(db_path.parent / "missing.duckdb")
    assert not (db_path.parent / "missing.duckdb").exists()


def test_require_dataset_names_known_ones(store, fixtures):
    from itaudit.ingest import ingest

    ingest(store, fixtures / "gsm8k.jsonl", "gsm", show_progress=False)
    assert store.require_dataset("gsm")["n_rows"] == 2
    with pytest.raises(ItauditError, match="known: gsm"):
        store.require_dataset("nope")
