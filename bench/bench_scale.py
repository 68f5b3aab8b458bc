"""Scale: the generated N-instance dataset (bench/gen_1m.py) through the audit on one machine.

    python bench/bench_scale.py --n 1000000 [--work /tmp/itaudit-scale] [--ray-slice 100000]
    python -m bench --only scale            # N from ITAUDIT_SCALE_N (default 1M; quick: 20k)

Stages, each timed, the pipeline run in a child process whose peak RSS (VmHWM) is reported:
ingest; exact duplicates; MinHash near-duplicates (signatures mapped over 2,048-row chunks by the
local executor, then bands, verification, union-find); the prompt embedding index on the default
fast path: every row's instruction through the distilled static embedder (itaudit.index.fast,
identical texts once; MiniLM re-scores only candidates there, so it is not part of the index) and
a sharded IVF-PQ over all N static vectors, with MiniLM's rate on a small sample as the baseline
(its full-N cost extrapolated, marked so); the sharded span index;
tracing 100 planted-fact responses (lexical candidates, no model passes): p50 / p99 per response.
Known answers: planted exact + near duplicate pairs found in one cluster (recall), planted facts
whose top verbatim source is one of their host rows.

Ray against local: MinHash signatures of the first `--ray-slice` rows by the local executor (one
process) and by RayExecutor on a 2-CPU local cluster in the same run: wall ratio, identical flags.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 2048


def vm_hwm() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def rss() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Ctx:
    """The read-only view the checks compute on (dataset rows of the store)."""

    def __init__(self, store, dataset: str):
        self.store, self.dataset, self.show_progress = store, dataset, False

    def instances(self, columns: str | None = None):
        # the audit's RunContext columns: `*` would also read each record's raw JSON (~3.5 GiB more at 1M)
        from itaudit.steps.context import DEFAULT_COLUMNS

        return self.store.instances(self.dataset, columns or DEFAULT_COLUMNS)


def local_map(step, chunks, world_size):
    try:
        from itaudit.steps.executor import LocalExecutor
    except ImportError:  # before the executor seam lands: the same in-process loop
        return ((c, step.compute_chunk(r, rank=c, world_size=world_size)) for c, r in chunks)
    return LocalExecutor(1).map(step, chunks, world_size)


def near_dup_flags(frame, executor_map) -> tuple[np.ndarray, dict, dict]:
    """Staged MinHash over `frame` with `executor_map(step, chunks, world_size)`; (cluster root per row, pairs, timings)."""
    import polars as pl

    from itaudit.audit import minhash as mh
    from itaudit.audit.near_duplicates import UnionFind

    step = mh.MinHashSignatures()
    n_chunks = -(-frame.height // CHUNK)
    t0 = time.perf_counter()
    parts = dict(executor_map(step, ((c, frame.slice(c * CHUNK, CHUNK)) for c in range(n_chunks)), n_chunks))
    sig_frame = pl.concat([parts[c] for c in range(n_chunks)])
    t1 = time.perf_counter()
    pairs, _ = mh.minhash_pairs(frame, sig_frame=sig_frame)
    uf = UnionFind(frame.height)
    for i, j in pairs:
        uf.union(i, j)
    roots = uf.clusters()
    return roots, pairs, {"signatures": t1 - t0, "pairs_clusters": time.perf_counter() - t1}


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def pipeline(n: int, work: Path, data: Path, ray_slice: int, embed_sample: int, four_shards: bool = True) -> dict:
    """The full single-machine run (in the child process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    from bench.gen_1m import generate
    from itaudit.audit.duplicates import exact_duplicates
    from itaudit.ingest import ingest
    from itaudit.spans.sharded import build_sharded_span_index
    from itaudit.store import Store
    from itaudit.trace import TraceItem, Tracer

    out: dict = {"n": n, "stages": {}, "rss": {}, "cpu": {}, "loadavg_start": os.getloadavg()}
    st = out["stages"]
    cpu = out["cpu"]
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"it_{n}.jsonl"
    if not src.exists() or not Path(f"{src}.truth.json").exists():
        t = time.perf_counter()
        generate(data, src, n)
        out["generate_seconds"] = time.perf_counter() - t
    truth = json.loads(Path(f"{src}.truth.json").read_text())
    db = work / f"scale_{n}.duckdb"
    for p in (db, Path(f"{db}.wal")):
        p.unlink(missing_ok=True)
    store = Store(db)

    log("ingest")
    t, c = time.perf_counter(), time.process_time()
    ingest(store, src, "it", "alpaca", show_progress=False)
    st["ingest"] = time.perf_counter() - t
    cpu["ingest"] = time.process_time() - c
    out["rss"]["ingest"] = rss()

    log("exact duplicates")
    t, c = time.perf_counter(), time.process_time()
    ctx = Ctx(store, "it")
    ex = exact_duplicates(ctx)
    st["exact_duplicates"] = time.perf_counter() - t
    cpu["exact_duplicates"] = time.process_time() - c
    exact_cluster = np.asarray(ex.cluster_id)

    frame = store.instances("it", "idx, instruction, input, response")
    log("minhash")
    t, c = time.perf_counter(), time.process_time()
    roots, pairs, tm = near_dup_flags(frame, local_map)
    st["minhash_near_duplicates"] = time.perf_counter() - t
    cpu["minhash_near_duplicates"] = time.process_time() - c
    out["minhash_detail"] = tm
    out["rss"]["minhash"] = rss()
    from itaudit.audit.near_duplicates import instance_shingles, jaccard

    found = {"exact": [0, 0], "near": [0, 0], "near_below_threshold": [0, 0]}
    for p in truth["pairs"]:
        a, b = p["original"], p["copy"]
        hit = roots[a] == roots[b] or (p["kind"] == "exact" and exact_cluster[a] == exact_cluster[b] != -1)
        kind = p["kind"]
        if kind == "near":  # a planted pair is findable when its exact shingle Jaccard reaches 0.8
            sa, sb = instance_shingles(frame[[a, b]])
            kind = "near" if jaccard(sa, sb) >= 0.8 else "near_below_threshold"
        found[kind][0] += int(hit)
        found[kind][1] += 1
    out["dup_recall"] = {k: v[0] / v[1] for k, v in found.items() if v[1]}
    out["dup_counts"] = found
    out["dup_recall_all"] = sum(found[k][0] for k in ("exact", "near")) / max(1, sum(found[k][1] for k in ("exact", "near")))
    out["n_minhash_pairs"] = len(pairs)
    out["n_rows_in_near_clusters"] = int((np.bincount(roots, minlength=len(roots))[roots] > 1).sum())

    # Ray vs local on a slice (same run, same data)
    if ray_slice:
        log("ray vs local")
        out["ray"] = ray_vs_local(frame.head(ray_slice))
    del frame

    # prompt embedding index: static vectors of all n rows (the fast path), sharded IVF-PQ over them
    log("prompt embedding index (static) + sharded IVF")
    out["embed"] = embed_and_index(store, n, embed_sample, one_index=n <= 300_000)
    st["prompt_embedding"] = out["embed"]["embed_seconds"]
    cpu["prompt_embedding"] = out["embed"]["embed_cpu_seconds"]
    st["prompt_ivf_index"] = out["embed"]["index_seconds"]
    cpu["prompt_ivf_index"] = out["embed"]["index_cpu_seconds"]
    out["rss"]["index"] = rss()

    log("span index")
    t, c = time.perf_counter(), time.process_time()
    ix = build_sharded_span_index(store, "it", work / "indexes", shard_rows=250_000)
    st["span_index"] = time.perf_counter() - t
    cpu["span_index"] = time.process_time() - c
    out["span_index"] = {"shards": len(ix.shards), "bytes": ix.size_bytes(),
                         "tokens": int(sum(s.meta["n_tokens"] for s in ix.shards))}
    out["rss"]["span_index"] = rss()

    items = [TraceItem(f"fact{k}", f["question"], f["response"]) for k, f in enumerate(truth["facts"][:100])]
    tracer = Tracer(store, "it", index=ix)
    log("trace")
    t, c = time.perf_counter(), time.process_time()
    traces = tracer.trace(items)
    st["trace_100"] = time.perf_counter() - t
    cpu["trace_100"] = time.process_time() - c
    lat = [tr.seconds * 1000 for tr in traces]
    hits = 0
    for tr, f in zip(traces, truth["facts"], strict=False):
        srcs = sorted((s for sp in tr.spans for s in sp.sources if s.verbatim), key=lambda s: -s.score)
        hits += bool(srcs) and srcs[0].idx in set(f["hosts"])
    out["trace"] = {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                    "fact_top1_recall": hits / max(1, len(items))}
    if four_shards:  # the same traces over 4 shards: identical sources, what sharding costs per response
        log("span index in 4 shards + trace")
        ix4 = build_sharded_span_index(store, "it", work / "indexes4", shard_rows=-(-n // 4))
        traces4 = Tracer(store, "it", index=ix4).trace(items)
        lat4 = [tr.seconds * 1000 for tr in traces4]

        def key(trs):
            return [[(s.idx, round(s.score, 9)) for sp in tr.spans for s in sp.sources] for tr in trs]

        out["trace"]["four_shards"] = {"p50_ms": float(np.percentile(lat4, 50)),
                                       "p99_ms": float(np.percentile(lat4, 99)),
                                       "identical_sources": key(traces4) == key(traces)}
        del ix4
    out["total_seconds"] = sum(st.values())
    out["total_cpu_seconds"] = sum(cpu.values())
    out["peak_rss"] = vm_hwm()
    out["loadavg_end"] = os.getloadavg()
    store.close()
    return out


def embed_and_index(store, n: int, sample: int, one_index: bool) -> dict:
    """The prompt index on the default fast path: every row's static vector (itaudit.index.fast's
    distilled embedder, identical texts once) into a sharded IVF-PQ over all N rows. Baseline in the
    same run: MiniLM (the sentence model `itaudit index` embeds with) on a `sample`-row slice."""
    from itaudit.embed import Embedder, embed_dataset, field_texts
    from itaudit.index.fast import static_embedder, unique_texts
    from itaudit.index.sharded import build_ivf_sharded

    out: dict = {"field": "instruction", "embedder": "static (itaudit.index.fast.static_embedder)"}
    emb = Embedder()
    if sample:  # the sentence model's rate on a sample: the baseline the static path replaces
        idx = np.linspace(0, n - 1, min(sample, n)).astype(np.int64)
        t, c = time.perf_counter(), time.process_time()
        embed_dataset(store, "it", "instruction", emb, show_progress=False, idx=idx)
        secs, ecpu = time.perf_counter() - t, time.process_time() - c
        out.update({"minilm_sample": len(idx), "minilm_texts_per_s": len(idx) / secs,
                    "minilm_texts_per_cpu_s": len(idx) / max(ecpu, 1e-9),
                    "minilm_extrapolated_seconds": n / (len(idx) / secs),
                    "minilm_extrapolated_cpu_seconds": n / (len(idx) / max(ecpu, 1e-9))})
    t, c = time.perf_counter(), time.process_time()
    static = static_embedder(emb)  # distilled once per machine, cached on disk
    out["static_load_seconds"] = time.perf_counter() - t
    texts = field_texts(store.instances("it", "idx, instruction"), "instruction")
    uniq, inv = unique_texts(texts)
    del texts
    full = static.fit(uniq).vectors[inv]
    out.update({"embed_seconds": time.perf_counter() - t, "embed_cpu_seconds": time.process_time() - c,
                "n_distinct": len(uniq), "dim": int(full.shape[1])})
    del uniq, inv
    t, c = time.perf_counter(), time.process_time()
    index, info = build_ivf_sharded(full, shard_rows=250_000)
    out.update({"index_seconds": time.perf_counter() - t, "index_cpu_seconds": time.process_time() - c,
                "index_info": {k: v for k, v in info.items() if k != "shard_bytes"},
                "index_bytes": int(sum(info["shard_bytes"]))})
    import faiss

    from itaudit.index import make_index, recall_at_k

    rng = np.random.default_rng(0)
    q = full[rng.choice(n, 200, replace=False)]
    flat = faiss.IndexFlatIP(full.shape[1])
    flat.add(full)
    ts, truth = flat.search(q, 10)
    got = index.search(q, 10)[1]
    del flat
    # identical texts tie at the same score: an id counts when its exact cosine reaches the k-th exact score
    exact_of_got = np.einsum("qd,qkd->qk", q, full[np.clip(got, 0, None)])
    out["recall10"] = recall_at_k(got, truth, 10)
    # as VectorIndex searches it (vector.py): the top refine*k PQ candidates re-ranked by exact cosine
    refine = int(info["params"].get("refine", 0) or 0)
    if refine:
        cand = index.search(q, refine * 10)[1]
        ex = np.einsum("qd,qkd->qk", q, full[np.clip(cand, 0, None)])
        ex[cand < 0] = -np.inf
        top = np.take_along_axis(cand, np.argsort(-ex, axis=1, kind="stable")[:, :10], axis=1)
        out["recall10_refined"] = recall_at_k(top, truth, 10)
    out["recall10_ties"] = float(((exact_of_got >= ts[:, -1:] - 1e-5) & (got >= 0)).mean())
    if one_index:  # one index, one process, the same parameters: the recall to match
        t = time.perf_counter()
        one = make_index("ivfpq", full.shape[1], info["params"], full)
        out["one_index_seconds"] = time.perf_counter() - t
        out["one_index_recall10"] = recall_at_k(one.search(q, 10)[1], truth, 10)
    return out


def ray_vs_local(frame) -> dict:
    from itaudit.steps.executor_ray import RayExecutor, ray_available

    if not ray_available():
        return {"skipped": "ray not installed"}
    import ray

    t = time.perf_counter()
    roots_l, pairs_l, tm_l = near_dup_flags(frame, local_map)
    local_s = time.perf_counter() - t
    ex = RayExecutor(num_cpus=2)
    t = time.perf_counter()
    ex.start()
    start_s = time.perf_counter() - t
    t = time.perf_counter()  # warm the two workers (process start, imports), as on a running cluster
    from itaudit.audit.minhash import MinHashSignatures

    list(ex.map(MinHashSignatures(), [(0, frame.head(50)), (1, frame.slice(50, 50))], 2))
    warm_s = time.perf_counter() - t
    t = time.perf_counter()
    roots_r, pairs_r, tm_r = near_dup_flags(frame, ex.map)
    ray_s = time.perf_counter() - t
    ray.shutdown()
    return {"rows": frame.height, "local_seconds": local_s, "ray_seconds": ray_s, "ray_start_seconds": start_s,
            "ray_warmup_seconds": warm_s, "ratio": ray_s / local_s, "ratio_cold": (ray_s + warm_s) / local_s, "local_signature_seconds": tm_l["signatures"],
            "ray_signature_seconds": tm_r["signatures"], "identical_pairs": pairs_l == pairs_r,
            "identical_flags": bool(np.array_equal(roots_l, roots_r))}


def run_child(n: int, work: Path, data: Path, ray_slice: int, embed_sample: int, four_shards: bool = True) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--n", str(n), "--work", str(work),
           "--data", str(data), "--ray-slice", str(ray_slice), "--embed-sample", str(embed_sample)]
    if not four_shards:
        cmd.append("--no-four-shards")
    res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, check=False)  # progress on stderr
    if res.returncode:
        raise RuntimeError(f"scale pipeline failed (exit {res.returncode})")
    return json.loads(res.stdout.strip().splitlines()[-1])


def rows_of(r: dict) -> list[dict]:
    n = r["n"]

    def row(metric, ours, base, unit, note=""):
        return {"bench": "scale", "metric": metric, "itaudit": ours, "baseline": base,
                "ratio": ours / base if base else None, "unit": unit, "note": note}

    st = r["stages"]
    out = [row(f"{k} ({n:,} rows)", v, None, "s") for k, v in st.items()]
    e = r["embed"]
    if "minilm_extrapolated_cpu_seconds" in e:
        out.append(row("prompt embedding CPU s: static (all rows) vs MiniLM (extrapolated)", e["embed_cpu_seconds"],
                       e["minilm_extrapolated_cpu_seconds"], "s",
                       f"MiniLM {e['minilm_texts_per_cpu_s']:.0f} texts per CPU-s on {e['minilm_sample']} rows"))
    one = f" vs one index {e['one_index_recall10']:.3f}" if "one_index_recall10" in e else ""
    out.append(row("sharded IVF-PQ recall@10 (static vectors, PQ codes, no re-rank)", e["recall10"], None, "",
                   f"{one}; counting tied exact scores {e['recall10_ties']:.3f}; with the exact re-rank "
                   f"(refine {e['index_info']['params'].get('refine')}) {e.get('recall10_refined', float('nan')):.3f}"))
    out.append(row("all stages vs 60 min budget", r["total_seconds"], 3600 * n / 1_000_000, "s",
                   f"budget scaled to N rows; CPU {r['total_cpu_seconds']:.0f} s"))
    out.append(row("peak RSS vs 8 GiB", r["peak_rss"] / 2**30, 8.0, "GiB"))
    out.append(row("trace p50 vs 100 ms", r["trace"]["p50_ms"], 100.0, "ms",
                   f"p99 {r['trace']['p99_ms']:.0f} ms; fact top-1 recall {r['trace']['fact_top1_recall']:.2f}"))
    if "four_shards" in r["trace"]:
        f4 = r["trace"]["four_shards"]
        out.append(row("trace p50, 4 span shards vs 1", f4["p50_ms"], r["trace"]["p50_ms"], "ms",
                       f"identical sources {f4['identical_sources']}"))
    out.append(row("planted duplicate recall vs 0.95", r["dup_recall_all"], 0.95, "", json.dumps(r["dup_recall"])))
    if "ray" in r and "ratio" in r["ray"]:
        ry = r["ray"]
        out.append(row(f"ray / local wall ({ry['rows']:,} rows)", ry["ray_seconds"], ry["local_seconds"], "s",
                       f"identical flags {ry['identical_flags']}; excluded: ray.init {ry['ray_start_seconds']:.1f} s, "
                       f"worker warm-up {ry['ray_warmup_seconds']:.1f} s (cold ratio {ry['ratio_cold']:.2f})"))
    return out


def run(data_dir: Path, quick: bool) -> list[dict]:
    n = 20_000 if quick else int(os.environ.get("ITAUDIT_SCALE_N", "1000000"))
    work = Path(os.environ.get("ITAUDIT_SCALE_WORK", "/tmp/itaudit-scale"))
    r = run_child(n, work, data_dir, min(n, 100_000), 300, four_shards=n <= 250_000)
    return rows_of(r)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--work", default="/tmp/itaudit-scale")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--ray-slice", type=int, default=100_000)
    ap.add_argument("--embed-sample", type=int, default=300, help="rows embedded with MiniLM (the baseline rate)")
    ap.add_argument("--no-four-shards", action="store_true",
                    help="skip rebuilding the span index in 4 shards (at 1M the main index has 4 shards of 250k)")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--ray-only", action="store_true",
                    help="only Ray vs local, on the first --ray-slice rows of an earlier run's database")
    a = ap.parse_args()
    if a.ray_only:
        from itaudit.store import Store

        with Store(Path(a.work) / f"scale_{a.n}.duckdb") as store:
            frame = store.instances("it", "idx, instruction, input, response").head(a.ray_slice)
        print(json.dumps({**ray_vs_local(frame), "loadavg": os.getloadavg()}, default=float))
        return
    if a.child:
        print(json.dumps(pipeline(a.n, Path(a.work), Path(a.data), min(a.ray_slice, a.n), a.embed_sample,
                                  not a.no_four_shards), default=float))
        return
    r = run_child(a.n, Path(a.work), Path(a.data), a.ray_slice, a.embed_sample, not a.no_four_shards)
    Path(a.work, f"result_{a.n}.json").write_text(json.dumps(r, indent=1, default=float))
    for x in rows_of(r):
        print(json.dumps(x, default=float))


if __name__ == "__main__":
    main()
