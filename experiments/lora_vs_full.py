"""LoRA vs full fine-tuning: how many of the tuned model's tokens does each method shift?

Reproduces, at small scale on a CPU, the core contrast of "A Closer Look at the Limitations of
Instruction Tuning" (Ghosh et al., 2024): LoRA-tuned models stay close to their base (few
shifted tokens, mostly at the start of the response and in style words), while full fine-tuning
shifts many more tokens. One command:

    python experiments/lora_vs_full.py                 # defaults: SmolLM2-135M, 64 LIMA rows
    python experiments/lora_vs_full.py --base gemma3-270m --rows 32

Steps (each resumable; rerunning reuses finished work in --workdir):
  1. ingest the IT dataset into DuckDB (`--data`, default LIMA train);
  2. tune the base twice on the same first `--rows` rows: LoRA and full (`itaudit.tune`);
  3. each tuned model answers `--n-prompts` prompts (default Vicuna-80), and the base model
     scores every answer token (`itaudit.shift`: unshifted rank 1 / marginal 2-3 / shifted >3);
  4. print the side-by-side table from DuckDB (reports tune_shift, tune_shift_tokens).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ITAUDIT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="smollm2", help="model to tune (alias, HF dir, .gguf) [smollm2]")
    p.add_argument("--data", type=Path, default=DATA / "lima_train" / "lima.json", help="IT dataset file")
    p.add_argument("--dataset-name", default="lima")
    p.add_argument("--rows", type=int, default=64, help="first N rows of the dataset [64]")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr-lora", type=float, default=2e-4)
    p.add_argument("--lr-full", type=float, default=2e-5)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts", type=Path, default=DATA / "vicuna80" / "question.jsonl")
    p.add_argument("--n-prompts", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads [1: on a shared 2-core box 1 thread measured ~5x faster than 2]")
    p.add_argument("--workdir", type=Path, default=ROOT / "out" / "lora_vs_full")
    p.add_argument("--methods", default="lora,full")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if a.threads > 0:
        os.environ["ITAUDIT_TORCH_THREADS"] = str(a.threads)
        import torch

        torch.set_num_threads(a.threads)
    sys.path.insert(0, str(ROOT))
    import polars as pl

    from itaudit import sqlfiles
    from itaudit.cli.data import print_frame
    from itaudit.ingest import ingest
    from itaudit.models import load_model, read_prompts
    from itaudit.models.loading import LoadedModel, resolve
    from itaudit.shift import analyze
    from itaudit.store import Store
    from itaudit.tune import TuneConfig, tune

    show = not a.quiet
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    a.workdir.mkdir(parents=True, exist_ok=True)
    store = Store(a.workdir / "lora_vs_full.duckdb")

    t0 = time.perf_counter()
    ingest(store, a.data, a.dataset_name)
    items = read_prompts(a.prompts, limit=a.n_prompts)
    timings["ingest"] = time.perf_counter() - t0

    shift_ids: dict[str, str] = {}
    for method in [m.strip() for m in a.methods.split(",") if m.strip()]:
        cfg = TuneConfig(base=a.base, dataset=a.dataset_name, out=Path(), method=method, rows=a.rows,
                         epochs=a.epochs, lr=a.lr_lora if method == "lora" else a.lr_full, lora_r=a.lora_r,
                         lora_alpha=a.lora_alpha, max_len=a.max_len, batch_size=a.batch_size, seed=a.seed,
                         save_every=10)
        key = hashlib.sha1(json.dumps([a.base, str(a.data), a.rows, a.epochs, cfg.hyperparams()]).encode()).hexdigest()[:10]
        cfg.out = a.workdir / f"{method}-{key}"
        t0 = time.perf_counter()
        if (cfg.out / "itaudit_tune.json").exists():
            print(f"[{method}] reusing the finished run in {cfg.out}", file=sys.stderr)
        else:
            cfg.resume = (cfg.out / "checkpoints").exists()
            res = tune(store, cfg, show_progress=show, log=lambda m: print(m, file=sys.stderr))
            print(f"[{method}] {res.steps} steps, loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}, "
                  f"{res.seconds:.0f}s", file=sys.stderr)
        timings[f"tune_{method}"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        pkey = hashlib.sha1(json.dumps([str(a.prompts), a.n_prompts, a.max_new_tokens]).encode()).hexdigest()[:8]
        run_id = f"lvf-{method}-{key}-{pkey}"
        if method == "lora":
            tuned = load_model(a.base, adapter=cfg.out)
            base = LoadedModel(tuned.model, tuned.tokenizer, resolve(a.base)[1], tuned.source)
        else:
            base, tuned = load_model(a.base), load_model(str(cfg.out))
        analyze(store, base, items, tuned=tuned, adapter_mode=method == "lora", max_new_tokens=a.max_new_tokens,
                run_id=run_id, show_progress=show, reference_dataset=a.dataset_name)
        shift_ids[method] = run_id
        timings[f"shift_{method}"] = time.perf_counter() - t0
        del base, tuned

    def report(name: str) -> str:
        return sqlfiles.report_sql(name).strip().rstrip(";")

    ids = list(shift_ids.values())
    marks = ", ".join("?" for _ in ids)
    table = store.query(f"SELECT * FROM ({report('tune_shift')}) WHERE shift_run IN ({marks})", ids)
    tokens = store.query(
        f"SELECT * FROM ({report('tune_shift_tokens')}) "
        f"WHERE tune_run IN (SELECT tune_run FROM ({report('tune_shift')}) WHERE shift_run IN ({marks}))",
        ids)
    timings["total"] = time.perf_counter() - t_all

    # side by side: one row per metric, one column per method
    metrics = ["n_examples", "steps", "final_loss", "train_seconds", "tokens", "responses", "pct_unshifted",
               "pct_marginal", "pct_shifted", "pct_shifted_first5", "pct_shifted_after5", "mean_kl",
               "mean_base_prob"]
    side = pl.DataFrame({"metric": metrics, **{
        r["method"]: [str(r[m]) for m in metrics] for r in table.iter_rows(named=True)}})
    print(f"LoRA vs full fine-tuning of {a.base} on the first {a.rows} {a.dataset_name} rows: token shift "
          f"against the base on {len(items)} prompts of {a.prompts.name}")
    print_frame(side, title="tune_shift")
    top = (tokens.group_by("method", maintain_order=True)
           .agg(pl.concat_str([pl.col("token").map_elements(repr, return_dtype=pl.Utf8), pl.lit("×"),
                                pl.col("n").cast(pl.Utf8)]).head(12).str.join("  ").alias("most shifted tokens")))
    print_frame(top, title="most frequently shifted tokens", max_width=200)
    result = {"args": {k: str(v) for k, v in vars(a).items()}, "shift_runs": shift_ids,
              "table": table.to_dicts(), "top_shifted_tokens": tokens.to_dicts(),
              "timings_s": {k: round(v, 1) for k, v in timings.items()}}
    (a.workdir / "results.json").write_text(json.dumps(result, indent=1, default=str))
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), file=sys.stderr)
    print(f"database: {store.path}  (itaudit query --db {store.path} --report tune_shift)", file=sys.stderr)
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
