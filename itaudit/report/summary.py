"""A short rich terminal summary of a dataset's latest audit results (`print_summary`).

The "finding" of each check is the step's own `render_text(view)` (one line per eval set and
direction for contamination, for example), else its most telling summary counts.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..store import Store
from .html import _found, _instance, _step, check_views

_NOTES = {
    "contamination": lambda s: ", ".join(
        f"{k}: {v.get('eval_items_in_dataset', 0)}/{v.get('n_eval', 0)} eval items"
        for k, v in (s.get("by_eval_set") or {}).items()) or s.get("found_in", "") and f"found in {s['found_in']}",
    "style": lambda s: "top opening: " + (f"\"{s['top_openings'][0]['opening']}\" ×{s['top_openings'][0]['count']}"
                                          if s.get("top_openings") else "–"),
    "novelty": lambda s: f"bpb median {s.get('bpb_p50', float('nan')):.3f} on {s.get('n_scored', 0)} rows ({s.get('model_id')})",
    "risk": lambda s: f"mean {s.get('mean', 0):.3f}, p90 {s.get('p90', 0):.3f}, threshold {s.get('threshold')}",
}


def finding_lines(view) -> list[str]:
    """What one check found, in words: its step's render_text, else a note from its summary."""
    cls = _step(view.check)
    if cls is not None:
        try:
            lines = [str(x) for x in _instance(cls).render_text(view) or []]
        except Exception:   # a step's display must never break the summary
            lines = []
        if lines:
            return lines
    try:
        note = str(_NOTES.get(view.check, lambda _s: "")(view.summary) or "")
    except (KeyError, TypeError, ValueError, IndexError):
        note = ""
    return [note or _found(view)]


def print_summary(store: Store, dataset: str, console: Console | None = None) -> None:
    """Print one table: per check, rows scored, flagged, share and what it found."""
    console = console or Console(stderr=True)
    info = store.require_dataset(dataset)
    views = check_views(store, dataset)
    if not views:
        console.print(f"[dim]{dataset}: no checks have run yet[/]")
        return
    t = Table(title=f"audit summary: {dataset} ({info['n_rows']:,} instances)", title_justify="left")
    t.add_column("check", no_wrap=True)
    for c in ("scored", "flagged", "share"):
        t.add_column(c, justify="right", no_wrap=True)
    t.add_column("finding", overflow="fold")
    for v in views:
        share = v.flagged / v.n if v.n else 0.0
        style = "red" if share >= 0.1 else ("yellow" if share > 0 else "green")
        t.add_row(v.check, f"{v.n:,}", f"[{style}]{v.flagged:,}[/]", f"[{style}]{share:.1%}[/]",
                  "\n".join(finding_lines(v)), end_section=True)
    console.print(t)
