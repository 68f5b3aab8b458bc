"""Benchmark of HTML report rendering (time and size) on an audited dataset.

The contamination benchmark (planted leaks, recall, false positives, time against the old
13-gram rule) is bench/bench_contamination.py.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def run(data_dir: Path, quick: bool) -> list[dict]:
    from itaudit.audit import save_result
    from itaudit.audit.contamination import contamination_check
    from itaudit.audit.style import style_check
    from itaudit.ingest import ingest
    from itaudit.report import render_report
    from itaudit.store import Store

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "b.duckdb")
        ingest(store, data_dir / "alpaca_eval" / "alpaca_eval_gpt4_1106_preview_outputs.json", "alpaca_eval",
               show_progress=False)
        ingest(store, data_dir / "self_instruct" / "user_oriented_instructions.jsonl", "self_instruct", "prompts",
               show_progress=False)
        # the contamination benchmark itself is bench/bench_contamination.py (planted leaks, recall, FPs)
        res = contamination_check(store, "alpaca_eval", against=["self_instruct"], embeddings=False, mark_eval=False)
        save_result(store, res)
        save_result(store, style_check(store, "alpaca_eval"))
        t0 = time.perf_counter()
        html = render_report(store, "alpaca_eval")
        t_rep = time.perf_counter() - t0
        rows.append({"bench": "report", "metric": "render HTML report (alpaca_eval, 2 checks)", "itaudit": t_rep,
                     "baseline": None, "ratio": None, "unit": "s", "note": f"{len(html) / 1024:.0f} KiB, self-contained"})
        store.close()
    return rows
