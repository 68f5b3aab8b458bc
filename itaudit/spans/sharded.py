"""Sharded exact-span index: one suffix array per shard, queries scattered and gathered.

A dataset too large for one suffix array (or built on several workers) is cut into contiguous
ranges of instance idx; each range is an ordinary `SpanIndex` (itaudit/spans/index.py) in its own
directory, built independently with its own vocabulary. `ShardedSpanIndex` is a list of such
directories (as infini-gram serves a list of index dirs) behind the query surface tracing uses:

- one global vocabulary (the union of the shard vocabularies, in shard order: first appearance in
  the corpus, as one index would number it) and a per-shard global -> local id map;
- `df` summed over shards (shards hold disjoint instances), so `idf` / `max_idf` equal one index's;
- `count(span)`: the sum of the shard counts; `find(span)`: the shard occurrences concatenated in
  shard order, i.e. corpus order;
- `maximal_matches(text)`: per start, the longest prefix found in any shard (the max of the
  shard lengths), then the same maximality rule, counts summed and occurrences gathered.

Results equal one index over the same rows (tests/test_sharded_spans.py), with one documented
difference: when a span occurs more than `limit` times, one index returns the `limit`
lexicographically first suffixes while the sharded index returns the first `limit` in corpus
order. Tracing never reads such a subset (`skip_common=True`: too-common spans get no occurrences).

Files: `<index_dir>/<dataset>/shards/shard-00000/spans.*` (each a complete SpanIndex) and
`<index_dir>/<dataset>/spans.shards.json`, written last, listing the shard directories with the
dataset fingerprint used for stale detection.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import ItauditError
from ..store import Store
from .index import (
    UNKNOWN,
    Occurrence,
    SpanIndex,
    StaleIndexError,
    WordQueries,
    _atomic_text,
    build_from_texts,
    dataset_fingerprint,
    default_index_dir,
    spans_dir,
)

MANIFEST = "spans.shards.json"
SHARDED_VERSION = 1


class ShardedSpanIndex(WordQueries):
    """A list of per-shard `SpanIndex`es answering like one index over all their rows."""

    def __init__(self, shards: Sequence[SpanIndex], meta: dict[str, Any] | None = None):
        if not shards:
            raise ItauditError("a sharded span index needs at least one shard")
        # Shards hold disjoint, increasing idx ranges: concatenation is corpus order.
        order = sorted(range(len(shards)), key=lambda k: _first_idx(shards[k]))
        self.shards = [shards[k] for k in order]
        last = -1
        for s in self.shards:
            if len(s.doc_idx):
                lo, hi = int(s.doc_idx[0]), int(s.doc_idx[-1])
                if lo <= last:
                    raise ItauditError("span index shards overlap: each shard must hold a disjoint idx range")
                last = hi
        self.meta = dict(meta or {})
        self.n_instances = sum(int(s.n_instances) for s in self.shards)
        self.meta.setdefault("n_instances", self.n_instances)
        self.vocab: list[str] = [""]
        self.word_id: dict[str, int] = {"": 0}
        l2g: list[np.ndarray] = []
        for s in self.shards:
            setdefault = self.word_id.setdefault
            vocab = self.vocab
            m = np.zeros(len(s.vocab), dtype=np.int64)
            for i, w in enumerate(s.vocab):
                if i:
                    g = setdefault(w, len(vocab))
                    if g == len(vocab):
                        vocab.append(w)
                    m[i] = g
            l2g.append(m)
        v = len(self.vocab)
        self._g2l: list[np.ndarray] = []
        self.df = np.zeros(v, dtype=np.int64)
        for s, m in zip(self.shards, l2g, strict=True):
            g2l = np.full(v, UNKNOWN, dtype=np.int32)
            g2l[m] = np.arange(len(m), dtype=np.int32)
            self._g2l.append(g2l)
            np.add.at(self.df, m[1:], np.asarray(s.df[1:], dtype=np.int64))
        self.df[0] = 0

    # -- the SpanIndex query surface ----------------------------------------------------------
    def _local(self, ids: list[int]) -> list[list[int]]:
        """The query in each shard's word ids (a word absent from a shard becomes UNKNOWN there)."""
        a = np.asarray(ids, dtype=np.int64)
        ok = a >= 0
        safe = np.where(ok, a, 0)
        return [np.where(ok, g2l[safe], UNKNOWN).tolist() for g2l in self._g2l]

    def count(self, span: str | list[str] | list[int]) -> int:
        return sum(hi - lo for lo, hi in self._ranges(self._local(self._ids(span))))

    def _ranges(self, local: list[list[int]]) -> list[tuple[int, int]]:
        return [s.sa_range(q) for s, q in zip(self.shards, local, strict=True)]

    def _gather(self, ranges: list[tuple[int, int]], limit: int | None) -> list[Occurrence]:
        out: list[Occurrence] = []
        for s, (lo, hi) in zip(self.shards, ranges, strict=True):
            if hi <= lo:
                continue
            left = None if limit is None else limit - len(out)
            if left is not None and left <= 0:
                break
            if left is not None and hi - lo > left:
                # the first `left` in corpus order (all positions of this shard, sorted, cut)
                pos = np.sort(np.asarray(s.sa[lo:hi], dtype=np.int64))[:left]
            else:
                pos = s.positions(lo, hi)
            out.extend(s.occurrences(pos))
        return out

    def find(self, span: str | list[str] | list[int], limit: int | None = 10_000) -> list[Occurrence]:
        """Every occurrence (up to `limit`, first in corpus order) of a span, in corpus order."""
        return self._gather(self._ranges(self._local(self._ids(span))), limit)

    def instances_containing(self, span: str | list[int], limit: int | None = 10_000) -> list[int]:
        return sorted({o.idx for o in self.find(span, limit)})

    def matching_lengths(self, ids: list[int], max_len: int = 256) -> list[int]:
        """Per start, the longest prefix of ids[i:] found in any shard (capped at `max_len`)."""
        best = [0] * len(ids)
        for s, q in zip(self.shards, self._local(ids), strict=True):
            for i, n in enumerate(s.matching_lengths(q, max_len)):
                if n > best[i]:
                    best[i] = n
        return best

    def _query(self, ids: list[int]) -> list[list[int]]:
        return self._local(ids)

    def _lookup(self, query: list[list[int]], i: int, end: int) -> tuple[list[tuple[int, int]], int]:
        ranges = self._ranges([q[i:end] for q in query])
        return ranges, sum(hi - lo for lo, hi in ranges)

    def _occurrences(self, found: list[tuple[int, int]], limit: int | None) -> list[Occurrence]:
        return self._gather(found, limit)

    def size_bytes(self) -> int:
        return sum(s.size_bytes() for s in self.shards)

    @classmethod
    def load(cls, directories: Iterable[str | os.PathLike], mmap: bool = True,
             meta: dict[str, Any] | None = None) -> ShardedSpanIndex:
        """Open a list of span index directories (each written by `SpanIndex.save`)."""
        return cls([SpanIndex.load(d, mmap=mmap) for d in directories], meta)

    def __repr__(self) -> str:
        return f"ShardedSpanIndex({len(self.shards)} shards, n_instances={self.n_instances})"


def _first_idx(s: SpanIndex) -> int:
    return int(s.doc_idx[0]) if len(s.doc_idx) else -1


# -- building ------------------------------------------------------------------------------------
def docs_of_rows(rows: Iterable[tuple[int, str | None, str | None, str | None]]) -> list[tuple[int, int, str]]:
    """(idx, instruction, input, response) rows -> (idx, field code, text) documents."""
    docs: list[tuple[int, int, str]] = []
    for idx, ins, inp, resp in rows:
        docs.append((idx, 0, ins or ""))
        docs.append((idx, 1, inp or ""))
        docs.append((idx, 2, resp or ""))
    return docs


def build_shard(rows: list[tuple[int, str | None, str | None, str | None]], directory: str | os.PathLike,
                meta: dict[str, Any]) -> dict[str, Any]:
    """Build and save one shard from its rows; returns its metadata (runs in a worker)."""
    ix = build_from_texts(docs_of_rows(rows), len(rows), meta)
    ix.save(directory)
    return {**ix.meta, "directory": str(directory), "bytes": ix.size_bytes()}


def _build_task(args: tuple[list, str, dict]) -> dict[str, Any]:
    return build_shard(*args)


def shard_starts(store: Store, dataset: str, shard_rows: int) -> list[int]:
    """The first instance idx of each contiguous shard of `shard_rows` rows (in idx order)."""
    if shard_rows < 1:
        raise ItauditError(f"shard_rows must be >= 1, got {shard_rows}")
    return store.query("SELECT idx FROM (SELECT idx, row_number() OVER (ORDER BY idx) - 1 AS r FROM instances "
                       "WHERE dataset = ?) WHERE r % ? = 0 ORDER BY idx", [dataset, shard_rows])["idx"].to_list()


def build_sharded_span_index(store: Store, dataset: str, index_dir: str | os.PathLike | None = None, *,
                             shard_rows: int = 250_000,
                             map_fn: Callable[[Callable, Iterable], list] | None = None) -> ShardedSpanIndex:
    """Build one span index per `shard_rows` rows and write the manifest last.

    `map_fn(fn, tasks)` runs the shard builds (a process pool, Ray, ...); by default they run here
    one after the other, reading one shard's rows at a time (memory: one shard)."""
    store.require_dataset(dataset)
    base = spans_dir(index_dir or default_index_dir(), dataset)
    fp = dataset_fingerprint(store, dataset)
    starts = shard_starts(store, dataset, shard_rows)
    t0 = time.perf_counter()

    def tasks():
        for k, a in enumerate(starts):
            b = starts[k + 1] if k + 1 < len(starts) else None
            rows = store.query("SELECT idx, instruction, input, response FROM instances WHERE dataset = ? "
                               "AND idx >= ?" + (" AND idx < ?" if b is not None else "") + " ORDER BY idx",
                               [dataset, a] + ([b] if b is not None else [])).rows()
            yield rows, str(base / "shards" / f"shard-{k:05d}"), {"dataset": dataset, "fingerprint": fp, "shard": k}

    metas = (map_fn or (lambda f, xs: [f(x) for x in xs]))(_build_task, tasks())
    manifest = {"version": SHARDED_VERSION, "dataset": dataset, "fingerprint": fp,
                "n_instances": sum(int(m["n_instances"]) for m in metas), "shard_rows": shard_rows,
                "shards": [os.path.relpath(m["directory"], base) for m in metas],
                "shard_meta": [{k: m.get(k) for k in ("n_instances", "n_tokens", "vocab_size", "bytes",
                                                      "seconds_total")} for m in metas],
                "seconds_total": round(time.perf_counter() - t0, 3)}
    base.mkdir(parents=True, exist_ok=True)
    _atomic_text(base / MANIFEST, json.dumps(manifest, indent=2))
    return ShardedSpanIndex.load([base / d for d in manifest["shards"]], meta=manifest)


def load_sharded_span_index(store: Store | None, dataset: str, index_dir: str | os.PathLike | None = None,
                            check: bool = True) -> ShardedSpanIndex:
    """Open the shards listed in the manifest; with `check`, a stale manifest raises StaleIndexError."""
    base = spans_dir(index_dir or default_index_dir(), dataset)
    mf = base / MANIFEST
    if not mf.is_file():
        raise FileNotFoundError(f"no sharded span index in {base}; build one with build_sharded_span_index")
    manifest = json.loads(mf.read_text())
    if manifest.get("version") != SHARDED_VERSION:
        raise StaleIndexError(f"sharded span index in {base} has an old format; rebuild it")
    if check and store is not None and manifest.get("fingerprint") != dataset_fingerprint(store, dataset):
        raise StaleIndexError(f"sharded span index for {dataset!r} is stale (dataset re-ingested); rebuild it")
    return ShardedSpanIndex.load([base / d for d in manifest["shards"]], meta=manifest)
