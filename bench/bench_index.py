"""Embeddings, FAISS index kinds and near-duplicate detection, each against a baseline in the same run.

- embed: itaudit `encode_cached` (hashing, length sort, chunked DuckDB persistence) vs a bare
  `SentenceTransformer.encode` of the same texts, same batch size (ratio of throughputs).
- backend: PyTorch dynamic int8 quantization of the model's Linear layers vs the fp32 model:
  throughput and neighbour quality (recall@10 of int8 neighbours against fp32 neighbours).
  (ONNX via sentence-transformers needs optimum-onnx, which pins transformers < 4.58.)
- index: build time, size, recall@10 vs exact, p50/p99 single-query latency for hnsw / ivfpq,
  each against flat.
- minhash: itaudit's MinHash LSH near-duplicate pass (crc32 shingle hashes, batched updates)
  vs plain datasketch (`MinHash.update` per shingle with its default sha1, `MinHashLSH`).
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _row(metric: str, ours: float, base: float, unit: str, note: str = "", higher_better: bool = False) -> dict:
    ratio = ours / base if base else float("nan")
    return {"bench": "index", "metric": metric, "itaudit": ours, "baseline": base, "ratio": ratio, "unit": unit,
            "note": note + (" (higher is better)" if higher_better else "")}


def _store(path: Path, data_dir: Path, names: list[str]):
    from itaudit.ingest import ingest
    from itaudit.store import Store

    path.parent.mkdir(parents=True, exist_ok=True)
    s = Store(path)
    for name, rel in names:
        ingest(s, data_dir / rel, name, skip_invalid=True, show_progress=False)
    return s


def bench_embed(texts: list[str], embedder, rows: list[dict]) -> None:
    from itaudit.embed.dataset import encode_cached
    from itaudit.store import Store

    bs = 64
    embedder.encode(texts[:64], batch_size=bs)  # warm-up
    with tempfile.TemporaryDirectory() as d, Store(Path(d) / "e.duckdb") as s:
        t0 = time.perf_counter()
        bare1 = embedder.model.encode(texts, batch_size=bs, normalize_embeddings=True)
        t_bare1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = encode_cached(s, embedder, texts, show_progress=False, batch_size=bs)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        embedder.model.encode(texts, batch_size=bs, normalize_embeddings=True)
        t_bare2 = time.perf_counter() - t0
        t0 = time.perf_counter()
        encode_cached(s, embedder, texts, show_progress=False, batch_size=bs)
        t_cached = time.perf_counter() - t0
    t_bare = (t_bare1 + t_bare2) / 2  # baseline before and after ours: cancels drift on a shared machine
    diff = float(np.abs(ours - bare1).max())
    n = len(texts)
    rows.append(_row("embed throughput", n / t_ours, n / t_bare, "texts/s",
                     f"{n} texts, bare runs {t_bare1:.1f}s/{t_bare2:.1f}s, max |diff| {diff:.1e}; overhead "
                     f"{100 * (t_ours / t_bare - 1):+.1f}%", higher_better=True))
    rows.append(_row("embed, all cached", n / t_cached, n / t_bare, "texts/s", "second run: cache hits only",
                     higher_better=True))


def bench_backend(texts: list[str], embedder, rows: list[dict]) -> None:
    import torch

    from itaudit.embed import Embedder
    from itaudit.index import recall_at_k
    from itaudit.index.vector import exact_index

    q8 = Embedder()
    q8.model = torch.ao.quantization.quantize_dynamic(q8.model, {torch.nn.Linear}, dtype=torch.qint8)
    q8.encode(texts[:64])
    t0 = time.perf_counter()
    v32 = embedder.encode(texts)
    t32 = time.perf_counter() - t0
    t0 = time.perf_counter()
    v8 = q8.encode(texts)
    t8 = time.perf_counter() - t0
    k = 10
    _, n32 = exact_index(v32).search(v32, k + 1)
    _, n8 = exact_index(v8).search(v8, k + 1)
    rec = recall_at_k(n8[:, 1:], n32[:, 1:], k)
    cos = float(np.mean(np.sum(v32 * v8, axis=1)))
    n = len(texts)
    rows.append(_row("int8 backend throughput", n / t8, n / t32, "texts/s",
                     f"torch dynamic int8 vs fp32, {n} texts; neighbour recall@10 vs fp32 {rec:.3f}, "
                     f"mean cos(fp32, int8) {cos:.4f}", higher_better=True))


def bench_kinds(vecs: np.ndarray, rows: list[dict], n_queries: int) -> None:
    import faiss
    import psutil

    from itaudit.index import auto_params, make_index, recall_at_k
    from itaudit.index.vector import VectorIndex

    proc = psutil.Process()
    rng = np.random.default_rng(0)
    q = vecs[rng.choice(len(vecs), min(n_queries, len(vecs)), replace=False)]
    stats = {}
    truth = None
    for kind in ("flat", "hnsw", "ivfpq"):
        gc.collect()
        rss0 = proc.memory_info().rss
        eff, params, notes = auto_params(kind, len(vecs), vecs.shape[1])
        t0 = time.perf_counter()
        index = make_index(eff, vecs.shape[1], params, vecs)
        build = time.perf_counter() - t0
        rss = proc.memory_info().rss - rss0
        size = len(faiss.serialize_index(index))
        # ivfpq re-ranks its candidates with the exact vectors, memory-mapped from disk when loaded
        # (not counted in its size: the index in RAM is the PQ codes)
        vi = VectorIndex(index, {"kind": eff, "params": params, "dim": vecs.shape[1], "n": len(vecs)},
                         exact=vecs if params.get("refine") else None)
        _, got = vi.search(q, 10)
        if truth is None:
            truth = got
        lat = []
        for row in q:
            t0 = time.perf_counter()
            vi.search(row[None, :], 10)
            lat.append((time.perf_counter() - t0) * 1000)
        stats[kind] = {"build": build, "size": size, "rss": rss, "recall": recall_at_k(got, truth, 10),
                       "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                       "params": params, "notes": notes}
        del index, vi
    f = stats["flat"]
    n = len(vecs)
    for kind in ("hnsw", "ivfpq"):
        s = stats[kind]
        p = json.dumps(s["params"])
        rows.append(_row(f"{kind} build", s["build"], f["build"], "s", f"n={n}, {p}"))
        rows.append(_row(f"{kind} size", s["size"] / 2**20, f["size"] / 2**20, "MiB",
                         f"RSS delta {s['rss'] / 2**20:.1f} MiB vs flat {f['rss'] / 2**20:.1f} MiB"))
        rows.append(_row(f"{kind} recall@10", s["recall"], f["recall"], "", f"{len(q)} queries from the data",
                         higher_better=True))
        rows.append(_row(f"{kind} query p50", s["p50"], f["p50"], "ms", "single query, k=10, 1 FAISS thread"))
        rows.append(_row(f"{kind} query p99", s["p99"], f["p99"], "ms", ""))


def bench_minhash(texts: list[str], rows: list[dict]) -> None:
    import polars as pl
    from datasketch import MinHash, MinHashLSH

    from itaudit import text
    from itaudit.audit.near_duplicates import instance_shingles, jaccard, minhash_pairs

    words = [text.words(t)[:2000] for t in texts]
    t0 = time.perf_counter()
    sh = instance_shingles(pl.DataFrame({"instruction": texts, "input": [""] * len(texts), "response": [""] * len(texts)}))
    ours, _ = minhash_pairs(sh, threshold=0.8)
    t_ours = time.perf_counter() - t0
    # plain datasketch: shingle strings, default sha1 hashing, one update per shingle
    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    mhs = []
    for i, w in enumerate(words):
        grams = {" ".join(w[j:j + 5]) for j in range(max(1, len(w) - 4))} if w else set()
        m = MinHash(num_perm=128)
        for g in grams:
            m.update(g.encode("utf8"))
        mhs.append(m)
        if grams:
            lsh.insert(i, m)
    base = set()
    for i, m in enumerate(mhs):
        for j in lsh.query(m):
            if j > i and m.jaccard(mhs[j]) >= 0.8:
                base.add((i, j))
    t_base = time.perf_counter() - t0
    true = {p for p in set(ours) | base if jaccard(sh[p[0]], sh[p[1]]) >= 0.8}
    rows.append(_row("minhash near-dup pass", t_ours, t_base, "s",
                     f"{len(texts)} instances; of {len(true)} true pairs (exact Jaccard >= 0.8) found by either, "
                     f"ours finds {len(true & set(ours))}, baseline {len(true & base)}"))


def run(data_dir: Path, quick: bool) -> list[dict]:
    from itaudit.embed import Embedder, embed_dataset
    from itaudit.embed.dataset import field_texts

    rows: list[dict] = []
    cache = Path(tempfile.gettempdir()) / "itaudit_bench" / "index.duckdb"  # embeddings reused across runs
    store = _store(cache, data_dir, [("alpaca", "alpaca/alpaca_5000.json"),
                                     ("sharegpt", "sharegpt/sharegpt_v3_prefix.jsonl")])
    try:
        embedder = Embedder()
        sg = store.query("SELECT instruction, input, response FROM instances WHERE dataset = 'sharegpt' "
                         "ORDER BY hash(idx) LIMIT ?", [300 if quick else 1500])
        texts = field_texts(sg, "instruction")
        bench_embed(texts, embedder, rows)
        bench_backend(texts[: 200 if quick else 800], embedder, rows)
        n_index = 1000 if quick else 4998
        vecs = embed_dataset(store, "alpaca", "prompt", embedder, show_progress=not quick)[:n_index]
        bench_kinds(vecs, rows, 200 if quick else 500)
        mh = store.query("SELECT instruction, input, response FROM instances WHERE dataset = 'sharegpt' "
                         "ORDER BY idx LIMIT ?", [1000 if quick else 10000])
        bench_minhash(field_texts(mh, "all"), rows)
    finally:
        store.close()
    return rows
