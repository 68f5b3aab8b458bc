"""Sharded vector index: train IVF once on a sample, fill shards in parallel, merge or search all.

For datasets past a few hundred thousand rows one FAISS build is a single long job holding every
vector. Here (the FAISS "distributed on-disk" recipe):

1. `train_ivf`: choose IVF-PQ parameters for the *total* row count (`auto_params` of
   itaudit/index/vector.py), train the coarse quantizer and PQ codebooks once on a random sample,
   and keep the trained, empty index as bytes;
2. `fill_shard`: each worker deserializes that trained index and adds its shard's vectors under
   their global row positions (`add_with_ids`): shards are independent, so they run on a process
   pool or Ray (`map_fn`);
3. `merge_shards`: the shards' inverted lists are merged into one index, in memory
   (`IndexIVF.merge_from`) or on disk (`OnDiskInvertedLists`, memory-mapped at query time), or
   kept apart and searched together (`faiss.IndexShards`, results merged by score).

Every shard shares the quantizer and codebooks, so the merged index is the index one process
would have built from the same training sample: searches return the same ids and scores
(tests/test_sharded_index.py). Small datasets (below `hnsw_below` rows) keep HNSW, built in one
piece by `build_index`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import ItauditError
from ..store import Store
from .vector import (
    FORMAT_VERSION,
    VectorIndex,
    auto_params,
    build_index,
    dataset_fingerprint,
    make_index,
    save_index,
)

HNSW_BELOW = 200_000     # rows: below this, one HNSW graph (built in one piece) is the default
TRAIN_ROWS = 200_000     # rows sampled to train the quantizer and codebooks (make_index's cap)


def train_ivf(sample: np.ndarray, n_total: int, **overrides: Any) -> tuple[bytes, dict[str, Any], list[str]]:
    """A trained, empty IVF-PQ index (serialized) with parameters for `n_total` rows, trained on `sample`."""
    x = np.ascontiguousarray(sample, dtype=np.float32)
    dim = x.shape[1]
    kind, params, notes = auto_params("ivfpq", n_total, dim, **overrides)
    if kind != "ivfpq":
        raise ItauditError(f"{n_total} rows are too few for a sharded IVF index; build a flat or hnsw index")
    most = max(1, len(x) // 39)
    if params["nlist"] > most and "nlist" not in overrides:
        notes.append(f"ivfpq: nlist lowered from {params['nlist']} to {most}: the {len(x)}-row training sample "
                     "needs >= 39 rows per list")
        params["nlist"] = most
        params["nprobe"] = min(params["nprobe"], most)
    index = make_index("ivfpq", dim, params, x)
    index.reset()  # keep the quantizer and codebooks, drop the sample's codes
    return faiss.serialize_index(index).tobytes(), params, notes


def fill_shard(trained: bytes, vectors: np.ndarray, ids: np.ndarray) -> bytes:
    """The trained index holding one shard's vectors under global ids (runs in a worker)."""
    index = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    return faiss.serialize_index(index).tobytes()


def _fill_task(args: tuple[bytes, np.ndarray, np.ndarray]) -> bytes:
    return fill_shard(*args)


def merge_shards(trained: bytes, shards: Iterable[bytes], *, ondisk: str | os.PathLike | None = None,
                 nprobe: int | None = None) -> faiss.Index:
    """One index holding every shard's lists: in memory, or with `ondisk`, inverted lists in that
    file (memory-mapped when searched; the index keeps its absolute path)."""
    index = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
    ivf = faiss.extract_index_ivf(index)
    if nprobe is not None:
        ivf.nprobe = int(nprobe)
    if ondisk is None:
        for blob in shards:
            part = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))  # keep it alive while merging
            ivf.merge_from(faiss.extract_index_ivf(part), 0)
        return index
    ondisk = Path(ondisk).resolve()
    ondisk.unlink(missing_ok=True)
    parts = [faiss.deserialize_index(np.frombuffer(b, dtype=np.uint8)) for b in shards]
    vec = faiss.InvertedListsPtrVector()
    for p in parts:
        vec.push_back(faiss.extract_index_ivf(p).invlists)
    invlists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(ondisk))
    ntotal = invlists.merge_from_multiple(vec.data(), vec.size(), False)
    ivf.ntotal = index.ntotal = ntotal
    ivf.replace_invlists(invlists, True)
    invlists.this.disown()
    return index


def sharded_search_index(shards: Iterable[bytes], *, nprobe: int | None = None) -> faiss.Index:
    """The shards kept apart behind `faiss.IndexShards` (each searched, results merged by score)."""
    parts = [faiss.deserialize_index(np.frombuffer(b, dtype=np.uint8)) for b in shards]
    for p in parts:
        if nprobe is not None:
            faiss.extract_index_ivf(p).nprobe = int(nprobe)
    if not parts:
        raise ItauditError("no shards to search")
    out = faiss.IndexShards(parts[0].d, False, False)  # no threads, ids as added
    for p in parts:
        out.add_shard(p)
    return out


def build_ivf_sharded(vectors: np.ndarray, *, shard_rows: int = 250_000, train_rows: int = TRAIN_ROWS,
                      map_fn: Callable[[Callable, Iterable], list] | None = None, ondisk: str | os.PathLike | None = None,
                      seed: int = 0, **overrides: Any) -> tuple[faiss.Index, dict[str, Any]]:
    """Train once on `train_rows` sampled rows, fill `shard_rows`-row shards (with `map_fn`, e.g. a
    process pool or Ray, else here), merge; returns (index, build info). Ids are row positions."""
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if shard_rows < 1:
        raise ItauditError(f"shard_rows must be >= 1, got {shard_rows}")
    t0 = time.perf_counter()
    pick = np.sort(np.random.default_rng(seed).choice(n, min(n, train_rows), replace=False))
    trained, params, notes = train_ivf(x[pick], n, **overrides)
    t1 = time.perf_counter()
    tasks = ((trained, x[a:a + shard_rows], np.arange(a, min(a + shard_rows, n), dtype=np.int64))
             for a in range(0, n, shard_rows))
    blobs = (map_fn or (lambda f, xs: [f(t) for t in xs]))(_fill_task, tasks)
    t2 = time.perf_counter()
    index = merge_shards(trained, blobs, ondisk=ondisk, nprobe=params["nprobe"])
    info = {"params": params, "notes": notes, "n_shards": len(blobs), "shard_rows": shard_rows,
            "train_rows": len(pick), "seconds_train": round(t1 - t0, 3), "seconds_fill": round(t2 - t1, 3),
            "seconds_merge": round(time.perf_counter() - t2, 3), "shard_bytes": [len(b) for b in blobs],
            "ondisk": str(ondisk) if ondisk else None}
    return index, info


def build_scaled_index(store: Store, dataset: str, field: str = "instruction",
                       index_dir: str | os.PathLike = "indexes", *, embedder=None, vectors: np.ndarray | None = None,
                       hnsw_below: int = HNSW_BELOW, shard_rows: int = 250_000,
                       map_fn: Callable[[Callable, Iterable], list] | None = None, ondisk: bool = False,
                       show_progress: bool = False, **overrides: Any) -> VectorIndex:
    """The index for a dataset of any size: HNSW below `hnsw_below` rows, else sharded IVF-PQ
    (saved as kind `ivfpq`, loadable by `load_index`)."""
    from ..embed import Embedder, embed_dataset

    info = store.require_dataset(dataset)
    embedder = embedder or Embedder()
    if vectors is None:
        vectors = embed_dataset(store, dataset, field, embedder, show_progress=show_progress)
    n, dim = vectors.shape
    if n < hnsw_below:
        return build_index(store, dataset, field, "hnsw", index_dir, embedder=embedder, vectors=vectors,
                           show_progress=show_progress, **overrides)
    fpath = Path(index_dir) / dataset / f"{field}.ivfpq"
    fpath.parent.mkdir(parents=True, exist_ok=True)
    ivfdata = Path(f"{fpath}.ivfdata") if ondisk else None
    index, binfo = build_ivf_sharded(vectors, shard_rows=shard_rows, map_fn=map_fn, ondisk=ivfdata, **overrides)
    meta = {
        "format": FORMAT_VERSION, "dataset": dataset, "field": field, "kind": "ivfpq", "requested_kind": "ivfpq",
        "params": binfo["params"], "notes": binfo["notes"], "n": int(index.ntotal), "dim": int(dim),
        "metric": "inner_product", "normalization": "l2", "model": embedder.cache_key,
        "model_id": embedder.model_id, "model_arg": getattr(embedder, "model_arg", None),
        "max_length": embedder.max_length, "backend": embedder.backend,
        "dataset_fingerprint": dataset_fingerprint(info), "ids": "identity", "faiss_version": faiss.__version__,
        "build_seconds": round(binfo["seconds_train"] + binfo["seconds_fill"] + binfo["seconds_merge"], 3),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sharded": {k: v for k, v in binfo.items() if k not in ("params", "notes")},
    }
    vi = VectorIndex(index, meta)
    if int(binfo["params"].get("refine", 0) or 0) > 0:  # exact re-rank of PQ candidates (vector.py)
        vi.exact = np.ascontiguousarray(vectors, dtype=np.float32)
    vi = save_index(vi, index_dir)
    with store.transaction() as conn:
        conn.execute("DELETE FROM vector_indexes WHERE dataset = ? AND field = ? AND kind = ?",
                     [dataset, field, "ivfpq"])
        conn.execute(
            "INSERT INTO vector_indexes (dataset, field, kind, path, model, dim, n_rows, fingerprint, params) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [dataset, field, "ivfpq", str(vi.path), embedder.cache_key, dim, int(index.ntotal),
             meta["dataset_fingerprint"], json.dumps(binfo["params"])])
    return vi
