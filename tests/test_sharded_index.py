"""Sharded IVF: train once, fill shards (in parallel), merge in memory / on disk / search apart."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import pytest

from itaudit.index import load_index, make_index, recall_at_k
from itaudit.index.sharded import (
    build_ivf_sharded,
    build_scaled_index,
    fill_shard,
    merge_shards,
    sharded_search_index,
    train_ivf,
)
from itaudit.ingest import ingest
from tests.conftest import SHARED_DATA


def clustered(n: int, d: int = 64, centers: int = 60, seed: int = 0) -> np.ndarray:
    """Unit vectors around `centers` random directions (an embedding-like, clustered cloud)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d))
    x = c[rng.integers(0, centers, n)] + 0.6 * rng.standard_normal((n, d))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    return flat.search(q, k)[1]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = clustered(6_000)
    return x, clustered(300, seed=1)


def test_shards_merged_any_way_search_like_one_index_with_the_same_training(data, tmp_path: Path) -> None:
    x, q = data
    trained, params, _ = train_ivf(x[::3], len(x))
    # one index: the trained index holding every row
    one = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
    one.add_with_ids(x, np.arange(len(x), dtype=np.int64))
    one.nprobe = params["nprobe"]
    want_d, want_i = one.search(q, 10)
    bounds = [0, 1200, 3500, 4600, len(x)]
    blobs = [fill_shard(trained, x[a:b], np.arange(a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]
    npr = params["nprobe"]
    for index in (merge_shards(trained, blobs, nprobe=npr),
                  merge_shards(trained, blobs, ondisk=tmp_path / "m.ivfdata", nprobe=npr),
                  sharded_search_index(blobs, nprobe=npr)):
        assert index.ntotal == len(x)
        d, i = index.search(q, 10)
        assert np.array_equal(i, want_i)
        assert np.allclose(d, want_d, atol=1e-5)
    # the on-disk lists were written to the file and the index reads them back from it
    path = tmp_path / "m.faiss"
    faiss.write_index(merge_shards(trained, blobs, ondisk=tmp_path / "m2.ivfdata"), str(path))
    assert (tmp_path / "m2.ivfdata").stat().st_size > len(x) * params["m"]
    back = faiss.read_index(str(path))
    back.nprobe = params["nprobe"]
    assert np.array_equal(back.search(q, 10)[1], want_i)


def test_parallel_fill_recall_matches_one_index(data) -> None:
    x, q = data
    truth = exact_top(x, q, 10)
    with ProcessPoolExecutor(2) as pool:
        index, info = build_ivf_sharded(x, shard_rows=1500, map_fn=lambda f, ts: list(pool.map(f, ts)))
    seq, _ = build_ivf_sharded(x, shard_rows=1500)
    assert info["n_shards"] == 4 and index.ntotal == len(x)
    got = index.search(q, 10)[1]
    assert np.array_equal(got, seq.search(q, 10)[1])  # workers and one process agree
    single = make_index("ivfpq", x.shape[1], info["params"], x)  # one process, trained on every row
    r_sharded, r_single = recall_at_k(got, truth, 10), recall_at_k(single.search(q, 10)[1], truth, 10)
    assert r_single > 0.3
    assert abs(r_sharded - r_single) <= 0.03


def test_scaled_index_hnsw_for_small_sharded_ivf_for_large(store, tmp_path: Path) -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    from itaudit.embed import Embedder

    rows = json.loads((SHARED_DATA / "alpaca" / "alpaca_5000.json").read_text())[:150]
    src = tmp_path / "a.json"
    src.write_text(json.dumps(rows))
    ingest(store, src, "alp", "alpaca", show_progress=False)
    emb = Embedder()
    small = build_scaled_index(store, "alp", "instruction", tmp_path / "ix", embedder=emb)
    assert small.kind == "hnsw"
    big = build_scaled_index(store, "alp", "instruction", tmp_path / "ix", embedder=emb, hnsw_below=100,
                             shard_rows=60, ondisk=True)
    assert big.kind == "ivfpq" and big.meta["sharded"]["n_shards"] == 3 and big.ntotal == 150
    loaded = load_index(tmp_path / "ix", "alp", "instruction", "ivfpq", store=store)
    vecs = emb.encode([r["instruction"] for r in rows[:20]])
    s, i = loaded.search(vecs, 5)
    assert np.array_equal(i, big.search(vecs, 5)[1])
    assert (i[:, 0] == np.arange(20)).mean() >= 0.9  # each instruction finds itself first
