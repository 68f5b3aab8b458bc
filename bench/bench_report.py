"""Benchmarks for issue 7 blocks: the contamination n-gram scan and HTML report rendering.

- contamination: itaudit's vectorized 13-gram hash scan vs a plain-Python baseline (a dict of
  word-tuple 13-grams, looked up window by window) on Alpaca x (MMLU + GSM8K); both must find
  the same (IT row, eval item) pairs.
- report: rendering the HTML report of an audited dataset (time and size).
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from pathlib import Path


def _baseline_pairs(store, dataset: str, evals: list[str], n: int) -> set[tuple[int, int, str]]:
    from itaudit.audit.contamination import words

    fields = ("instruction", "input", "response")
    it = store.query(f"SELECT idx, {', '.join(fields)} FROM instances WHERE dataset = ? ORDER BY idx", [dataset])
    pairs: set[tuple[int, int, str]] = set()
    for ev in evals:
        e = store.query(f"SELECT idx, {', '.join(fields)} FROM instances WHERE dataset = ? ORDER BY idx", [ev])
        table: dict[tuple[str, ...], set[int]] = defaultdict(set)
        for row in e.iter_rows():
            for text in row[1:]:
                w = words(text)
                for k in range(len(w) - n + 1):
                    table[tuple(w[k:k + n])].add(row[0])
        for row in it.iter_rows():
            for text in row[1:]:
                w = words(text)
                for k in range(len(w) - n + 1):
                    for j in table.get(tuple(w[k:k + n]), ()):
                        pairs.add((row[0], j, ev))
    return pairs


def run(data_dir: Path, quick: bool) -> list[dict]:
    from itaudit.audit import save_result
    from itaudit.audit.contamination import _contamination
    from itaudit.audit.style import style_check
    from itaudit.ingest import ingest
    from itaudit.report import render_report
    from itaudit.store import Store

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "b.duckdb")
        ingest(store, data_dir / "alpaca" / "alpaca_5000.json", "alpaca", skip_invalid=True, show_progress=False)
        ingest(store, data_dir / "gsm8k" / "test.jsonl", "gsm8k", "qa", show_progress=False)
        evals = ["gsm8k"]
        if not quick:
            ingest(store, data_dir / "mmlu" / "mmlu.jsonl", "mmlu", "qa", skip_invalid=True, show_progress=False)
            evals.append("mmlu")
        ingest(store, data_dir / "alpaca_eval" / "alpaca_eval_gpt4_1106_preview_outputs.json", "alpaca_eval",
               show_progress=False)
        ingest(store, data_dir / "self_instruct" / "user_oriented_instructions.jsonl", "self_instruct", "prompts",
               show_progress=False)
        n = 13
        for it_name, ev_names in (("alpaca", evals), ("alpaca_eval", ["self_instruct"])):
            t0 = time.perf_counter()
            res, _ = _contamination(store, it_name, against=ev_names, n=n, min_words=n, max_eval_df=10**9,
                                    embeddings=False, max_pairs_per_row=10**6, min_coverage=0.0)
            t_ours = time.perf_counter() - t0
            t0 = time.perf_counter()
            base = _baseline_pairs(store, it_name, ev_names, n)
            t_base = time.perf_counter() - t0
            ours = {(a, b, d) for a, b, d in res.pairs.select("idx_a", "idx_b", "other_dataset").iter_rows()}
            n_it = store.query("SELECT count(*) AS n FROM instances WHERE dataset = ?", [it_name])["n"][0]
            n_ev = store.query("SELECT count(*) AS n FROM instances WHERE dataset IN (SELECT unnest(?::VARCHAR[]))",
                               [ev_names])["n"][0]
            rows.append({"bench": "contamination",
                         "metric": f"13-gram scan {it_name} {n_it:,} rows x {'+'.join(ev_names)} {n_ev:,} items",
                         "itaudit": t_ours, "baseline": t_base, "ratio": t_ours / t_base, "unit": "s",
                         "note": f"same pairs: {ours == base} ({len(ours)} pairs); baseline = Python dict of word tuples"})

        save_result(store, res)
        save_result(store, style_check(store, "alpaca_eval"))
        t0 = time.perf_counter()
        html = render_report(store, "alpaca_eval")
        t_rep = time.perf_counter() - t0
        rows.append({"bench": "report", "metric": "render HTML report (alpaca_eval, 2 checks)", "itaudit": t_rep,
                     "baseline": None, "ratio": None, "unit": "s", "note": f"{len(html) / 1024:.0f} KiB, self-contained"})
        store.close()
    return rows
