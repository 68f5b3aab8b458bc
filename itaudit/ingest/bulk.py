"""Bulk (vectorised) ingest of flat jsonl formats: polars splits lines, DuckDB parses and hashes.

The fast path only takes a file when every record is plainly valid: every non-blank line is one
JSON object, every field the normalizer reads is a string or null, the required fields hold a
non-whitespace character, nothing needs escaping beyond what `json.dumps` shortens (\\n, \\t,
...), no key is repeated. Otherwise it returns None and the per-record path runs, which names
the exact `file, line N: field 'x': reason` or stores the rejection rows. When it does take the
file it stores the very rows the per-record path stores: same instance_id, content_hash (sha1 of
the same JSON text, built in SQL), raw text and columns.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

# Per format: the fields read (each must be a string or null) and the SQL of each stored column
# over struct `j` of those fields as VARCHAR (missing or null -> NULL).
_S = "j.{k}"  # the string value of field k (NULL for a missing or null field)

_FLAT: dict[str, dict] = {
    "alpaca": {
        "fields": ("instruction", "output", "response", "input", "system", "category", "task",
                   "source", "dataset", "generator"),
        "instruction": _S.format(k="instruction"),
        "response": f"coalesce({_S.format(k='output')}, {_S.format(k='response')})",
        "input": f"nullif({_S.format(k='input')}, '')",
        "system": _S.format(k="system"),
        "category": f"coalesce({_S.format(k='category')}, {_S.format(k='task')})",
        "source": f"coalesce({_S.format(k='source')}, {_S.format(k='dataset')}, {_S.format(k='generator')})",
    },
    "dolly": {
        "fields": ("instruction", "response", "context", "category", "source"),
        "instruction": _S.format(k="instruction"),
        "response": _S.format(k="response"),
        "input": f"nullif({_S.format(k='context')}, '')",
        "system": "NULL::VARCHAR",
        "category": _S.format(k="category"),
        "source": _S.format(k="source"),
    },
}
FORMATS = tuple(_FLAT)
_STRING_TYPES = ("VARCHAR", "NULL")

# Characters Python's str.strip() removes (str.isspace): a required field must hold another one.
_NOT_SPACE = r"[^\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
# Control characters json.dumps writes as \u00XX (the short escapes are replaced below).
_LONG_ESCAPE = r"[\x00-\x07\x0b\x0e-\x1f]"


def _json_str(x: str) -> str:
    """SQL for json.dumps(x, ensure_ascii=False) of a VARCHAR expression (no long escapes)."""
    e = f"replace(replace({x}, '\\', '\\\\'), '\"', '\\\"')"
    for short, code in (("n", 10), ("r", 13), ("t", 9), ("b", 8), ("f", 12)):
        e = f"replace({e}, chr({code}), '\\{short}')"
    e = f"CASE WHEN regexp_matches({x}, '[\\\\\"\\x08-\\x0d]') THEN {e} ELSE {x} END"  # most need none
    return f"CASE WHEN {x} IS NULL THEN 'null' ELSE '\"' || {e} || '\"' END"


def _quoted(x: str) -> str:
    """SQL for json.dumps(x) of a VARCHAR expression that holds nothing to escape."""
    return f"CASE WHEN {x} IS NULL THEN 'null' ELSE concat('\"', {x}, '\"') END"


CHUNK_BYTES = 64 << 20  # lines are read, checked and inserted this many bytes at a time
BATCH_ROWS = 16_384  # rows per Arrow record batch handed to DuckDB (its unit of parallel work)


def _chunks(path: Path):
    """The file in pieces of about CHUNK_BYTES that end at a line end."""
    with path.open("rb") as f:
        while buf := f.read(CHUNK_BYTES):
            yield buf + f.readline()


def read_lines(data: bytes, first_row: int) -> pl.DataFrame | None:
    """(source_row, line) of the non-blank lines of a piece of a jsonl file, or None when it holds
    anything the line-by-line reader would treat differently (CR inside a line, bad UTF-8), or a
    line the SQL checks cannot vouch for (not an object, a trailing comma, a \\u00XX escape)."""
    try:
        df = pl.read_csv(io.BytesIO(data), has_header=False, separator="\x01", quote_char=None,
                         new_columns=["line"], schema={"line": pl.String}, comment_prefix=None,
                         ignore_errors=False, raise_if_empty=False)
    except (pl.exceptions.PolarsError, UnicodeDecodeError):
        return None
    if df.width != 1:
        return None
    line = pl.col("line")
    df = df.filter(line.is_not_null() & (line.str.strip_chars(" \t\x0b\x0c") != ""))
    # DuckDB also takes trailing commas (', }' / ', ]'), json.loads does not; any \u00XX escape
    # may be a control character json.dumps writes long: such files take the per-record path.
    # (polars' regex runs on all cores, several times faster than the same test in DuckDB.)
    odd = (line.str.contains("\r", literal=True) | line.str.contains("\x01", literal=True)
           | ~line.str.strip_chars_start(" \t").str.starts_with("{")
           | line.str.contains(r",[ \t]*[}\]]|\\u00[01]"))
    if df.height == 0 or df.select(odd.any()).item():
        return df.clear() if df.height == 0 else None
    return df.with_row_index("source_row", offset=first_row).with_columns(pl.col("source_row").cast(pl.Int64))


def ingest_flat(conn: duckdb.DuckDBPyConnection, path: Path, fmt: str, name: str,
                advance: Callable[[int], None] | None = None) -> int | None:
    """Insert the rows of a flat-format jsonl file into `instances` (inside the caller's
    transaction) and return the record count, or None when any record needs the per-record
    path (the rows of earlier pieces are then deleted again, in the same transaction).
    `advance(n)` is called after each piece with its record count (a progress bar)."""
    spec = _FLAT.get(fmt)
    if spec is None:
        return None
    with path.open("rb") as f:
        if f.read(3) == b"\xef\xbb\xbf":  # a BOM: the line reader rejects the first line
            return None
    n = 0
    for piece in _chunks(path):
        lines = read_lines(piece, n)
        del piece
        if lines is not None and lines.height == 0:
            continue
        done = None
        if lines is not None:
            # in record batches (zero-copy slices): DuckDB scans an Arrow table one batch per
            # thread, so a single-chunk table would parse, hash and write on one core
            table = lines.to_arrow()
            conn.register("_itaudit_lines", pa.Table.from_batches(table.to_batches(max_chunksize=BATCH_ROWS), table.schema))
            try:
                done = _insert(conn, spec, name, lines.height)
            finally:
                conn.unregister("_itaudit_lines")
        if done is None:
            if n:
                conn.execute("DELETE FROM instances WHERE dataset = ?", [name])
            return None
        n += done
        if advance is not None:
            advance(done)
    return n or None


def _insert(conn: duckdb.DuckDBPyConnection, spec: dict, name: str, n: int) -> int | None:
    # 1. one pass of checks (the line-level ones ran in polars, read_lines): valid JSON; every
    #    field the normalizer reads a string or null (a history, even an empty one, goes to the
    #    per-record path); no repeated key (Python keeps the last, DuckDB reads the first);
    #    required fields non-blank. Nothing is written before all lines pass.
    fields = spec["fields"]
    paths = "[" + ", ".join(f"'$.{k}'" for k in (*fields, "history")) + "]"
    struct = "{" + ", ".join(f'"{k}": "VARCHAR"' for k in fields) + "}"
    cols = ("instruction", "response", "input", "system", "category", "source")
    sel = ", ".join(f"{spec[c]} AS {c}" for c in cols)
    rows = f"""SELECT source_row, line, {sel}
               FROM (SELECT source_row, line, from_json(line, '{struct}') AS j FROM _itaudit_lines)"""
    # Each function runs only on the lines that passed the checks before it (CASE), so no
    # statement fails on bad input (a failed statement would abort the ingest's transaction).
    bad = conn.execute(f"""
        SELECT count(*)
        FROM (SELECT keys, CASE WHEN keys IS NOT NULL THEN from_json(line, '{struct}') END AS j
              FROM (SELECT line, CASE WHEN list_bool_and(list_transform(types[:{len(fields)}],
                                                                        lambda t: t IS NULL OR t IN {_STRING_TYPES}))
                                           AND coalesce(types[{len(fields) + 1}], 'NULL') = 'NULL'
                                      THEN json_keys(line) END AS keys
                    FROM (SELECT line, CASE WHEN json_valid(line) THEN json_type(line, {paths}) END AS types
                          FROM _itaudit_lines)))
        WHERE keys IS NULL OR len(keys) <> len(list_distinct(keys))
              OR NOT coalesce(regexp_matches({spec["instruction"]}, '{_NOT_SPACE}')
                              AND regexp_matches({spec["response"]}, '{_NOT_SPACE}'), false)""").fetchall()[0][0]
    if bad:
        return None
    # 2. content_hash = sha1(json.dumps([system, history, instruction, input, response]))
    key = ", ', ', ".join([_json_str("system"), "'null'", _json_str("instruction"), _json_str("input"),
                           _json_str("response")])  # one concat: 10% less than a chain of ||
    # A line without a backslash has no value json.dumps would escape (a quote, a backslash or a
    # control character must be escaped in JSON, and DuckDB refuses raw control characters), so
    # its key is the values quoted as they are: no per-field test, no replace.
    plain = ", ', ', ".join([_quoted("system"), "'null'", _quoted("instruction"), _quoted("input"),
                             _quoted("response")])
    conn.execute(f"""
        INSERT INTO instances (dataset, idx, instance_id, source_row, turn, system, history, instruction,
                               input, response, category, source, content_hash, raw)
        SELECT ?, source_row, source_row || '-0-' || left(h, 10), source_row, 0, system, NULL, instruction,
               input, response, category, source, h, line
        FROM (SELECT *, sha1(CASE WHEN contains(line, '\\') THEN concat('[', {key}, ']')
                                  ELSE concat('[', {plain}, ']') END) AS h FROM ({rows}))""", [name])
    return n
