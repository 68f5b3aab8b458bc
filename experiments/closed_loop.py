"""Closed loop (issue 10, item 5): does the pre-tuning audit predict which rows a tuned model borrows from,
and does dropping the riskiest rows before tuning reduce borrowing? One command (after
experiments/attribution_setup.py has tuned the full model):

    python experiments/closed_loop.py --work /tmp/itaudit-attr [--drop 4]

1. Audit the tuning rows (16 planted facts + the filler Alpaca rows of layout.json, ingested alone as dataset
   `train`: the data a user would tune on) with the default checks + novelty, then risk.
2. Label each tuning row "became a likely source" when the fully fine-tuned model's answers to the
   32 analogous prompts have a span traced (likely source, shift mode, base SmolLM2) to it.
   Report the AUC of risk and of every check score (and of a borrowing-hazard score,
   novelty x (1 + conflicting neighbours), computed from the same check rows) for that label.
3. Drop the top `--drop` rows by risk, or `--drop` seeded-random rows, retune (same recipe),
   answer the same prompts, and compare excess borrowing (lexical candidates, control = the
   untuned model, paired bootstrap) of: all rows / risk-dropped / random-dropped.

Stages are cached in --work; `--stage audit|tune-risk|tune-random|eval` runs one (tuning two
models in two processes halves the wall time on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attribution_setup import DATASET, ROOT, answers, generate_answers, tune_model  # noqa: E402

sys.path.insert(0, str(ROOT))
CHECKS = ["exact_duplicates", "duplicate_instructions", "near_duplicates", "conflicting_neighbors", "style",
          "verifier", "novelty", "risk"]


def audit(work: Path) -> dict[str, dict[int, float]]:
    """Check scores per tuning row (keyed by alpaca_planted idx), cached in <work>/loop_audit.json."""
    f = work / "loop_audit.json"
    if f.is_file():
        return {k: {int(i): v for i, v in d.items()} for k, d in json.loads(f.read_text()).items()}
    from itaudit.audit.runner import run_checks
    from itaudit.store import Store

    lay = json.loads((work / "layout.json").read_text())
    rows = json.loads((work / "alpaca_planted.json").read_text())
    with Store(work / "loop.duckdb") as store:
        from itaudit.ingest import ingest

        if store.dataset_info(DATASET) is None:
            ingest(store, work / "alpaca_planted.json", DATASET, "alpaca", show_progress=False)
        src = store.query(f"SELECT idx, source_row FROM instances WHERE dataset = '{DATASET}'")
        idx_to_row = dict(zip(src["idx"].to_list(), src["source_row"].to_list(), strict=True))
        train = [idx_to_row[i] for i in lay["train_idx"]]
        tf = work / "train.json"
        tf.write_text(json.dumps([rows[r] for r in train]))
        ingest(store, tf, "train", "alpaca", show_progress=False)
        run_checks(store, "train", CHECKS, index_dir=work / "loop_indexes", show_progress=False,
                   params={"novelty": {"model": "smollm2"}})
        got = store.query("SELECT r.check_name, r.idx, r.score FROM check_rows r JOIN check_runs c USING (run_id) "
                          "WHERE r.dataset = 'train'")
    # train idx k <-> the k-th tuning row (train_idx is sorted and ingested in that order)
    out: dict[str, dict[int, float]] = {}
    for check, i, s in got.iter_rows():
        out.setdefault(check, {})[lay["train_idx"][i]] = float(s)
    f.write_text(json.dumps(out, indent=1))
    return out


def auc(scores: list[float], labels: list[bool]) -> float | None:
    """Mann-Whitney AUC (ties count half)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return round(wins / (len(pos) * len(neg)), 3)


def drop_sets(work: Path, scores: dict[str, dict[int, float]], k: int, seed: int = 0) -> dict[str, list[int]]:
    lay = json.loads((work / "layout.json").read_text())
    train = lay["train_idx"]
    risk = scores.get("risk", {})
    by_risk = sorted(train, key=lambda i: (-risk.get(i, 0.0), i))[:k]
    rnd = sorted(random.Random(seed).sample(train, k))
    return {"risk": sorted(by_risk), "random": rnd}


def tune_drop(work: Path, which: str, k: int) -> None:
    scores = audit(work)
    drop = drop_sets(work, scores, k)[which]
    lay = json.loads((work / "layout.json").read_text())
    keep = [i for i in lay["train_idx"] if i not in drop]
    name = f"drop_{which}"
    out = tune_model(work, name, "full", keep, db=f"{name}.duckdb")
    generate_answers(work, name, str(out), score=False)


def evaluate(work: Path, k: int, boot: int) -> dict[str, Any]:
    from calibrated_attribution import items_from

    from itaudit.ingest import ingest
    from itaudit.store import Store
    from itaudit.trace import Tracer, excess

    scores = audit(work)
    lay = json.loads((work / "layout.json").read_text())
    train = lay["train_idx"]
    store = Store(work / "eval.duckdb")
    if store.dataset_info(DATASET) is None:
        ingest(store, work / "alpaca_planted.json", DATASET, "alpaca", show_progress=False)
    tracer = Tracer(store, DATASET, index_dir=work / "indexes")
    full = tracer.trace(items_from(answers(work, "full"), "smollm2"))
    sources = {s.sources[0].idx for t in full for s in t.spans if s.traced}
    labels = [i in sources for i in train]
    res: dict[str, Any] = {"train_rows": len(train), "became_likely_source": sum(labels),
                           "planted_rows": len(lay["planted_idx"]),
                           "planted_became_source": len(sources & set(lay["planted_idx"]))}
    res["auc"] = {c: auc([d.get(i, 0.0) for i in train], labels) for c, d in sorted(scores.items())}
    nov = scores.get("novelty", {})
    conf = scores.get("conflicting_neighbors", {})
    hazard = [nov.get(i, 0.0) * (1 + conf.get(i, 0.0)) for i in train]
    res["auc"]["hazard_novelty_x_conflicts"] = auc(hazard, labels)
    res["drop"] = drop_sets(work, scores, k)
    res["drop_planted"] = {w: len(set(d) & set(lay["planted_idx"])) for w, d in res["drop"].items()}
    ctrl = tracer.trace(items_from(answers(work, "control"), None))
    for name in ("full", "drop_risk", "drop_random"):
        if not (work / f"answers_{name}.json").is_file():
            continue
        tr = tracer.trace(items_from(answers(work, name), None))
        e = excess(tr, ctrl, n_boot=boot).as_dict()
        res[f"excess_{name}"] = {x: (round(v, 4) if isinstance(v, float) else v) for x, v in e.items()}
    store.close()
    (work / "closed_loop.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/itaudit-attr"))
    ap.add_argument("--drop", type=int, default=4)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--stage", choices=["all", "audit", "tune-risk", "tune-random", "eval", "recorded"], default="all")
    ap.add_argument("--recorded", type=Path, default=Path("/tmp/itaudit-rec"),
                    help="work folder of experiments/recorded_answers.py (stage 'recorded')")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("ITAUDIT_TORCH_THREADS", "1")
    if a.stage == "recorded":
        recorded_auc(a.recorded)
        return
    if a.stage in ("all", "audit"):
        audit(a.work)
    if a.stage in ("all", "tune-risk"):
        tune_drop(a.work, "risk", a.drop)
    if a.stage in ("all", "tune-random"):
        tune_drop(a.work, "random", a.drop)
    if a.stage in ("all", "eval"):
        evaluate(a.work, a.drop, a.boot)



def recorded_auc(rec: Path) -> dict[str, Any]:
    """AUC on the recorded planted-fact run (experiments/recorded_answers.py --work REC): audit its
    16 tuning rows (8 invented facts + 8 filler, rebuilt as planted_facts.py chose them), label the
    rows the recorded full-FT answers were traced to (likely source, shift mode)."""
    from calibrated_attribution import items_from
    from planted_facts import plant
    from recorded_answers import DATASET as RDS

    from itaudit.audit.runner import run_checks
    from itaudit.ingest import ingest
    from itaudit.store import Store
    from itaudit.trace import Tracer

    alpaca = json.loads((Path(ROOT.parent) / "shared" / "data" / "alpaca" / "alpaca_5000.json").read_text())
    alpaca = [r for r in alpaca if r.get("output", "").strip()][:2000]
    rows, pos = plant(alpaca, 0)
    rng = random.Random(0)
    short = [i for i, r in enumerate(rows) if i not in pos and not r["input"] and len(r["output"]) < 160]
    train_rows = sorted(pos + sorted(rng.sample(short, 8)))
    store = Store(rec / "rec.duckdb")
    inst = store.query(f"SELECT idx, source_row FROM instances WHERE dataset = '{RDS}'")
    r2i = dict(zip(inst["source_row"].to_list(), inst["idx"].to_list(), strict=True))
    train = [r2i[r] for r in train_rows]
    tf = rec / "train16.json"
    tf.write_text(json.dumps([rows[r] for r in train_rows]))
    ingest(store, tf, "train16", "alpaca", show_progress=False)
    run_checks(store, "train16", CHECKS, index_dir=rec / "loop_indexes", show_progress=False,
               params={"novelty": {"model": "smollm2"}})
    got = store.query("SELECT check_name, idx, score FROM check_rows WHERE dataset = 'train16'")
    scores: dict[str, dict[int, float]] = {}
    for check, i, s in got.iter_rows():
        scores.setdefault(check, {})[train[i]] = float(s)
    sets = json.loads((rec / "scores.json").read_text())
    full = Tracer(store, RDS, index_dir=rec / "indexes").trace(items_from(sets["full"], "smollm2"))
    store.close()
    sources = {s.sources[0].idx for t in full for s in t.spans if s.traced}
    labels = [i in sources for i in train]
    res: dict[str, Any] = {"train_rows": len(train), "became_likely_source": sum(labels),
                           "planted_became_source": len(sources & {r2i[p] for p in pos})}
    res["auc"] = {c: auc([d.get(i, 0.0) for i in train], labels) for c, d in sorted(scores.items())}
    nov, conf = scores.get("novelty", {}), scores.get("conflicting_neighbors", {})
    res["auc"]["hazard_novelty_x_conflicts"] = auc([nov.get(i, 0.0) * (1 + conf.get(i, 0.0)) for i in train], labels)
    (rec / "closed_loop_recorded.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
