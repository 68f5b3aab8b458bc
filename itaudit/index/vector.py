"""FAISS index kinds, automatic parameters, persistence with metadata, staleness, recall."""

from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import ItauditError
from ..paths import atomic_path, atomic_write_text
from ..store import Store

KINDS = ("flat", "hnsw", "ivfpq")
FORMAT_VERSION = 1

# FAISS's OpenMP threads spin while waiting: on a small machine shared with other work that makes
# builds 5-30x slower (measured: ivfpq on 2,000 rows 4.8 s with 2 threads vs 0.15 s with 1).
# One thread by default; ITAUDIT_FAISS_THREADS=N to change.
faiss.omp_set_num_threads(int(os.environ.get("ITAUDIT_FAISS_THREADS", "1")))


class StaleIndexError(ItauditError):
    """The dataset changed since the index was built."""


# -- parameters ---------------------------------------------------------------------------------
def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def auto_params(kind: str, n: int, dim: int, **overrides: Any) -> tuple[str, dict[str, Any], list[str]]:
    """(effective kind, parameters, notes) for `n` vectors of `dim`; `overrides` win.

    hnsw: M 16 (32 above 200k rows), efConstruction 80 (160), efSearch 64 (128 above 50k rows).
    ivfpq: nlist ~ 4*sqrt(n) clamped so every list gets >= 39 training points; m subquantizers
    dividing dim with ~8 dims each; nbits 8 (fewer below 2048 rows: >= 8 rows per PQ centroid);
    nprobe ~ nlist/4 (at least 8); refine 8: the top 8k PQ candidates are re-ranked with the exact
    vectors (kept memory-mapped on disk; 0 turns it off). Below 64 rows IVF-PQ cannot be trained:
    exact flat is used.
    """
    if kind not in KINDS:
        raise ItauditError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    notes: list[str] = []
    params: dict[str, Any] = {}
    if kind == "hnsw":
        params = {"M": 16 if n <= 200_000 else 32,
                  "efConstruction": 80 if n <= 200_000 else 160,
                  "efSearch": 64 if n <= 50_000 else 128}
    elif kind == "ivfpq":
        if n < 64 and not overrides.get("force"):
            notes.append(f"ivfpq: {n} rows are too few to train IVF-PQ (needs >= 64); built an exact flat index instead")
            return "flat", {}, notes
        want = max(1, round(4 * math.sqrt(n)))
        nlist = max(1, min(want, n // 39))
        if nlist < want:
            notes.append(f"ivfpq: nlist clamped from {want} to {nlist} so each list has >= 39 training rows")
        divs = [d for d in _divisors(dim) if d <= max(1, dim // 8)]
        m = divs[-1] if divs else 1
        nbits = 8
        while nbits > 4 and n < (1 << nbits) * 8:
            nbits -= 1
        if nbits < 8:
            notes.append(f"ivfpq: nbits lowered to {nbits} ({n} rows cannot train 256 PQ centroids)")
        # nprobe nlist/4 and an exact re-rank of refine*k PQ candidates: recall@10 ~0.97 vs flat
        # (bench/bench_index.py); the exact vectors stay on disk (memory-mapped), not in RAM.
        params = {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": min(nlist, max(8, nlist // 4)),
                  "refine": 8}
    for k, v in overrides.items():
        if k == "force":
            continue
        if kind == "flat" or k not in params:
            raise ItauditError(f"unknown parameter {k!r} for a {kind} index; known: {', '.join(params) or '(none)'}")
        params[k] = type(params[k])(v)
    if kind == "ivfpq":
        if dim % params["m"]:
            raise ItauditError(f"ivfpq: m={params['m']} must divide the dimension {dim}")
        params["nprobe"] = min(params["nprobe"], params["nlist"])
    return kind, params, notes


def make_index(kind: str, dim: int, params: dict[str, Any], vectors: np.ndarray) -> faiss.Index:
    """A trained, filled FAISS index (inner product on L2-normalized vectors = cosine)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(params["efConstruction"])
        index.hnsw.efSearch = int(params["efSearch"])
    elif kind == "ivfpq":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, int(params["nlist"]), int(params["m"]), int(params["nbits"]),
                                 faiss.METRIC_INNER_PRODUCT)
        # Small sets train on few points per centroid; that is expected, do not let FAISS warn.
        index.cp.min_points_per_centroid = 1
        index.pq.cp.min_points_per_centroid = 1
        train = x
        if len(x) > 200_000:  # k-means does not need every row
            train = x[np.random.default_rng(0).choice(len(x), 200_000, replace=False)]
        index.train(train)
        index.nprobe = int(params["nprobe"])
    else:
        raise ItauditError(f"unknown index kind {kind!r}")
    if len(x):
        index.add(x)
    return index


def exact_index(vectors: np.ndarray) -> faiss.Index:
    """An exact inner-product (cosine on normalized rows) index over `vectors`, positions as ids."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index


# -- the index object ------------------------------------------------------------------------------
class VectorIndex:
    """A FAISS index plus its metadata; `search` returns cosine scores and instance idx."""

    def __init__(self, index: faiss.Index, meta: dict[str, Any], path: Path | None = None,
                 exact: np.ndarray | None = None):
        self.index, self.meta, self.path = index, meta, path
        #: exact vectors (row = FAISS position) for re-ranking approximate candidates; may be a memmap
        self.exact = exact
        ids = meta.get("ids", "identity")
        self.ids = np.arange(index.ntotal, dtype=np.int64) if ids == "identity" else np.asarray(ids, dtype=np.int64)
        self._apply_search_params()

    def _apply_search_params(self, k: int = 0) -> None:
        p = self.meta.get("params", {})
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(int(p.get("efSearch", 64)), k)
        elif self.kind == "ivfpq":
            self.index.nprobe = int(p.get("nprobe", 8))

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def field(self) -> str:
        return self.meta["field"]

    @property
    def dataset(self) -> str:
        return self.meta["dataset"]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    def _prep(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.shape[1] != self.dim:
            raise ItauditError(f"query vectors have dimension {x.shape[1]}, the index has {self.dim}")
        return np.ascontiguousarray(x)

    def search(self, vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(scores (n,k) float32 cosine, idx (n,k) int64 instance idx); missing slots: idx -1, score -inf."""
        x = self._prep(vectors)
        k = max(1, int(k))
        self._apply_search_params(k)
        refine = int(self.meta.get("params", {}).get("refine", 0) or 0)
        if refine > 0 and self.exact is not None:
            scores, pos = self._refined(x, k, refine)
        else:
            scores, pos = self.index.search(x, k)
        idx = np.where(pos >= 0, self.ids[np.clip(pos, 0, None)], -1).astype(np.int64)
        scores = np.where(pos >= 0, scores, -np.inf).astype(np.float32)
        return scores, idx

    def _refined(self, x: np.ndarray, k: int, refine: int) -> tuple[np.ndarray, np.ndarray]:
        """Top `k` by exact inner product among the index's top `refine * k` candidates."""
        kk = min(self.ntotal, refine * k) or k
        _, cand = self.index.search(x, kk)
        scores = np.full((len(x), k), -np.inf, dtype=np.float32)
        pos = np.full((len(x), k), -1, dtype=np.int64)
        for q in range(len(x)):
            c = cand[q][cand[q] >= 0]
            if not len(c):
                continue
            order = np.argsort(c)  # ascending positions: sequential reads of the memmap
            c = c[order]
            s = np.asarray(self.exact[c], dtype=np.float32) @ x[q]
            top = np.argsort(-s, kind="stable")[:k]
            scores[q, :len(top)], pos[q, :len(top)] = s[top], c[top]
        return scores, pos

    def range_search(self, vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All neighbours with cosine >= threshold: (lims (n+1,), scores, idx) in FAISS layout."""
        x = self._prep(vectors)
        self._apply_search_params()
        try:
            lims, scores, pos = self.index.range_search(x, float(threshold))
        except RuntimeError as e:
            raise ItauditError(f"a {self.kind} index does not support range search; use a flat index ({e})") from e
        return lims.astype(np.int64), scores.astype(np.float32), self.ids[pos].astype(np.int64)

    def is_stale(self, store: Store) -> bool:
        info = store.dataset_info(self.dataset)
        return info is None or dataset_fingerprint(info) != self.meta.get("dataset_fingerprint")

    def check_fresh(self, store: Store) -> None:
        if self.is_stale(store):
            raise StaleIndexError(
                f"index {self.path or ''} for {self.dataset!r}/{self.field} is stale: the dataset changed "
                f"since it was built; rebuild with `itaudit index {self.dataset} --field {self.field} --kind {self.kind}`"
            )

    def embedder(self):
        """An `Embedder` matching the one the index was built with (for text queries)."""
        from ..embed import Embedder

        m = self.meta
        e = Embedder(m.get("model_arg"), max_length=m.get("max_length"), backend=m.get("backend", "torch"))
        if e.cache_key != m.get("model"):
            raise ItauditError(f"index was built with {m.get('model')!r} but the embedder now loads as {e.cache_key!r}")
        return e

    def __repr__(self) -> str:
        return f"VectorIndex({self.dataset}/{self.field}, {self.kind}, n={self.ntotal}, dim={self.dim})"


def dataset_fingerprint(info: dict[str, Any]) -> str:
    return f"{info['fingerprint']}:{info['n_rows']}"


# -- files -----------------------------------------------------------------------------------------
def index_paths(index_dir: str | os.PathLike, dataset: str, field: str, kind: str) -> tuple[Path, Path]:
    base = Path(index_dir) / dataset / f"{field}.{kind}"
    return Path(f"{base}.faiss"), Path(f"{base}.json")


def save_index(vi: VectorIndex, index_dir: str | os.PathLike) -> VectorIndex:
    """Write `<dir>/<dataset>/<field>.<kind>.faiss` then its `.json` (the commit marker), atomically."""
    fpath, jpath = index_paths(index_dir, vi.dataset, vi.field, vi.meta["requested_kind"])
    fpath.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(fpath) as tmp:
        faiss.write_index(vi.index, str(tmp))
    vi.meta["faiss_file"] = fpath.name
    vi.meta["faiss_bytes"] = fpath.stat().st_size
    if vi.exact is not None and int(vi.meta.get("params", {}).get("refine", 0) or 0) > 0:
        vpath = fpath.with_name(fpath.name[: -len(".faiss")] + ".vectors.npy")
        with atomic_path(vpath) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(vi.exact, dtype="<f4"), allow_pickle=False)
        vi.meta["vectors_file"] = vpath.name
        vi.meta["vectors_bytes"] = vpath.stat().st_size
    text = json.dumps(vi.meta, indent=1, default=str)
    atomic_write_text(jpath, text)
    vi.path = fpath
    return vi


def _read(jpath: Path) -> VectorIndex:
    meta = json.loads(jpath.read_text(encoding="utf-8"))
    fpath = jpath.with_name(meta.get("faiss_file", jpath.name[:-5] + ".faiss"))
    if not fpath.exists():
        raise ItauditError(f"index file {fpath} is missing (metadata {jpath} exists); rebuild it")
    if meta.get("faiss_bytes") is not None and fpath.stat().st_size != meta["faiss_bytes"]:
        raise ItauditError(f"index file {fpath} does not match its metadata (interrupted write?); rebuild it")
    index = faiss.read_index(str(fpath))
    if index.ntotal != meta.get("n"):
        raise ItauditError(f"index {fpath} holds {index.ntotal} vectors, metadata says {meta.get('n')}; rebuild it")
    exact = None
    if meta.get("vectors_file"):
        vpath = jpath.with_name(meta["vectors_file"])
        if not vpath.exists() or vpath.stat().st_size != meta.get("vectors_bytes"):
            raise ItauditError(f"index vectors {vpath} are missing or do not match the metadata; rebuild the index")
        exact = np.load(vpath, mmap_mode="r", allow_pickle=False)
        if exact.shape != (index.ntotal, meta.get("dim")):
            raise ItauditError(f"index vectors {vpath} have shape {exact.shape}; rebuild the index")
    return VectorIndex(index, meta, fpath, exact)


def list_indexes(index_dir: str | os.PathLike, dataset: str | None = None) -> list[dict[str, Any]]:
    root = Path(index_dir)
    if not root.is_dir():
        return []
    out = []
    for j in sorted(root.glob(f"{dataset or '*'}/*.json")):
        try:
            meta = json.loads(j.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        meta["json_path"] = str(j)
        out.append(meta)
    return out


def load_index(index_dir: str | os.PathLike, dataset: str, field: str = "instruction", kind: str | None = None, *,
               store: Store | None = None) -> VectorIndex:
    """Load an index (kind None: flat if built, else hnsw, else ivfpq). With `store`, a stale index raises."""
    if kind is not None:
        jpath = index_paths(index_dir, dataset, field, kind)[1]
        if not jpath.exists():
            raise ItauditError(f"no {kind} index for {dataset!r}/{field} in {index_dir}; "
                               f"build it with `itaudit index {dataset} --field {field} --kind {kind}`")
    else:
        cands = [m for m in list_indexes(index_dir, dataset) if m.get("field") == field]
        if not cands:
            raise ItauditError(f"no index for {dataset!r}/{field} in {index_dir}; "
                               f"build one with `itaudit index {dataset} --field {field}`")
        pref = {k: i for i, k in enumerate(KINDS)}  # exact first, then the more accurate approximate kind
        best = min(cands, key=lambda m: (pref.get(m.get("requested_kind"), 9), m.get("built_at", "")))
        jpath = Path(best["json_path"])
    vi = _read(jpath)
    if store is not None:
        vi.check_fresh(store)
    return vi


# -- building --------------------------------------------------------------------------------------
def build_index(store: Store, dataset: str, field: str = "instruction", kind: str = "flat",
                index_dir: str | os.PathLike = "indexes", *, embedder=None, vectors: np.ndarray | None = None,
                show_progress: bool = True, save: bool = True, **params: Any) -> VectorIndex:
    """Embed `field` of every row (cached) and build + save a `kind` index; `params` override the auto ones."""
    from ..embed import Embedder, embed_dataset

    info = store.require_dataset(dataset)
    embedder = embedder or Embedder()
    if vectors is None:
        vectors = embed_dataset(store, dataset, field, embedder, show_progress=show_progress)
    n, dim = vectors.shape
    eff_kind, eff_params, notes = auto_params(kind, n, dim, **params)
    t0 = time.perf_counter()
    index = make_index(eff_kind, dim, eff_params, vectors)
    build_s = time.perf_counter() - t0
    meta = {
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "field": field,
        "kind": eff_kind,
        "requested_kind": kind,
        "params": eff_params,
        "notes": notes,
        "n": int(index.ntotal),
        "dim": int(dim),
        "metric": "inner_product",
        "normalization": "l2",
        "model": embedder.cache_key,
        "model_id": embedder.model_id,
        "model_arg": getattr(embedder, "model_arg", None),
        "max_length": embedder.max_length,
        "backend": embedder.backend,
        "dataset_fingerprint": dataset_fingerprint(info),
        "ids": "identity",
        "faiss_version": faiss.__version__,
        "build_seconds": round(build_s, 3),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    exact = np.ascontiguousarray(vectors, dtype=np.float32) if int(eff_params.get("refine", 0) or 0) > 0 else None
    vi = VectorIndex(index, meta, exact=exact)
    if save:
        save_index(vi, index_dir)
        with store.transaction() as conn:
            conn.execute("DELETE FROM vector_indexes WHERE dataset = ? AND field = ? AND kind = ?",
                         [dataset, field, kind])
            conn.execute(
                "INSERT INTO vector_indexes (dataset, field, kind, path, model, dim, n_rows, fingerprint, params) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [dataset, field, kind, str(vi.path), embedder.cache_key, dim, int(index.ntotal),
                 meta["dataset_fingerprint"], json.dumps(eff_params)])
    return vi


# -- evaluation ------------------------------------------------------------------------------------
def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    """Mean fraction of the exact top-k found in the approximate top-k (per query, -1 ignored)."""
    hits = 0
    total = 0
    for a, e in zip(approx[:, :k], exact[:, :k], strict=True):
        ev = set(e[e >= 0].tolist())
        if not ev:
            continue
        hits += len(ev & set(a[a >= 0].tolist()))
        total += len(ev)
    return hits / total if total else float("nan")


def evaluate(vi: VectorIndex, vectors: np.ndarray, *, k: int = 10, n_queries: int = 500, seed: int = 0,
             exact: VectorIndex | None = None) -> dict[str, float]:
    """recall@k against exact search, and single-query latency p50/p99 (ms), on rows of `vectors`."""
    rng = np.random.default_rng(seed)
    q = vectors[rng.choice(len(vectors), min(n_queries, len(vectors)), replace=False)]
    if exact is None:
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
        _, truth = flat.search(np.ascontiguousarray(q), k)
        truth = np.where(truth >= 0, vi.ids[np.clip(truth, 0, None)], -1)
    else:
        _, truth = exact.search(q, k)
    _, got = vi.search(q, k)
    lat = []
    for row in q[: min(len(q), 300)]:
        t0 = time.perf_counter()
        vi.search(row[None, :], k)
        lat.append((time.perf_counter() - t0) * 1000)
    return {"recall": recall_at_k(got, truth, k), "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "n_queries": len(q)}


# -- text queries ----------------------------------------------------------------------------------
def neighbors(store: Store, dataset: str, texts: str | list[str], k: int = 10, *, field: str = "instruction",
              kind: str | None = None, index_dir: str | os.PathLike = "indexes", build: bool = True):
    """Nearest instances to each text: a polars frame (query, rank, score, idx, instance_id, instruction, response).

    Uses the saved index (kind None: flat, else hnsw, else ivfpq); with `build`, builds a flat one
    when none exists. A stale index raises `StaleIndexError`.
    """
    import polars as pl

    texts = [texts] if isinstance(texts, str) else list(texts)
    store.require_dataset(dataset)
    have = [m for m in list_indexes(index_dir, dataset) if m.get("field") == field]
    if not have and kind is None and build:
        vi = build_index(store, dataset, field, "flat", index_dir, show_progress=False)
    else:
        vi = load_index(index_dir, dataset, field, kind, store=store)
    scores, ids = vi.search(vi.embedder().encode(texts), k)
    hits = [(q, r + 1, float(s), int(i)) for q in range(len(texts))
            for r, (s, i) in enumerate(zip(scores[q], ids[q], strict=True)) if i >= 0]
    frame = pl.DataFrame(hits, schema={"query": pl.Int64, "rank": pl.Int64, "score": pl.Float64, "idx": pl.Int64},
                         orient="row")
    rows = store.query("SELECT idx, instance_id, instruction, response FROM instances WHERE dataset = ? AND idx IN "
                       f"({', '.join(str(i) for i in set(frame['idx'].to_list())) or '-1'})", [dataset])
    return frame.join(rows, on="idx", how="left").sort("query", "rank")
