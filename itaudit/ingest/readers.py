"""Stream records out of source files: json, jsonl, csv, parquet, and HF `datasets` on disk.

Each reader yields `Record`s that know where they came from, so every later error can name
the file and the line (text formats) or row (tabular formats).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError


@dataclass(slots=True)
class Record:
    row: int              # 0-based record index in the source
    location: str         # 'line 12' or 'row 7' (1-based, as a person counts)
    data: Any             # the parsed record
    raw: str | None = None  # its source text as JSON, when already at hand
    error: str | None = None  # set when this line could not be read (data is None): the
    #                           pipeline rejects it, or stops with it unless --skip-invalid


def file_kind(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists() or (
            path / "dataset_dict.json"
        ).exists():
            return "hf"
        raise InputError(str(path), None, None, "directory is not a HF dataset saved with save_to_disk")
    suffixes = [s.lower() for s in path.suffixes]
    for kind, exts in (
        ("jsonl", (".jsonl", ".ndjson")),
        ("json", (".json",)),
        ("parquet", (".parquet", ".pq")),
        ("csv", (".csv", ".tsv")),
    ):
        if any(s in exts for s in suffixes):
            return kind
    raise InputError(str(path), None, None, f"unknown file type {path.suffix!r} (json, jsonl, parquet, csv, HF dataset dir)")


def read_records(path: str | Path, split: str | None = None) -> Iterator[Record]:
    p = Path(path)
    if not p.exists():
        raise InputError(str(p), None, None, "file does not exist")
    kind = file_kind(p)
    if kind == "json":
        return _read_json(p)
    return {"jsonl": _read_jsonl, "parquet": _read_parquet, "csv": _read_csv}.get(
        kind, lambda q: _read_hf(q, split)
    )(p)


def _line_of(data: bytes | str, offset: int) -> int:
    return data.count(b"\n" if isinstance(data, bytes) else "\n", 0, offset) + 1


def _decode(path: Path, data: bytes, line_offset: int = 0) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = line_offset + _line_of(data, e.start)
        raise InputError(str(path), f"line {line}", None, f"invalid UTF-8 byte {data[e.start]:#04x} at byte {e.start}") from None


def _read_jsonl(path: Path) -> Iterator[Record]:
    row = 0
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            # A bad line is yielded as an error record: lines are independent, so with
            # --skip-invalid the rest of the file is still read.
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Record(row, f"line {lineno}", None, line.decode("utf-8", "replace").rstrip("\r\n"),
                             error=f"invalid UTF-8 byte {line[e.start]:#04x} at byte {e.start + 1} of the line")
                row += 1
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                if not line.endswith(b"\n"):  # only the last line can lack one: the file was cut
                    why = f"truncated JSON, the file ends inside this record ({e.msg})"
                elif e.pos >= len(text.rstrip()):
                    why = "truncated JSON (unexpected end of line)"
                else:
                    why = e.msg
                yield Record(row, f"line {lineno}", None, text.rstrip("\r\n"),
                             error=f"malformed JSON: {why} (column {e.colno})")
                row += 1
                continue
            yield Record(row, f"line {lineno}", data, text.rstrip("\r\n"))
            row += 1


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _first_char(path: Path) -> str:
    """The first non-blank character of a file ('' when blank), skipping a UTF-8 BOM."""
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            head = chunk.lstrip(b" \t\r\n")
            if head.startswith(b"\xef\xbb\xbf"):
                head = head[3:].lstrip(b" \t\r\n")
            if head:
                return chr(head[0]) if head[0] < 128 else "?"
    return ""


def _read_json(path: Path) -> Iterator[Record]:
    """A JSON array (streamed: read in chunks, parsed element by element), a single object
    holding a list, a single record, or JSON lines under a .json name."""
    first = _first_char(path)
    if not first:
        raise InputError(str(path), "line 1", None, "empty file")
    if first == "[":
        yield from _read_json_array(path)
        return
    if first != "{":
        raise InputError(str(path), "line 1", None, "expected a JSON array, object or JSON lines")
    # Either JSON lines under a .json name, or one object (a record, or wrapping a list).
    text = _decode(path, path.read_bytes()).lstrip("\ufeff")  # the bytes are not kept
    stripped = text.lstrip()
    first_nl = stripped.find("\n")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        if first_nl != -1 and first_nl < len(stripped.rstrip()) and _is_json(stripped[:first_nl]):
            yield from _read_jsonl(path)  # JSON lines under a .json name
            return
        truncated = e.pos >= len(text.rstrip())
        why = "truncated JSON (file ends inside the object)" if truncated else e.msg
        raise InputError(str(path), f"line {text.count(chr(10), 0, e.pos) + 1}", None,
                         f"malformed JSON: {why} (column {e.colno})") from None
    lists = [v for v in obj.values() if isinstance(v, list) and v and isinstance(v[0], dict)] if isinstance(obj, dict) else []
    if isinstance(obj, dict) and len(lists) == 1 and not {"messages", "conversations"} & obj.keys():
        for i, item in enumerate(lists[0]):
            yield Record(i, f"element {i + 1}", item)
    else:
        yield Record(0, "line 1", obj)


class _TextStream:
    """A sliding window of decoded text over a file, with line numbers, for the array reader."""

    CHUNK = 1 << 20

    def __init__(self, path: Path):
        self.path, self.f = path, path.open("rb")
        self.dec = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.eof, self.nbytes = "", False, 0
        self.line, self.line_pos = 1, 0  # line number at buf[line_pos]

    def more(self) -> bool:
        """Append the next chunk to the window; False at the end of the file."""
        if self.eof:
            return False
        chunk = self.f.read(self.CHUNK)
        try:
            text = self.dec.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            pending = len(e.object) - len(chunk)  # bytes held back from the previous chunk
            line = self.line + self.buf.count("\n", self.line_pos) + e.object.count(b"\n", 0, e.start)
            self.f.close()
            raise InputError(str(self.path), f"line {line}", None,
                             f"invalid UTF-8 byte {e.object[e.start]:#04x} at byte {self.nbytes - pending + e.start}") from None
        self.nbytes += len(chunk)
        if not chunk:
            self.eof = True
            self.f.close()
        if self.nbytes <= len(chunk) and not self.buf:
            text = text.lstrip("\ufeff")
        self.buf += text
        return True

    def line_at(self, i: int) -> int:
        # counted incrementally: counting from the start for every element is quadratic
        if i >= self.line_pos:
            self.line += self.buf.count("\n", self.line_pos, i)
            self.line_pos = i
            return self.line
        return self.line - self.buf.count("\n", i, self.line_pos)

    def trim(self, pos: int) -> int:
        """Drop the text before `pos` once it is large; returns the new position of `pos`."""
        if pos < self.CHUNK:
            return pos
        self.line_at(pos)
        self.buf = self.buf[pos:]
        self.line_pos = 0
        return 0

    def skip_ws(self, i: int) -> int:
        while True:
            buf, n = self.buf, len(self.buf)
            while i < n and buf[i] in " \t\r\n":
                i += 1
            if i < n or not self.more():
                return i

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()


def _read_json_array(path: Path) -> Iterator[Record]:
    st = _TextStream(path)
    try:
        dec = json.JSONDecoder()
        pos = st.skip_ws(0) + 1  # past '['
        row = 0

        def cut(at: int) -> InputError:
            return InputError(str(path), f"line {st.line_at(at)}", None, "truncated JSON array (file ends before ']')")

        pos = st.skip_ws(pos)
        if pos < len(st.buf) and st.buf[pos] == "]":
            pos += 1
        else:
            while True:
                pos = st.skip_ws(pos)
                if pos >= len(st.buf):
                    raise cut(len(st.buf))
                while True:  # decode one element, reading more text while it may be incomplete
                    try:
                        item, end = dec.raw_decode(st.buf, pos)
                    except json.JSONDecodeError as e:
                        if st.more():
                            continue
                        truncated = not st.buf.rstrip().endswith("]")  # an array file ends with ']'
                        why = "truncated JSON (file ends inside an element)" if truncated else e.msg
                        raise InputError(str(path), f"line {st.line_at(e.pos)}", None,
                                         f"malformed JSON: {why} (element {row + 1})") from None
                    if end >= len(st.buf) and st.more():  # a bare number may go on in the next chunk
                        continue
                    break
                yield Record(row, f"element {row + 1} (line {st.line_at(pos)})", item, st.buf[pos:end])
                row += 1
                pos = st.skip_ws(end)
                if pos >= len(st.buf):
                    raise cut(len(st.buf))
                if st.buf[pos] == "]":
                    pos += 1
                    break
                if st.buf[pos] != ",":
                    raise InputError(str(path), f"line {st.line_at(pos)}", None,
                                     f"malformed JSON: expected ',' or ']' after element {row}")
                pos = st.trim(pos + 1)
        pos = st.skip_ws(pos)
        if pos < len(st.buf):
            raise InputError(str(path), f"line {st.line_at(pos)}", None, "extra data after the JSON array")
    finally:
        st.close()


def _read_csv(path: Path) -> Iterator[Record]:
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open("rb") as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8", newline="")
        reader = csv.DictReader(f, delimiter=delim)
        row = 0
        while True:
            try:
                rec = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as e:
                # The decoder reads ahead in blocks: find the exact line in the bytes.
                raise InputError(str(path), _bad_utf8_line(path) or f"near line {reader.line_num + 1}", None,
                                 f"invalid UTF-8: {e.reason}") from None
            except csv.Error as e:
                raise InputError(str(path), f"line {reader.line_num}", None, f"malformed CSV: {e}") from None
            if None in rec:
                raise InputError(str(path), f"row {row + 1} (line {reader.line_num})", None, "more values than header columns")
            yield Record(row, f"row {row + 1} (line {reader.line_num})", rec)
            row += 1


def _bad_utf8_line(path: Path) -> str | None:
    """'line N' of the first line that is not valid UTF-8 (a newline never sits inside a
    multi-byte UTF-8 sequence, so lines can be checked one by one)."""
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return f"line {lineno} (byte {e.start + 1} of the line: {line[e.start]:#04x})"
    return None


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for truncated or non-parquet files
        raise InputError(str(path), None, None, f"unreadable parquet file: {e}") from None
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        for rec in batch.to_pylist():
            yield Record(row, f"row {row + 1}", rec)
            row += 1


def _read_hf(path: Path, split: str | None) -> Iterator[Record]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds.keys())
        chosen = split or ("train" if "train" in ds else names[0])
        if chosen not in ds:
            raise InputError(str(path), None, None, f"no split {chosen!r}; splits: {', '.join(names)}")
        ds = ds[chosen]
    row = 0
    for batch in ds.iter(batch_size=2048):
        keys = list(batch.keys())
        for i in range(len(batch[keys[0]]) if keys else 0):
            yield Record(row, f"row {row + 1}", {k: batch[k][i] for k in keys})
            row += 1
