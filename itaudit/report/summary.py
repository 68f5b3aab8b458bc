"""A short rich terminal summary of a dataset's latest audit results (`print_summary`)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from ..store import Store
from .html import check_stats

_NOTES = {
    "contamination": lambda s: ", ".join(
        f"{k}: {v.get('eval_items_in_dataset', 0)}/{v.get('n_eval', 0)} eval items"
        for k, v in (s.get("by_eval_set") or {}).items()) or s.get("found_in", "") and f"found in {s['found_in']}",
    "style": lambda s: "top opening: " + (f"\"{s['top_openings'][0]['opening']}\" ×{s['top_openings'][0]['count']}"
                                          if s.get("top_openings") else "–"),
    "novelty": lambda s: f"bpb median {s.get('bpb_p50', float('nan')):.3f} on {s.get('n_scored', 0)} rows ({s.get('model_id')})",
    "risk": lambda s: f"mean {s.get('mean', 0):.3f}, p90 {s.get('p90', 0):.3f}, threshold {s.get('threshold')}",
}


def print_summary(store: Store, dataset: str, console: Console | None = None) -> None:
    """Print one table: per check, rows scored, flagged, share and a one-line note."""
    console = console or Console(stderr=True)
    info = store.require_dataset(dataset)
    runs, stats = check_stats(store, dataset)
    t = Table(title=f"audit summary: {dataset} ({info['n_rows']:,} instances)", title_justify="left")
    for c, j in (("check", "left"), ("scored", "right"), ("flagged", "right"), ("share", "right"), ("note", "left")):
        t.add_column(c, justify=j, overflow="fold")
    for r in runs.iter_rows(named=True):
        s = stats[r["check_name"]]
        summary = json.loads(r["summary"]) if r["summary"] else {}
        try:
            note = str(_NOTES.get(r["check_name"], lambda _s: "")(summary) or "")
        except (KeyError, TypeError, ValueError, IndexError):
            note = ""
        share = s["flagged"] / s["n"] if s["n"] else 0.0
        style = "red" if share >= 0.1 else ("yellow" if share > 0 else "green")
        t.add_row(r["check_name"], f"{s['n']:,}", f"[{style}]{s['flagged']:,}[/]", f"[{style}]{share:.1%}[/]", note[:90])
    if not runs.height:
        console.print(f"[dim]{dataset}: no checks have run yet[/]")
        return
    console.print(t)
