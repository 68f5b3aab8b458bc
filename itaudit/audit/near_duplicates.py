"""Near-duplicates: embedding range search + MinHash LSH, clustered transitively (union-find).

- Embedding: cosine >= `threshold` (default 0.95) between whole-instance embeddings
  (instruction + input + response, truncated to the model's max length), by FAISS range search
  on an exact inner-product index.
- Lexical: datasketch `MinHashLSH` over word 5-shingles of the normalized whole instance
  (lowercase, punctuation stripped), candidates kept when the exact shingle Jaccard >= `jaccard`.
- Every pair found by either method gets both similarities as evidence; rows connected by pairs
  form a cluster (cluster id = smallest idx). A row is flagged when it is in a cluster; its score
  is the highest similarity (max of cosine and Jaccard) to another row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from datasketch import MinHash, MinHashLSH

from ..index import exact_index
from ..index.fast import budget_note, budget_summary
from ..progress import progress_bar
from ..steps.base import Params, Step
from ..text import shingles as text_shingles
from .base import CheckResult
from .duplicates import _norm_expr


class UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # root = smallest member

    def clusters(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


_PERMS: dict[int, object] = {}


def minhash_of(hashes: np.ndarray, num_perm: int = 128) -> MinHash:
    """A datasketch MinHash of precomputed 32-bit shingle hashes (they are its hash values)."""
    if num_perm not in _PERMS:  # generating the permutations is most of MinHash() cost: share them
        base = MinHash(num_perm=num_perm, hashfunc=int)
        _PERMS[num_perm] = (base.permutations, base.scheme)
    perms, scheme = _PERMS[num_perm]
    m = MinHash(num_perm=num_perm, hashfunc=int, permutations=perms, scheme=scheme)
    if len(hashes):
        m.update_batch(hashes.tolist())
    return m


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def instance_shingles(frame: pl.DataFrame, size: int = 5, max_words: int = 2000) -> list[np.ndarray]:
    """Shingle hashes of each normalized whole instance (instruction + input + response).

    Words are split and hashed by polars in one vectorized pass (codes are consistent within the
    run, which is all MinHash LSH needs); shingles are then formed per row in numpy.
    """
    words = frame.select(
        pl.concat_str([_norm_expr(c) for c in ("instruction", "input", "response")], separator=" ")
        .str.replace_all(r"\s+", " ").str.strip_chars().str.split(" ").list.head(max_words).alias("w"))["w"]
    lens = words.list.len().to_numpy()
    codes = words.explode().hash(seed=5).to_numpy().astype(np.uint64, copy=False)
    ends = np.cumsum(lens)
    out = []
    for i, (e, n) in enumerate(zip(ends.tolist(), lens.tolist(), strict=True)):
        c = codes[e - n:e]
        if n == 1 and words[i][0] == "":  # an empty text
            out.append(np.zeros(0, dtype=np.uint32))
        else:
            out.append(text_shingles(c, size))
    return out


def minhash_pairs(shingles: list[np.ndarray], *, threshold: float = 0.8, num_perm: int = 128,
                  max_per_row: int = 50, show_progress: bool = False) -> tuple[dict[tuple[int, int], float], list[MinHash]]:
    """Pairs (i < j, positions) whose exact shingle Jaccard >= threshold among MinHashLSH candidates.

    At most `max_per_row` partners j > i per row (the most similar): a cluster of m copies then
    yields O(m * max_per_row) pairs, not m^2 / 2, and stays connected for union-find.
    """
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    mhs: list[MinHash] = []
    with progress_bar("minhash", total=len(shingles), unit="rows", enabled=show_progress) as bar:
        for i, h in enumerate(shingles):
            m = minhash_of(h, num_perm)
            mhs.append(m)
            if len(h):
                lsh.insert(i, m, check_duplication=False)
            bar.advance(1)
    out: dict[tuple[int, int], float] = {}
    for i, h in enumerate(shingles):
        if not len(h):
            continue
        found = []
        for j in lsh.query(mhs[i]):
            if j <= i:
                continue
            jac = jaccard(h, shingles[j])
            if jac >= threshold:
                found.append((jac, j))
        if len(found) > max_per_row:
            found = sorted(found, key=lambda t: (-t[0], t[1]))[:max_per_row]
        for jac, j in found:
            out[(i, j)] = jac
    return out, mhs


def embedding_pairs(vecs: np.ndarray, threshold: float, *, max_per_row: int = 50, chunk: int = 2048,
                    show_progress: bool = False) -> dict[tuple[int, int], float]:
    """Pairs (i < j, positions) with cosine >= threshold, by range search on an exact IP index."""
    index = exact_index(vecs)
    out: dict[tuple[int, int], float] = {}
    with progress_bar("range search", total=len(vecs), unit="rows", enabled=show_progress) as bar:
        for s in range(0, len(vecs), chunk):
            lims, d, ids = index.range_search(np.ascontiguousarray(vecs[s:s + chunk]), float(threshold))
            for q in range(len(lims) - 1):
                i = s + q
                a, b = lims[q], lims[q + 1]
                sel = ids[a:b] > i
                js, ds = ids[a:b][sel], d[a:b][sel]
                if len(js) > max_per_row:
                    top = np.argsort(-ds)[:max_per_row]
                    js, ds = js[top], ds[top]
                for j, c in zip(js.tolist(), ds.tolist(), strict=True):
                    out[(i, j)] = c
            bar.advance(min(chunk, len(vecs) - s))
    return out


@dataclass(frozen=True)
class NearDuplicatesParams(Params):
    field: Literal["instruction", "prompt", "response", "all"] = "all"   # what is embedded
    threshold: float = 0.95          # cosine of an embedding pair
    jaccard_threshold: float = 0.8   # exact word-shingle Jaccard of a MinHash pair
    num_perm: int = 128
    shingle: int = 5
    max_words: int = 2000
    max_pairs_per_row: int = 50
    use_embedding: bool = True
    use_minhash: bool = True
    # False: static-embedding candidates re-scored with the sentence model (itaudit.index.fast);
    # True: embed every row with the sentence model and range-search exactly (slow)
    exact_search: bool = False
    # at most this many rows re-scored with the sentence model (the time budget on large data;
    # when it binds the summary estimates the pairs left unfound); 0 = no budget
    max_exact_rows: int = 5000


class NearDuplicates(Step):
    """Near-duplicate clusters from embedding range search and MinHash LSH, with pair evidence."""

    name = "near_duplicates"
    description = "embedding range search + MinHash LSH, clustered transitively"
    Params = NearDuplicatesParams

    def needs(self) -> tuple[str, ...]:
        p = self.params
        return (f"embeddings:{p.field}",) if p.use_embedding and p.exact_search else ()

    def compute(self, ctx) -> CheckResult:
        return _near_duplicates(ctx, **self.params.as_dict())

    def render_text(self, result: CheckResult) -> list[str]:
        s = result.summary
        out = [f"{s['n_clusters']:,} clusters",
               f"{s['n_pairs']:,} pairs ({s['n_pairs_embedding']:,} by embedding, {s['n_pairs_minhash']:,} by MinHash)"]
        if s.get("embedding_budget_hit"):
            out.append(budget_note(s))
        return out


def near_duplicates(ctx, **params) -> CheckResult:
    """Function form of `NearDuplicates` (for scripts)."""
    return NearDuplicates(params).compute(ctx)


def _near_duplicates(ctx, field: str, threshold: float, jaccard_threshold: float, num_perm: int, shingle: int,
                     max_words: int, max_pairs_per_row: int, use_embedding: bool, use_minhash: bool,
                     exact_search: bool = False, max_exact_rows: int = 5000) -> CheckResult:
    frame = ctx.instances()
    n = frame.height
    idx = frame["idx"].to_numpy().astype(np.int64)
    show = ctx.show_progress
    vecs = ctx.vectors(field) if use_embedding and exact_search else None
    fast_stats: dict = {}
    if use_embedding and not exact_search:  # cosine evidence only for the pairs it finds
        from ..embed import field_texts
        from ..index.fast import similar_pairs

        emb = similar_pairs(field_texts(frame, field), threshold, lambda pos: ctx.vectors(field, idx=idx[pos]),
                            max_per_row=max_pairs_per_row, max_exact_rows=max_exact_rows or None, stats=fast_stats)
    else:
        emb = embedding_pairs(vecs, threshold, max_per_row=max_pairs_per_row, show_progress=show) if use_embedding else {}
    shingles = instance_shingles(frame, shingle, max_words)
    mh: dict[tuple[int, int], float] = {}
    sig = None
    if use_minhash:  # staged MinHash (itaudit/audit/minhash.py): the same pairs as `minhash_pairs`
        from .minhash import minhash_pairs as staged_minhash_pairs

        mh, sig = staged_minhash_pairs(frame, threshold=jaccard_threshold, num_perm=num_perm,
                                       max_per_row=max_pairs_per_row, shingles=shingles)
    uf = UnionFind(n)
    best = np.zeros(n)
    rows = []
    for i, j in sorted(set(emb) | set(mh)):
        cos = emb.get((i, j))
        if cos is None and vecs is not None:
            cos = float(vecs[i] @ vecs[j])
        jac = mh.get((i, j))
        if jac is None:
            jac = jaccard(shingles[i], shingles[j])
        est = float(np.count_nonzero(sig[i] == sig[j])) / sig.shape[1] if sig is not None else None
        found = [m for m, d in (("embedding", emb), ("minhash", mh)) if (i, j) in d]
        score = float(np.clip(max(cos if cos is not None else 0.0, jac), 0.0, 1.0))
        uf.union(i, j)
        best[i], best[j] = max(best[i], score), max(best[j], score)
        ev = {"cosine": None if cos is None else round(float(cos), 4), "jaccard": round(float(jac), 4),
              "jaccard_minhash": None if est is None else round(est, 4), "found_by": found, "field": field}
        rows.append((int(idx[i]), int(idx[j]), score, json.dumps(ev)))
    roots = uf.clusters()
    sizes = np.bincount(roots, minlength=n)
    in_cluster = sizes[roots] > 1
    cluster = np.where(in_cluster, idx[roots], -1)
    details: list[dict | None] = [
        {"cluster_size": int(sizes[roots[i]]), "cluster_id": int(idx[roots[i]])} if in_cluster[i] else None
        for i in range(n)
    ]
    pairs = pl.DataFrame(rows, schema={"idx_a": pl.Int64, "idx_b": pl.Int64, "score": pl.Float64,
                                       "evidence": pl.Utf8}, orient="row")
    n_clusters = int(len(np.unique(roots[in_cluster])))
    summary = {
        "n_rows": n,
        "n_pairs": len(rows),
        "n_pairs_embedding": len(emb),
        "n_pairs_minhash": len(mh),
        "n_pairs_both": len(set(emb) & set(mh)),
        "n_clusters": n_clusters,
        "n_rows_in_clusters": int(in_cluster.sum()),
        "n_redundant": int(in_cluster.sum()) - n_clusters,
        "pct_in_clusters": round(100 * in_cluster.sum() / n, 3) if n else 0.0,
        "largest_cluster": int(sizes.max()) if n else 0,
        **budget_summary("near_duplicates", fast_stats),
    }
    params = {"field": field, "threshold": threshold, "jaccard_threshold": jaccard_threshold, "num_perm": num_perm,
              "shingle": shingle, "max_words": max_words, "max_pairs_per_row": max_pairs_per_row,
              "model": ctx.embedder.cache_key if use_embedding else None,
              "use_embedding": use_embedding, "use_minhash": use_minhash, "exact_search": exact_search,
              "max_exact_rows": max_exact_rows}
    return CheckResult("near_duplicates", ctx.dataset, idx, in_cluster, best * in_cluster, summary=summary,
                       params=params, cluster_id=cluster, details=details, pairs=pairs)
