"""The tracing pipeline: responses -> candidate spans -> ranked source instances (pure).

    tracer = Tracer(store, "alpaca", neighbours=True)
    traces = tracer.trace([TraceItem("q1", "Who won ...?", "Hooptown U.S.A. won ...")])
    # storing is separate: itaudit.trace.storage.save_run (or Tracer.run = trace + save)

Per response: words and word ids, their a-priori rarity (wordfreq) and base-model surprisal (when
token scores are given); the OLMoTrace-style maximal verbatim matches of the whole response
against the dataset (exact-span index, once); near copies of its rare words absent from the data;
candidate spans (shift categories when given, else lexical); FAISS neighbours of the prompt and of
the response; then `attribute` per span. Attribution time (model forward passes excluded) is kept
per response.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import progress_bar
from ..spans.index import SpanIndex, default_index_dir, ensure_span_index
from ..spans.tokenize import Word, words, words_with_offsets
from ..store import Store
from .attribute import DEFAULT_THRESHOLD, ResponseWords, SpanTrace, attribute
from .candidates import find_candidates, is_content, word_categories_from_tokens
from .nearcopy import NearCopyIndex
from .prior import word_rarity


@dataclass
class TraceItem:
    prompt_id: str
    instruction: str
    response: str
    reference: str | None = None
    token_spans: list[tuple[int, int, str]] | None = None   # (char start, char end, category) per token
    token_bits: list[tuple[int, int, float]] | None = None  # (char start, char end, base surprisal in bits)


@dataclass
class ResponseTrace:
    item: TraceItem
    n_words: int
    spans: list[SpanTrace]
    neighbours: list[tuple[int, float]]
    seconds: float

    @property
    def n_traced(self) -> int:
        return sum(s.traced for s in self.spans)


@dataclass
class TraceConfig:
    top_k: int = 5                 # sources kept per span
    max_occurrences: int = 200     # a match occurring more often is too common to attribute
    neighbours_k: int = 10         # conceptual neighbours of prompt and response (listing only: the
                                   # similarity of every lexical source is computed exactly anyway)
    max_words: int = 8             # longest candidate span
    min_candidate_score: float = 0.0
    threshold: float = DEFAULT_THRESHOLD   # likely source: span evidence (prior x specificity) >= this
    near_copy: bool = True         # near-copy evidence (edit distance over rare dataset words)
    extra: dict[str, Any] = field(default_factory=dict)


class Neighbours:
    """Conceptual similarity via the dataset's FAISS index over whole instances (field 'all')."""

    FIELD = "all"

    def __init__(self, store: Store, dataset: str, index_dir: str | Path | None = None, show_progress: bool = False):
        from ..index import load_index

        self.store, self.dataset, self.show_progress = store, dataset, show_progress
        idir = Path(index_dir or default_index_dir())
        try:
            self.index = load_index(idir, dataset, self.FIELD, store=store)
            self.embedder = self.index.embedder()
        except Exception:  # no saved index: static candidates re-scored exactly, filled lazily (fast)
            from ..embed import Embedder

            self.index, self.embedder = None, Embedder()

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode(texts)

    def search(self, vecs: np.ndarray, k: int, texts: list[str] | None = None) -> list[dict[int, float]]:
        if self.index is None:
            from ..index.fast import neighbours_for

            scores, idx = neighbours_for(self.store, self.dataset, texts or [], k, field=self.FIELD,
                                         embedder=self.embedder, query_vectors=vecs,
                                         show_progress=self.show_progress)
        else:
            scores, idx = self.index.search(vecs, k)
        return [{int(i): float(s) for s, i in zip(sr, ir, strict=True) if i >= 0} for sr, ir in zip(scores, idx, strict=True)]

    def similarities(self, queries: np.ndarray, idx: list[int]) -> dict[int, float]:
        """max cosine over `queries` rows for instances `idx` (vectors from the embedding cache)."""
        if not idx:
            return {}
        from ..embed import embed_dataset

        vecs = embed_dataset(self.store, self.dataset, self.FIELD, self.embedder, show_progress=False, idx=idx)
        sims = (vecs @ queries.T).max(axis=1)
        return {int(i): float(s) for i, s in zip(idx, sims, strict=True)}


class Tracer:
    def __init__(self, store: Store, dataset: str, *, index: SpanIndex | None = None,
                 index_dir: str | Path | None = None, neighbours: Neighbours | bool = False,
                 config: TraceConfig | None = None, show_progress: bool = False):
        self.store, self.dataset = store, dataset
        self.config = config or TraceConfig()
        self.show_progress = show_progress
        if index is None:
            index, _ = ensure_span_index(store, dataset, index_dir, show_progress=show_progress)
        self.index = index
        if neighbours is True:
            neighbours = Neighbours(store, dataset, index_dir, show_progress=show_progress)
        self.neighbours: Neighbours | None = neighbours or None
        self._near: NearCopyIndex | None = None

    @property
    def near_index(self) -> NearCopyIndex:
        """Character-trigram index over the dataset's rare words (built on first use)."""
        if self._near is None:
            self._near = NearCopyIndex(self.index)
        return self._near

    def response_words(self, item: TraceItem, ws: list[Word]) -> ResponseWords:
        """Per-word ids, content flags, a-priori rarity, base surprisal and near copies of a response."""
        ids = self.index.encode([w.text for w in ws])
        echo = set(words(item.instruction))
        content = [is_content(w.text) and w.text not in echo for w in ws]
        bits = word_bits(ws, item.token_bits) if item.token_bits is not None else None
        rw = ResponseWords(ids, [w.text for w in ws], content, [word_rarity(w.text) for w in ws], bits)
        if self.config.near_copy:
            for k, w in enumerate(ws):
                if content[k] and ids[k] < 0:
                    hits = self.near_index.query(w.text)
                    if hits:
                        rw.near[k] = hits
        return rw

    # -- one response -------------------------------------------------------------------------
    def trace_one(self, item: TraceItem, query_vecs: np.ndarray | None = None,
                  found: list[dict[int, float]] | None = None) -> ResponseTrace:
        """Trace one response. `query_vecs`: (2, dim) prompt and response embeddings, if any;
        `found`: their neighbours when already searched (`trace` searches all responses at once)."""
        cfg = self.config
        t0 = time.perf_counter()
        ws = words_with_offsets(item.response)
        rw = self.response_words(item, ws)
        ids = rw.ids
        cats = word_categories_from_tokens(ws, item.token_spans) if item.token_spans is not None else None
        cands = [c for c in find_candidates(item.response, cats, item.reference, cfg.max_words, words_=ws,
                                            prompt=item.instruction)
                 if c.score >= cfg.min_candidate_score]
        matches = self.index.maximal_matches(ids, min_len=1, max_occurrences=cfg.max_occurrences,
                                               skip_common=True) if cands else []
        neigh: dict[int, float] = {}
        if self.neighbours is not None and query_vecs is not None:
            if found is None:
                found = self.neighbours.search(query_vecs, cfg.neighbours_k, [item.instruction, item.response])
            for d in found:
                for i, s in d.items():
                    neigh[i] = max(neigh.get(i, -1.0), s)
        near_occ: dict[int, list[int]] = {}
        for hits in rw.near.values():
            for nc in hits:
                if nc.word_id not in near_occ:
                    near_occ[nc.word_id] = self.index.instances_containing([nc.word_id], limit=cfg.max_occurrences)
        traces = []
        for c in cands:
            sim = dict(neigh)
            if self.neighbours is not None and query_vecs is not None:
                # exact similarity for lexical candidates outside the neighbour list
                extra = {o.idx for m in matches if m.start < c.word_end and m.end > c.word_start
                         and m.count <= cfg.max_occurrences for o in m.occurrences}
                extra |= {d for k in range(c.word_start, c.word_end) for nc in rw.near.get(k, ())
                          for d in near_occ[nc.word_id]}
                extra -= set(sim)
                if extra:
                    sim.update(self.neighbours.similarities(query_vecs, sorted(extra)))
            traces.append(attribute(self.index, rw, matches, c, sim, top_k=cfg.top_k,
                                    max_occurrences=cfg.max_occurrences, threshold=cfg.threshold,
                                    near_occurrences=near_occ))
        top_neigh = sorted(neigh.items(), key=lambda x: (-x[1], x[0]))[: cfg.neighbours_k]
        return ResponseTrace(item, len(ws), traces, top_neigh, time.perf_counter() - t0)

    def trace(self, items: list[TraceItem]) -> list[ResponseTrace]:
        """Trace responses (pure: reads the indexes, writes nothing)."""
        vecs, found = None, None
        if self.neighbours is not None and items:
            texts = [it.instruction for it in items] + [it.response for it in items]
            vecs = self.neighbours.encode(texts)
            # every query at once: the candidate rows are embedded in one length-sorted pass
            found = self.neighbours.search(vecs, self.config.neighbours_k, texts)
        out = []
        with progress_bar("trace", total=len(items), unit="responses", enabled=self.show_progress) as bar:
            for k, it in enumerate(items):
                q = f = None
                if vecs is not None and found is not None:
                    q, f = np.stack([vecs[k], vecs[len(items) + k]]), [found[k], found[len(items) + k]]
                out.append(self.trace_one(it, q, f))
                bar.advance()
        return out

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self.config).items() if k != "extra"}

    # -- trace and store ------------------------------------------------------------------------
    def run(self, items: list[TraceItem], *, mode: str, tuned_model: str | None = None, base_model: str | None = None,
            adapter: str | None = None, source_file: str | None = None, params: dict[str, Any] | None = None,
            run_id: str | None = None, role: str | None = None) -> tuple[str, list[ResponseTrace]]:
        """Trace and store one run (convenience: `trace` then `storage.save_run`)."""
        from .storage import RunInfo, save_run

        traces = self.trace(items)
        info = RunInfo(run_id or new_run_id(), self.dataset, mode, tuned_model, base_model, adapter, source_file,
                       {**(params or {}), **self.params()}, role, self.config.threshold)
        save_run(self.store, info, traces)
        return info.run_id, traces


def new_run_id() -> str:
    return f"trace-{uuid.uuid4().hex[:12]}"


def word_bits(ws: list[Word], token_bits: list[tuple[int, int, float]]) -> list[float]:
    """Base-model surprisal of each word: the bits of the tokens overlapping its characters."""
    out: list[float] = []
    j, n = 0, len(token_bits)
    for w in ws:
        while j < n and token_bits[j][1] <= w.start:
            j += 1
        k, b = j, 0.0
        while k < n and token_bits[k][0] < w.end:
            b += token_bits[k][2]
            k += 1
        out.append(b)
    return out


def summarize(traces: list[ResponseTrace]) -> dict[str, Any]:
    spans = [s for t in traces for s in t.spans]
    n = len(spans)
    secs = [t.seconds for t in traces]
    return {
        "responses": len(traces),
        "candidate_spans": n,
        "verbatim_spans": sum(s.verbatim for s in spans),
        "traced_spans": sum(s.traced for s in spans),
        "near_copy_spans": sum(s.traced and s.near_copy for s in spans),
        "verbatim_share": (sum(s.verbatim for s in spans) / n) if n else None,
        "traced_share": (sum(s.traced for s in spans) / n) if n else None,
        "seconds_p50": float(np.percentile(secs, 50)) if secs else None,
        "seconds_p99": float(np.percentile(secs, 99)) if secs else None,
    }
