"""Storing trace runs: results -> frames (pure) -> DuckDB tables of migrations 4 and 8 (one transaction).

Column types come from the tables (sql/migrations/0004_trace.sql, 0008_trace_calibration.sql);
DuckDB casts the frames on insert.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from ..store import Store
from .pipeline import ResponseTrace, summarize


@dataclass
class RunInfo:
    run_id: str
    dataset: str
    mode: str                       # shift | shift_rows | lexical
    tuned_model: str | None = None
    base_model: str | None = None
    adapter: str | None = None
    source_file: str | None = None
    params: dict[str, Any] | None = None
    role: str | None = None         # tuned | control | tuned_compare
    threshold: float | None = None


def run_frames(info: RunInfo, traces: list[ResponseTrace]) -> dict[str, pl.DataFrame]:
    """The rows of one run for trace_runs, trace_responses, trace_spans and trace_sources."""
    run_id, dataset = info.run_id, info.dataset
    resp_rows, span_rows, src_rows = [], [], []
    for r, t in enumerate(traces):
        it = t.item
        resp_rows.append({
            "run_id": run_id, "response_id": r, "prompt_id": it.prompt_id, "instruction": it.instruction,
            "response": it.response, "reference": it.reference, "n_words": t.n_words,
            "n_candidates": len(t.spans), "n_traced": t.n_traced,
            "neighbours": json.dumps([{"idx": i, "similarity": round(s, 4)} for i, s in t.neighbours]),
            "seconds": float(t.seconds),
        })
        for k, s in enumerate(t.spans):
            c = s.candidate
            best = s.sources[0] if s.sources and (s.sources[0].verbatim or s.sources[0].near_copy) else None
            span_rows.append({
                "run_id": run_id, "response_id": r, "span_id": k, "word_start": c.word_start, "word_end": c.word_end,
                "char_start": c.char_start, "char_end": c.char_end, "text": c.text, "candidate_score": float(c.score),
                "shift_share": c.shift_share, "disagreement": c.disagreement,
                "categories": None if c.categories is None else json.dumps(c.categories),
                "verbatim": s.verbatim, "longest_match": s.longest_match, "traced": s.traced,
                "best_idx": None if best is None else best.idx, "best_score": None if best is None else float(best.score),
                "matches": json.dumps(s.matches), "evidence": float(s.evidence), "near_copy": s.near_copy,
            })
            for rank, src in enumerate(s.sources, 1):
                src_rows.append({
                    "run_id": run_id, "response_id": r, "span_id": k, "rank": rank, "dataset": dataset,
                    "idx": src.idx, "score": float(src.score), "coverage": round(float(src.coverage), 6),
                    "rarity": round(float(src.rarity), 6), "specificity": round(float(src.specificity), 6),
                    "match_len": src.longest, "similarity": round(float(src.similarity), 6), "verbatim": src.verbatim,
                    "likely_source": src.likely, "evidence": json.dumps(src.evidence, ensure_ascii=False),
                    "prior": round(float(src.prior), 6), "strength": round(float(src.strength), 6),
                    "near_copy": src.near_copy,
                })
    run = {"run_id": run_id, "dataset": dataset, "mode": info.mode, "tuned_model": info.tuned_model,
           "base_model": info.base_model, "adapter": info.adapter, "source_file": info.source_file,
           "params": json.dumps(info.params or {}), "summary": json.dumps(summarize(traces)), "role": info.role,
           "threshold": info.threshold}
    return {"trace_runs": pl.DataFrame([run], infer_schema_length=None),
            "trace_responses": pl.DataFrame(resp_rows, infer_schema_length=None),
            "trace_spans": pl.DataFrame(span_rows, infer_schema_length=None),
            "trace_sources": pl.DataFrame(src_rows, infer_schema_length=None)}


def save_runs(store: Store, runs: list[tuple[RunInfo, list[ResponseTrace]]],
              excess_row: dict[str, Any] | None = None) -> None:
    """Store runs (and the excess row of a tuned run traced with a control) in one transaction."""
    frames = [run_frames(info, traces) for info, traces in runs]
    with store.transaction() as conn:
        for f in frames:
            for table, frame in f.items():
                store.insert_frame(table, frame)
        if excess_row is not None:
            conn.execute("DELETE FROM trace_excess WHERE run_id = ?", [excess_row["run_id"]])
            store.insert_frame("trace_excess", pl.DataFrame([excess_row], infer_schema_length=None))


def save_run(store: Store, info: RunInfo, traces: list[ResponseTrace]) -> dict[str, Any]:
    """Store one run atomically; returns its summary."""
    save_runs(store, [(info, traces)])
    return summarize(traces)
