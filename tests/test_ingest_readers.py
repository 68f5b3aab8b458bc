"""Readers: the streaming JSON array reader across chunk boundaries, and locations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itaudit.errors import InputError
from itaudit.ingest import readers
from itaudit.ingest.readers import read_records

RECS = [{"instruction": f"Écris {i} 🙂 « phrase »", "input": "x" * (i % 7), "output": f"réponse {i} " * (i % 5 + 1)}
        for i in range(40)]


@pytest.fixture
def tiny_chunks(monkeypatch):
    """64-character chunks: every element and many multi-byte characters straddle a boundary."""
    monkeypatch.setattr(readers._TextStream, "CHUNK", 64)


def _lines_of_elements(text: str) -> list[int]:
    """1-based line on which each top-level element of an indent=2 array starts."""
    return [i + 1 for i, ln in enumerate(text.splitlines()) if ln == "  {"]


@pytest.mark.parametrize("small", [False, True])
def test_json_array_streams_across_chunks(tmp_path: Path, request, small):
    if small:
        request.getfixturevalue("tiny_chunks")
    p = tmp_path / "a.json"
    text = json.dumps(RECS, indent=2, ensure_ascii=False)
    p.write_text(text, encoding="utf-8")
    got = list(read_records(p))
    assert [r.data for r in got] == RECS
    assert [r.row for r in got] == list(range(40))
    assert [json.loads(r.raw) for r in got] == RECS  # raw is the element's exact source text
    lines = _lines_of_elements(text)
    assert [r.location for r in got] == [f"element {i + 1} (line {ln})" for i, ln in enumerate(lines)]


def test_json_array_window_is_trimmed(tmp_path: Path, tiny_chunks):
    p = tmp_path / "a.json"
    p.write_text(json.dumps(RECS * 5, ensure_ascii=False), encoding="utf-8")
    st_sizes = []
    real_more = readers._TextStream.more

    def spy(self):
        st_sizes.append(len(self.buf))
        return real_more(self)

    readers._TextStream.more = spy
    try:
        assert len(list(read_records(p))) == 200
    finally:
        readers._TextStream.more = real_more
    assert max(st_sizes) < 4 * 64 + 200  # a few chunks plus one element, never the whole file
    assert p.stat().st_size > 20_000


def test_json_array_errors_with_small_chunks(tmp_path: Path, tiny_chunks):
    text = json.dumps(RECS[:10], indent=2, ensure_ascii=False)
    p = tmp_path / "bad.json"
    # invalid UTF-8 inside element 6: reported on its line
    b = text.encode()
    at = b.index("réponse 5".encode())
    p.write_bytes(b[:at] + b"\xff" + b[at:])
    with pytest.raises(InputError) as e:
        list(read_records(p))
    assert e.value.location == f"line {text[:text.index('réponse 5')].count(chr(10)) + 1}"
    assert "invalid UTF-8 byte 0xff" in e.value.reason
    # cut inside element 4
    p.write_text(text[: text.index("Écris 3") + 3], encoding="utf-8")
    with pytest.raises(InputError, match=r"truncated JSON \(file ends inside an element\) \(element 4\)"):
        list(read_records(p))
    # malformed (not cut): a missing comma between elements 2 and 3
    p.write_text(text.replace("},\n  {", "}\n  {", 2), encoding="utf-8")
    with pytest.raises(InputError, match="expected ',' or ']' after element 1"):
        list(read_records(p))
    # data after the closing bracket
    p.write_text(text + "\n[]", encoding="utf-8")
    with pytest.raises(InputError, match="extra data after the JSON array"):
        list(read_records(p))


def test_json_variants(tmp_path: Path):
    p = tmp_path / "v.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(RECS[:2]).encode())  # UTF-8 BOM
    assert [r.data for r in read_records(p)] == RECS[:2]
    p.write_text("  [ ]  ")
    assert list(read_records(p)) == []
    p.write_text(json.dumps({"version": 1, "data": RECS[:3]}))  # an object wrapping the list
    got = list(read_records(p))
    assert [r.data for r in got] == RECS[:3] and got[2].location == "element 3"
    p.write_text(json.dumps(RECS[0]))  # a single record
    assert [r.data for r in read_records(p)] == [RECS[0]]
    p.write_text("".join(json.dumps(r) + "\n" for r in RECS[:3]))  # JSON lines named .json
    assert [r.location for r in read_records(p)] == ["line 1", "line 2", "line 3"]
    p.write_text("hello")
    with pytest.raises(InputError, match="expected a JSON array, object or JSON lines"):
        list(read_records(p))
