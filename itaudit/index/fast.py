"""The fast path: static-embedding candidates, re-scored exactly with the sentence model.

A whole-dataset MiniLM embedding costs minutes to hours on a small CPU; the audit checks only
need the few pairs above a cosine threshold (near-duplicates at 0.95, conflicting prompts at
0.85) and trace only needs the neighbours of a few queries. So:

1. every text is embedded with the distilled static model (`itaudit.embed.static`, thousands of
   texts/s); identical texts are embedded once;
2. candidate pairs come from an exact inner-product search over the static vectors;
3. candidates are re-scored with the sentence model's exact cosine, in bands of decreasing static
   cosine; only the rows in candidate pairs are embedded with it (through `exact`, normally the
   cached `embed_dataset`). Descending stops once a whole band yields (almost) no pair above the
   threshold: the static and exact cosines are monotone enough that lower bands hold nothing.

`similar_pairs` (threshold pairs, optionally each row's k nearest) serves the audit checks;
`neighbours_for` serves trace. Their recall against exact MiniLM search is measured by
`bench/bench_fast.py` and documented in docs/index_audit.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import faiss
import numpy as np

#: static cosine below which no candidate is considered, whatever the bands say
STATIC_FLOOR = 0.5
BAND = 0.02        # width of a band of static cosine
STOP_RATE = 0.002  # stop descending once a band's hit rate falls below this (and it had >= MIN_BAND pairs)
MIN_BAND = 200
SAMPLE_PER_BAND = 10  # candidates scored per band the row budget did not reach (recall estimate)
CHUNK = 2048

_STATIC: dict[str, object] = {}


def static_embedder(embedder=None):
    """The process-wide `StaticEmbedder` distilled from `embedder` (default MiniLM); cached on disk."""
    from ..embed.static import StaticEmbedder

    key = getattr(embedder, "cache_key", "default")
    if key not in _STATIC:
        _STATIC[key] = StaticEmbedder.from_embedder(embedder)
    return _STATIC[key]


def unique_texts(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(distinct texts in first-seen order, inverse: position of each text in that list)."""
    first: dict[str, int] = {}
    inv = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        inv[i] = first.setdefault(t, len(first))
    return list(first), inv


def _static_candidates(sv: np.ndarray, floor: float, per_row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, static cosine) for a < b among each row's `per_row` nearest with cosine >= floor."""
    index = faiss.IndexFlatIP(sv.shape[1])
    index.add(sv)
    aa, bb, cc = [], [], []
    k = min(per_row + 1, len(sv))
    for s in range(0, len(sv), CHUNK):
        d, ids = index.search(sv[s:s + CHUNK], k)
        rows = np.repeat(np.arange(s, s + len(d)), k)
        ids, d = ids.ravel(), d.ravel()
        ok = (ids >= 0) & (ids != rows) & (d >= floor)
        a, b = np.minimum(rows[ok], ids[ok]), np.maximum(rows[ok], ids[ok])
        aa.append(a)
        bb.append(b)
        cc.append(d[ok])
    if not aa:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    a, b, c = np.concatenate(aa), np.concatenate(bb), np.concatenate(cc)
    key = a * len(sv) + b
    _, first = np.unique(key, return_index=True)
    return a[first], b[first], c[first]


def _prefix_within(ua: np.ndarray, ub: np.ndarray, have, room: int) -> int:
    """Length of the longest prefix of pairs (ua, ub) needing at most `room` rows not in `have`."""
    seen: set[int] = set()
    for i, (x, y) in enumerate(zip(ua.tolist(), ub.tolist(), strict=True)):
        for r in (x, y):
            if r not in have and r not in seen:
                seen.add(r)
                if len(seen) > room:
                    return i
    return len(ua)


def similar_pairs(texts: Sequence[str], threshold: float, exact: Callable[[np.ndarray], np.ndarray], *,
                  k: int | None = None, max_per_row: int = 50, static=None, floor: float = STATIC_FLOOR,
                  max_exact_rows: int | None = None, sample_per_band: int = SAMPLE_PER_BAND,
                  stats: dict | None = None) -> dict[tuple[int, int], float]:
    """Pairs (i < j, positions in `texts`) whose exact cosine is >= `threshold`.

    `exact(positions)` returns L2-normalized sentence-model vectors of those rows (aligned). With
    `k`, only pairs among each row's k nearest (by exact cosine among the candidates) are kept, as
    an exact k-NN search followed by the threshold would. `max_exact_rows` bounds the rows sent
    to `exact` while descending (the time budget of a large dataset): when it binds, `sample_per_band`
    random candidates of every band not reached are scored too, and `stats` gets an estimate of
    the pairs left unfound (`est_missed_pairs`, `est_recall`). `stats` (a dict) also receives
    counts: rows and pairs scored exactly, the static cosine where descending stopped.
    """
    n = len(texts)
    out: dict[tuple[int, int], float] = {}
    st = {"n_texts": n, "n_distinct": 0, "n_candidates": 0, "n_exact_rows": 0, "n_exact_pairs": 0,
          "stopped_at_static": None, "stopped_by_budget": False, "est_missed_pairs": 0.0, "est_recall": None}
    if n < 2:
        if stats is not None:
            stats.update(st)
        return out
    static = static or static_embedder()
    uniq, inv = unique_texts(texts)
    st["n_distinct"] = len(uniq)
    # identical texts: exact cosine 1, no model needed
    order = np.argsort(inv, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(inv[order])) + 1)
    rep = np.empty(len(uniq), dtype=np.int64)  # a representative row of each distinct text
    # copies of one text pair with up to max_per_row others, also with k: an exact k-NN picks an
    # arbitrary k among equal copies (ShareGPT 600: recall 0.77 of its pairs with k, 0.996 with 50)
    for g in groups:
        rep[inv[g[0]]] = g[0]
        if len(g) > 1:
            for x in range(len(g)):
                for y in g[x + 1: x + 1 + max_per_row]:
                    out[(int(g[x]), int(y))] = 1.0
    if len(uniq) >= 2:
        sv = static.fit(uniq).vectors
        per_row = max_per_row if k is None else max(4 * k, 20)
        a, b, c = _static_candidates(sv, floor, per_row)
        st["n_candidates"] = len(a)
        by = np.argsort(-c, kind="stable")
        a, b, c = a[by], b[by], c[by]
        vecs: dict[int, np.ndarray] = {}
        hits_u: list[tuple[int, int, float]] = []

        def score(ua: np.ndarray, ub: np.ndarray) -> np.ndarray:
            need = sorted({int(x) for x in np.concatenate([ua, ub]) if int(x) not in vecs})
            if need:
                got = np.asarray(exact(rep[np.asarray(need, dtype=np.int64)]), dtype=np.float32)
                for u, v in zip(need, got, strict=True):
                    vecs[u] = v
            cos = np.einsum("ij,ij->i", np.stack([vecs[int(x)] for x in ua]), np.stack([vecs[int(x)] for x in ub]))
            ok = cos >= threshold
            hits_u.extend((int(x), int(y), float(z)) for x, y, z in zip(ua[ok], ub[ok], cos[ok], strict=True))
            st["n_exact_pairs"] += len(ua)
            return ok

        top = 1.0
        start = 0
        while start < len(c):
            lo = top - BAND
            end = start + int(np.searchsorted(-c[start:], -lo, side="right"))
            if end == start:
                top = lo
                if top < floor:
                    break
                continue
            ua, ub = a[start:end], b[start:end]
            if max_exact_rows is not None:
                fit = _prefix_within(ua, ub, vecs.keys(), max_exact_rows - len(vecs))
                if fit < len(ua):  # the band's best pairs whose new rows still fit, then stop
                    if fit:
                        score(ua[:fit], ub[:fit])
                    start += fit
                    st["stopped_by_budget"], st["stopped_at_static"] = True, round(float(c[start - 1] if fit else top), 3)
                    break
            ok = score(ua, ub)
            start, top = end, lo
            if len(ua) >= MIN_BAND and ok.mean() < STOP_RATE:
                st["stopped_at_static"] = round(float(lo), 3)
                break
        rate: dict[int, float] = {}
        band = np.floor((top - c[start:]) / BAND).astype(np.int64) if start < len(c) else np.zeros(0, np.int64)
        if st["stopped_by_budget"] and start < len(c):
            # what the budget left: a random sample of every band below is scored (its hit rate
            # extrapolates to the band's unscored candidates, after the free pass below)
            rng = np.random.default_rng(0)
            for bi in np.unique(band):
                members = np.flatnonzero(band == bi) + start
                pick = np.sort(rng.choice(members, min(sample_per_band, len(members)), replace=False))
                rate[int(bi)] = float(score(a[pick], b[pick]).mean())
        # below the stop: candidates whose rows both got exact vectors anyway cost nothing to score
        # (this includes the sampled ones: `hits_u` is deduplicated below)
        if start < len(c) and vecs:
            have = np.zeros(len(uniq), dtype=bool)
            have[list(vecs)] = True
            scored = have[a[start:]] & have[b[start:]]
            rest = np.flatnonzero(scored) + start
            if len(rest):
                score(a[rest], b[rest])  # every row already has its vector: nothing is embedded
            if rate:
                left = np.bincount(band[~scored], minlength=int(band.max()) + 1)
                st["est_missed_pairs"] = round(float(sum(r * left[bi] for bi, r in rate.items())), 1)
        st["n_exact_rows"] = len(vecs)
        hits_u = list({(x, y): (x, y, z) for x, y, z in hits_u}.values())
        if st["stopped_by_budget"]:
            found = len(hits_u)
            st["est_recall"] = round(found / (found + st["est_missed_pairs"]), 4) if found else None
        if k is not None:  # keep each row's k nearest among its exact hits
            per: dict[int, list[tuple[float, int]]] = {}
            for x, y, z in hits_u:
                per.setdefault(x, []).append((z, y))
                per.setdefault(y, []).append((z, x))
            keep = set()
            for x, lst in per.items():
                for _, y in sorted(lst, reverse=True)[:k]:
                    keep.add((min(x, y), max(x, y)))
            hits_u = [h for h in hits_u if (h[0], h[1]) in keep]
        # expand distinct-text pairs back to rows
        members = {inv[g[0]]: g for g in groups}
        for x, y, z in hits_u:
            for i in members[x][:max_per_row]:
                for j in members[y][:max_per_row]:
                    p = (int(i), int(j)) if i < j else (int(j), int(i))
                    out[p] = max(out.get(p, -1.0), z)
    if stats is not None:
        stats.update(st)
    return out


def neighbours_for(store, dataset: str, texts: Sequence[str], k: int = 10, *, field: str = "all",
                   embedder=None, candidates: int | None = None, query_vectors: np.ndarray | None = None,
                   rescore: bool = True, show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(scores (q, k) exact cosine, idx (q, k) instances.idx): each query text's k nearest rows.

    Needs no whole-dataset sentence embedding: the dataset's static vectors (seconds to compute;
    kept per process until the dataset changes) give `candidates` rows per query (default 2k);
    only those rows are embedded with the sentence model, through the DuckDB cache
    (`embed_dataset`: later calls reuse them), and ranked by exact cosine. `query_vectors`: the
    queries' sentence vectors when already at hand. `rescore=False`: no sentence model at all,
    the k nearest by static cosine (a different scale: centred static vectors score lower).
    Missing slots: idx -1, score -inf.
    """
    from ..embed import Embedder, embed_dataset, field_texts

    embedder = embedder or Embedder()
    texts = list(texts)
    q = len(texts)
    scores = np.full((q, k), -np.inf, dtype=np.float32)
    ids = np.full((q, k), -1, dtype=np.int64)
    if q == 0 or k <= 0:
        return scores, ids
    static = static_embedder(embedder)
    info = store.require_dataset(dataset)
    key = (str(getattr(store, "path", id(store))), dataset, field, static.cache_key)
    cached = _DATASET_STATIC.get(key)
    if cached is None or cached[0] != (info["fingerprint"], info["n_rows"]):
        frame = store.instances(dataset, "idx, instruction, input, response")
        uniq, inv = unique_texts(field_texts(frame, field))
        corpus = static.fit(uniq)
        index = faiss.IndexFlatIP(static.dim)
        index.add(corpus.vectors)
        order = np.argsort(inv, kind="stable")
        bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
        cached = ((info["fingerprint"], info["n_rows"]), index, corpus, order, bounds,
                  frame["idx"].to_numpy().astype(np.int64))
        _DATASET_STATIC.clear()  # one dataset's static index per process
        _DATASET_STATIC[key] = cached
    _, index, corpus, order, bounds, row_idx = cached
    m = min(int(candidates or 2 * k) if rescore else k, index.ntotal)
    sd, cand = index.search(corpus.encode(texts), m)
    if not rescore:
        for qi in range(q):
            rows = [(float(s_), int(row_idx[order[j]])) for s_, u in zip(sd[qi], cand[qi], strict=True) if u >= 0
                    for j in range(bounds[u], bounds[u + 1])]
            for r, (sim, i) in enumerate(rows[:k]):
                scores[qi, r], ids[qi, r] = sim, i
        return scores, ids
    distinct = np.unique(cand[cand >= 0])
    rep = {int(u): int(order[bounds[u]]) for u in distinct}  # a row holding each distinct text
    want = np.asarray(sorted(rep.values()), dtype=np.int64)
    pos = {int(r): p for p, r in enumerate(want)}
    vec = embed_dataset(store, dataset, field, embedder, show_progress=show_progress, idx=row_idx[want])
    qv = np.asarray(query_vectors, dtype=np.float32) if query_vectors is not None else embedder.encode(texts)
    for qi in range(q):
        us = [int(u) for u in cand[qi] if u >= 0]
        sims = vec[[pos[rep[u]] for u in us]] @ qv[qi]
        rows: list[tuple[float, int]] = []
        for u, sim in zip(us, sims.tolist(), strict=True):
            rows += [(sim, int(row_idx[order[j]])) for j in range(bounds[u], bounds[u + 1])]
        rows.sort(key=lambda t: (-t[0], t[1]))
        for r, (sim, i) in enumerate(rows[:k]):
            scores[qi, r], ids[qi, r] = sim, i
    return scores, ids


_DATASET_STATIC: dict[tuple, tuple] = {}


def budget_note(s: dict) -> str:
    """The line a check prints when the re-scoring budget bound (`similar_pairs` stats in `s`)."""
    return (f"re-scoring budget reached ({s['n_exact_rows']:,} rows embedded, stopped at static cosine "
            f"{s['stopped_at_static']}): about {s['est_missed_pairs']:,.0f} more embedding pairs estimated below "
            f"(recall ~{s['est_recall']}); raise -s {s['check']}.max_exact_rows for more")


def budget_summary(check: str, st: dict) -> dict:
    """Summary keys of the fast path's re-scoring (empty for the exact path)."""
    if not st:
        return {}
    return {"check": check, "n_exact_rows": st["n_exact_rows"], "stopped_at_static": st["stopped_at_static"],
            "embedding_budget_hit": st["stopped_by_budget"], "est_missed_pairs": st["est_missed_pairs"],
            "est_recall": st["est_recall"]}


__all__ = ["budget_note", "budget_summary", "neighbours_for", "similar_pairs", "static_embedder", "unique_texts"]
