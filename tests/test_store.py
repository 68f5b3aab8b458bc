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


# -- two processes ---------------------------------------------------------------------------
HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("BEGIN TRANSACTION")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
con.close()
"""


def _hold(path, seconds: float):
    """Another process holding a write connection on `path` for `seconds`."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_busy_database_waits_then_names_the_holding_process(db_path, monkeypatch, capsys):
    import time

    Store(db_path).close()
    monkeypatch.setenv("ITAUDIT_LOCK_TIMEOUT", "0.5")
    p = _hold(db_path, 30)
    try:
        t0 = time.monotonic()
        with pytest.raises(ItauditError, match=rf"busy: process {p.pid} .*waited 0.5s"):
            Store(db_path)
        assert 0.5 <= time.monotonic() - t0 < 5
        from itaudit.cli import main

        with pytest.raises(SystemExit) as e:
            main(["query", "SELECT 1", "--db", str(db_path)])
        assert e.value.code == 2 and f"process {p.pid}" in capsys.readouterr().err
    finally:
        p.kill()
        p.wait()


def test_a_waiting_command_proceeds_when_the_holder_finishes(db_path, monkeypatch):
    Store(db_path).close()
    monkeypatch.setenv("ITAUDIT_LOCK_TIMEOUT", "20")
    p = _hold(db_path, 1.0)
    try:
        with Store(db_path) as s:  # waits about a second, then opens
            assert s.schema_version() >= 7
        assert p.wait(timeout=20) == 0
    finally:
        p.kill()


def test_writer_holds_the_file_only_while_committing(db_path):
    import subprocess
    import sys

    s = Store(db_path)
    s.release()
    read = [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True); "
            "print(c.execute('SELECT count(*) FROM check_runs').fetchall()[0][0])", str(db_path)]
    with s.writer() as conn:
        conn.execute("INSERT INTO check_runs (run_id, dataset, check_name) VALUES ('r1', 'd', 'c')")
        held = subprocess.run(read, capture_output=True, text=True)
    assert held.returncode != 0 and "lock" in held.stderr.lower()  # while committing: busy
    after = subprocess.run(read, capture_output=True, text=True)
    assert after.returncode == 0 and after.stdout.strip() == "1"  # released after the commit
    assert not s.is_open
