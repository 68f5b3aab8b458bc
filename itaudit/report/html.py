"""One self-contained HTML report per dataset: inline CSS and SVG, no scripts, no external assets.

Sections render from whatever is in the database and are skipped when there is no data:
dataset summary, checks overview, one section per check (findings, examples, evidence),
borrowed-from instances and traced responses (trace tables), shift categories (shift tables),
filter exports. Every piece of data is HTML-escaped.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any

import polars as pl

from ..store import Store
from . import svg

MAX_EXAMPLES = 5
EXCERPT = 600

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:18px 28px 60px}
h1{font-size:24px;margin:6px 0 2px}h2{font-size:19px;margin:30px 0 8px;border-bottom:2px solid #dde2ea;padding-bottom:3px}
h3{font-size:15px;margin:16px 0 6px}.muted{color:#6b7280}.small{font-size:12px}
nav a{margin-right:12px;font-size:13px;color:#3b6ea8;text-decoration:none}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}.card{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#6b7280}
table{border-collapse:collapse;background:#fff;margin:6px 0;font-size:13px}th,td{border:1px solid #dde2ea;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:14px}.chart{background:#fff;border:1px solid #dde2ea;border-radius:6px}
.chart .title{font-size:12px;font-weight:600;fill:#333}.chart .tick{font-size:10px;fill:#555}.chart .label{font-size:11px;fill:#555}.chart .axis{stroke:#999}
.ex{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:8px 12px;margin:8px 0}
.ex .meta{font-size:12px;color:#6b7280;margin-bottom:4px}.txt{white-space:pre-wrap;word-break:break-word;font-size:13px;margin:2px 0 6px;max-height:260px;overflow:auto}
.lab{font-size:11px;font-weight:600;color:#3b6ea8;text-transform:uppercase;letter-spacing:.03em}
.side{display:grid;grid-template-columns:1fr 1fr;gap:12px}.side>div{min-width:0}
.flag{color:#b8473d;font-weight:600}.ok{color:#5a9e55;font-weight:600}
mark{background:#ffe08a;padding:0 1px;border-radius:2px}mark.hc{background:#ffb3a7}mark.hc.traced{background:#ff8a7a}
code{background:#eef1f6;padding:0 3px;border-radius:3px;font-size:12px}
"""


# -- helpers ---------------------------------------------------------------------------------

def _e(v: Any) -> str:
    return escape("" if v is None else str(v))


def _x(text: str | None, n: int = EXCERPT) -> str:
    t = text or ""
    return _e(t if len(t) <= n else t[: n - 1] + "…")


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, Decimal):   # DuckDB sums of integers
        v = int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return _e(v)


def _table(header: list[str], rows: list[list[Any]], num_cols: set[int] | None = None) -> str:
    num_cols = num_cols or set()
    h = "".join(f"<th>{_e(c)}</th>" for c in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_num(v)}</td>' if i in num_cols else f"<td>{v if isinstance(v, _Raw) else _e(v)}</td>"
                         for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


class _Raw(str):
    """Already-escaped HTML inside a table cell."""


def _tables(store: Store) -> set[str]:
    return set(store.query("SELECT table_name FROM information_schema.tables")["table_name"].to_list())


def _card(value: Any, label: str) -> str:
    return f'<div class="card"><b>{_num(value)}</b><span>{_e(label)}</span></div>'


def _instance_block(row: dict[str, Any], meta: str = "", highlight: str | None = None) -> str:
    parts = [f'<div class="meta">{meta}</div>' if meta else ""]
    for key, lab in (("instruction", "instruction"), ("input", "input"), ("response", "response")):
        v = row.get(key)
        if v:
            parts.append(f'<div class="lab">{lab}</div><div class="txt">{_mark(v, highlight)}</div>')
    return "".join(parts)


def _mark(text: str, needle: str | None, n: int = EXCERPT) -> str:
    """Excerpt of `text`, with the first case-insensitive occurrence of `needle` in <mark>."""
    if needle:
        pos = text.lower().find(needle.lower())
        if pos >= 0:
            start = max(0, pos - 150)
            end = min(len(text), pos + len(needle) + 150)
            pre = ("…" if start else "") + text[start:pos]
            post = text[pos + len(needle):end] + ("…" if end < len(text) else "")
            return f"{_e(pre)}<mark>{_e(text[pos:pos + len(needle)])}</mark>{_e(post)}"
    return _x(text, n)


def _instances(store: Store, dataset: str, idx: list[int]) -> dict[int, dict[str, Any]]:
    if not idx:
        return {}
    df = store.query(
        "SELECT idx, instance_id, instruction, input, response, category FROM instances "
        "WHERE dataset = ? AND idx IN (SELECT unnest(?::BIGINT[]))", [dataset, [int(i) for i in idx]])
    return {int(r["idx"]): r for r in df.iter_rows(named=True)}


# -- sections ----------------------------------------------------------------------------------

def _summary(store: Store, dataset: str, info: dict[str, Any]) -> str:
    stats = store.query(
        "SELECT count(*) AS n, count(DISTINCT source_row) AS records, sum(CASE WHEN turn > 0 THEN 1 ELSE 0 END) AS later_turns, "
        "sum(CASE WHEN input IS NOT NULL AND input <> '' THEN 1 ELSE 0 END) AS with_input, "
        "count(DISTINCT content_hash) AS distinct_rows FROM instances WHERE dataset = ?", [dataset]).row(0, named=True)
    lens = store.query("SELECT length(instruction) + coalesce(length(input), 0) AS p, length(response) AS r "
                       "FROM instances WHERE dataset = ?", [dataset])
    cats = store.query("SELECT coalesce(category, source) AS c, count(*) AS n FROM instances WHERE dataset = ? "
                       "AND coalesce(category, source) IS NOT NULL GROUP BY 1 ORDER BY n DESC LIMIT 12", [dataset])
    out = ['<section id="summary"><h2>Dataset summary</h2>',
           f'<p class="muted small">source <code>{_e(info["source_path"])}</code> · format <b>{_e(info["format"])}</b> · '
           f'fingerprint <code>{_e(info["fingerprint"][:16])}</code> · ingested {_e(info["ingested_at"])}</p>',
           '<div class="cards">', _card(stats["n"], "instances"), _card(info["n_source"], "source records"),
           _card(info["n_rejected"], "rejected at ingest"), _card(stats["later_turns"] or 0, "later turns (multi-turn)"),
           _card(stats["with_input"] or 0, "with input/context"),
           _card(stats["n"] - stats["distinct_rows"], "exact duplicate rows"), "</div>", '<div class="charts">']
    if lens.height:
        out.append(svg.histogram(lens["p"].to_numpy(), title="prompt length (chars, log scale)", log_x=True))
        out.append(svg.histogram(lens["r"].to_numpy(), title="response length (chars, log scale)", log_x=True,
                                 color=svg.PALETTE[1]))
    if cats.height > 1:
        out.append(svg.bars(cats["c"].to_list(), cats["n"].to_list(), title="categories / sources"))
    out.append("</div></section>")
    return "".join(out)


def _overview(runs: pl.DataFrame, stats: dict[str, dict]) -> str:
    rows = []
    for r in runs.iter_rows(named=True):
        s = stats[r["check_name"]]
        share = s["flagged"] / s["n"] if s["n"] else 0.0
        rows.append([_Raw(f'<a href="#check-{_e(r["check_name"])}">{_e(r["check_name"])}</a>'), s["n"], s["flagged"],
                     f"{share:.1%}", s["mean"], str(r["created_at"])[:19]])
    return ('<section id="checks"><h2>Checks</h2>'
            + _table(["check", "rows scored", "flagged", "share flagged", "mean score", "run at"], rows, {1, 2, 4})
            + '<p class="muted small">Scores lie in [0, 1], higher = more of an issue. Details per check below.</p></section>')


def _scalars(summary: dict[str, Any]) -> str:
    items = [(k, v) for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None]
    if not items:
        return ""
    return _table(["summary", "value"], [[k, _Raw(_num(v))] for k, v in items])


def _check_section(store: Store, dataset: str, run: dict[str, Any], tables: set[str]) -> str:
    check = run["check_name"]
    summary = json.loads(run["summary"]) if run["summary"] else {}
    params = json.loads(run["params"]) if run["params"] else {}
    rows = store.query("SELECT idx, flag, score, cluster_id, details FROM check_rows WHERE run_id = ?", [run["run_id"]])
    out = [f'<section id="check-{_e(check)}"><h2>Check: {_e(check)}</h2>']
    if params:
        out.append(f'<p class="muted small">params: <code>{_x(json.dumps(params, default=str), 400)}</code></p>')
    out.append(_scalars(summary))
    charts = ['<div class="charts">']
    if rows.height:
        charts.append(svg.histogram(rows["score"].to_numpy(), bins=20, title=f"{check}: score distribution"))
    extra, examples_done = "", False
    if check == "contamination":
        extra = _contamination(store, dataset, summary, run["run_id"])
        examples_done = True
    elif check == "style":
        charts += _style_charts(store, dataset, summary)
    elif check == "novelty":
        charts += _novelty_charts(store, dataset, summary)
    elif check == "risk":
        contrib = summary.get("mean_contribution") or {}
        if contrib:
            charts.append(svg.bars(list(contrib), list(contrib.values()), title="mean contribution to risk (w·score)",
                                   color=svg.PALETTE[3]))
    if rows.height and rows["cluster_id"].drop_nulls().filter(rows["cluster_id"].drop_nulls() >= 0).len():
        extra += _clusters(store, dataset, rows)
    charts.append("</div>")
    out += charts
    out.append(extra)
    if not examples_done:
        out.append(_examples(store, dataset, rows, run["run_id"]))
    out.append("</section>")
    return "".join(out)


def _examples(store: Store, dataset: str, rows: pl.DataFrame, run_id: str) -> str:
    top = rows.filter(pl.col("flag")).sort(["score", "idx"], descending=[True, False]).head(MAX_EXAMPLES)
    if not top.height:
        return '<p class="ok">No rows flagged.</p>'
    inst = _instances(store, dataset, top["idx"].to_list())
    pairs = store.query("SELECT idx_a, idx_b, other_dataset, score, evidence FROM check_pairs WHERE run_id = ? "
                        "AND idx_a IN (SELECT unnest(?::BIGINT[])) ORDER BY score DESC", [run_id, top["idx"].to_list()])
    out = [f"<h3>Top flagged rows ({top.height} of {int(rows['flag'].sum()):,})</h3>"]
    for r in top.iter_rows(named=True):
        i = int(r["idx"])
        meta = f'idx {i} · score <b>{r["score"]:.3f}</b>' + (f' · <code>{_x(r["details"], 300)}</code>' if r["details"] else "")
        block = _instance_block(inst.get(i, {}), meta)
        p = pairs.filter(pl.col("idx_a") == i).head(1)
        if p.height:
            pr = p.row(0, named=True)
            other_ds = pr["other_dataset"] or dataset
            other = _instances(store, other_ds, [pr["idx_b"]]).get(int(pr["idx_b"]), {})
            block = (f'<div class="side"><div>{block}</div><div>'
                     + _instance_block(other, f'paired with {_e(other_ds)} idx {pr["idx_b"]} · score {_num(pr["score"])}'
                                       + (f' · <code>{_x(pr["evidence"], 200)}</code>' if pr["evidence"] else ""))
                     + "</div></div>")
        out.append(f'<div class="ex">{block}</div>')
    return "".join(out)


def _contamination(store: Store, dataset: str, summary: dict[str, Any], run_id: str) -> str:
    out = []
    by = summary.get("by_eval_set") or {}
    if by:
        rows = [[k, v.get("n_eval"), v.get("eval_items_in_dataset"), f'{v.get("eval_share_in_dataset", 0):.1%}',
                 v.get("ngram_pairs"), v.get("embedding_pairs")] for k, v in by.items()]
        out.append("<h3>Eval sets</h3>" + _table(
            ["eval set", "items", "items found in this dataset", "share", "n-gram pairs", "embedding pairs"], rows, {1, 2, 4, 5}))
    pairs = store.query("SELECT idx_a, idx_b, other_dataset, score, evidence FROM check_pairs WHERE run_id = ? "
                        "ORDER BY score DESC, idx_a LIMIT ?", [run_id, MAX_EXAMPLES * 2])
    if not pairs.height:
        return "".join(out) + '<p class="ok">No contaminated rows.</p>'
    out.append("<h3>Evidence (this dataset | other dataset)</h3>")
    for p in pairs.iter_rows(named=True):
        ev = json.loads(p["evidence"]) if p["evidence"] else {}
        a = _instances(store, dataset, [p["idx_a"]]).get(int(p["idx_a"]), {})
        b = _instances(store, p["other_dataset"] or dataset, [p["idx_b"]]).get(int(p["idx_b"]), {})
        via = ev.get("via", "?")
        meta = (f'{_e(via)} · coverage {_num(ev.get("coverage"))}' if via == "ngram" else f'{_e(via)} · cosine {_num(ev.get("cosine"))}')
        overlap = ev.get("overlap")
        ov = f'<div class="lab">overlapping text (normalized)</div><div class="txt"><mark>{_x(overlap, 800)}</mark></div>' if overlap else ""
        out.append(f'<div class="ex"><div class="meta">{meta}</div>{ov}<div class="side"><div>'
                   + _instance_block({"instruction": a.get("instruction"), "input": a.get("input")}, f'{_e(dataset)} idx {p["idx_a"]}')
                   + "</div><div>"
                   + _instance_block({"instruction": b.get("instruction"), "input": b.get("input")},
                                     f'{_e(p["other_dataset"])} idx {p["idx_b"]}')
                   + "</div></div></div>")
    return "".join(out)


def _style_charts(store: Store, dataset: str, summary: dict[str, Any]) -> list[str]:
    charts = []
    top = summary.get("top_openings") or []
    if top:
        charts.append(svg.bars([t["opening"] for t in top[:15]], [t["count"] for t in top[:15]],
                               title="most common response openings", color=svg.PALETTE[1]))
    bp = summary.get("boilerplate") or {}
    if bp:
        charts.append(svg.bars(list(bp), list(bp.values()), title="boilerplate matches (rows)", color=svg.PALETTE[3]))
    if "style_features" in _tables(store):
        f = store.query("SELECT n_words, n_bullets + n_numbered AS list_lines, n_headings, n_code_blocks "
                        "FROM style_features WHERE dataset = ?", [dataset])
        if f.height:
            charts.append(svg.histogram(f["n_words"].to_numpy(), title="response length (words, log scale)", log_x=True,
                                        color=svg.PALETTE[2]))
            n = f.height
            shares = {"list": float((f["list_lines"] > 0).sum()) / n, "heading": float((f["n_headings"] > 0).sum()) / n,
                      "code block": float((f["n_code_blocks"] > 0).sum()) / n}
            charts.append(svg.bars(list(shares), list(shares.values()), title="share of responses with structure",
                                   value_fmt=lambda v: f"{v:.1%}", color=svg.PALETTE[4]))
    return charts


def _novelty_charts(store: Store, dataset: str, summary: dict[str, Any]) -> list[str]:
    if "novelty_scores" not in _tables(store):
        return []
    model = summary.get("model_id")
    df = store.query("SELECT bpb FROM novelty_scores WHERE dataset = ? AND model_id = ?", [dataset, model])
    if not df.height:
        return []
    return [svg.histogram(df["bpb"].to_numpy(), title=f"base-model bits per byte ({model})", xlabel="bits per byte",
                          color=svg.PALETTE[4], marker=summary.get("bpb_flag_threshold"), marker_label="flag")]


def _clusters(store: Store, dataset: str, rows: pl.DataFrame) -> str:
    cl = (rows.filter(pl.col("cluster_id").is_not_null() & (pl.col("cluster_id") >= 0))
              .group_by("cluster_id").agg(pl.len().alias("size"), pl.col("idx").min().alias("first"))
              .sort(["size", "cluster_id"], descending=[True, False]))
    if not cl.height:
        return ""
    top = cl.head(8)
    inst = _instances(store, dataset, top["first"].to_list())
    rows_t = [[c, s, _x((inst.get(int(f)) or {}).get("instruction"), 160)] for c, s, f in top.iter_rows()]
    return (f"<h3>Clusters: {cl.height:,} with ≥1 member, largest {int(cl['size'][0]):,}</h3>"
            + _table(["cluster", "size", "first instruction"], rows_t, {0, 1}))


def _borrowed(store: Store, dataset: str, tables: set[str]) -> str:
    if "trace_sources" not in tables:
        return ""
    df = store.query("SELECT idx, count(*) AS spans, count(DISTINCT run_id || ':' || response_id) AS responses, "
                     "max(score) AS best FROM trace_sources WHERE dataset = ? AND likely_source GROUP BY idx "
                     "ORDER BY spans DESC, idx LIMIT 15", [dataset])
    if not df.height:
        return ""
    inst = _instances(store, dataset, df["idx"].to_list())
    labels = [f'#{i} {(inst.get(int(i)) or {}).get("instruction", "")[:40]}' for i in df["idx"].to_list()]
    rows = [[i, s, r, b, _x((inst.get(int(i)) or {}).get("instruction"), 200)] for i, s, r, b in df.iter_rows()]
    return ('<section id="borrowed"><h2>Top borrowed-from instances</h2>'
            '<p class="muted small">Instances most often ranked as the likely source of hallucination-candidate spans in traced responses.</p>'
            '<div class="charts">' + svg.bars(labels, df["spans"].to_list(), title="spans traced to the instance", color=svg.PALETTE[3])
            + "</div>" + _table(["idx", "spans", "responses", "best score", "instruction"], rows, {0, 1, 2, 3}) + "</section>")


def _shift(store: Store, dataset: str, tables: set[str]) -> str:
    if not {"shift_runs", "shift_tokens"} <= tables:
        return ""
    runs = store.query("SELECT run_id, base_model, tuned_model, mode, reference_dataset, created_at FROM shift_runs "
                       "WHERE reference_dataset = ? ORDER BY created_at DESC LIMIT 5", [dataset])
    note = ""
    if not runs.height:
        runs = store.query("SELECT run_id, base_model, tuned_model, mode, reference_dataset, created_at FROM shift_runs "
                           "ORDER BY created_at DESC LIMIT 3")
        note = '<p class="muted small">No shift run references this dataset; showing the latest runs.</p>'
    if not runs.height:
        return ""
    out = ['<section id="shift"><h2>Token distribution shift</h2>', note,
           '<p class="muted small">Per response token: unshifted = the base model ranks it first, marginal = rank 2-3, shifted = rank &gt; 3 (URIAL).</p>',
           '<div class="charts">']
    for r in runs.iter_rows(named=True):
        cats = store.query("SELECT category, count(*) AS n FROM shift_tokens WHERE run_id = ? GROUP BY 1", [r["run_id"]])
        if not cats.height:
            continue
        d = dict(cats.iter_rows())
        order = [c for c in ("unshifted", "marginal", "shifted") if c in d] + [c for c in d if c not in ("unshifted", "marginal", "shifted")]
        title = f'{r["tuned_model"] or "responses"} vs {r["base_model"]}'
        out.append(svg.stacked(order, [d[c] for c in order], title=title[:80], colors=(svg.PALETTE[2], svg.PALETTE[1], svg.PALETTE[3], svg.PALETTE[7])))
        words = store.query("SELECT lower(trim(token)) AS t, count(*) AS n FROM shift_tokens WHERE run_id = ? AND category = 'shifted' "
                            "AND length(trim(token)) > 0 GROUP BY 1 ORDER BY n DESC, t LIMIT 12", [r["run_id"]])
        if words.height:
            out.append(svg.bars(words["t"].to_list(), words["n"].to_list(), title="most frequent shifted tokens", color=svg.PALETTE[3], width=420, label_width=140))
    out.append("</div></section>")
    return "".join(out)


def _highlight_spans(text: str, spans: list[dict[str, Any]]) -> str:
    """The response with candidate spans in <mark> (by char offsets; overlaps skipped)."""
    out, pos = [], 0
    for s in sorted(spans, key=lambda s: (s["char_start"], -s["char_end"])):
        a, b = int(s["char_start"]), int(s["char_end"])
        if a < pos or a >= b or b > len(text):
            continue
        out.append(_e(text[pos:a]))
        cls = "hc traced" if s.get("traced") else "hc"
        tip = f'span {s["span_id"]} · candidate score {s["candidate_score"]:.2f}' + (f' · source idx {s["best_idx"]}' if s.get("best_idx") is not None else "")
        out.append(f'<mark class="{cls}" title="{_e(tip)}">{_e(text[a:b])}<sup>{int(s["span_id"])}</sup></mark>')
        pos = b
    out.append(_e(text[pos:]))
    return "".join(out)


def _traced(store: Store, dataset: str, tables: set[str], max_responses: int = 6) -> str:
    if not {"trace_runs", "trace_responses", "trace_spans"} <= tables:
        return ""
    runs = store.query("SELECT run_id, mode, tuned_model, base_model, created_at FROM trace_runs WHERE dataset = ? "
                       "ORDER BY created_at DESC LIMIT 3", [dataset])
    if not runs.height:
        return ""
    out = ['<section id="traced"><h2>Traced responses</h2>',
           '<p class="muted small">Hallucination-candidate spans are <mark class="hc">marked</mark> '
           '(<mark class="hc traced">darker</mark> = a likely source instance was found); the source instances are shown beside them.</p>']
    have_sources = "trace_sources" in tables
    for run in runs.iter_rows(named=True):
        resp = store.query("SELECT response_id, prompt_id, instruction, response, reference, n_candidates, n_traced "
                           "FROM trace_responses WHERE run_id = ? ORDER BY n_traced DESC, n_candidates DESC, response_id LIMIT ?",
                           [run["run_id"], max_responses])
        out.append(f'<h3>Run {_e(run["run_id"])} · {_e(run["mode"])} · tuned {_e(run["tuned_model"] or "–")} · '
                   f'base {_e(run["base_model"] or "–")}</h3>')
        for r in resp.iter_rows(named=True):
            spans = store.query("SELECT span_id, char_start, char_end, text, candidate_score, traced, best_idx, best_score "
                                "FROM trace_spans WHERE run_id = ? AND response_id = ? ORDER BY span_id",
                                [run["run_id"], r["response_id"]]).to_dicts()
            left = (f'<div class="meta">response {r["response_id"]} · prompt {_e(r["prompt_id"])} · '
                    f'{r["n_candidates"]} candidate spans, {r["n_traced"]} traced</div>'
                    f'<div class="lab">instruction</div><div class="txt">{_x(r["instruction"], 400)}</div>'
                    f'<div class="lab">response</div><div class="txt">{_highlight_spans(r["response"], spans)}</div>')
            if r.get("reference"):
                left += f'<div class="lab">reference</div><div class="txt">{_x(r["reference"], 400)}</div>'
            right = []
            if have_sources:
                src = store.query("SELECT span_id, idx, score, evidence FROM trace_sources WHERE run_id = ? AND response_id = ? "
                                  "AND rank = 1 AND likely_source ORDER BY span_id LIMIT 4", [run["run_id"], r["response_id"]])
                inst = _instances(store, dataset, src["idx"].to_list()) if src.height else {}
                span_text = {s["span_id"]: s["text"] for s in spans}
                for s in src.iter_rows(named=True):
                    right.append('<div class="ex">' + _instance_block(
                        inst.get(int(s["idx"]), {}), f'span {s["span_id"]} ← {_e(dataset)} idx {s["idx"]} · score {s["score"]:.2f}',
                        highlight=span_text.get(s["span_id"])) + "</div>")
            if not right:
                right.append('<p class="muted small">No likely source instance found for these spans.</p>')
            out.append(f'<div class="ex side"><div>{left}</div><div>{"".join(right)}</div></div>')
    out.append("</section>")
    return "".join(out)


def _filters(store: Store, dataset: str, tables: set[str]) -> str:
    if "filter_manifests" not in tables:
        return ""
    df = store.query("SELECT created_at, out_path, export_format, normalized, n_kept, n_dropped, manifest "
                     "FROM filter_manifests WHERE dataset = ? ORDER BY created_at DESC LIMIT 5", [dataset])
    if not df.height:
        return ""
    rows = []
    for r in df.iter_rows(named=True):
        m = json.loads(r["manifest"])
        reasons = ", ".join(f"{k}: {v}" for k, v in (m.get("counts", {}).get("dropped_by_reason") or {}).items())
        rows.append([str(r["created_at"])[:19], r["out_path"], r["export_format"] + (" (normalized)" if r["normalized"] else ""),
                     r["n_kept"], r["n_dropped"], reasons])
    return ('<section id="filters"><h2>Filtered exports</h2>'
            + _table(["at", "output", "format", "kept", "dropped", "dropped by reason"], rows, {3, 4}) + "</section>")


# -- entry points -------------------------------------------------------------------------------

def check_stats(store: Store, dataset: str) -> tuple[pl.DataFrame, dict[str, dict]]:
    runs = store.query("SELECT run_id, check_name, params, summary, created_at FROM latest_checks WHERE dataset = ? "
                       "ORDER BY check_name", [dataset])
    stats = store.query(
        "SELECT check_name, count(*) AS n, sum(CASE WHEN flag THEN 1 ELSE 0 END) AS flagged, avg(score) AS mean "
        "FROM check_results WHERE dataset = ? GROUP BY check_name", [dataset])
    by = {r["check_name"]: {"n": int(r["n"]), "flagged": int(r["flagged"] or 0), "mean": float(r["mean"] or 0)}
          for r in stats.iter_rows(named=True)}
    for c in runs["check_name"].to_list():
        by.setdefault(c, {"n": 0, "flagged": 0, "mean": 0.0})
    return runs, by


def render_report(store: Store, dataset: str) -> str:
    """The report as one HTML string."""
    info = store.require_dataset(dataset)
    tables = _tables(store)
    runs, stats = check_stats(store, dataset)
    sections = [_summary(store, dataset, info)]
    nav = [("summary", "Summary")]
    if runs.height:
        sections.append(_overview(runs, stats))
        nav.append(("checks", "Checks"))
        order = sorted(runs.iter_rows(named=True), key=lambda r: (r["check_name"] != "risk", r["check_name"]))
        for r in order:
            sections.append(_check_section(store, dataset, r, tables))
            nav.append((f"check-{r['check_name']}", r["check_name"]))
    else:
        sections.append('<section id="checks"><h2>Checks</h2><p class="muted">No checks have run on this dataset yet: '
                        f'<code>itaudit audit {_e(dataset)}</code>.</p></section>')
    for sid, label, html in (("borrowed", "Borrowed-from", _borrowed(store, dataset, tables)),
                             ("traced", "Traced responses", _traced(store, dataset, tables)),
                             ("shift", "Shift", _shift(store, dataset, tables)),
                             ("filters", "Exports", _filters(store, dataset, tables))):
        if html:
            sections.append(html)
            nav.append((sid, label))
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from .. import __version__ as version

    nav_html = "".join(f'<a href="#{_e(a)}">{_e(b)}</a>' for a, b in nav)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>itaudit report: {_e(dataset)}</title><style>{CSS}</style></head><body><main>'
            f'<h1>itaudit report: {_e(dataset)}</h1><p class="muted small">generated {now} by itaudit {_e(version)} from '
            f'<code>{_e(store.path)}</code></p><nav>{nav_html}</nav>{"".join(sections)}</main></body></html>')


def write_report(store: Store, dataset: str, path: str | os.PathLike) -> Path:
    """Render and write the report atomically; returns the path."""
    p = Path(path)
    html = render_report(store, dataset)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, p)
    return p

