"""Benchmark contamination: word 13-gram overlap and embedding near-matches against eval sets.

Both directions are reported: rows of the IT dataset that contain (part of) an evaluation item,
and evaluation items that are present in the IT dataset. Evidence (the overlapping text, the
eval item, the cosine) goes to `check_pairs` with `other_dataset` set to the eval set.

Matching:
- Text is normalized (lowercase, words = runs of letters/digits), fields are matched separately.
- An eval item matches an IT row when they share a word n-gram (n = 13, as in GPT-3's
  decontamination). Eval texts with fewer than 13 words (but at least `min_words`) are matched
  on their whole word sequence. n-grams that occur in more than `max_eval_df` eval items are
  templates (e.g. MMLU's "which of the following ...") and are ignored.
- coverage = share of the eval item's n-grams found in the IT row.
- Embedding near-match: cosine of all-MiniLM embeddings of the prompt text (instruction + input).
- Row score = max(coverage, cosine_score) where cosine_score rises linearly from 0 at cosine
  2t - 1 through 0.5 at the threshold t = `embed_threshold` to 1 at cosine 1; flag when
  coverage >= `min_coverage` or cosine >= t.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from ..errors import ItauditError
from ..store import Store
from .base import CheckResult, save_result

_WORD_RE = r"[^\W_]+"   # runs of letters/digits (Unicode), as polars/Rust regex
_SEED = 13


def words(text: str | None) -> list[str]:
    """The normalized words of `text` (lowercase letter/digit runs), as the n-gram scan sees them."""
    if not text:
        return []
    return pl.Series([text]).str.to_lowercase().str.extract_all(_WORD_RE).to_list()[0] or []


@dataclass
class _Segments:
    """Many texts tokenized at once: word codes concatenated, with each text's start and length."""

    codes: np.ndarray      # uint64 hash per word
    start: np.ndarray      # int64 per text
    length: np.ndarray     # int64 per text
    texts: list[str | None]

    @classmethod
    def of(cls, texts: list[str | None], chunk: int = 20_000) -> _Segments:
        codes, lengths = [], []
        for c0 in range(0, len(texts), chunk):   # chunks bound the memory of the word lists
            lists = pl.Series(texts[c0:c0 + chunk], dtype=pl.Utf8).fill_null("").str.to_lowercase().str.extract_all(_WORD_RE)
            lengths.append(lists.list.len().fill_null(0).to_numpy().astype(np.int64))
            codes.append(lists.explode().drop_nulls().hash(seed=_SEED).to_numpy().astype(np.uint64) | np.uint64(1))
        length = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        start = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64) if len(length) else length
        return cls(np.concatenate(codes) if codes else np.zeros(0, np.uint64), start, length, texts)

    def words(self, seg: int, a: int, b: int) -> list[str]:
        return words(self.texts[seg])[a:b]

    def windows(self, k: int, segs: np.ndarray | None = None, max_words: int = 2_000_000):
        """Yield (hash, segment, offset) arrays of every k-word window lying inside one text (of
        `segs`), in pieces of about `max_words` words (bounded memory on big datasets)."""
        n_seg = len(self.length)
        mask = None
        if segs is not None:
            mask = np.zeros(n_seg, dtype=bool)
            mask[segs] = True
        a = 0
        ends = self.start + self.length
        while a < n_seg:
            b = int(np.searchsorted(ends, self.start[a] + max_words, side="right"))
            b = min(max(b, a + 1), n_seg)
            w0, w1 = int(self.start[a]), int(ends[b - 1])
            if w1 - w0 >= k:
                h = _ngram_hashes(self.codes[w0:w1], k)
                lens = self.length[a:b]
                seg_of = np.repeat(np.arange(a, b), lens)[: len(h)]
                off = np.arange(len(h)) + w0 - self.start[seg_of]
                ok = off + k <= self.length[seg_of]
                if mask is not None:
                    ok &= mask[seg_of]
                yield h[ok], seg_of[ok], off[ok]
            a = b


def _ngram_hashes(codes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of n codes (order-sensitive, uint64 wrap-around), O(len) memory."""
    if len(codes) < n:
        return np.zeros(0, dtype=np.uint64)
    m = len(codes) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            mult = np.uint64((0x9E3779B97F4A7C15 * (j + 1)) & 0xFFFFFFFFFFFFFFFF) | np.uint64(1)
            h += codes[j: j + m] * mult
        h ^= h >> np.uint64(29)
    return h


def _texts(df: pl.DataFrame, fields: Sequence[str]) -> list[list[str]]:
    cols = [df[f].to_list() for f in fields]
    return [[c[i] or "" for c in cols] for i in range(df.height)]


def _embed(store: Store, dataset: str, show_progress: bool, cache: dict) -> np.ndarray:
    """Cached, L2-normalized all-MiniLM embeddings of instruction + input, aligned with idx."""
    from ..embed import Embedder, embed_dataset

    if cache.get("embedder") is None:
        cache["embedder"] = Embedder()
    return embed_dataset(store, dataset, "prompt", embedder=cache["embedder"], show_progress=show_progress)


def cosine_score(cos: np.ndarray, threshold: float) -> np.ndarray:
    """0 below 2t - 1, 0.5 at the flag threshold t, 1 at cosine 1 (linear in between)."""
    lo = 2 * threshold - 1
    return np.clip((np.asarray(cos, dtype=float) - lo) / max(1 - lo, 1e-9), 0, 1)


def resolve_eval_sets(store: Store, against: Sequence[str] | str, *, show_progress: bool = False) -> list[str]:
    """Eval set names; entries may also be files (`path` or `name=path`), ingested on first use.

    A file is ingested with the format auto-detected and invalid rows skipped (MMLU has stray
    header rows), under `name` or `<folder>_<stem>` (`gsm8k_test`; `mmlu` for mmlu/mmlu.jsonl); re-ingesting an
    unchanged file is a no-op.
    """
    from pathlib import Path

    from ..ingest import ingest

    items = [a.strip() for a in against.split(",")] if isinstance(against, str) else [str(a).strip() for a in against]
    names = []
    for item in filter(None, items):
        name, sep, path = item.partition("=")
        if not sep:
            if store.dataset_info(item) is not None or not Path(item).exists():
                names.append(item)
                continue
            path = item
            p = Path(item)
            folder, stem = (re.sub(r"[^a-z0-9_]+", "_", x.lower()).strip("_") for x in (p.resolve().parent.name, p.stem))
            name = stem if stem.startswith(folder) else f"{folder}_{stem}"   # mmlu/mmlu -> mmlu
        ingest(store, path, name.strip(), skip_invalid=True, show_progress=show_progress)
        names.append(name.strip())
    return names


def _contamination(
    store: Store,
    dataset: str,
    *,
    against: Sequence[str] | str = (),
    n: int = 13,
    min_words: int = 8,
    max_eval_df: int = 10,
    min_coverage: float = 0.5,
    embeddings: bool = True,
    embed_threshold: float = 0.92,
    it_fields: Sequence[str] = ("instruction", "input", "response"),
    eval_fields: Sequence[str] = ("instruction", "input", "response"),
    max_pairs_per_row: int = 5,
    show_progress: bool = False,
    embedder: object | None = None,
) -> tuple[CheckResult, list[CheckResult]]:
    """(result on `dataset`, one result per eval set flagging its items found in `dataset`)."""
    against = resolve_eval_sets(store, against, show_progress=show_progress)
    if not against:
        raise ItauditError("contamination needs eval datasets: against=['mmlu', 'gsm8k', ...]")
    store.require_dataset(dataset)
    for ev in against:
        store.require_dataset(ev)
        if ev == dataset:
            raise ItauditError(f"contamination: {ev!r} is the dataset being checked")

    it = store.query(f"SELECT idx, {', '.join(sorted(set(it_fields) | {'instruction', 'input'}))} "
                     "FROM instances WHERE dataset = ? ORDER BY idx", [dataset])
    n_it = it.height
    it_idx = it["idx"].to_numpy().astype(np.int64)
    nf = len(it_fields)
    it_seg = _Segments.of([v for row in _texts(it, it_fields) for v in row])   # segment = i * nf + field
    best_cov = np.zeros(n_it)
    best_cos = np.zeros(n_it)
    pair_rows: list[dict] = []
    per_eval: dict[str, dict] = {}
    reverse: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, list[dict | None]]] = {}
    it_prompt_vecs: np.ndarray | None = None
    emb_cache: dict = {"embedder": embedder}

    for ev in against:
        evdf = store.query(f"SELECT idx, {', '.join(sorted(set(eval_fields) | {'instruction', 'input'}))} "
                           "FROM instances WHERE dataset = ? ORDER BY idx", [ev])
        ev_idx = evdf["idx"].to_numpy().astype(np.int64)
        ne = len(eval_fields)
        ev_seg = _Segments.of([v for row in _texts(evdf, eval_fields) for v in row])
        # --- n-gram table of the eval set: sorted (hash, eval row); texts shorter than n (but at
        # least min_words) contribute their whole word sequence as one gram of their length
        glen = np.minimum(ev_seg.length, n)
        glen[ev_seg.length < min_words] = 0
        ev_total = np.zeros(len(ev_idx), dtype=np.int64)   # distinct n-grams per eval item
        tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for k in sorted(set(glen[glen > 0].tolist())):
            parts = [np.stack([h, (seg // ne).astype(np.uint64)], axis=1)
                     for h, seg, _ in ev_seg.windows(k, np.nonzero(glen == k)[0])]
            if not parts:
                continue
            hj = np.unique(np.concatenate(parts), axis=0)
            np.add.at(ev_total, hj[:, 1].astype(np.int64), 1)
            uh, inv, cnt = np.unique(hj[:, 0], return_inverse=True, return_counts=True)
            keep = cnt[inv] <= max_eval_df                      # drop templates shared by many items
            tables[k] = (hj[keep, 0], hj[keep, 1].astype(np.int64))   # sorted by hash

        # --- scan the IT texts: every window of each gram length, looked up by binary search
        hits: dict[tuple[int, int], dict] = {}
        for k, (keys, rows_j) in tables.items():
            if not len(keys):
                continue
            for h, seg, off in it_seg.windows(k):
                lo = np.searchsorted(keys, h, side="left")
                hi = np.searchsorted(keys, h, side="right")
                found = np.nonzero(hi > lo)[0]
                for w in found.tolist():
                    sg, p, hv = int(seg[w]), int(off[w]), int(h[w])
                    i, f_i = divmod(sg, nf)
                    for j in rows_j[lo[w]:hi[w]].tolist():
                        e = hits.setdefault((i, j), {"hashes": set(), "spans": [], "field": it_fields[f_i]})
                        e["hashes"].add(hv)
                        e["spans"].append((f_i, p, p + k))
        ev_hit = np.zeros(len(ev_idx))
        ev_detail: dict[int, dict] = {}
        for (i, j), e in hits.items():
            cov = min(1.0, len(e["hashes"]) / max(1, ev_total[j]))
            # the longest contiguous matched span in the IT text, as evidence
            spans = sorted(e["spans"])
            best, cur = None, None
            for f_i, s, t_end in spans:
                if cur and cur[0] == f_i and s <= cur[2]:
                    cur = (f_i, cur[1], max(cur[2], t_end))
                else:
                    cur = (f_i, s, t_end)
                if best is None or cur[2] - cur[1] > best[2] - best[1]:
                    best = cur
            overlap = " ".join(it_seg.words(i * nf + best[0], best[1], best[2]))
            best_cov[i] = max(best_cov[i], cov)
            ev_hit[j] = max(ev_hit[j], cov)
            pair_rows.append({
                "idx_a": int(it_idx[i]), "idx_b": int(ev_idx[j]), "other_dataset": ev, "score": cov,
                "evidence": {"via": "ngram", "n": n, "coverage": round(cov, 4), "it_field": e["field"],
                             "overlap": overlap[:2000], "overlap_words": best[2] - best[1],
                             "eval_text": " ".join(evdf["instruction"][j].split())[:1000]},
            })
            if cov >= ev_detail.get(j, {}).get("coverage", -1):
                ev_detail[j] = {"it_idx": int(it_idx[i]), "coverage": round(cov, 4), "overlap": overlap[:500]}

        # --- embedding near-matches on the prompt text
        ev_cos = np.zeros(len(ev_idx))
        n_embed_pairs = 0
        if embeddings and len(ev_idx) and n_it:
            import faiss

            if it_prompt_vecs is None:
                it_prompt_vecs = _embed(store, dataset, show_progress, emb_cache)
            ev_vecs = _embed(store, ev, show_progress, emb_cache)
            faiss.omp_set_num_threads(2)
            index = faiss.IndexFlatIP(ev_vecs.shape[1])
            index.add(ev_vecs)
            sims, nn = index.search(it_prompt_vecs, 1)
            sims, nn = sims[:, 0], nn[:, 0]
            best_cos = np.maximum(best_cos, sims)
            np.maximum.at(ev_cos, nn, sims)
            for i in np.nonzero(sims >= embed_threshold)[0].tolist():
                j = int(nn[i])
                n_embed_pairs += 1
                pair_rows.append({
                    "idx_a": int(it_idx[i]), "idx_b": int(ev_idx[j]), "other_dataset": ev,
                    "score": float(sims[i]),
                    "evidence": {"via": "embedding", "cosine": round(float(sims[i]), 4),
                                 "it_text": it["instruction"][i][:1000],
                                 "eval_text": evdf["instruction"][j][:1000]},
                })
                if j not in ev_detail:
                    ev_detail[j] = {"it_idx": int(it_idx[i]), "cosine": round(float(sims[i]), 4)}
        ev_flag = (ev_hit >= min_coverage) | (ev_cos >= embed_threshold)
        ev_score = np.maximum(ev_hit, cosine_score(ev_cos, embed_threshold))
        per_eval[ev] = {
            "n_eval": int(len(ev_idx)),
            "eval_items_in_dataset": int(ev_flag.sum()),
            "eval_share_in_dataset": float(ev_flag.mean()) if len(ev_idx) else 0.0,
            "eval_items_any_ngram": int((ev_hit > 0).sum()),
            "ngram_pairs": len(hits),
            "embedding_pairs": n_embed_pairs,
        }
        reverse[ev] = (ev_idx, ev_flag, ev_score,
                       [ev_detail.get(j) if ev_flag[j] else None for j in range(len(ev_idx))])

    flag = (best_cov >= min_coverage) | (best_cos >= embed_threshold)
    score = np.clip(np.maximum(best_cov, cosine_score(best_cos, embed_threshold)), 0, 1)
    pairs = _pairs_frame(pair_rows, flag, it_idx, max_pairs_per_row)
    flagged_pairs = {}
    if pairs.height:
        for ev_name, a in pairs.select("other_dataset", "idx_a").iter_rows():
            flagged_pairs.setdefault(int(a), set()).add(ev_name)
    details = [{"eval_sets": sorted(flagged_pairs.get(int(a), ()))} if f else None for a, f in zip(it_idx, flag, strict=False)]
    params = {"against": list(against), "n": n, "min_words": min_words, "max_eval_df": max_eval_df,
              "min_coverage": min_coverage, "embeddings": embeddings, "embed_threshold": embed_threshold,
              "it_fields": list(it_fields), "eval_fields": list(eval_fields)}
    summary = {"n": n_it, "n_flagged": int(flag.sum()), "share_flagged": float(flag.mean()) if n_it else 0.0,
               "n_any_ngram": int((best_cov > 0).sum()), "by_eval_set": per_eval}
    result = CheckResult("contamination", dataset, it_idx, flag, score, summary=summary, params=params,
                         details=details, pairs=pairs)
    back_results = []
    for ev, (ev_idx, ev_flag, ev_score, ev_details) in reverse.items():
        back = pairs.filter(pl.col("other_dataset") == ev).select(
            pl.col("idx_b").alias("idx_a"), pl.col("idx_a").alias("idx_b"),
            pl.lit(dataset).alias("other_dataset"), "score", "evidence")
        back_results.append(CheckResult(
            "contamination", ev, ev_idx, ev_flag, np.clip(ev_score, 0, 1),
            summary={"n": int(len(ev_idx)), "n_flagged": int(ev_flag.sum()), "direction": "eval items found in",
                     "found_in": dataset, **per_eval[ev]},
            params={**params, "against": [dataset], "reverse_of": dataset}, details=ev_details, pairs=back))
    return result, back_results


def contamination_check(store: Store, dataset: str, *, against: Sequence[str] | str = (),
                        mark_eval: bool = True, **params) -> CheckResult:
    """Contamination of `dataset` by the eval datasets `against` (names in the same store).

    With `mark_eval`, also saves a `contamination` result on each eval dataset flagging its
    items found in `dataset` (the other direction). Keyword params: see `_contamination`.
    """
    result, back = _contamination(store, dataset, against=against, **params)
    if mark_eval:
        for b in back:
            save_result(store, b)
    return result


def contamination(ctx, against: Sequence[str] | str = (), **params) -> list[CheckResult]:
    """Runner entry point: the result on the dataset, then one per eval set (other direction)."""
    if not against:
        raise ItauditError("check contamination needs eval sets ingested as datasets: "
                           "itaudit audit NAME --checks contamination --against mmlu,gsm8k")
    params.setdefault("show_progress", ctx.show_progress)
    params.setdefault("embedder", ctx.embedder if params.get("embeddings", True) else None)
    result, back = _contamination(ctx.store, ctx.dataset, against=against, **params)
    return [result, *back]


def _pairs_frame(rows: list[dict], flag: np.ndarray, it_idx: np.ndarray, per_row: int) -> pl.DataFrame:
    """Evidence pairs of flagged rows, the best `per_row` per IT row."""
    schema = {"idx_a": pl.Int64, "idx_b": pl.Int64, "other_dataset": pl.Utf8, "score": pl.Float64, "evidence": pl.Utf8}
    flagged = set(it_idx[flag].tolist())
    keep = [r for r in rows if r["idx_a"] in flagged]
    if not keep:
        return pl.DataFrame(schema=schema)
    df = pl.DataFrame([{**r, "evidence": json.dumps(r["evidence"], ensure_ascii=False)} for r in keep], schema=schema)
    return (df.sort(["idx_a", "score"], descending=[False, True])
              .unique(["idx_a", "other_dataset", "idx_b"], keep="first", maintain_order=True)
              .group_by("idx_a", maintain_order=True).head(per_row))
