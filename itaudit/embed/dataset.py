"""Embed a dataset's rows with a persistent, resumable cache (`embedding_cache`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import polars as pl

from ..errors import ItauditError
from ..progress import progress_bar
from ..store import Store
from .model import Embedder

#: what can be embedded: instruction; instruction + input ("prompt"); response; the whole instance
FIELDS = ("instruction", "prompt", "response", "all")
CHUNK = 512  # texts per committed chunk: an interruption loses at most one chunk


def _join(*parts: str | None) -> str:
    return "\n\n".join(p for p in parts if p)


def field_texts(frame: pl.DataFrame, field: str) -> list[str]:
    """The text embedded for `field` from a frame with instruction/input/response columns."""
    if field not in FIELDS:
        raise ItauditError(f"unknown field {field!r}; choose one of {', '.join(FIELDS)}")
    ins = frame["instruction"].to_list()
    if field == "instruction":
        return [s or "" for s in ins]
    inp = frame["input"].to_list() if "input" in frame.columns else [None] * len(ins)
    if field == "prompt":
        return [_join(a, b) for a, b in zip(ins, inp, strict=True)]
    res = frame["response"].to_list()
    if field == "response":
        return [s or "" for s in res]
    return [_join(a, b, c) for a, b, c in zip(ins, inp, res, strict=True)]


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def _cached(store: Store, key: str, hashes: list[str], dim: int) -> dict[str, np.ndarray]:
    if not hashes:
        return {}
    store.conn.register("_itaudit_hashes", pl.DataFrame({"text_hash": hashes}).to_arrow())
    try:
        df = store.query(
            "SELECT c.text_hash, c.vec FROM embedding_cache c JOIN _itaudit_hashes h USING (text_hash) "
            "WHERE c.model = ? AND c.dim = ?", [key, dim])
    finally:
        store.conn.unregister("_itaudit_hashes")
    if df.height == 0:
        return {}
    mat = np.frombuffer(b"".join(df["vec"].to_list()), dtype="<f4").reshape(df.height, dim)
    return dict(zip(df["text_hash"].to_list(), mat, strict=True))


def encode_cached(store: Store, embedder: Embedder, texts: Sequence[str], *, show_progress: bool = True,
                  desc: str = "embed", batch_size: int = 64, chunk_size: int = CHUNK, executor=None) -> np.ndarray:
    """Vectors for `texts` (aligned), encoding only texts whose hash is not cached for this model.
    `executor` (itaudit.steps.executor): where the chunks are encoded (default: this process)."""
    key, dim = embedder.cache_key, embedder.dim
    hashes = [text_hash(t) for t in texts]
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)
    have = _cached(store, key, list(first), dim)
    todo = [(h, i) for h, i in first.items() if h not in have]
    if todo:
        # Longest first, then chunks: little padding inside each batch, and the ETA is pessimistic
        # rather than optimistic.
        todo.sort(key=lambda hi: -min(len(texts[hi[1]]), embedder.max_chars))
        from ..steps.embed import embed_missing  # the step runner commits each chunk

        with progress_bar(desc, total=len(todo), unit="texts", enabled=show_progress) as bar:
            have.update(embed_missing(store, embedder, [h for h, _ in todo], [texts[i] for _, i in todo],
                                      chunk_size=chunk_size, batch_size=batch_size, executor=executor,
                                      on_chunk=lambda k, _v: bar.advance(k)))
    out = np.empty((len(texts), dim), dtype=np.float32)
    for i, h in enumerate(hashes):
        out[i] = have[h]
    return out


def embed_dataset(store: Store, dataset: str, field: str = "instruction", embedder: Embedder | None = None,
                  show_progress: bool = True, *, idx: Sequence[int] | np.ndarray | None = None,
                  batch_size: int = 64, chunk_size: int = CHUNK, executor=None) -> np.ndarray:
    """(n, dim) float32 L2-normalized vectors of `field` for every instance, row i = instances.idx i.

    With `idx`, only those rows (in that order). Cached by model + text hash: only texts not seen
    before are encoded, in chunks each committed on its own (resumable after an interruption).
    """
    if field not in FIELDS:
        raise ItauditError(f"unknown field {field!r}; choose one of {', '.join(FIELDS)}")
    store.require_dataset(dataset)
    cols = "idx, instruction, input, response"
    if idx is None:
        frame = store.instances(dataset, cols)
        if frame.height and frame["idx"][-1] != frame.height - 1:
            raise ItauditError(f"dataset {dataset!r}: instances.idx is not dense 0..n-1")
    else:
        want = np.asarray(idx, dtype=np.int64)
        store.conn.register("_itaudit_idx", pl.DataFrame({"idx": want, "pos": np.arange(len(want))}).to_arrow())
        try:
            frame = store.query(
                f"SELECT {', '.join('i.' + c for c in cols.split(', '))} FROM _itaudit_idx w "
                "JOIN instances i ON i.dataset = ? AND i.idx = w.idx ORDER BY w.pos", [dataset])
        finally:
            store.conn.unregister("_itaudit_idx")
        if frame.height != len(want):
            raise ItauditError(f"dataset {dataset!r}: {len(want) - frame.height} requested idx do not exist")
    embedder = embedder or Embedder()
    texts = field_texts(frame, field)
    return encode_cached(store, embedder, texts, show_progress=show_progress, desc=f"embed {dataset}:{field}",
                         batch_size=batch_size, chunk_size=chunk_size, executor=executor)
