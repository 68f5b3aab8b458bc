"""Exact-span index: a suffix array over the word ids of every instruction, input and response.

Layout. All documents (one per non-empty field of an instance) are tokenized into word ids and
concatenated, each followed by the separator id 0, into one int32 array `tokens`. `sa` is the
suffix array of `tokens` (built by libdivsufsort through `pydivsufsort`; see docs/trace.md for the
benchmark against hashed n-gram postings and a pure numpy prefix-doubling sort). A query never
contains the separator, so no match can cross a document boundary.

Queries:
- `find(span)`: every occurrence of a span (any length) - two binary searches, O(|q| log n).
- `maximal_matches(text)`: OLMoTrace-style maximal matching spans of a text: for each start the
  longest prefix that occurs in the data (one binary search: the longest match is with a neighbour
  of the insertion point), kept when no earlier span contains it.
- `df` / `idf`: the number of instances containing each word (rarity of matched tokens).

Files (`<index_dir>/<dataset>/spans.*`): .npy arrays plus `spans.vocab.json` and
`spans.meta.json` (written last; it carries the dataset fingerprint used for stale detection).
Every file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from .. import text as text_mod
from ..errors import ItauditError
from ..paths import atomic_path, atomic_write_text
from ..progress import progress_bar
from ..store import Store
from .tokenize import TOKENIZER_VERSION, words_with_offsets

INDEX_VERSION = 1
SEP = 0          # document separator id
UNKNOWN = -1     # query words absent from the data
FIELDS = ("instruction", "input", "response")
ARRAYS = ("tokens", "sa", "doc_start", "doc_idx", "doc_field", "df")


class StaleIndexError(ItauditError):
    """The span index on disk was built from different data."""


class Occurrence(NamedTuple):
    idx: int          # instance idx in the dataset
    field: str        # instruction | input | response
    word_pos: int     # word offset inside that field


@dataclass
class SpanMatch:
    """A maximal span of the query (words [start, end)) that occurs verbatim in the data."""

    start: int
    end: int
    count: int                       # occurrences in the data
    occurrences: list[Occurrence] = field(default_factory=list)  # up to `max_occurrences`

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def instances(self) -> list[int]:
        seen: dict[int, None] = {}
        for o in self.occurrences:
            seen.setdefault(o.idx, None)
        return list(seen)


def dataset_fingerprint(store: Store, dataset: str) -> str:
    info = store.require_dataset(dataset)
    key = f"{INDEX_VERSION}|{TOKENIZER_VERSION}|{info['fingerprint']}|{info['n_rows']}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def spans_dir(index_dir: str | os.PathLike, dataset: str) -> Path:
    return Path(index_dir) / dataset


def default_index_dir() -> Path:
    from ..paths import index_dir

    return index_dir()


class WordQueries:
    """Encoding, IDF and maximal matches over a vocabulary (`word_id`, `df`, `n_instances`), shared
    by one index and a sharded one; each supplies `matching_lengths` and the `_query` / `_lookup` /
    `_occurrences` hooks."""

    word_id: dict[str, int]
    df: np.ndarray
    n_instances: int

    def encode(self, text_or_words: str | list[str]) -> list[int]:
        ws = [w.text for w in words_with_offsets(text_or_words)] if isinstance(text_or_words, str) else text_or_words
        get = self.word_id.get
        return [get(w, UNKNOWN) for w in ws]

    def _ids(self, x: str | list[str] | list[int]) -> list[int]:
        """Word ids of a text, a list of words, or ids (passed through)."""
        if isinstance(x, str):
            return self.encode(x)
        x = list(x)
        return self.encode(x) if x and isinstance(x[0], str) else [int(v) for v in x]

    def idf(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """Smoothed inverse document frequency (over instances) per word id; unknown words get the max."""
        ids = np.asarray(ids, dtype=np.int64)
        df = np.where(ids >= 0, self.df[np.clip(ids, 0, None)], 0).astype(np.float64)
        return np.log((self.n_instances + 1) / (df + 1)) + 1.0

    def max_idf(self) -> float:
        return math.log(self.n_instances + 1) + 1.0

    def maximal_matches(self, text_or_ids: str | list[str] | list[int], min_len: int = 1, max_len: int = 256,
                        max_occurrences: int | None = 1_000, skip_common: bool = False) -> list[SpanMatch]:
        """Maximal spans of the query that occur verbatim in the data (OLMoTrace semantics).

        A span [i, i+L) is kept when L >= min_len and no span starting earlier contains it. Each
        match carries its occurrence count and up to `max_occurrences` occurrences (none at all for
        a match occurring more often when `skip_common`)."""
        ids = self._ids(text_or_ids)
        query = self._query(ids)
        lens = self.matching_lengths(ids, max_len)
        out: list[SpanMatch] = []
        max_end = 0
        for i, length in enumerate(lens):
            end = i + length
            if length >= min_len and end > max_end:
                found, count = self._lookup(query, i, end)
                if max_occurrences == 0 or (skip_common and max_occurrences is not None and count > max_occurrences):
                    occ = []
                else:
                    occ = self._occurrences(found, max_occurrences)
                out.append(SpanMatch(i, end, count, occ))
            max_end = max(max_end, end)
        return out


class SpanIndex(WordQueries):
    """In-memory (or memory-mapped) suffix-array index over a dataset's word ids."""

    def __init__(self, tokens: np.ndarray, sa: np.ndarray, doc_start: np.ndarray, doc_idx: np.ndarray,
                 doc_field: np.ndarray, df: np.ndarray, vocab: list[str], meta: dict[str, Any]):
        self.tokens, self.sa = tokens, sa
        self.doc_start, self.doc_idx, self.doc_field = doc_start, doc_idx, doc_field
        self.df, self.vocab, self.meta = df, vocab, meta
        self.word_id = {w: i for i, w in enumerate(vocab)}
        self.n_instances = int(meta["n_instances"])
        self._t = memoryview(np.ascontiguousarray(tokens))  # Python-int indexing, fast in loops
        self._s = memoryview(np.ascontiguousarray(sa))
        self._n = len(sa)

    # -- core binary searches ---------------------------------------------------
    def _cmp(self, q: list[int], start: int, p: int, skip: int) -> tuple[int, int]:
        """Compare q[start:] with tokens[p:] from offset `skip`; (lcp, sign) with sign of q - suffix.
        A query that runs out while equal counts as equal (prefix semantics)."""
        t = self._t
        k = skip
        m = len(q) - start
        while k < m:
            a = q[start + k]
            b = t[p + k]
            if a != b:
                return k, (1 if a > b else -1)
            k += 1
        return k, 0

    def _bound(self, q: list[int], start: int, upper: bool) -> int:
        """First SA rank whose suffix is >= q[start:] (lower) or > it as a prefix (upper)."""
        s = self._s
        lo, hi = 0, self._n
        llo = lhi = 0
        while lo < hi:
            mid = (lo + hi) >> 1
            lcp, c = self._cmp(q, start, s[mid], min(llo, lhi))
            if c > 0 or (upper and c == 0):
                lo, llo = mid + 1, lcp
            else:
                hi, lhi = mid, lcp
        return lo

    def _longest_prefix(self, q: list[int], start: int) -> int:
        """Length of the longest prefix of q[start:] that occurs in the data."""
        if q[start] < 0:
            return 0
        r = self._bound(q, start, upper=False)
        best = 0
        for rank in (r - 1, r):
            if 0 <= rank < self._n:
                lcp, _ = self._cmp(q, start, self._s[rank], 0)
                best = max(best, lcp)
        return best

    def sa_range(self, ids: list[int]) -> tuple[int, int]:
        """[lo, hi) ranks of the suffixes starting with `ids` (empty when it does not occur)."""
        if not ids or min(ids) < 1:
            return 0, 0
        return self._bound(ids, 0, upper=False), self._bound(ids, 0, upper=True)

    def count(self, span: str | list[str] | list[int]) -> int:
        lo, hi = self.sa_range(self._ids(span))
        return hi - lo

    def positions(self, lo: int, hi: int, limit: int | None = None) -> np.ndarray:
        if limit is not None:
            hi = min(hi, lo + limit)
        return np.sort(np.asarray(self.sa[lo:hi], dtype=np.int64))

    def occurrences(self, pos: np.ndarray) -> list[Occurrence]:
        d = np.searchsorted(self.doc_start, pos, side="right") - 1
        return [Occurrence(i, FIELDS[f], p) for i, f, p in zip(
            self.doc_idx[d].tolist(), self.doc_field[d].tolist(), (pos - self.doc_start[d]).tolist(), strict=True)]

    def find(self, span: str | list[str] | list[int], limit: int | None = 10_000) -> list[Occurrence]:
        """Every occurrence (up to `limit`) of a span, in corpus order."""
        lo, hi = self.sa_range(self._ids(span))
        return self.occurrences(self.positions(lo, hi, limit))

    def instances_containing(self, span: str | list[int], limit: int | None = 10_000) -> list[int]:
        return sorted({o.idx for o in self.find(span, limit)})

    # -- maximal matching spans ---------------------------------------------------
    def matching_lengths(self, ids: list[int], max_len: int = 256) -> list[int]:
        """For each start i, the length of the longest q[i:] prefix found in the data (capped)."""
        out = []
        n = len(ids)
        for i in range(n):
            q = ids[i:i + max_len]
            out.append(self._longest_prefix(q, 0))
        return out

    def _query(self, ids: list[int]) -> list[int]:
        return ids

    def _lookup(self, query: list[int], i: int, end: int) -> tuple[tuple[int, int], int]:
        lo, hi = self.sa_range(query[i:end])
        return (lo, hi), hi - lo

    def _occurrences(self, found: tuple[int, int], limit: int | None) -> list[Occurrence]:
        return self.occurrences(self.positions(found[0], found[1], limit))

    # -- persistence ----------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name in ARRAYS:
            _atomic_npy(d / f"spans.{name}.npy", getattr(self, name))
        _atomic_text(d / "spans.vocab.json", json.dumps(self.vocab, ensure_ascii=False))
        _atomic_text(d / "spans.meta.json", json.dumps(self.meta, indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = True) -> SpanIndex:
        d = Path(directory)
        meta_f = d / "spans.meta.json"
        if not meta_f.is_file():
            raise FileNotFoundError(f"no span index in {d}; run `itaudit spans build`")
        meta = json.loads(meta_f.read_text())
        if meta.get("version") != INDEX_VERSION or meta.get("tokenizer") != TOKENIZER_VERSION:
            raise StaleIndexError(f"span index in {d} has an old format; rebuild with `itaudit spans build`")
        # the two big arrays are memory-mapped; the small per-document/per-word ones are read in
        arrs = {n: np.load(d / f"spans.{n}.npy", mmap_mode="r" if mmap and n in ("tokens", "sa") else None)
                for n in ARRAYS}
        vocab = json.loads((d / "spans.vocab.json").read_text())
        return cls(**arrs, vocab=vocab, meta=meta)

    def size_bytes(self) -> int:
        return int(sum(getattr(self, n).nbytes for n in ARRAYS))


def _atomic_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.save(fh, np.asarray(arr))


def _atomic_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


# -- building -------------------------------------------------------------------------
def suffix_array(tokens: np.ndarray) -> np.ndarray:
    """Suffix array of an int32 sequence (libdivsufsort; numpy prefix doubling as a fallback)."""
    try:
        from pydivsufsort import divsufsort
    except ImportError:  # pragma: no cover - the pinned dependency is normally present
        return suffix_array_numpy(tokens)
    if len(tokens) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(divsufsort(np.ascontiguousarray(tokens, dtype=np.int32)))


def suffix_array_numpy(tokens: np.ndarray) -> np.ndarray:
    """Prefix-doubling suffix sort in numpy, O(n log^2 n): the benchmark baseline and fallback."""
    n = len(tokens)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rank = np.unique(tokens, return_inverse=True)[1].astype(np.int64) + 1
    k = 1
    while True:
        second = np.zeros(n, dtype=np.int64)
        second[:-k] = rank[k:] if k < n else 0
        order = np.lexsort((second, rank))
        r, s = rank[order], second[order]
        new = np.empty(n, dtype=np.int64)
        new[order] = np.concatenate([[1], 1 + np.cumsum((r[1:] != r[:-1]) | (s[1:] != s[:-1]))])
        rank = new
        if rank.max() == n or k >= n:
            return order
        k *= 2


TOKENIZE_CHUNK = 20_000  # documents tokenized per polars call (bounds the word lists in memory)


def build_from_texts(docs: list[tuple[int, int, str]], n_instances: int, meta: dict[str, Any] | None = None,
                     show_progress: bool = False) -> SpanIndex:
    """Build from (instance idx, field code, text) documents. Field codes index `FIELDS`."""
    t0 = time.perf_counter()
    docs = [d for d in docs if d[2]]
    # Raw words of every document, ids in first-seen order (what a per-document loop over
    # `raw_words` gives), tokenized by polars a chunk of documents at a time.
    raw_vocab: dict[str, int] = {}
    parts: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    with progress_bar("spans: tokenize", total=len(docs), unit="docs", enabled=show_progress) as bar:
        for c0 in range(0, len(docs), TOKENIZE_CHUNK):
            chunk = [d[2] for d in docs[c0:c0 + TOKENIZE_CHUNK]]
            lists = text_mod.word_lists(chunk, text_mod.WORD, lower=False)
            counts.append(lists.list.len().to_numpy().astype(np.int64))
            flat = lists.explode().drop_nulls()
            seen = flat.unique(maintain_order=True)
            ids = [raw_vocab.setdefault(w, len(raw_vocab)) for w in seen.to_list()]
            parts.append(flat.replace_strict(seen, ids, return_dtype=pl.Int64).to_numpy() if len(flat)
                         else np.zeros(0, np.int64))
            bar.advance(len(chunk))
    # Fold raw (cased) words onto lowercased ids: 0 is the separator, words are 1..V.
    lower_id: dict[str, int] = {}
    vocab = [""]
    remap = np.empty(len(raw_vocab), dtype=np.int32)
    for w, i in raw_vocab.items():
        lw = w.lower()
        j = lower_id.get(lw)
        if j is None:
            j = lower_id[lw] = len(vocab)
            vocab.append(lw)
        remap[i] = j
    n_words = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    lengths = n_words + 1
    # each document's word ids followed by -1 (the separator slot)
    words_flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    flat = np.insert(words_flat, np.cumsum(n_words), -1)
    tokens = np.where(flat >= 0, remap[np.clip(flat, 0, None)] if len(remap) else 0, SEP).astype(np.int32)
    doc_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    doc_idx = np.array([d[0] for d in docs], dtype=np.int64)
    doc_field = np.array([d[1] for d in docs], dtype=np.int8)
    t_tok = time.perf_counter() - t0
    # Document frequency over instances.
    inst_of_pos = np.repeat(doc_idx, lengths)
    mask = tokens != SEP
    key = np.unique(inst_of_pos[mask] * len(vocab) + tokens[mask])
    df = np.bincount(key % len(vocab), minlength=len(vocab)).astype(np.int32)
    t1 = time.perf_counter()
    sa = suffix_array(tokens)
    sa = sa.astype(np.int32) if len(tokens) < 2**31 - 1 else sa.astype(np.int64)
    t_sa = time.perf_counter() - t1
    m = dict(meta or {})
    m.update(version=INDEX_VERSION, tokenizer=TOKENIZER_VERSION, n_instances=int(n_instances),
             n_documents=len(docs), n_tokens=int(len(tokens)), vocab_size=len(vocab),
             seconds_tokenize=round(t_tok, 3), seconds_suffix_array=round(t_sa, 3),
             seconds_total=round(time.perf_counter() - t0, 3))
    return SpanIndex(tokens, sa, doc_start, doc_idx, doc_field, df, vocab, m)


def build_span_index(store: Store, dataset: str, index_dir: str | os.PathLike | None = None,
                     show_progress: bool = False, save: bool = True) -> SpanIndex:
    """Build (and persist) the span index of a dataset from the store."""
    store.require_dataset(dataset)
    rows = store.query(
        "SELECT idx, instruction, input, response FROM instances WHERE dataset = ? ORDER BY idx", [dataset]
    )
    docs: list[tuple[int, int, str]] = []
    for idx, ins, inp, resp in rows.iter_rows():
        docs.append((idx, 0, ins or ""))
        docs.append((idx, 1, inp or ""))
        docs.append((idx, 2, resp or ""))
    meta = {"dataset": dataset, "fingerprint": dataset_fingerprint(store, dataset)}
    idx = build_from_texts(docs, rows.height, meta, show_progress=show_progress)
    if save:
        idx.save(spans_dir(index_dir or default_index_dir(), dataset))
    return idx


def load_span_index(store: Store | None, dataset: str, index_dir: str | os.PathLike | None = None,
                    check: bool = True) -> SpanIndex:
    """Load a persisted index; with `check`, raise StaleIndexError if the dataset changed."""
    idx = SpanIndex.load(spans_dir(index_dir or default_index_dir(), dataset))
    if check and store is not None:
        fp = dataset_fingerprint(store, dataset)
        if idx.meta.get("fingerprint") != fp:
            raise StaleIndexError(
                f"span index for {dataset!r} is stale (dataset re-ingested); rebuild with `itaudit spans build`"
            )
    return idx


def ensure_span_index(store: Store, dataset: str, index_dir: str | os.PathLike | None = None,
                      show_progress: bool = False) -> tuple[SpanIndex, bool]:
    """Load the index, building it when missing or stale. Returns (index, built)."""
    try:
        return load_span_index(store, dataset, index_dir), False
    except (FileNotFoundError, StaleIndexError):
        return build_span_index(store, dataset, index_dir, show_progress=show_progress), True
