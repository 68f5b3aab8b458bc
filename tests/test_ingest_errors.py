"""Bad input: a clear error naming file, line/row and field, exit code 2, and the database
exactly as it was (one transaction); `--skip-invalid` records the bad rows and goes on."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import pytest

from itaudit import sqlfiles
from itaudit.cli import main
from itaudit.errors import InputError
from itaudit.ingest import ingest, pipeline
from itaudit.store import Store

GOOD = [{"instruction": f"Say {w}.", "input": "", "output": f"{w}!"} for w in ("one", "two", "three")]


def jl(*recs: dict | str | bytes) -> bytes:
    """JSON lines from records (dicts) or literal lines (str/bytes)."""
    out = b""
    for r in recs:
        line = r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode()
        out += line + b"\n"
    return out


def _alpaca_array_with_bad_utf8() -> bytes:
    text = json.dumps(GOOD, indent=2).encode()
    return text.replace(b'"two!"', b'"tw\xff!"')  # the 2nd element, on line 10


def _cut(b: bytes, frac: float) -> bytes:
    return b[: int(len(b) * frac)]


# name, file name, content, location (substring), field, reason (substring), recoverable with --skip-invalid
BAD = [
    ("malformed_json_line", "d.jsonl", jl(GOOD[0], '{"instruction": "x" "output": "y"}', GOOD[1]),
     "line 2", None, "malformed JSON", True),
    ("missing_field", "d.jsonl", jl(GOOD[0], GOOD[1], {"instruction": "x", "input": ""}),
     "line 3", "output", "missing required field", True),
    ("empty_response", "d.jsonl", jl(GOOD[0], {"instruction": "x", "input": "", "output": "  \n"}),
     "line 2", "output", "empty response", True),
    ("wrong_type", "d.jsonl", jl(GOOD[0], {"instruction": 42, "output": "y"}),
     "line 2", "instruction", "expected a string, got int", True),
    ("not_an_object", "d.jsonl", jl(GOOD[0], "[1, 2]"), "line 2", None, "expected an object", True),
    ("wrong_type_nested", "s.json", json.dumps([
        {"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": ["x"]}]},
    ]).encode(), "element 2", "conversations[1].value", "expected a string, got list", True),
    ("unknown_role", "s.json", json.dumps([
        {"id": "a", "conversations": [{"from": "narrator", "value": "hi"}, {"from": "gpt", "value": "x"}]},
    ]).encode(), "element 1", "conversations[0].from", "unknown role 'narrator'", False),
    ("assistant_twice", "s.jsonl", jl(
        {"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "a"},
                                      {"from": "gpt", "value": "b"}]},
    ), "line 2", "conversations[2]", "assistant turn without a preceding user turn", True),
    ("non_utf8_jsonl", "d.jsonl", jl(GOOD[0], b'{"instruction": "x", "output": "caf\xe9"}'),
     "line 2", None, "invalid UTF-8 byte 0xe9", True),
    ("non_utf8_json_array", "a.json", _alpaca_array_with_bad_utf8(), "line 10", None, "invalid UTF-8", False),
    ("non_utf8_csv", "t.csv", b"question,answer\nWhat is 1+1?,2\nWhat is 2+2?,\xff4\n", "line 3", None, "invalid UTF-8", False),
    ("truncated_jsonl", "d.jsonl", jl(GOOD[0], GOOD[1]) + b'{"instruction": "Say th', "line 3", None, "truncated JSON", True),
    ("truncated_json_array", "a.json", _cut(json.dumps(GOOD, indent=2).encode(), 0.6), "line", None, "truncated JSON", False),
    ("truncated_json_array_end", "a.json", json.dumps(GOOD).encode()[:-1], "line 1", None, "truncated JSON array", False),
    ("truncated_parquet", "p.parquet", b"PAR1\x15\x04\x15\x10\x15\x14L\x15\x02\x15\x00", None, None, "unreadable parquet", False),
    ("csv_extra_values", "t.csv", b"question,answer\nWhat is 1+1?,2,extra\n", "row 1", None, "more values than header columns", False),
    ("unknown_format", "d.jsonl", jl({"foo": 1, "bar": "x"}), "line 1", None, "cannot detect the format", False),
    ("unknown_file_type", "d.txt", b"instruction: hi\n", None, None, "unknown file type", False),
    ("empty_file", "d.jsonl", b"\n\n", None, None, "no records", False),
]
IDS = [b[0] for b in BAD]


def snapshot(db: Path) -> tuple[dict, str]:
    """Every table's full contents (sorted) and the file's sha256."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY 1").fetchall()]
        data = {t: sorted(con.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    finally:
        con.close()
    return data, hashlib.sha256(db.read_bytes()).hexdigest()


def squash(s: str) -> str:
    return "".join(s.split())  # rich wraps long lines; compare without whitespace


@pytest.fixture(scope="module")
def _populated_template(tmp_path_factory) -> Path:
    fixtures = Path(__file__).resolve().parent / "fixtures"
    db = tmp_path_factory.mktemp("tpl") / "pre.duckdb"
    with Store(db) as s:
        ingest(s, fixtures / "alpaca.json", "keep", show_progress=False)
        ingest(s, fixtures / "dolly.jsonl", "target", show_progress=False)
        ingest(s, fixtures / "gsm8k.jsonl", "target_rej", skip_invalid=True, show_progress=False)
    return db


@pytest.fixture
def populated_db(tmp_path: Path, _populated_template: Path) -> Path:
    """A database that already holds datasets, one of them under the name we re-ingest (a copy
    of a file built once per module)."""
    db = tmp_path / "pre.duckdb"
    shutil.copy(_populated_template, db)
    return db


def _write(tmp_path: Path, fname: str, content: bytes) -> Path:
    p = tmp_path / "in" / fname
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(content)
    return p


@pytest.mark.parametrize(("name", "fname", "content", "loc", "field", "reason", "recoverable"), BAD, ids=IDS)
def test_bad_input_raises_located_error(store, tmp_path, name, fname, content, loc, field, reason, recoverable):
    p = _write(tmp_path, fname, content)
    with pytest.raises(InputError) as e:
        ingest(store, p, "target", show_progress=False)
    err = e.value
    assert err.file == str(p)
    assert reason in err.reason
    assert err.field == field
    if loc is None:
        assert err.location is None
    else:
        assert loc in err.location
    assert str(p) in str(err) and reason in str(err)
    assert store.dataset_info("target") is None


@pytest.mark.parametrize(("name", "fname", "content", "loc", "field", "reason", "recoverable"), BAD, ids=IDS)
def test_bad_input_cli_exit_2_and_database_unchanged(populated_db, tmp_path, capsys, name, fname, content, loc,
                                                      field, reason, recoverable):
    p = _write(tmp_path, fname, content)
    before = snapshot(populated_db)
    with pytest.raises(SystemExit) as e:
        main(["ingest", str(p), "--name", "target", "--db", str(populated_db)])
    assert e.value.code == 2
    msg = squash(capsys.readouterr().err)
    assert squash(f"error: {p}") in msg and squash(reason) in msg
    if loc:
        assert squash(loc) in msg
    if field:
        assert squash(f"field '{field}'") in msg
    after = snapshot(populated_db)
    assert after[0] == before[0]  # every table, row for row (incl. the old 'target')
    assert after[1] == before[1]  # and the file byte for byte


@pytest.mark.parametrize(("name", "fname", "content", "loc", "field", "reason", "recoverable"),
                         [b for b in BAD if b[-1]], ids=[b[0] for b in BAD if b[-1]])
def test_skip_invalid_records_the_bad_row_and_goes_on(store, tmp_path, name, fname, content, loc, field, reason,
                                                      recoverable):
    p = _write(tmp_path, fname, content)
    r = ingest(store, p, "target", skip_invalid=True, show_progress=False)
    assert r.n_rejected == 1 and r.n_rows == r.n_source - 1 >= 1
    rej = store.query("SELECT * FROM rejected_rows WHERE dataset = 'target'").to_dicts()
    assert len(rej) == 1
    assert rej[0]["file"] == str(p) and loc in rej[0]["location"] and rej[0]["field"] == field
    assert reason in rej[0]["reason"] and rej[0]["raw"]


def test_skip_invalid_mixed_file(store, tmp_path, capsys, db_path):
    p = _write(tmp_path, "mixed.jsonl", jl(
        GOOD[0],                                            # line 1 ok
        '{"instruction": "x" "output": "y"}',               # line 2 malformed
        {"instruction": "x", "input": ""},                  # line 3 missing output
        {"instruction": "x", "output": ""},                 # line 4 empty response
        {"instruction": ["x"], "output": "y"},              # line 5 wrong type
        b'{"instruction": "x", "output": "\xff"}',          # line 6 bad UTF-8
        GOOD[1],                                            # line 7 ok
    ) + b'{"instruction": "cut')                             # line 8 truncated
    store.close()
    main(["ingest", str(p), "--name", "mixed", "--db", str(db_path), "--skip-invalid"])
    assert "6 rejected" in " ".join(capsys.readouterr().err.split())
    s = Store(db_path)
    try:
        assert s.instances("mixed", "source_row")["source_row"].to_list() == [0, 6]
        rej = s.query("SELECT location, field, reason FROM rejected_rows ORDER BY location").rows()
        assert {(loc, fld) for loc, fld, _ in rej} == {
            ("line 2", None), ("line 3", "output"), ("line 4", "output"), ("line 5", "instruction"),
            ("line 6", None), ("line 8", None)}
        info = s.dataset_info("mixed")
        assert (info["n_rows"], info["n_source"], info["n_rejected"]) == (2, 8, 6)
        rep = s.query(sqlfiles.report_sql("rejected"))
        assert rep.filter(rep["dataset"] == "mixed")["n"].sum() == 6
    finally:
        s.close()


def test_strict_after_skip_replaces_rejected_rows(store, tmp_path):
    p = _write(tmp_path, "d.jsonl", jl(GOOD[0], {"instruction": "x", "output": ""}, GOOD[1]))
    ingest(store, p, "d", skip_invalid=True, show_progress=False)
    assert store.query("SELECT count(*) AS n FROM rejected_rows")["n"][0] == 1
    p.write_bytes(jl(*GOOD))
    ingest(store, p, "d", show_progress=False)
    assert store.query("SELECT count(*) AS n FROM rejected_rows")["n"][0] == 0
    assert store.dataset_info("d")["n_rejected"] == 0


def test_unknown_format_option(populated_db, fixtures, capsys, store):
    before = snapshot(populated_db)
    with pytest.raises(SystemExit) as e:
        main(["ingest", str(fixtures / "alpaca.json"), "--name", "x", "--format", "nosuch", "--db", str(populated_db)])
    assert e.value.code == 2
    err = squash(capsys.readouterr().err)
    assert "nosuch" in err and "Invalidvaluefor'--format'" in err
    assert snapshot(populated_db) == before
    with pytest.raises(InputError, match="unknown format 'nosuch'"):
        ingest(store, fixtures / "alpaca.json", "x", "nosuch", show_progress=False)


def test_missing_file(populated_db, tmp_path, capsys):
    before = snapshot(populated_db)
    with pytest.raises(SystemExit) as e:
        main(["ingest", str(tmp_path / "nope.jsonl"), "--name", "x", "--db", str(populated_db)])
    assert e.value.code == 2 and "doesnotexist" in squash(capsys.readouterr().err)
    assert snapshot(populated_db) == before
    with pytest.raises(SystemExit) as e:
        main(["ingest", str(tmp_path / "nope.jsonl"), "--name", "x", "--db", str(tmp_path / "new.duckdb")])
    assert e.value.code == 2
    assert not (tmp_path / "new.duckdb").exists()  # no database is created for nothing


def test_failure_after_flushed_batches_rolls_back(populated_db, tmp_path, monkeypatch):
    """Batches already inserted inside the transaction vanish when a later row is bad."""
    monkeypatch.setattr(pipeline, "BATCH", 2)
    good = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(9)]
    p = _write(tmp_path, "late.jsonl", jl(*good, {"instruction": "q", "output": " "}))
    before = snapshot(populated_db)
    with Store(populated_db) as s, pytest.raises(InputError, match="line 10"):
        ingest(s, p, "target", show_progress=False)
    assert snapshot(populated_db)[0] == before[0]


def test_interrupt_rolls_back(populated_db, tmp_path, monkeypatch):
    from itaudit.ingest import formats

    calls = {"n": 0}
    real = formats.NORMALIZERS["alpaca"]

    def flaky(rec):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(rec)

    monkeypatch.setitem(formats.NORMALIZERS, "alpaca", flaky)
    monkeypatch.setattr(pipeline, "BATCH", 1)
    monkeypatch.setattr(pipeline, "BULK", False)  # the per-record path (the bulk one: below)
    p = _write(tmp_path, "d.jsonl", jl(*GOOD, *GOOD))
    before = snapshot(populated_db)
    with Store(populated_db) as s, pytest.raises(KeyboardInterrupt):
        ingest(s, p, "target", show_progress=False)
    assert snapshot(populated_db)[0] == before[0]


def test_interrupt_after_bulk_insert_rolls_back(populated_db, tmp_path, monkeypatch):
    from itaudit.ingest import bulk

    real = bulk.ingest_flat
    inserted = []

    def interrupted(*a):
        inserted.append(real(*a))  # the rows are in the table (uncommitted) ...
        raise KeyboardInterrupt  # ... when Ctrl-C arrives

    monkeypatch.setattr(bulk, "ingest_flat", interrupted)
    p = _write(tmp_path, "d.jsonl", jl(*GOOD, *GOOD))
    before = snapshot(populated_db)
    with Store(populated_db) as s, pytest.raises(KeyboardInterrupt):
        ingest(s, p, "target", show_progress=False)
    assert inserted == [6]
    assert snapshot(populated_db)[0] == before[0]


def test_reingest_unchanged_is_a_noop(populated_db, fixtures, tmp_path, capsys):
    before = snapshot(populated_db)
    main(["ingest", str(fixtures / "dolly.jsonl"), "--name", "target", "--db", str(populated_db)])
    assert "unchanged" in capsys.readouterr().err
    assert snapshot(populated_db)[0] == before[0]  # same ingested_at: nothing rewritten
    with Store(populated_db) as s:
        r = ingest(s, fixtures / "dolly.jsonl", "target", show_progress=False)
        assert r.unchanged and r.n_rows == 3
        # the same file with another option is a different ingest
        r = ingest(s, fixtures / "dolly.jsonl", "target", "alpaca", show_progress=False)
        assert not r.unchanged and s.dataset_info("target")["format"] == "alpaca"


def test_changed_file_replaces_the_dataset(populated_db, fixtures, tmp_path):
    p = tmp_path / "data.jsonl"
    shutil.copy(fixtures / "dolly.jsonl", p)
    with Store(populated_db) as s:
        ingest(s, p, "target", show_progress=False)
        keep_before = s.instances("keep")
        old_ids = s.instances("target", "instance_id")["instance_id"].to_list()
        recs = [json.loads(x) for x in p.read_text().splitlines()]
        recs[1]["response"] = "Rope is not a fish; Tope is."
        recs.append({"instruction": "Name a colour.", "context": "", "response": "Teal", "category": "brainstorming"})
        p.write_text("".join(json.dumps(r) + "\n" for r in recs))
        r = ingest(s, p, "target", show_progress=False)
        assert not r.unchanged and r.n_rows == 4
        got = s.instances("target")
        assert got.height == 4 and got["idx"].to_list() == [0, 1, 2, 3]
        assert got["response"][1] == "Rope is not a fish; Tope is."
        new_ids = got["instance_id"].to_list()
        assert new_ids[0] == old_ids[0] and new_ids[2] == old_ids[2] and new_ids[1] != old_ids[1]
        assert s.query("SELECT count(*) AS n FROM instances WHERE dataset = 'target'")["n"][0] == 4
        assert s.dataset_info("target")["n_rows"] == 4
        assert s.instances("keep").equals(keep_before)  # other datasets untouched


def test_oasst_messages_skip_invalid_drops_the_branch(store, fixtures, tmp_path):
    """A bad OASST message is rejected with the replies under it; the rest of the tree is kept."""
    rows = [json.loads(x) for x in (fixtures / "oasst_messages.jsonl").read_text().splitlines()]
    # file order: P1, A3, A1, P2, A2, D1 -> break P2 (line 4): A3 hangs below it
    del rows[3]["text"]
    p = _write(tmp_path, "o.jsonl", jl(*rows))
    with pytest.raises(InputError) as e:
        ingest(store, p, "o", show_progress=False)
    assert (e.value.location, e.value.field, e.value.reason) == ("line 4", "text", "missing required field")
    r = ingest(store, p, "o", skip_invalid=True, show_progress=False)
    assert (r.n_rows, r.n_rejected) == (2, 2)
    rej = store.query("SELECT location, field, reason FROM rejected_rows ORDER BY location").rows()
    assert rej[0][:2] == ("line 2", "parent_id") and "not found" in rej[0][2]  # A3, under the bad P2
    assert rej[1] == ("line 4", "text", "missing required field")
    assert sorted(store.instances("o", "source_row")["source_row"].to_list()) == [2, 4]  # A1, A2


def test_many_rejected_rows_are_flushed_and_capped(store, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "BATCH", 2)
    monkeypatch.setattr(pipeline, "REJECTED_RAW_CHARS", 50)
    bad = [{"instruction": f"q{i}", "output": "", "note": "x" * 200} for i in range(5)]
    p = _write(tmp_path, "many.jsonl", jl(GOOD[0], *bad, GOOD[1]))
    r = ingest(store, p, "many", skip_invalid=True, show_progress=False)
    assert (r.n_rows, r.n_rejected) == (2, 5) and store.dataset_info("many")["n_rejected"] == 5
    rej = store.query("SELECT location, raw FROM rejected_rows WHERE dataset = 'many' ORDER BY location").rows()
    assert [x[0] for x in rej] == [f"line {i}" for i in range(2, 7)]
    assert all(len(x[1]) == 50 and x[1].startswith('{"instruction": "q') for x in rej)
