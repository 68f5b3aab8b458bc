"""The whole itaudit pipeline through the Python API, cell by cell (`# %%`: run it as a script, or
cell by cell in an editor that understands the markers).

    python examples/api_walkthrough.py                       # real small models: SmolLM2-135M answers,
                                                             # Gemma-3-270M is the base (needs the models extra)
    python examples/api_walkthrough.py --base DIR --tuned DIR --out out/walk   # any HF dirs / .gguf / aliases

It audits the bundled Alpaca sample against the bundled eval sample, answers the eval prompts with
the tuned model, measures the token shift against the base model, tunes a LoRA adapter on the
filtered data, traces the answers back to the dataset (with the base model as negative control),
exports the kept rows as a `datasets.Dataset`, and writes the HTML report. A summary of what it
found goes to OUT/summary.json.
"""

# %% setup
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # run from a checkout without installing

import polars as pl  # noqa: E402

import itaudit  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--base", default="gemma3-270m", help="base model (alias, HF dir, .gguf)")
ap.add_argument("--tuned", default="smollm2", help="tuned model that answers the prompts")
ap.add_argument("--out", default="out/walkthrough", help="folder for the database, adapter, export and report")
ap.add_argument("--max-new-tokens", type=int, default=48)
args = ap.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
pl.Config.set_tbl_width_chars(160)
found: dict = {"seconds": {}}
_t = [time.perf_counter()]


def done(step: str) -> None:
    """Record how long the cell took."""
    now = time.perf_counter()
    found["seconds"][step] = round(now - _t[0], 2)
    _t[0] = now


ws = itaudit.open(out / "walkthrough.duckdb", index_dir=out / "indexes")
done("setup")

# %% 1. ingest: a file, and in-memory data (a list of dicts here; a polars/pandas DataFrame or a
#        datasets.Dataset work the same way)
r = ws.ingest(HERE / "sample_alpaca.jsonl", "alpaca")
eval_rows = [json.loads(line) for line in (HERE / "sample_eval.jsonl").read_text().splitlines()]
e = ws.ingest(eval_rows, "eval")
found["ingested"] = {"alpaca": r.n_rows, "eval": e.n_rows}
print(ws.datasets().select("name", "format", "n_rows"))
done("ingest")

# %% 2. index: embed the instructions, build a FAISS index, look up neighbours
ws.index("alpaca")
print(ws.neighbors("alpaca", "What is the capital city of Australia?", k=3).select("idx", "score", "instruction"))
done("index")

# %% 3. audit: duplicates, near duplicates, style, contamination by the eval set, risk
checks = ws.audit("alpaca", ["exact_duplicates", "near_duplicates", "style", "contamination", "risk"],
                  params={"contamination": {"against": ["eval"]}})
print(checks)
found["checks"] = checks.height
found["flagged"] = dict(zip(checks["check_name"].to_list(), checks["flagged"].to_list(), strict=True))
print(ws.findings("alpaca").select("idx", "instruction", "exact_duplicates_flag", "risk_score").head(5))
done("audit")

# %% 4. generate: the tuned model answers the eval prompts
gens = ws.generate(args.tuned, dataset="eval", max_new_tokens=args.max_new_tokens)
found["generations"] = gens.height
print(gens.select("prompt_id", "response"))
done("generate")

# %% 5. shift: how far the tuned answers are from what the base model would say
shift = ws.shift(args.base, generations=gens["run_id"][0], reference="alpaca")
cats = ws.shift_categories(shift.run_id)
found["shift_tokens"] = int(cats["tokens"].sum())  # columns: category, tokens, pct, mean_kl
print(cats)
done("shift")

# %% 6. tune: a small LoRA adapter on the rows the default policy keeps (not duplicated, not contaminated)
keep = ws.filter("alpaca", policy="default", normalized=True, as_dataset=True)
tuned = ws.tune(args.tuned, "alpaca", out / "lora", rows=8, max_len=96, batch_size=4, save_every=0, overwrite=True,
                where="NOT idx IN (SELECT idx FROM check_results WHERE dataset = 'alpaca' AND flag "
                      "AND check_name IN ('exact_duplicates', 'contamination'))")
found["tune_steps"] = tuned.steps_done
print(f"tuned {tuned.method} adapter in {tuned.out}: {tuned.steps_done} steps, loss {tuned.losses[0]:.3f} -> {tuned.losses[-1]:.3f}")
done("tune")

# %% 7. trace: candidate spans of the tuned answers back to the dataset, the base model as negative control
trace = ws.trace("alpaca", generations=gens["run_id"][0], base=args.base, control="base", neighbours=False)
found["trace_responses"] = len(trace.traces)
found["control"] = None if trace.excess is None else {"excess": trace.excess.excess}
print(f"trace {trace.run_id}: {trace.summary.get('candidate_spans')} candidate spans, "
      f"{trace.summary.get('traced_spans')} with a likely source; excess over control: "
      f"{None if trace.excess is None else trace.excess.excess}")
print(ws.trace_spans(trace.run_id).select("response_id", "text", "candidate_score", "traced").head(8))
done("trace")

# %% 8. filter: the kept rows as a datasets.Dataset (and as a file with a manifest)
found["kept"] = keep.num_rows
print(keep)
exported = ws.filter("alpaca", out / "alpaca_clean.jsonl", policy="default")
print(f"exported {exported.n_kept} rows to {exported.out}; manifest {exported.manifest_path}")
done("filter")

# %% 9. report: the per-check findings, and the HTML report
summary = ws.report("alpaca", html=out / "report.html")
print(summary)
found["report_sections"] = (out / "report.html").read_text().count("<section id=")
done("report")

# %% 10. query: anything in the database with SQL (canned reports in sql/reports)
print(ws.query(report="checks"))
print(ws.query("SELECT category, count(*) AS n FROM instances WHERE dataset = ? GROUP BY 1 ORDER BY n DESC", ["alpaca"]))
done("query")

ws.close()
(out / "summary.json").write_text(json.dumps(found, indent=1, default=str))
print(json.dumps(found, default=str))
