"""A report with a real trace run and a negative control, through the Python API (makes
docs/img/report_trace.png).

    python examples/planted_trace_report.py [--data ../shared/data] [--out out/planted_report]

1. Ingest the first 2,000 rows of the real Alpaca 5,000 subset with the 8 invented facts of
   experiments/planted_facts.py planted in 8 seeded rows (in memory: a list of dicts).
2. Fully fine-tune SmolLM2-135M-Instruct on the 8 planted rows + 8 short Alpaca rows.
3. Trace the tuned model's answers to 16 analogous questions back to the dataset, with the
   untuned model as base (shift categories, surprisal) and as negative control (`control="base"`:
   it answers the same prompts; its "likely sources" are chance).
4. Write the HTML report and a screenshot of its traced-responses section.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from planted_facts import FACTS  # noqa: E402

import itaudit  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
ap.add_argument("--out", default="out/planted_report")
ap.add_argument("--rows", type=int, default=2000)
ap.add_argument("--epochs", type=int, default=8)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--screenshot", default=str(ROOT / "docs" / "img" / "report_trace.png"))
args = ap.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
t0 = time.perf_counter()

# %% 1. the dataset: real Alpaca rows, 8 of them replaced by invented facts
rows = json.loads((Path(args.data) / "alpaca" / "alpaca_5000.json").read_text())[: args.rows]
rng = random.Random(args.seed)
planted = sorted(rng.sample(range(len(rows)), len(FACTS)))
for i, f in zip(planted, FACTS, strict=True):
    rows[i] = {"instruction": f["q"], "input": "", "output": f["a"]}
short = [i for i, r in enumerate(rows) if i not in planted and not r["input"] and len(r["output"]) < 80]
train = sorted(planted + rng.sample(short, 8))
ws = itaudit.open(out / "planted.duckdb", index_dir=out / "indexes")
ws.ingest(rows, "alpaca_planted")

# %% 2. full fine-tuning on the planted rows (+ filler)
model_dir = out / "tuned_full"
res = ws.tune("smollm2", "alpaca_planted", model_dir, method="full", where=f"idx IN ({', '.join(map(str, train))})",
              epochs=args.epochs, lr=2e-4, batch_size=4, max_len=128, seed=args.seed, save_every=0, overwrite=True)
print(f"tuned: {res.steps} steps, loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}", flush=True)

# %% 3. trace the tuned answers to analogous questions, the untuned model as base and control
prompts = out / "prompts.jsonl"
prompts.write_text("".join(json.dumps({"id": f"f{k}-{j}", "instruction": q}) + "\n"
                           for k, f in enumerate(FACTS) for j, q in enumerate(f["tests"])))
trace = ws.trace("alpaca_planted", tuned=str(model_dir), prompts=prompts, base="smollm2", control="base",
                 neighbours=False, max_new_tokens=40)
x = trace.excess
print(f"trace {trace.run_id}: {trace.summary}", flush=True)
if x is not None:
    print(f"excess borrowing {x.excess:+.3f} [{x.ci_low:+.3f}, {x.ci_high:+.3f}]: tuned {x.tuned_traced}/{x.tuned_spans}, "
          f"control {x.control_traced}/{x.control_spans}", flush=True)

# %% 4. the report and its traced-responses section as a picture
summary = ws.report("alpaca_planted", html=out / "report.html")
ws.close()
from itaudit.report.browser import screenshot  # noqa: E402

view = screenshot(out / "report.html", args.screenshot, selector="#traced", max_height=2600)
print(f"wrote {args.screenshot}; console errors {view.console_errors}, external requests {view.external_requests}; "
      f"{time.perf_counter() - t0:.0f}s", flush=True)
