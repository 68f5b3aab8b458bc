"""The traced-responses section: responses with their candidate spans coloured by kind, beside the
likely source instances, each with its evidence in words, and the negative-control comparison
(excess borrowing with its interval) where a control was traced.

Reads the trace tables (sql/migrations/0004_trace.sql, 0008_*.sql); columns added by later
migrations are used when present, so older databases still render.
"""

from __future__ import annotations

import json
import re
from typing import Any

from markupsafe import Markup

from ..store import Store
from . import svg
from .html import _columns, _instances, num, render_template

MAX_RESPONSES = 6
MAX_SOURCES = 4
KIND_LABEL = {"borrowed": "likely borrowed", "near-copy": "near copy", "shifted": "shifted candidate",
              "marginal": "marginal candidate", "candidate": "candidate"}


def span_kind(span: dict[str, Any]) -> str:
    """borrowed | near-copy (a likely source was found, through verbatim / near-copy evidence),
    else shifted | marginal by the shift categories of the span's words, or candidate (lexical
    runs: no base model ranked the words)."""
    if span.get("traced"):
        return "near-copy" if span.get("near_copy") else "borrowed"
    cats = span.get("categories")
    if isinstance(cats, str):
        try:
            cats = json.loads(cats)
        except ValueError:
            cats = None
    if not cats or not ({"shifted", "marginal"} & set(cats)):
        return "candidate"
    return "shifted" if "shifted" in cats else "marginal"


def segments(text: str, spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The response cut into plain and span segments (by char offsets; overlapping spans skipped)."""
    out, pos = [], 0
    for s in sorted(spans, key=lambda s: (s["char_start"], -s["char_end"])):
        a, b = int(s["char_start"]), int(s["char_end"])
        if a < pos or a >= b or b > len(text):
            continue
        if a > pos:
            out.append({"text": text[pos:a], "kind": None})
        kind = span_kind(s)
        tip = f"span {s['span_id']} · {KIND_LABEL[kind]} · candidate score {s['candidate_score']:.2f}"
        if s.get("best_idx") is not None and s.get("traced"):
            tip += f" · source idx {s['best_idx']}"
        out.append({"text": text[a:b], "kind": kind, "span_id": int(s["span_id"]), "tip": tip})
        pos = b
    if pos < len(text):
        out.append({"text": text[pos:], "kind": None})
    return out


def _zipf(word: str) -> float | None:
    try:
        from ..trace.prior import zipf
    except ImportError:
        return None
    try:
        return zipf(word)
    except Exception:   # wordfreq missing or unusable
        return None


def _rarest(words: list[str]) -> tuple[str, float] | None:
    best = None
    for w in words:
        if not re.search(r"[^\W\d_]", w) or len(w) < 3:
            continue
        z = _zipf(w.lower())
        if z is not None and (best is None or z < best[1]):
            best = (w, z)
    return best


def evidence_words(ev: dict[str, Any], src: dict[str, Any], n_instances: int, threshold: float | None) -> list[str]:
    """The evidence behind one source, in words (rarity, how many instances, verbatim length, ...)."""
    out = []
    match = ev.get("strongest_match") or " ".join(ev.get("matched_words") or [])
    near = ev.get("near_copies") or []
    words = match.split() + [n.get("word", "") for n in near]
    if isinstance(ev.get("zipf"), (int, float)):
        z, w = float(ev["zipf"]), ev.get("zipf_word") or ""
        out.append(("rare in English" if z < 4 else "common in English") + f" (Zipf {z:.1f}{': “' + w + '”' if w else ''})")
    else:
        r = _rarest(words)
        if r is not None:
            w, z = r
            out.append(f"rare in English (Zipf {z:.1f}: “{w}”)" if z < 4
                       else f"common English words (rarest “{w}”, Zipf {z:.1f})")
    shared = ev.get("shared_with")
    if isinstance(shared, int):
        out.append(f"occurs in {shared:,} of {n_instances:,} instances" + (" (only this one)" if shared == 1 else ""))
    longest = ev.get("longest") or src.get("match_len")
    if longest:
        out.append(f"{longest} word{'s' if longest != 1 else ''} verbatim" + (f": “{match}”" if match else ""))
    for n in near[:2]:
        d = n.get("distance")
        out.append(f"near copy: “{n.get('word')}” in the response ≈ “{n.get('dataset_word')}” in the instance"
                   + (f" ({d} edit{'s' if d != 1 else ''})" if isinstance(d, int) else ""))
    bits = ev.get("prior_bits")
    if isinstance(bits, (int, float)):
        sur = ev.get("prior_surprise") or 0
        out.append(f"the base model {'finds it unlikely' if sur >= 0.5 else 'predicts it'} ({bits:.0f} bits)")
    strength = src.get("strength", ev.get("strength"))
    if isinstance(strength, (int, float)):
        out.append(f"evidence strength {strength:.2f}" + (f" (threshold {threshold:.2f})" if threshold is not None else ""))
    return out


def _needle(row: dict[str, Any], candidates: list[str]) -> str | None:
    """The first candidate text occurring in the instance (for <mark>)."""
    hay = " ".join(str(row.get(f) or "") for f in ("instruction", "input", "response")).lower()
    for c in candidates:
        if c and c.lower() in hay:
            return c
    return None


def _excess(store: Store, run_id: str, tables: set[str]) -> dict[str, Any] | None:
    if "trace_excess" not in tables:
        return None
    df = store.query("SELECT * FROM trace_excess WHERE run_id = ? OR tuned_run_id = ? ORDER BY created_at DESC LIMIT 1",
                     [run_id, run_id])
    return df.row(0, named=True) if df.height else None


def _excess_chart(x: dict[str, Any]) -> Markup | None:
    if x.get("tuned_share") is None or x.get("control_share") is None:
        return None
    return Markup(svg.bars(["tuned model", f"control ({x.get('control') or 'control'})"[:38]],
                           [float(x["tuned_share"]), float(x["control_share"])],
                           title="share of candidate spans with a likely source", color=svg.PALETTE[3],
                           value_fmt=lambda v: f"{v:.1%}", width=520, label_width=200))


def traced_section(store: Store, dataset: str, tables: set[str], max_responses: int = MAX_RESPONSES) -> Markup | None:
    if not {"trace_runs", "trace_responses", "trace_spans"} <= tables:
        return None
    run_cols = _columns(store, "trace_runs")
    span_cols = _columns(store, "trace_spans")
    src_cols = _columns(store, "trace_sources") if "trace_sources" in tables else set()
    role_filter = " AND coalesce(role, '') NOT IN ('control', 'tuned_compare')" if "role" in run_cols else ""
    threshold_col = ", threshold" if "threshold" in run_cols else ", NULL AS threshold"
    runs = store.query(f"SELECT run_id, mode, tuned_model, base_model, summary{threshold_col} FROM trace_runs "
                       f"WHERE dataset = ?{role_filter} ORDER BY created_at DESC LIMIT 3", [dataset])
    if not runs.height:
        return None
    n_instances = int(store.require_dataset(dataset)["n_rows"])
    opt_span = [c for c in ("categories", "near_copy") if c in span_cols]
    opt_src = [c for c in ("match_len", "strength", "near_copy") if c in src_cols]
    out_runs = []
    for run in runs.iter_rows(named=True):
        summ = json.loads(run["summary"]) if run["summary"] else {}
        excess = _excess(store, run["run_id"], tables)
        resp = store.query("SELECT response_id, prompt_id, instruction, response, reference, n_candidates, n_traced "
                           "FROM trace_responses WHERE run_id = ? ORDER BY n_traced DESC, n_candidates DESC, response_id "
                           "LIMIT ?", [run["run_id"], max_responses])
        responses = []
        for r in resp.iter_rows(named=True):
            spans = store.query(
                "SELECT span_id, char_start, char_end, text, candidate_score, traced, best_idx"
                + "".join(f", {c}" for c in opt_span) + " FROM trace_spans WHERE run_id = ? AND response_id = ? "
                "ORDER BY span_id", [run["run_id"], r["response_id"]]).to_dicts()
            by_id = {s["span_id"]: s for s in spans}
            sources = []
            if src_cols:
                src = store.query(
                    "SELECT span_id, idx, score, evidence" + "".join(f", {c}" for c in opt_src)
                    + " FROM trace_sources WHERE run_id = ? AND response_id = ? AND rank = 1 AND likely_source "
                    "ORDER BY span_id LIMIT ?", [run["run_id"], r["response_id"], MAX_SOURCES]).to_dicts()
                inst = _instances(store, dataset, [s["idx"] for s in src])
                for s in src:
                    ev = json.loads(s["evidence"]) if s["evidence"] else {}
                    span = by_id.get(s["span_id"], {})
                    row = inst.get(int(s["idx"]), {})
                    kind = span_kind(span) if span else "borrowed"
                    cands = [ev.get("strongest_match") or "", *(ev.get("phrases") or []),
                             *[n.get("dataset_word", "") for n in ev.get("near_copies") or []], span.get("text", "")]
                    sources.append({"span_id": s["span_id"], "idx": s["idx"], "score": s["score"], "row": row,
                                    "kind": kind, "kind_label": KIND_LABEL[kind], "span_text": span.get("text", ""),
                                    "highlight": _needle(row, cands),
                                    "evidence": evidence_words(ev, s, n_instances, run["threshold"])})
            responses.append({**r, "segments": segments(r["response"], spans), "sources": sources})
        n_spans = summ.get("candidate_spans")
        n_traced = summ.get("traced_spans")
        out_runs.append({
            "run_id": run["run_id"], "mode": run["mode"], "tuned": run["tuned_model"], "base": run["base_model"],
            "threshold": run["threshold"], "n_responses": summ.get("responses", resp.height),
            "n_spans": n_spans, "n_traced": n_traced, "traced_share": summ.get("traced_share"),
            "excess": excess, "excess_chart": _excess_chart(excess) if excess else None,
            "control_note": ("No negative control was traced for this run, so chance attribution is not measured: "
                             "`itaudit trace ... --control base` (or a model, or a responses file) answers the same "
                             "prompts with a model that never saw the data and reports the excess borrowing."),
            "responses": responses,
        })
    return render_template("traced.html.j2", runs=out_runs, dataset=dataset, num=num)
