"""The tracing pipeline: responses -> candidate spans -> ranked source instances -> DuckDB.

    tracer = Tracer(store, "alpaca", neighbours=True)
    run_id = tracer.run([TraceItem("q1", "Who won ...?", "Hooptown U.S.A. won ...")], mode="lexical")

Per response: words and word ids; the OLMoTrace-style maximal verbatim matches of the whole
response against the dataset (exact-span index, once); candidate spans (shift categories when
given, else lexical); FAISS neighbours of the prompt and of the response; then `attribute` per
span. Attribution time (model forward passes excluded) is stored per response.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..progress import progress_bar
from ..spans.index import SpanIndex, default_index_dir, ensure_span_index
from ..spans.tokenize import words_with_offsets
from ..store import Store
from .attribute import SpanTrace, attribute
from .candidates import find_candidates, word_categories_from_tokens


@dataclass
class TraceItem:
    prompt_id: str
    instruction: str
    response: str
    reference: str | None = None
    token_spans: list[tuple[int, int, str]] | None = None   # (char start, char end, category) per token


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
    neighbours_k: int = 20         # FAISS neighbours of prompt and response
    max_words: int = 8             # longest candidate span
    min_candidate_score: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Neighbours:
    """Conceptual similarity via the dataset's FAISS index over whole instances (field 'all')."""

    FIELD = "all"

    def __init__(self, store: Store, dataset: str, index_dir: str | Path | None = None, show_progress: bool = False):
        from ..index import build_index, load_index

        self.store, self.dataset = store, dataset
        idir = Path(index_dir or default_index_dir())
        try:
            self.index = load_index(idir, dataset, self.FIELD, store=store)
        except Exception:
            self.index = build_index(store, dataset, self.FIELD, "flat", idir, show_progress=show_progress)
        self.embedder = self.index.embedder()

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode(texts)

    def search(self, vecs: np.ndarray, k: int) -> list[dict[int, float]]:
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

    # -- one response -------------------------------------------------------------------------
    def trace_one(self, item: TraceItem, query_vecs: np.ndarray | None = None) -> ResponseTrace:
        """Trace one response. `query_vecs`: (2, dim) prompt and response embeddings, if any."""
        cfg = self.config
        t0 = time.perf_counter()
        ws = words_with_offsets(item.response)
        ids = self.index.encode([w.text for w in ws])
        cats = word_categories_from_tokens(ws, item.token_spans) if item.token_spans is not None else None
        cands = [c for c in find_candidates(item.response, cats, item.reference, cfg.max_words, words_=ws,
                                            prompt=item.instruction)
                 if c.score >= cfg.min_candidate_score]
        matches = self.index.maximal_matches(ids, min_len=1, max_occurrences=cfg.max_occurrences,
                                               skip_common=True) if cands else []
        neigh: dict[int, float] = {}
        if self.neighbours is not None and query_vecs is not None:
            for d in self.neighbours.search(query_vecs, cfg.neighbours_k):
                for i, s in d.items():
                    neigh[i] = max(neigh.get(i, -1.0), s)
        traces = []
        for c in cands:
            sim = dict(neigh)
            if self.neighbours is not None and query_vecs is not None:
                # exact similarity for verbatim candidates outside the neighbour list
                extra = {o.idx for m in matches if m.start < c.word_end and m.end > c.word_start
                         and m.count <= cfg.max_occurrences for o in m.occurrences} - set(sim)
                if extra:
                    sim.update(self.neighbours.similarities(query_vecs, sorted(extra)))
            traces.append(attribute(self.index, ids, matches, c, sim, top_k=cfg.top_k,
                                    max_occurrences=cfg.max_occurrences))
        top_neigh = sorted(neigh.items(), key=lambda x: (-x[1], x[0]))[: cfg.neighbours_k]
        return ResponseTrace(item, len(ws), traces, top_neigh, time.perf_counter() - t0)

    def trace(self, items: list[TraceItem]) -> list[ResponseTrace]:
        vecs = None
        if self.neighbours is not None and items:
            vecs = self.neighbours.encode([it.instruction for it in items] + [it.response for it in items])
        out = []
        with progress_bar("trace", total=len(items), unit="responses", enabled=self.show_progress) as bar:
            for k, it in enumerate(items):
                q = None if vecs is None else np.stack([vecs[k], vecs[len(items) + k]])
                out.append(self.trace_one(it, q))
                bar.advance()
        return out

    # -- a stored run -----------------------------------------------------------------------------
    def run(self, items: list[TraceItem], *, mode: str, tuned_model: str | None = None, base_model: str | None = None,
            adapter: str | None = None, source_file: str | None = None, params: dict[str, Any] | None = None,
            run_id: str | None = None) -> tuple[str, list[ResponseTrace]]:
        traces = self.trace(items)
        run_id = run_id or f"trace-{uuid.uuid4().hex[:12]}"
        save_run(self.store, run_id, self.dataset, traces, mode=mode, tuned_model=tuned_model, base_model=base_model,
                 adapter=adapter, source_file=source_file,
                 params={**(params or {}), **{k: v for k, v in vars(self.config).items() if k != "extra"}})
        return run_id, traces


def summarize(traces: list[ResponseTrace]) -> dict[str, Any]:
    spans = [s for t in traces for s in t.spans]
    n = len(spans)
    secs = [t.seconds for t in traces]
    return {
        "responses": len(traces),
        "candidate_spans": n,
        "verbatim_spans": sum(s.verbatim for s in spans),
        "traced_spans": sum(s.traced for s in spans),
        "verbatim_share": (sum(s.verbatim for s in spans) / n) if n else None,
        "traced_share": (sum(s.traced for s in spans) / n) if n else None,
        "seconds_p50": float(np.percentile(secs, 50)) if secs else None,
        "seconds_p99": float(np.percentile(secs, 99)) if secs else None,
    }


def save_run(store: Store, run_id: str, dataset: str, traces: list[ResponseTrace], *, mode: str,
             tuned_model: str | None = None, base_model: str | None = None, adapter: str | None = None,
             source_file: str | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Store one run (runs, responses, spans, sources) atomically; returns its summary."""
    summary = summarize(traces)
    resp_rows, span_rows, src_rows = [], [], []
    for r, t in enumerate(traces):
        it = t.item
        resp_rows.append({
            "run_id": run_id, "response_id": r, "prompt_id": it.prompt_id, "instruction": it.instruction,
            "response": it.response, "reference": it.reference, "n_words": t.n_words,
            "n_candidates": len(t.spans), "n_traced": t.n_traced,
            "neighbours": json.dumps([{"idx": i, "similarity": round(s, 4)} for i, s in t.neighbours]),
            "seconds": t.seconds,
        })
        for k, s in enumerate(t.spans):
            c = s.candidate
            best = s.sources[0] if s.sources and s.sources[0].verbatim else None
            span_rows.append({
                "run_id": run_id, "response_id": r, "span_id": k, "word_start": c.word_start, "word_end": c.word_end,
                "char_start": c.char_start, "char_end": c.char_end, "text": c.text, "candidate_score": c.score,
                "shift_share": c.shift_share, "disagreement": c.disagreement,
                "categories": None if c.categories is None else json.dumps(c.categories),
                "verbatim": s.verbatim, "longest_match": s.longest_match, "traced": s.traced,
                "best_idx": None if best is None else best.idx, "best_score": None if best is None else best.score,
                "matches": json.dumps(s.matches),
            })
            for rank, src in enumerate(s.sources, 1):
                src_rows.append({
                    "run_id": run_id, "response_id": r, "span_id": k, "rank": rank, "dataset": dataset,
                    "idx": src.idx, "score": src.score, "coverage": round(src.coverage, 6),
                    "rarity": round(src.rarity, 6), "specificity": round(src.specificity, 6),
                    "match_len": src.longest, "similarity": round(src.similarity, 6), "verbatim": src.verbatim,
                    "likely_source": src.likely, "evidence": json.dumps(src.evidence, ensure_ascii=False),
                })
    schemas = {
        "trace_responses": {"run_id": pl.Utf8, "response_id": pl.Int32, "prompt_id": pl.Utf8, "instruction": pl.Utf8,
                            "response": pl.Utf8, "reference": pl.Utf8, "n_words": pl.Int32, "n_candidates": pl.Int32,
                            "n_traced": pl.Int32, "neighbours": pl.Utf8, "seconds": pl.Float64},
        "trace_spans": {"run_id": pl.Utf8, "response_id": pl.Int32, "span_id": pl.Int32, "word_start": pl.Int32,
                        "word_end": pl.Int32, "char_start": pl.Int32, "char_end": pl.Int32, "text": pl.Utf8,
                        "candidate_score": pl.Float64, "shift_share": pl.Float64, "disagreement": pl.Float64,
                        "categories": pl.Utf8, "verbatim": pl.Boolean, "longest_match": pl.Int32, "traced": pl.Boolean,
                        "best_idx": pl.Int64, "best_score": pl.Float64, "matches": pl.Utf8},
        "trace_sources": {"run_id": pl.Utf8, "response_id": pl.Int32, "span_id": pl.Int32, "rank": pl.Int32,
                          "dataset": pl.Utf8, "idx": pl.Int64, "score": pl.Float64, "coverage": pl.Float64,
                          "rarity": pl.Float64, "specificity": pl.Float64, "match_len": pl.Int32,
                          "similarity": pl.Float64, "verbatim": pl.Boolean, "likely_source": pl.Boolean,
                          "evidence": pl.Utf8},
    }
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO trace_runs (run_id, dataset, mode, tuned_model, base_model, adapter, source_file, params, summary)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, dataset, mode, tuned_model, base_model, adapter, source_file, json.dumps(params or {}),
             json.dumps(summary)])
        for table, rows in (("trace_responses", resp_rows), ("trace_spans", span_rows), ("trace_sources", src_rows)):
            store.insert_frame(table, pl.DataFrame(rows, schema=schemas[table]))
    return summary
