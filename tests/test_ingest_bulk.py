"""The vectorised ingest of flat jsonl (itaudit/ingest/bulk.py) stores exactly the rows of the
per-record path, and leaves every record it cannot vouch for to that path."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import polars as pl
import pytest

from itaudit.errors import InputError
from itaudit.ingest import bulk, formats, ingest, pipeline
from itaudit.store import Store


def _ingest_both(tmp_path: Path, path: Path, monkeypatch, **kw) -> tuple[pl.DataFrame, pl.DataFrame, int | None]:
    """(rows via the per-record path, rows via the default path, what the bulk path returned)."""
    calls: list[int | None] = []
    orig = bulk.ingest_flat

    def spy(*a):
        calls.append(orig(*a))
        return calls[-1]

    monkeypatch.setattr(bulk, "ingest_flat", spy)
    frames = []
    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))
    for use_bulk in (False, True):
        monkeypatch.setattr(pipeline, "BULK", use_bulk)
        with Store(tmp_path / f"b{int(use_bulk)}.duckdb") as st:
            ingest(st, path, "d", show_progress=False, **kw)
            frames.append(st.query("SELECT * EXCLUDE (dataset) FROM instances ORDER BY idx"))
            if kw.get("skip_invalid"):
                frames[-1] = (frames[-1], st.query("SELECT * EXCLUDE (dataset) FROM rejected_rows ORDER BY location"))
    assert len(calls) <= 1
    return frames[0], frames[1], (calls[0] if calls else None)


def _write(path: Path, recs: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in recs),
                    encoding="utf-8")
    return path


# Text that json.dumps escapes (quotes, backslashes, newlines, tabs, \b, \f), non-ASCII and
# non-BMP characters, an empty input, null and present optional fields, the `response` key.
TRICKY = [
    {"instruction": 'Say "hi"\\ now', "input": "", "output": "line1\nline2\ttab\b\f"},
    {"instruction": "Übersetze: café 日本 😀", "input": "ctx\r\nmore", "output": "ok", "system": "be brief"},
    {"instruction": "a", "input": None, "response": "b", "category": "cat", "source": None, "dataset": "src"},
    {"instruction": "x", "output": "y", "task": "t", "generator": "g", "history": None, "extra": 5},
    {"instruction": "  padded  ", "input": "i", "output": "  o ", "system": ""},
    # no backslash anywhere in the line (the key is built without escaping): non-ASCII, DEL,
    # U+2028, which json.dumps(ensure_ascii=False) leaves as they are
    {"instruction": "naïve 日本\u2028x", "output": "del\x7f 😀", "input": "", "category": "c"},
]


def test_bulk_equals_per_record_on_fixtures(tmp_path, fixtures: Path, monkeypatch):
    for name in ("dolly.jsonl", "golden_alpaca.jsonl"):
        slow, fast, n = _ingest_both(tmp_path, fixtures / name, monkeypatch)
        assert n == slow.height > 0  # the bulk path took the file
        assert fast.equals(slow), name


def test_bulk_equals_per_record_on_escapes_and_optional_fields(tmp_path, monkeypatch):
    path = _write(tmp_path / "t.jsonl", TRICKY)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n", 2) + b"\n   \n")  # CRLF lines, blank lines
    slow, fast, n = _ingest_both(tmp_path, path, monkeypatch)
    assert n == len(TRICKY) and fast.equals(slow)
    assert slow["content_hash"].to_list() == [
        pipeline.content_hash(next(formats.alpaca(r))) for r in TRICKY]


@pytest.mark.parametrize("odd", [
    {"instruction": "a", "output": 5},                   # a number (polars would make it "5")
    {"instruction": "a", "output": "b", "input": 3},     # optional numeric field
    '{"instruction": "a", "output": "b",}',              # trailing comma: DuckDB reads it, Python does not
    '{"instruction": "a", "output": "b", "output": "c"}',  # repeated key: Python keeps the last
    {"instruction": "a", "output": "\u3000"},            # only (Unicode) whitespace
    {"instruction": "a", "output": "b\u0001"},           # json.dumps writes \u0001
    {"instruction": "a", "output": "b", "history": [["q", "r"]]},  # multi-turn
    {"instruction": "a", "output": "b", "history": "x"},
    "[1, 2]",
    '{"instruction": "a", "output": NaN}',
    {"instruction": True, "output": "b"},                # a boolean (Python rejects it)
    {"instruction": "a", "output": "b", "system": {"x": "y"}},  # an object where a string goes
    {"instruction": "a", "output": "b", "category": ["c"]},
    {"instruction": "a", "output": "b", "history": []},  # an empty history still goes the slow way
    {"instruction": "a", "output": None, "response": None},  # no response at all
    '{"instruction": "a", "output": "b"} x',             # trailing garbage
])
def test_unusual_records_use_the_per_record_path(tmp_path, monkeypatch, odd):
    path = _write(tmp_path / "t.jsonl", [TRICKY[0], odd, TRICKY[1]])
    (slow, slow_rej), (fast, fast_rej), n = _ingest_both(tmp_path, path, monkeypatch, fmt="alpaca", skip_invalid=True)
    assert n is None
    assert fast.equals(slow) and fast_rej.equals(slow_rej)


def test_bom_and_bad_utf8_use_the_per_record_path(tmp_path, monkeypatch):
    good = _write(tmp_path / "g.jsonl", TRICKY)
    for name, data in (("bom.jsonl", b"\xef\xbb\xbf" + good.read_bytes()),
                       ("utf8.jsonl", good.read_bytes() + b'{"instruction": "a\xff", "output": "b"}\n')):
        (tmp_path / name).write_bytes(data)
        (slow, slow_rej), (fast, fast_rej), n = _ingest_both(tmp_path, tmp_path / name, monkeypatch,
                                                             fmt="alpaca", skip_invalid=True)
        assert n is None and fast.equals(slow) and fast_rej.equals(slow_rej) and slow_rej.height == 1


def test_errors_unchanged_with_bulk_on(tmp_path, store):
    path = _write(tmp_path / "t.jsonl", [TRICKY[0], {"instruction": "a", "output": 5}])
    with pytest.raises(InputError) as e:
        ingest(store, path, "d", show_progress=False)
    assert (e.value.location, e.value.field, e.value.reason) == ("line 2", "output", "expected a string, got int")
    assert store.dataset_info("d") is None and store.query("SELECT count(*) AS n FROM instances")["n"][0] == 0


def test_bulk_equals_per_record_on_alpaca_5000(tmp_path, shared_data: Path, monkeypatch):
    src = json.loads((shared_data / "alpaca" / "alpaca_5000.json").read_text())
    valid = []
    for r in src:
        try:
            list(formats.alpaca(r))
        except formats.FieldError:
            continue
        valid.append(r)
    assert len(valid) == 4998
    slow, fast, n = _ingest_both(tmp_path, _write(tmp_path / "a.jsonl", valid), monkeypatch)
    assert n == 4998 and fast.equals(slow)
    # with the two invalid rows in the file, the per-record path stores rows and rejections
    (slow, slow_rej), (fast, fast_rej), n = _ingest_both(tmp_path, _write(tmp_path / "all.jsonl", src),
                                                         monkeypatch, skip_invalid=True)
    assert n is None and fast.equals(slow) and fast_rej.equals(slow_rej) and slow_rej.height == 2


def test_pieces_and_a_bad_record_in_a_later_piece(tmp_path, monkeypatch):
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 150)  # a few lines per piece
    recs = [dict(r, instruction=f"{r['instruction']} {i}") for i in range(4) for r in TRICKY]
    slow, fast, n = _ingest_both(tmp_path, _write(tmp_path / "t.jsonl", recs), monkeypatch)
    assert n == len(recs) and fast.equals(slow) and slow["source_row"].to_list() == list(range(len(recs)))
    # pieces already inserted are deleted again when a later one needs the per-record path
    recs.append({"instruction": "a", "output": 5})
    (slow, slow_rej), (fast, fast_rej), n = _ingest_both(tmp_path, _write(tmp_path / "u.jsonl", recs), monkeypatch,
                                                         skip_invalid=True)
    assert n is None and fast.equals(slow) and fast_rej.equals(slow_rej) and slow.height == len(recs) - 1


def test_leading_whitespace_and_empty_objects_keys(tmp_path, monkeypatch):
    # indented lines are valid JSON lines and stay on the bulk path; raw keeps the indent
    path = tmp_path / "t.jsonl"
    path.write_text(' \t{"instruction": "a", "output": "b"}\n{"output": "d", "instruction": "c", "input": ""}\n',
                    encoding="utf-8")
    slow, fast, n = _ingest_both(tmp_path, path, monkeypatch)
    assert n == 2 and fast.equals(slow) and fast["raw"][0].startswith(" \t{")


def test_record_counts_with_progress_per_piece(tmp_path, monkeypatch):
    # the bulk path advances the progress bar piece by piece; n_source comes from that count, so
    # a fallback after some pieces must not count those records twice
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 150)
    recs = [dict(r, instruction=f"{r['instruction']} {i}") for i in range(3) for r in TRICKY]
    good = _write(tmp_path / "g.jsonl", recs)
    bad = _write(tmp_path / "b.jsonl", [*recs, {"instruction": "a", "output": 5}])
    with Store(tmp_path / "db.duckdb") as st:
        r = ingest(st, good, "g", show_progress=False)
        assert (r.n_source, r.n_rows, r.n_rejected) == (len(recs), len(recs), 0)
        r = ingest(st, bad, "b", skip_invalid=True, show_progress=False)
        assert (r.n_source, r.n_rows, r.n_rejected) == (len(recs) + 1, len(recs), 1)
        assert st.dataset_info("b")["n_source"] == len(recs) + 1
