"""`itaudit query`, `itaudit datasets`, the Python API, and `python cli.py`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import itaudit
from itaudit import sqlfiles
from itaudit.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path, fixtures: Path) -> Path:
    p = tmp_path / "q.duckdb"
    with itaudit.open(p) as ws:
        ws.ingest(fixtures / "sharegpt.json", "sg")
        ws.ingest(fixtures / "dolly.jsonl", "dolly")
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": ""}\n')
        ws.ingest(bad, "qa", skip_invalid=True)
    return p


def run(capsys, *args: str) -> tuple[str, str]:
    main(list(args))
    c = capsys.readouterr()
    return c.out, c.err


def fail(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    assert e.value.code == 2
    return "".join(capsys.readouterr().err.split())


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_query_table_to_stdout(db, capsys):
    out, _ = run(capsys, "query", "SELECT dataset, count(*) AS n FROM instances GROUP BY 1 ORDER BY 1", "--db", str(db))
    lines = [ln.replace("┃", "│") for ln in out.splitlines() if "│" in ln or "┃" in ln]  # header uses ┃
    cells = [[c.strip() for c in ln.split("│")[1:-1]] for ln in lines]
    assert ["dataset", "n"] in cells and ["dolly", "3"] in cells and ["sg", "3"] in cells and ["qa", "1"] in cells


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_query_out_file(db, tmp_path, capsys, fmt):
    out = tmp_path / "sub" / f"res.{fmt}"
    sql = "SELECT dataset, idx, instruction, turn FROM instances ORDER BY dataset, idx"
    _, err = run(capsys, "query", sql, "--format", fmt, "--out", str(out), "--db", str(db))
    assert "wrote 7 rows" in " ".join(err.split())
    df = {"csv": pl.read_csv, "json": pl.read_ndjson, "parquet": pl.read_parquet}[fmt](out)
    assert df.columns == ["dataset", "idx", "instruction", "turn"] and df.height == 7
    assert df.row(0) == ("dolly", 0, "When did Virgin Australia start operating?", 0)
    assert df.filter(pl.col("dataset") == "sg")["turn"].to_list() == [0, 1, 0]


def test_query_csv_and_json_to_stdout(db, capsys):
    out, _ = run(capsys, "query", "SELECT name, n_rows FROM datasets ORDER BY name", "--format", "csv", "--db", str(db))
    assert out.splitlines() == ["name,n_rows", "dolly,3", "qa,1", "sg,3"]
    out, _ = run(capsys, "query", "SELECT name, n_rows FROM datasets ORDER BY name", "--format", "json", "--db", str(db))
    assert [json.loads(x) for x in out.splitlines()][0] == {"name": "dolly", "n_rows": 3}


def test_query_bad_options(db, tmp_path, capsys):
    assert "needs--outFILE" in fail(capsys, "query", "SELECT 1", "--format", "parquet", "--db", str(db))
    assert "--outneeds--formatcsv" in fail(capsys, "query", "SELECT 1", "--out", str(tmp_path / "x"), "--db", str(db))
    assert "giveeitherSQLor--reportNAME" in fail(capsys, "query", "--db", str(db))
    err = fail(capsys, "query", "SELEC nonsense", "--db", str(db))
    assert "queryfailed" in err and "syntaxerror" in err


def test_query_cannot_write(db, capsys):
    before = digest(db)
    for sql in ("DELETE FROM instances", "DROP TABLE datasets", "CREATE TABLE t AS SELECT 1",
                "UPDATE datasets SET n_rows = 0", "INSERT INTO rejected_rows VALUES ('a','b','c',NULL,'d',NULL)"):
        err = fail(capsys, "query", sql, "--db", str(db))
        assert "queryfailed" in err and "read-only" in err
    assert digest(db) == before
    with itaudit.open(db) as ws:
        assert ws.query("SELECT count(*) AS n FROM instances")["n"][0] == 7


def test_query_missing_database(tmp_path, capsys):
    missing = tmp_path / "none.duckdb"
    assert "doesnotexist" in fail(capsys, "query", "SELECT 1", "--db", str(missing))
    assert "doesnotexist" in fail(capsys, "datasets", "--db", str(missing))
    assert not missing.exists()  # a read-only command never creates a database


def test_reports(db, capsys, tmp_path):
    out, _ = run(capsys, "query", "--report", "rejected", "--format", "csv", "--db", str(db))
    rows = list(pl.read_csv(out.encode()).iter_rows(named=True))
    assert rows == [{"dataset": "qa", "reason": "empty answer", "field": "answer", "n": 1, "first_location": "line 2"}]
    out, _ = run(capsys, "query", "--report", "datasets", "--format", "csv", "--db", str(db))
    assert pl.read_csv(out.encode())["name"].to_list() == ["dolly", "qa", "sg"]
    out, _ = run(capsys, "query", "--list", "--db", str(db))
    for name in ("datasets", "rejected", "checks"):
        assert name in out
    assert sqlfiles.report_sql("datasets").splitlines()[0].lstrip("- ") in " ".join(out.split())
    err = fail(capsys, "query", "--report", "nosuch", "--db", str(db))
    assert "noreportnamed'nosuch'" in err and "available:" in err


def test_datasets_command(db, capsys):
    out, _ = run(capsys, "datasets", "--db", str(db))
    cells = [[c.strip() for c in ln.split("│")[1:-1]] for ln in out.splitlines() if "│" in ln]
    by_name = {c[0]: c for c in cells if c and c[0] in ("dolly", "qa", "sg")}
    # name, format, n_source, n_rows, n_rejected, ...
    assert by_name["sg"][1:5] == ["sharegpt", "2", "3", "0"]
    assert by_name["qa"][1:5] == ["qa", "2", "1", "1"]
    assert by_name["dolly"][1:5] == ["dolly", "3", "3", "0"]


def test_python_api(tmp_path, fixtures):
    p = tmp_path / "api.duckdb"
    with itaudit.open(p) as ws:
        r = ws.ingest(fixtures / "lima.jsonl", "lima")
        assert (r.format, r.n_rows, r.unchanged) == ("lima", 3, False)
        assert ws.ingest(fixtures / "lima.jsonl", "lima").unchanged
        ws.ingest(fixtures / "messages.jsonl", "msgs", format="messages")
        df = ws.query("SELECT dataset, turn FROM instances WHERE dataset = ? ORDER BY idx", ["lima"])
        assert isinstance(df, pl.DataFrame) and df["turn"].to_list() == [0, 0, 1]
        ds = ws.datasets()
        assert ds["name"].to_list() == ["lima", "msgs"] and ds["n_rows"].to_list() == [3, 3]
        assert ws.instances("msgs")["system"][0] == "You are a poet."
        assert ws.query(report="rejected").height == 0
    # the workspace closed its connection: a read-only one can open the file now
    assert itaudit.workspace.query_readonly(p, "SELECT count(*) AS n FROM instances")["n"][0] == 6


def test_python_api_default_db_from_env(tmp_path, fixtures, monkeypatch):
    monkeypatch.setenv("ITAUDIT_DB", str(tmp_path / "env.duckdb"))
    with itaudit.open() as ws:
        ws.ingest(fixtures / "gsm8k.jsonl", "gsm")
    assert (tmp_path / "env.duckdb").exists()


def test_python_cli_py_matches_console_script(db, capsys):
    """`python cli.py ...` in a fresh process prints what the in-process CLI prints."""
    args = ["query", "SELECT name, format, n_rows FROM datasets ORDER BY name", "--format", "csv", "--db", str(db)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    out, _ = run(capsys, *args)
    assert p.stdout == out == "name,format,n_rows\ndolly,dolly,3\nqa,qa,1\nsg,sharegpt,3\n"


# -- user SQL cannot touch files unless allowed (itaudit.usersql) ------------------------------

def test_query_refuses_files_unless_allowed(db, tmp_path, capsys):
    target = tmp_path / "leak.csv"
    err = fail(capsys, "query", f"COPY (SELECT 1 AS x) TO '{target}'", "--db", str(db))
    assert "queryfailed" in err and "--allow-files" in err and not target.exists()
    secret = tmp_path / "secret.csv"
    secret.write_text("k\nhunter2\n")
    err = fail(capsys, "query", f"SELECT * FROM read_csv('{secret}')", "--db", str(db))
    assert "disabledbyconfiguration" in err and "hunter2" not in err
    assert "queryfailed" in fail(capsys, "query", "SELECT * FROM glob('/etc/*')", "--db", str(db))
    # with the flag both work, and the database is still read-only
    out, _ = run(capsys, "query", f"SELECT k FROM read_csv('{secret}')", "--format", "csv", "--allow-files", "--db", str(db))
    assert out.splitlines() == ["k", "hunter2"]
    run(capsys, "query", f"COPY (SELECT 42 AS x) TO '{target}'", "--allow-files", "--db", str(db))
    assert target.read_text().split() == ["x", "42"]
    assert "read-only" in fail(capsys, "query", "DELETE FROM instances", "--allow-files", "--db", str(db))


def test_filter_and_tune_predicates_refuse_files_unless_allowed(db, tmp_path):
    from itaudit.errors import ItauditError
    from itaudit.filter import filter_dataset, parse_policy
    from itaudit.store import Store
    from itaudit.tune.data import select_instances

    ids = tmp_path / "drop.csv"
    ids.write_text("idx\n1\n")
    pred = f"idx IN (SELECT idx FROM read_csv('{ids}'))"
    with Store(db) as store:
        pol = parse_policy({"rules": [{"drop_where": pred}]})
        with pytest.raises(ItauditError, match="allow-files"):
            filter_dataset(store, "dolly", pol, tmp_path / "f.jsonl")
        assert not (tmp_path / "f.jsonl").exists()
        r = filter_dataset(store, "dolly", pol, tmp_path / "f.jsonl", allow_files=True)
        assert (r.n_kept, r.n_dropped) == (2, 1) and r.manifest["dropped"][0]["idx"] == 1
        # predicates that name database tables still work in the sandbox
        sub = parse_policy({"rules": [{"drop_where": "idx = 0"}, {"keep_where": "instruction LIKE '%Virgin%' OR idx = 2"}]})
        assert filter_dataset(store, "dolly", sub, tmp_path / "h.jsonl").n_kept == 1

        with pytest.raises(ItauditError, match="allow-files"):
            select_instances(store, "dolly", pred)
        assert select_instances(store, "dolly", pred, allow_files=True)["idx"].to_list() == [1]
        assert select_instances(store, "dolly", "idx IN (SELECT idx FROM instances WHERE idx > 0)")["idx"].to_list() == [1, 2]


# -- CLI polish ---------------------------------------------------------------------------------

def test_strict_ingest_error_suggests_skip_invalid(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": ""}\n')
    err = fail(capsys, "ingest", str(bad), "--name", "b", "--db", str(tmp_path / "x.duckdb"))
    assert "line2" in err and "emptyresponse" in err and "rerunwith--skip-invalid" in err
    # a whole-file problem gets no such hint: skipping records cannot fix it
    unknown = tmp_path / "u.jsonl"
    unknown.write_text('{"foo": 1}\n')
    err = fail(capsys, "ingest", str(unknown), "--name", "u", "--db", str(tmp_path / "x.duckdb"))
    assert "cannotdetecttheformat" in err and "--skip-invalid" not in err


def test_piped_summary_keeps_long_findings_whole(tmp_path):
    """`itaudit report` piped to a file: every finding on one line, nothing cut at 80 columns."""
    db = tmp_path / "p.duckdb"
    with itaudit.open(db, index_dir=tmp_path / "idx") as ws:
        ws.ingest(ROOT / "examples" / "sample_alpaca.jsonl", "alpaca_sample_with_a_long_name")
        ws.ingest(ROOT / "examples" / "sample_eval.jsonl", "eval_set_with_a_long_name")
        ws.audit("alpaca_sample_with_a_long_name", ["contamination", "style"],
                 params={"contamination": {"against": ["eval_set_with_a_long_name"], "embeddings": False}})
        findings = ws.report("alpaca_sample_with_a_long_name")["finding"].to_list()
    assert max(len(f) for f in findings) > 80
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.run([sys.executable, str(ROOT / "cli.py"), "report", "alpaca_sample_with_a_long_name", "--db", str(db)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    for f in findings:
        for part in f.split("; "):
            assert any(part in ln for ln in lines), (part, p.stdout)
