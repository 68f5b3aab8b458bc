"""Ingest: source file -> normalized instances in DuckDB, in one transaction."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from json.encoder import encode_basestring as _esc  # what JSONEncoder(ensure_ascii=False) uses
from pathlib import Path

import duckdb
import polars as pl

from ..errors import InputError
from ..hashing import file_sha256
from ..progress import progress_bar
from ..store import Store
from . import bulk, formats
from .readers import Record, file_kind, read_records
from .writer import background_inserts

BATCH = 20_000
# json.dumps(..., ensure_ascii=False) builds a new encoder per call; reuse one (same output).
_JSON = json.JSONEncoder(ensure_ascii=False)
_JSON_RAW = json.JSONEncoder(ensure_ascii=False, default=str)
INGEST_MEMORY_LIMIT = os.environ.get("ITAUDIT_INGEST_MEMORY_LIMIT", "1GB")
REJECTED_RAW_CHARS = 10_000  # raw text kept per rejected row
BATCH_CHARS = 32_000_000  # flush a batch once it holds this many characters of text
NORMALIZER_VERSION = "4"  # 4: raw JSON once per record
# Vectorised path for flat-format jsonl (itaudit/ingest/bulk.py); 0 forces the per-record path.
BULK = os.environ.get("ITAUDIT_INGEST_BULK", "1") != "0"


@dataclass
class IngestReport:
    dataset: str
    format: str
    n_source: int
    n_rows: int
    n_rejected: int
    unchanged: bool
    seconds: float


def fingerprint(path: Path, fmt: str, split: str | None, skip_invalid: bool = False) -> str:
    """sha256 of the source bytes and the options that change what is ingested."""
    h = hashlib.sha256(f"{NORMALIZER_VERSION}|{fmt}|{split}|{skip_invalid}|".encode())
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        file_sha256(f, h)
    return h.hexdigest()


def content_hash(t: formats.Turn, history_json: str | None = None) -> str:
    """sha1 of the normalized fields (system, history, instruction, input, response)."""
    if history_json is None:
        history_json = _JSON.encode(t.history) if t.history else None
    key = _JSON.encode([t.system, history_json, t.instruction, t.input, t.response])
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


class _RecordHashes:
    """History JSON and content_hash of the turns of one record, each message encoded and hashed
    once: the turns of a conversation share the message dicts of their common history
    (formats._dialogue), and encoding and hashing the whole history again for every turn was
    quadratic in the conversation length. The texts are those of `content_hash`: json.dumps
    writes a list as '[' + ', '.join(items) + ']' and escapes a string character by character,
    so the escaped history is '[' + ', '.join(escaped items) + ']' and the sha1 of the key can
    be fed the shared prefix once (hashlib state copies)."""

    def __init__(self) -> None:
        self.system: object = self  # not a valid system: the first turn starts afresh
        self.start = hashlib.sha1()
        self.msgs: list[tuple[dict, str, object]] = []  # (message, its JSON, sha1 state after it)

    def turn(self, t: formats.Turn) -> tuple[str | None, str]:
        if not t.history:
            return None, content_hash(t, None)
        if t.system != self.system or self.system is self:
            self.system = t.system
            self.start = hashlib.sha1(f"[{_enc(t.system)}, \"[".encode())
            self.msgs.clear()
        msgs, hist = self.msgs, t.history
        n = 0
        while n < len(msgs) and n < len(hist) and msgs[n][0] is hist[n]:
            n += 1
        del msgs[n:]
        for i in range(n, len(hist)):
            m = hist[i]
            text = _JSON.encode(m)
            state = (msgs[-1][2] if msgs else self.start).copy()
            state.update(((", " if i else "") + _esc(text)[1:-1]).encode())
            msgs.append((m, text, state))
        h = msgs[len(hist) - 1][2].copy()
        h.update(f"]\", {_enc(t.instruction)}, {_enc(t.input)}, {_enc(t.response)}]".encode())
        return "[" + ", ".join(m[1] for m in msgs[:len(hist)]) + "]", h.hexdigest()


def _enc(v: str | None) -> str:
    return "null" if v is None else _esc(v)


def _turns(records: Iterator[Record], fmt: str, path: Path, reject) -> Iterator[tuple[Record, formats.Turn]]:
    """(record, turn) pairs; bad records go to `reject`, which raises or records them."""
    records = _readable(records, reject)
    if fmt == "oasst":
        first = next(records, None)
        if first is None:
            return
        records = _chain(first, records)
        if isinstance(first.data, dict) and isinstance(first.data.get("prompt"), dict):
            fmt = "oasst_tree"
        else:
            # Bad messages (and the replies that hang off them) are rejected one by one.
            yield from formats.oasst_messages(records, on_error=reject)
            return
    norm = formats.oasst_tree if fmt == "oasst_tree" else formats.NORMALIZERS[fmt]
    for rec in records:
        if not isinstance(rec.data, dict):
            reject(rec, formats.FieldError(None, f"expected an object, got {type(rec.data).__name__}"))
            continue
        try:
            turns = list(norm(rec.data))
        except formats.FieldError as e:
            reject(rec, e)
            continue
        for t in turns:
            yield rec, t


@contextmanager
def _memory_limit(store: Store) -> Iterator[None]:
    """Cap DuckDB's buffer pool while ingesting, so the uncommitted rows of a big file are written
    out to the database file instead of all held in RAM until COMMIT; restored afterwards.

    Also lowers `checkpoint_threshold` meanwhile, so that the COMMIT writes the new rows straight
    into the database file (DuckDB checkpoints at commit instead of logging a transaction larger
    than the threshold). Otherwise rows not yet flushed as full row groups (all of ShareGPT's
    61k rows: a row group holds 122,880) went to the WAL first and were written a second time
    by the checkpoint (measured on ShareGPT's rows: 425 MiB of WAL, commit + checkpoint 2.8 s ->
    1.5 s)."""
    # Remember the first values seen: settings read back rounded ('18.8 GiB' -> '18.7 GiB').
    old = getattr(store, "_itaudit_ingest_settings", None)
    if old is None:
        old = store.conn.execute(
            "SELECT current_setting('memory_limit'), current_setting('checkpoint_threshold')").fetchall()[0]
        store._itaudit_ingest_settings = old
    store.conn.execute(f"SET memory_limit = '{INGEST_MEMORY_LIMIT}'")
    store.conn.execute("SET checkpoint_threshold = '1MB'")
    try:
        yield
        # Merge the committed rows into the file now, still under the cap: otherwise the
        # checkpoint runs when the connection closes, with the full limit (ShareGPT: +500 MB).
        # (Usually a no-op now: the commit has checkpointed already.)
        try:
            store.conn.execute("CHECKPOINT")
        except duckdb.Error:  # e.g. another connection is mid-transaction: it happens later
            pass
    finally:
        store.conn.execute(f"SET memory_limit = '{old[0]}'")
        store.conn.execute(f"SET checkpoint_threshold = '{old[1]}'")


def _counting(records: Iterator[Record], bar) -> Iterator[Record]:
    for rec in records:
        bar.advance(1)
        yield rec


def _readable(records: Iterator[Record], reject) -> Iterator[Record]:
    """Records that could be read; unreadable lines (malformed JSON, bad UTF-8) go to `reject`."""
    for rec in records:
        if rec.error is not None:
            reject(rec, formats.FieldError(None, rec.error))
        else:
            yield rec


def _chain(*items: Record | Iterator[Record]) -> Iterator[Record]:
    """The leading records given one by one, then the rest from the iterator (last item)."""
    *heads, rest = items
    yield from heads
    yield from rest


def ingest(
    store: Store,
    path: str | Path,
    name: str,
    fmt: str = "auto",
    *,
    skip_invalid: bool = False,
    split: str | None = None,
    show_progress: bool = True,
) -> IngestReport:
    """Read `path`, normalize, and replace dataset `name` atomically. Idempotent on unchanged input."""
    t0 = time.perf_counter()
    path = Path(path)
    if fmt != "auto" and fmt not in formats.FORMATS:
        raise InputError(str(path), None, None, f"unknown format {fmt!r}; choose one of: auto, {', '.join(formats.FORMATS)}")
    records = read_records(path, split)
    bad_lead: list[Record] = []  # unreadable lines before the first good record
    first = None
    for rec in records:
        if rec.error is None:
            first = rec
            break
        if not skip_invalid:
            raise InputError(str(path), rec.location, None, rec.error, skippable=True)
        bad_lead.append(rec)
    if first is None:
        if bad_lead:
            raise InputError(str(path), bad_lead[0].location, None, f"{bad_lead[0].error} (and no readable record)")
        raise InputError(str(path), None, None, "no records in file")
    if fmt == "auto":
        try:
            fmt = formats.detect(first.data)
        except formats.FieldError as e:
            raise InputError(str(path), first.location, e.field, e.reason) from None
    fp = fingerprint(path, fmt, split, skip_invalid)
    old = store.dataset_info(name)
    if old is not None and old["fingerprint"] == fp and old["source_path"] == str(path.resolve()):
        return IngestReport(name, fmt, old["n_source"], old["n_rows"], old["n_rejected"], True, time.perf_counter() - t0)

    rejected: list[dict] = []
    n_rejected = 0

    def reject(rec: Record, err: formats.FieldError) -> None:
        if not skip_invalid:
            raise InputError(str(path), rec.location, err.field, err.reason, skippable=True)
        nonlocal n_rejected
        n_rejected += 1
        raw = rec.raw if rec.raw is not None else _JSON_RAW.encode(rec.data)
        rejected.append({
            "dataset": name, "file": str(path), "location": rec.location, "field": err.field,
            "reason": err.reason, "raw": raw[:REJECTED_RAW_CHARS],
        })
        if len(rejected) >= BATCH:  # a file of mostly bad rows must not pile them up in RAM
            inserts.submit("rejected_rows", pl.DataFrame(rejected, schema=_REJECT_SCHEMA))
            rejected.clear()

    allow_empty = fmt in formats.PROMPT_ONLY
    n_rows = 0
    cols: dict[str, list] = {c: [] for c in _SCHEMA}
    # Column lists and their sizes, flushed by rows or by characters held (long multi-turn
    # records repeat their history and raw JSON per turn: a row cap alone does not bound memory).
    (c_idx, c_iid, c_row, c_turn, c_sys, c_hist, c_ins, c_inp, c_resp, c_cat, c_src, c_hash, c_raw) = (
        cols[c] for c in ("idx", "instance_id", "source_row", "turn", "system", "history", "instruction",
                          "input", "response", "category", "source", "content_hash", "raw"))
    held = 0

    def flush() -> None:
        nonlocal held
        n = len(c_idx)
        if n:
            cols["dataset"] = [name] * n
            inserts.submit("instances", pl.DataFrame(cols, schema=_SCHEMA))  # written while we go on
            for v in cols.values():
                v.clear()
        held = 0

    with (_memory_limit(store), store.transaction() as conn,
          progress_bar(f"ingest {name}", total=None, unit="records", enabled=show_progress) as bar,
          background_inserts(store) as inserts):
        for table in ("instances", "rejected_rows"):
            conn.execute(f"DELETE FROM {table} WHERE dataset = ?", [name])
        conn.execute("DELETE FROM datasets WHERE name = ?", [name])
        n_bulk = None
        if BULK and not bad_lead and fmt in bulk.FORMATS and path.is_file() and file_kind(path) == "jsonl":
            # progress per 64 MiB piece; None: some record needs the path below (which counts again)
            n_bulk = bulk.ingest_flat(conn, path, fmt, name, bar.advance)
            if n_bulk is None:
                bar.update(completed=0)
        if n_bulk is not None:
            n_rows, records = n_bulk, iter(())
            first = None
        counted = _counting(_chain(*bad_lead, *([first] if first is not None else []), records), bar)
        last_rec, last_raw = None, None
        for rec, t in _turns(counted, fmt, path, reject):
            if not allow_empty and not t.response.strip():
                reject(rec, formats.FieldError("response", "empty response"))
                continue
            new_record = rec is not last_rec
            if new_record:  # the raw JSON of a multi-turn record is computed and stored once
                last_rec = rec
                last_raw = rec.raw if rec.raw is not None else _JSON_RAW.encode(rec.data)
                hashes = _RecordHashes()
            hist, h = hashes.turn(t)
            c_idx.append(n_rows)
            c_iid.append(f"{rec.row}-{t.turn}-{h[:10]}")
            c_row.append(rec.row)
            c_turn.append(t.turn)
            c_sys.append(t.system)
            c_hist.append(hist)
            c_ins.append(t.instruction)
            c_inp.append(t.input)
            c_resp.append(t.response)
            c_cat.append(t.category)
            c_src.append(t.source)
            c_hash.append(h)
            c_raw.append(last_raw if new_record else None)  # once per record (view `records`)
            n_rows += 1
            held += (len(last_raw) if new_record else 0) + len(t.response) + len(t.instruction) + (len(hist) if hist else 0)
            if len(c_idx) >= BATCH or held >= BATCH_CHARS:
                flush()
        flush()
        n_source = bar.count
        if rejected:
            inserts.submit("rejected_rows", pl.DataFrame(rejected, schema=_REJECT_SCHEMA))
        inserts.wait()
        if n_rows == 0:
            raise InputError(str(path), None, None, "no valid instances in file")
        conn.execute(
            "INSERT INTO datasets (name, source_path, format, fingerprint, n_rows, n_source, n_rejected) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [name, str(path.resolve()), fmt, fp, n_rows, n_source, n_rejected],
        )
    return IngestReport(name, fmt, n_source, n_rows, n_rejected, False, time.perf_counter() - t0)


_SCHEMA = {
    "dataset": pl.Utf8, "idx": pl.Int64, "instance_id": pl.Utf8, "source_row": pl.Int64,
    "turn": pl.Int32, "system": pl.Utf8, "history": pl.Utf8, "instruction": pl.Utf8,
    "input": pl.Utf8, "response": pl.Utf8, "category": pl.Utf8, "source": pl.Utf8,
    "content_hash": pl.Utf8, "raw": pl.Utf8,
}
_REJECT_SCHEMA = {k: pl.Utf8 for k in ("dataset", "file", "location", "field", "reason", "raw")}
