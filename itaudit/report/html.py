"""One self-contained HTML report per dataset: inline CSS and SVG, no scripts, no external assets.

Rendered with Jinja2 templates (`itaudit/report/templates`, autoescape on: every piece of data is
escaped exactly once). Sections render from whatever is in the database and are skipped when
there is no data: dataset summary, checks overview, one section per check, borrowed-from
instances and traced responses (trace tables), shift categories, filter exports.

Each check section comes from its step: `itaudit.audit.registry.get(name)().render_html(view)`
(`view` is a `CheckView`); a step that does not render its own falls back to the template
`checks/<name>.html.j2`, else `checks/generic.html.j2`. Every section leads with what was found
(counts, top rows with their pair or evidence side by side, plots) and ends with its parameters
and raw summary in a collapsed `<details>`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import polars as pl
from markupsafe import Markup, escape

from ..paths import atomic_write_text
from ..store import Store
from . import svg
from .view import CheckView

MAX_EXAMPLES = 5
EXCERPT = 600
TEMPLATES = Path(__file__).resolve().parent / "templates"


# -- formatting filters ------------------------------------------------------------------------

def num(v: Any) -> str:
    """Numbers with thousands separators (4 significant digits for floats); '–' for None."""
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
    return str(v)


def pct(v: Any) -> str:
    return "–" if v is None else f"{float(v):.1%}"


def points(v: Any) -> str:
    """A difference of shares in percentage points, signed."""
    return "–" if v is None else f"{100 * float(v):+.1f} points"


def excerpt(text: Any, n: int = EXCERPT) -> str:
    t = "" if text is None else str(text)
    return t if len(t) <= n else t[: n - 1] + "…"


def mark(text: Any, needle: str | None, n: int = EXCERPT) -> Markup:
    """Excerpt of `text` around the first case-insensitive occurrence of `needle`, in <mark>."""
    t = "" if text is None else str(text)
    if needle:
        pos = t.lower().find(needle.lower())
        if pos >= 0:
            start, end = max(0, pos - 150), min(len(t), pos + len(needle) + 150)
            pre = ("…" if start else "") + t[start:pos]
            post = t[pos + len(needle):end] + ("…" if end < len(t) else "")
            return escape(pre) + Markup("<mark>") + escape(t[pos:pos + len(needle)]) + Markup("</mark>") + escape(post)
    return escape(excerpt(t, n))


def tojson_pretty(v: Any) -> str:
    return json.dumps(v, indent=1, default=str, ensure_ascii=False)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=num, pct=pct, points=points, excerpt=excerpt, mark=mark, tojson_pretty=tojson_pretty)
    return env


def render_template(name: str, **context: Any) -> Markup:
    """Render one template of `itaudit/report/templates` (autoescaped) to safe HTML."""
    return Markup(environment().get_template(name).render(**context))


def has_template(name: str) -> bool:
    return (TEMPLATES / name).is_file()


def _svg(s: str) -> Markup:
    return Markup(s)   # built by .svg, which escapes every label itself


# -- data helpers ------------------------------------------------------------------------------

def _tables(store: Store) -> set[str]:
    return set(store.query("SELECT table_name FROM information_schema.tables")["table_name"].to_list())


def _columns(store: Store, table: str) -> set[str]:
    return set(store.query("SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                           [table])["column_name"].to_list())


def _instances(store: Store, dataset: str, idx: list[int]) -> dict[int, dict[str, Any]]:
    if not idx:
        return {}
    df = store.query(
        "SELECT idx, instance_id, instruction, input, response, category FROM instances "
        "WHERE dataset = ? AND idx IN (SELECT unnest(?::BIGINT[]))", [dataset, [int(i) for i in idx]])
    return {int(r["idx"]): r for r in df.iter_rows(named=True)}


def _details_text(details: str | None) -> str:
    if not details:
        return ""
    try:
        d = json.loads(details)
    except ValueError:
        return excerpt(details, 300)
    if isinstance(d, dict):
        return excerpt(" · ".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in d.items()), 300)
    return excerpt(str(d), 300)


# -- sections ----------------------------------------------------------------------------------

def _summary(store: Store, dataset: str, info: dict[str, Any]) -> Markup:
    stats = store.query(
        "SELECT count(*) AS n, sum(CASE WHEN turn > 0 THEN 1 ELSE 0 END) AS later_turns, "
        "sum(CASE WHEN input IS NOT NULL AND input <> '' THEN 1 ELSE 0 END) AS with_input, "
        "count(DISTINCT content_hash) AS distinct_rows FROM instances WHERE dataset = ?", [dataset]).row(0, named=True)
    lens = store.query("SELECT length(instruction) + coalesce(length(input), 0) AS p, length(response) AS r "
                       "FROM instances WHERE dataset = ?", [dataset])
    cats = store.query("SELECT coalesce(category, source) AS c, count(*) AS n FROM instances WHERE dataset = ? "
                       "AND coalesce(category, source) IS NOT NULL GROUP BY 1 ORDER BY n DESC LIMIT 12", [dataset])
    charts = []
    if lens.height:
        charts.append(_svg(svg.histogram(lens["p"].to_numpy(), title="prompt length (chars, log scale)", log_x=True)))
        charts.append(_svg(svg.histogram(lens["r"].to_numpy(), title="response length (chars, log scale)", log_x=True,
                                         color=svg.PALETTE[1])))
    if cats.height > 1:
        charts.append(_svg(svg.bars(cats["c"].to_list(), cats["n"].to_list(), title="categories / sources")))
    return render_template("summary.html.j2", info=info, stats=stats, charts=charts,
                           dup_rows=stats["n"] - stats["distinct_rows"])


def _step(check: str) -> Any:
    """The registered Step class of `check`, or None (unknown check, or no registry)."""
    try:
        from ..audit import registry
    except ImportError:
        return None
    try:
        return registry.get(check)
    except Exception:  # unknown or unloadable check: the generic renderer shows its stored rows
        return None


def _instance(cls: type) -> Any:
    """The step with default parameters (display does not depend on them)."""
    try:
        return cls()
    except Exception:   # a step whose parameters have no defaults
        return cls.__new__(cls)


def _step_text(check: str, view: CheckView) -> str:
    """The step's own one-line finding(s) (`render_text`), joined; '' when it has none."""
    cls = _step(check)
    if cls is None:
        return ""
    try:
        lines = _instance(cls).render_text(view)
    except Exception:   # a step's display must never break the report
        return ""
    return "; ".join(str(x) for x in lines or [])


def _overview(dataset: str, views: list[CheckView]) -> Markup:
    rows = []
    for v in views:
        note = _step_text(v.check, v) or _found(v)
        rows.append({"check": v.check, "note": note, "n": v.n, "flagged": v.flagged,
                     "share": v.flagged / v.n if v.n else 0.0, "at": str(v.created_at)[:19]})
    return render_template("overview.html.j2", dataset=dataset, rows=rows)


_FOUND_KEYS = {"n_clusters": "clusters", "n_groups": "groups", "n_conflict_pairs": "conflicting pairs",
               "n_pairs": "pairs", "n_scored": "rows scored"}


def _found(v: CheckView) -> str:
    return " · ".join(f"{num(v.summary[k])} {label}" for k, label in _FOUND_KEYS.items()
                      if isinstance(v.summary.get(k), (int, float)))


def check_section(view: CheckView) -> Markup:
    """The section of one check: the step's own `render_html(view)`, else the templates."""
    cls = _step(view.check)
    if cls is not None and _overrides_render_html(cls):
        try:
            html = _instance(cls).render_html(view)
        except NotImplementedError:
            html = ""
        if html:
            return Markup(html)
    return default_check_section(view)


def _overrides_render_html(cls: type) -> bool:
    from ..steps.base import Step

    return getattr(cls, "render_html", None) is not Step.render_html


def default_check_section(view: CheckView) -> Markup:
    """`checks/<check>.html.j2` (or the generic template) with the context the check needs."""
    ctx = _generic_context(view)
    extra = _EXTRAS.get(view.check)
    if extra is not None:
        ctx.update(extra(view))
    name = f"checks/{view.check}.html.j2"
    return render_template(name if has_template(name) else "checks/generic.html.j2", v=view, **ctx)


def _generic_context(v: CheckView) -> dict[str, Any]:
    cls = _step(v.check)
    cards = [(val, k.removeprefix("n_").replace("_", " ")) for k, val in v.summary.items()
             if k.startswith("n_") and isinstance(val, (int, float)) and not isinstance(val, bool) and k != "n_flagged"][:6]
    charts = []
    if v.flagged and v.n and v.rows["score"].n_unique() > 1:   # a spread worth a plot
        charts.append(_svg(svg.histogram(v.rows["score"].to_numpy(), bins=20, title=f"{v.check}: score distribution",
                                         xlabel="score (higher = more of an issue)")))
    return {"description": getattr(cls, "description", "") if cls else "", "found": [], "cards": cards,
            "charts": charts, "examples": _examples(v), "clusters": _clusters(v)}


def _examples(v: CheckView) -> list[dict[str, Any]]:
    top = v.top_flagged(MAX_EXAMPLES)
    if not top.height:
        return []
    inst = v.instances(top["idx"].to_list())
    pairs = v.pairs(top["idx"].to_list())
    out = []
    for r in top.iter_rows(named=True):
        i = int(r["idx"])
        ex: dict[str, Any] = {"row": inst.get(i, {}), "meta": f"idx {i} · score {r['score']:.3f}",
                              "details": _details_text(r["details"]), "pair": None}
        p = pairs.filter(pl.col("idx_a") == i).head(1)
        if p.height:
            pr = p.row(0, named=True)
            other = pr["other_dataset"] or v.dataset
            ev = _details_text(pr["evidence"])
            ex["pair"] = {"row": v.instances([pr["idx_b"]], other).get(int(pr["idx_b"]), {}),
                          "meta": f"paired with {other} idx {pr['idx_b']} · score {num(pr['score'])}"
                                  + (f" · {ev}" if ev else "")}
        out.append(ex)
    return out


def _clusters(v: CheckView) -> dict[str, Any] | None:
    rows = v.rows
    if not rows.height:
        return None
    cl = (rows.filter(pl.col("cluster_id").is_not_null() & (pl.col("cluster_id") >= 0))
              .group_by("cluster_id").agg(pl.len().alias("size"), pl.col("idx").min().alias("first"))
              .sort(["size", "cluster_id"], descending=[True, False]))
    if not cl.height:
        return None
    top = cl.head(8)
    inst = v.instances(top["first"].to_list())
    return {"n": cl.height, "largest": int(cl["size"][0]),
            "rows": [[c, s, excerpt((inst.get(int(f)) or {}).get("instruction"), 160)] for c, s, f in top.iter_rows()]}


# check-specific additions to the template context (findings first)

def _contamination_ctx(v: CheckView) -> dict[str, Any]:
    s = v.summary
    eval_sets = []
    if s.get("direction"):   # the reverse direction, stored on an eval set
        eval_sets.append({"name": v.dataset, "label": f"{v.dataset} items found in {s.get('found_in')}",
                          "n_eval": s.get("n_eval"), "found": s.get("eval_items_in_dataset"),
                          "share": s.get("eval_share_in_dataset"), "ngram": s.get("ngram_pairs"),
                          "embedding": s.get("embedding_pairs")})
    for k, e in (s.get("by_eval_set") or {}).items():
        eval_sets.append({"name": k, "label": f"{v.dataset} rows holding {k} items ({v.dataset} ⊃ {k})",
                          "n_eval": e.get("n_eval"), "found": e.get("eval_items_in_dataset"),
                          "share": e.get("eval_share_in_dataset"), "ngram": e.get("ngram_pairs"),
                          "embedding": e.get("embedding_pairs")})
    evidence = []
    pairs = v.pairs(limit=MAX_EXAMPLES * 2)
    for p in pairs.iter_rows(named=True):
        ev = json.loads(p["evidence"]) if p["evidence"] else {}
        via = ev.get("via", "?")
        other = p["other_dataset"] or v.dataset
        how = f"coverage {num(ev.get('coverage'))}" if "coverage" in ev else f"cosine {num(ev.get('cosine'))}"
        evidence.append({"meta": f"{via} · {how} · score {num(p['score'])}", "overlap": ev.get("overlap"),
                         "a": v.instances([p["idx_a"]]).get(int(p["idx_a"]), {}), "a_meta": f"{v.dataset} idx {p['idx_a']}",
                         "b": v.instances([p["idx_b"]], other).get(int(p["idx_b"]), {}), "b_meta": f"{other} idx {p['idx_b']}"})
    return {"eval_sets": eval_sets, "evidence": evidence,
            "found": [f"{e['found'] or 0} of {num(e['n_eval'])} {e['name']} items" for e in eval_sets]}


def _style_ctx(v: CheckView) -> dict[str, Any]:
    s, charts = v.summary, []
    top = s.get("top_openings") or []
    if top:
        charts.append(_svg(svg.bars([t["opening"] for t in top[:15]], [t["count"] for t in top[:15]],
                                    title="most common response openings", color=svg.PALETTE[1])))
    bp = s.get("boilerplate") or {}
    if bp:
        charts.append(_svg(svg.bars(list(bp), list(bp.values()), title="boilerplate matches (rows)", color=svg.PALETTE[3])))
    if v.table_exists("style_features"):
        f = v.store.query("SELECT n_bullets + n_numbered AS list_lines, n_headings, n_code_blocks "
                          "FROM style_features WHERE dataset = ?", [v.dataset])
        if f.height:
            n = f.height
            shares = {"list": float((f["list_lines"] > 0).sum()) / n, "heading": float((f["n_headings"] > 0).sum()) / n,
                      "code block": float((f["n_code_blocks"] > 0).sum()) / n}
            charts.append(_svg(svg.bars(list(shares), list(shares.values()), title="share of responses with structure",
                                        value_fmt=lambda x: f"{x:.1%}", color=svg.PALETTE[4])))
    found = [f"top opening “{top[0]['opening']}” ×{top[0]['count']:,}"] if top else []
    return {"charts": charts + _generic_context(v)["charts"], "found": found}


def _novelty_ctx(v: CheckView) -> dict[str, Any]:
    s, charts = v.summary, []
    model = s.get("model_id")
    if v.table_exists("novelty_scores"):
        df = v.store.query("SELECT bpb FROM novelty_scores WHERE dataset = ? AND model_id = ?", [v.dataset, model])
        if df.height:
            charts.append(_svg(svg.histogram(df["bpb"].to_numpy(), title=f"base-model bits per byte ({model})",
                                             xlabel="bits per byte", color=svg.PALETTE[4],
                                             marker=s.get("bpb_flag_threshold"), marker_label="flag")))
    found = [f"median {s['bpb_p50']:.3f} bits per byte"] if isinstance(s.get("bpb_p50"), (int, float)) else []
    return {"charts": charts, "found": found}


def _risk_ctx(v: CheckView) -> dict[str, Any]:
    contrib = v.summary.get("mean_contribution") or {}
    charts = [_svg(svg.bars(list(contrib), list(contrib.values()), title="mean contribution to risk (w·score)",
                            color=svg.PALETTE[3]))] if contrib else []
    s = v.summary
    found = [f"mean {s['mean']:.3f}, p90 {s['p90']:.3f}"] if isinstance(s.get("mean"), float) and isinstance(s.get("p90"), float) else []
    return {"charts": charts + _generic_context(v)["charts"], "found": found}


_EXTRAS = {"contamination": _contamination_ctx, "style": _style_ctx, "novelty": _novelty_ctx, "risk": _risk_ctx}


def _borrowed(store: Store, dataset: str, tables: set[str]) -> Markup | None:
    if "trace_sources" not in tables:
        return None
    df = store.query("SELECT idx, count(*) AS spans, count(DISTINCT run_id || ':' || response_id) AS responses, "
                     "max(score) AS best FROM trace_sources WHERE dataset = ? AND likely_source "
                     + _not_control_runs(store, "trace_sources") +
                     " GROUP BY idx ORDER BY spans DESC, idx LIMIT 15", [dataset])
    if not df.height:
        return None
    inst = _instances(store, dataset, df["idx"].to_list())
    labels = [f'#{i} {(inst.get(int(i)) or {}).get("instruction", "")[:40]}' for i in df["idx"].to_list()]
    rows = [[i, s, r, b, excerpt((inst.get(int(i)) or {}).get("instruction"), 200)] for i, s, r, b in df.iter_rows()]
    chart = _svg(svg.bars(labels, df["spans"].to_list(), title="spans traced to the instance", color=svg.PALETTE[3]))
    return render_template("borrowed.html.j2", rows=rows, chart=chart, n_instances=df.height,
                           n_spans=int(df["spans"].sum()))


def _not_control_runs(store: Store, table: str) -> str:
    """SQL condition leaving out the spans of control runs (they are chance, not borrowing)."""
    if "role" not in _columns(store, "trace_runs"):
        return ""
    return (f" AND {table}.run_id NOT IN (SELECT run_id FROM trace_runs "
            "WHERE role IN ('control', 'tuned_compare'))")


def _shift(store: Store, dataset: str, tables: set[str]) -> Markup | None:
    if not {"shift_runs", "shift_tokens"} <= tables:
        return None
    q = ("SELECT run_id, base_model, tuned_model, mode, reference_dataset, created_at FROM shift_runs {} "
         "ORDER BY created_at DESC LIMIT {}")
    runs = store.query(q.format("WHERE reference_dataset = ?", 5), [dataset])
    note = ""
    if not runs.height:
        runs = store.query(q.format("", 3))
        note = "No shift run references this dataset; showing the latest runs."
    charts, leads = [], []
    for r in runs.iter_rows(named=True):
        cats = store.query("SELECT category, count(*) AS n FROM shift_tokens WHERE run_id = ? GROUP BY 1", [r["run_id"]])
        if not cats.height:
            continue
        d = dict(cats.iter_rows())
        order = [c for c in ("unshifted", "marginal", "shifted") if c in d] + [c for c in d if c not in ("unshifted", "marginal", "shifted")]
        title = f'{r["tuned_model"] or "responses"} vs {r["base_model"]}'
        n = sum(d.values())
        leads.append({"title": title, "n": n, "shifted": d.get("shifted", 0) / n, "marginal": d.get("marginal", 0) / n})
        charts.append(_svg(svg.stacked(order, [d[c] for c in order], title=title[:80],
                                       colors=(svg.PALETTE[2], svg.PALETTE[1], svg.PALETTE[3], svg.PALETTE[7]))))
        words = store.query("SELECT lower(trim(token)) AS t, count(*) AS n FROM shift_tokens WHERE run_id = ? AND category = 'shifted' "
                            "AND length(trim(token)) > 0 GROUP BY 1 ORDER BY n DESC, t LIMIT 12", [r["run_id"]])
        if words.height:
            charts.append(_svg(svg.bars(words["t"].to_list(), words["n"].to_list(), title="most frequent shifted tokens",
                                        color=svg.PALETTE[3], width=420, label_width=140)))
    if not leads:
        return None
    return render_template("shift.html.j2", runs=leads, charts=charts, note=note)


def _filters(store: Store, dataset: str, tables: set[str]) -> Markup | None:
    if "filter_manifests" not in tables:
        return None
    df = store.query("SELECT created_at, out_path, export_format, normalized, n_kept, n_dropped, manifest "
                     "FROM filter_manifests WHERE dataset = ? ORDER BY created_at DESC LIMIT 5", [dataset])
    if not df.height:
        return None
    rows = []
    for r in df.iter_rows(named=True):
        m = json.loads(r["manifest"])
        reasons = ", ".join(f"{k}: {v}" for k, v in (m.get("counts", {}).get("dropped_by_reason") or {}).items())
        rows.append([str(r["created_at"])[:19], r["out_path"], r["export_format"] + (" (normalized)" if r["normalized"] else ""),
                     r["n_kept"], r["n_dropped"], reasons])
    return render_template("filters.html.j2", rows=rows)


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


def check_views(store: Store, dataset: str) -> list[CheckView]:
    """The latest run of every check on `dataset`, risk first, then by name."""
    runs, _ = check_stats(store, dataset)
    views = [CheckView.load(store, dataset, r) for r in runs.iter_rows(named=True)]
    return sorted(views, key=lambda v: (v.check != "risk", v.check))


def render_report(store: Store, dataset: str) -> str:
    """The report as one HTML string."""
    from .. import __version__ as version
    from .trace import traced_section

    info = store.require_dataset(dataset)
    tables = _tables(store)
    views = check_views(store, dataset)
    sections = [_summary(store, dataset, info), _overview(dataset, views)]
    nav = [("summary", "Summary"), ("checks", "Checks")]
    for v in views:
        sections.append(check_section(v))
        nav.append((f"check-{v.check}", v.check))
    for sid, label, html in (("traced", "Traced responses", traced_section(store, dataset, tables)),
                             ("borrowed", "Borrowed-from", _borrowed(store, dataset, tables)),
                             ("shift", "Shift", _shift(store, dataset, tables)),
                             ("filters", "Exports", _filters(store, dataset, tables))):
        if html:
            sections.append(html)
            nav.append((sid, label))
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    css = Markup((TEMPLATES / "report.css").read_text(encoding="utf-8"))
    return str(render_template("report.html.j2", dataset=dataset, now=now, version=version, db=str(store.path),
                               nav=nav, sections=sections, css=css))


def write_report(store: Store, dataset: str, path: str | os.PathLike) -> Path:
    """Render and write the report atomically; returns the path."""
    p = Path(path)
    html = render_report(store, dataset)
    atomic_write_text(p, html)
    return p
