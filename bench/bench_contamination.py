"""Planted contamination benchmark (issue 16): does the check find eval questions that leaked
verbatim, lightly reworded, or wrapped in a longer instruction, without flagging anything else?

For each eval set (MT-Bench, GSM8K, MMLU, TruthfulQA, AlpacaEval, read as the files come) and each
host (Alpaca, ShareGPT), `k` items of each kind are planted as new rows and `k` other items are
controls (not planted):
- verbatim: the eval prompt as is;
- reworded: a prefix, a case change, punctuation changes, and 1-2 synonym swaps from a generic
  English synonym list (written without looking at the eval items; seeded);
- wrapped: inside a longer instruction (a generic template list).
Measured at default settings: recall per kind (the planted row is flagged with its eval item),
false positives per 1,000 original rows (original rows flagged; listed for inspection), and
controls flagged. Baseline in the same run: the previous detector's rule (word 13-grams over
instruction + input + response, texts of 8-12 words matched whole, coverage >= 0.5 of all the
eval item's n-grams, answer included; no embeddings).

Run: `python -m bench --only contamination [--quick]` or `python bench/bench_contamination.py`.
"""

from __future__ import annotations

import json
import random
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

EVAL_FILES = {
    "mt_bench": "mt_bench/question.jsonl",
    "gsm8k": "gsm8k/test.jsonl",
    "mmlu": "mmlu/mmlu.jsonl",
    "truthfulqa": "truthfulqa/TruthfulQA.csv",
    "alpaca_eval": "alpaca_eval/alpaca_eval_gpt4_1106_preview_outputs.json",
}
# Held out: never looked at while choosing the rules (run with --evals ifbench,vicuna80,lima_test).
HELD_OUT = {
    "ifbench": "ifbench/IFBench_test.jsonl",
    "vicuna80": "vicuna80/question.jsonl",
    "lima_test": "just_eval/lima_test_300.jsonl",
}
FILES = {**EVAL_FILES, **HELD_OUT}
KINDS = ("verbatim", "reworded", "wrapped")

# Generic English synonyms (both directions are used), independent of any eval item.
_PAIRS = """big large|small little|quick fast|begin start|finish end|buy purchase|help assist|show display
use utilize|make create|find locate|get obtain|need require|choose select|happen occur|answer respond
explain describe|give provide|think believe|important significant|different distinct|example instance
method approach|problem issue|job occupation|car automobile|house home|kids children|money cash|shop store
total overall|each every|many numerous|often frequently|maybe perhaps|hard difficult|easy simple|rich wealthy
smart clever|angry mad|happy glad|sad unhappy|correct right|wrong incorrect|famous renowned|old ancient
near close|whole entire|build construct|keep retain|try attempt|allow permit|stop halt|mistake error
main primary|typical usual|enough sufficient|sick ill|city town|road street|speak talk|look glance
shout yell|rock stone|sea ocean|hill mountain|kind type|part portion|amount quantity|buy acquire
earn make|cost price|trip journey|idea notion|goal aim|reason cause|result outcome|benefit advantage
area region|rule regulation|law statute|movie film|doctor physician|student pupil|teacher instructor
fix repair|gift present|pick choose|tell inform|suggest propose|reduce decrease|increase raise
common frequent|rare uncommon|strong powerful|weak feeble|brave courageous|calm peaceful|cold chilly
hot warm|tiny minute|huge enormous|shut close|quiet silent|ask inquire|consider regard|discuss talk
write compose|list enumerate|short brief|long lengthy|story tale|true accurate|false untrue|fact truth
daily everyday|yearly annual|friend companion|purpose intent|task chore|feature characteristic"""
SYNONYMS: dict[str, str] = {}
for _pair in re.split(r"[|\n]", _PAIRS):
    _a, _b = _pair.split()
    SYNONYMS.setdefault(_a, _b)
    SYNONYMS.setdefault(_b, _a)
PREFIXES = ["Question: ", "Please answer this: ", "Q: ", "Quick question - ", "Hey, ", "Can you help? ",
            "I was wondering: ", "Here's one for you: ", ""]
WRAPPERS = [
    "Answer the following trivia question and explain briefly: {q}",
    "I am preparing for an exam and got stuck on this one.\n\n{q}\n\nCould you walk me through the reasoning step by step?",
    "You are a helpful tutor. A student asks you the following.\n{q}\nGive a clear answer and a short justification.",
    "Read the task below carefully and respond in a friendly tone.\n\nTask: {q}\n\nKeep the answer under 200 words.",
    "My friend and I were arguing about this and we need a neutral opinion: {q} Who is right?",
    "Please solve this and format your answer as a numbered list of steps. {q} Thanks in advance!",
]


def reword(q: str, rng: random.Random) -> tuple[str, int]:
    """A light rewording: 1-2 synonym swaps, a case change, punctuation changes, a prefix."""
    toks = re.split(r"(\W+)", q)
    slots = [i for i, t in enumerate(toks) if t.lower() in SYNONYMS]
    rng.shuffle(slots)
    n_swap = min(len(slots), rng.choice([1, 2]))
    for i in slots[:n_swap]:
        s = SYNONYMS[toks[i].lower()]
        toks[i] = s.capitalize() if toks[i][:1].isupper() else s
    out = "".join(toks)
    case = rng.random()
    if case < 0.3:
        out = out.lower()
    elif case < 0.45:
        out = out.upper()
    if rng.random() < 0.5:
        out = out.rstrip("?.!").rstrip() + rng.choice(["", "??", "!", " ?"])
    if rng.random() < 0.5:
        out = out.replace(",", "")
    return rng.choice(PREFIXES) + out, n_swap


def wrap(q: str, rng: random.Random) -> str:
    return rng.choice(WRAPPERS).format(q=q)


def _prompt(row: dict) -> str:
    return row["instruction"] + (f"\n{row['input']}" if row.get("input") else "")


def _baseline(it_rows: list[list[str]], ev_rows: list[list[str]], n: int = 13, min_words: int = 8) -> set[tuple[int, int]]:
    """The previous rule: shared word 13-grams (8-12-word texts whole), coverage >= 0.5 of all of the
    eval item's n-grams (question and answer), fields matched separately."""
    from itaudit.audit.contamination import words

    table: dict[tuple[str, ...], set[int]] = defaultdict(set)
    total: dict[int, int] = defaultdict(int)
    for j, texts in enumerate(ev_rows):
        grams = set()
        for t in texts:
            w = words(t)
            k = min(n, len(w))
            if len(w) < min_words:
                continue
            grams |= {tuple(w[a:a + k]) for a in range(len(w) - k + 1)}
        total[j] = len(grams)
        for g in grams:
            table[g].add(j)
    sizes = sorted({len(g) for g in table})
    hits: dict[tuple[int, int], set] = defaultdict(set)
    for i, texts in enumerate(it_rows):
        for t in texts:
            w = words(t)
            for k in sizes:
                for a in range(len(w) - k + 1):
                    g = tuple(w[a:a + k])
                    for j in table.get(g, ()):
                        hits[(i, j)].add(g)
    return {p for p, g in hits.items() if len(g) / max(1, total[p[1]]) >= 0.5}


def _host_records(data_dir: Path, host: str, quick: bool) -> list[dict]:
    if host == "alpaca":
        recs = json.loads((data_dir / "alpaca" / "alpaca_5000.json").read_text())
        recs = [r for r in recs if r.get("output", "").strip()]
        return recs[:1000] if quick else recs
    n = 300 if quick else 1500
    out = []
    with (data_dir / "sharegpt" / "sharegpt_v3_prefix.jsonl").open() as f:
        for line in f:
            rec = json.loads(line)
            if len(rec.get("conversations") or []) >= 2 and rec["conversations"][0].get("from") == "human":
                out.append(rec)
            if len(out) >= n:
                break
    return out


def _planted_record(host: str, prompt: str, answer: str) -> dict:
    answer = answer or "Sure, here is my answer."
    if host == "alpaca":
        return {"instruction": prompt, "input": "", "output": answer}
    return {"conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]}


def run(data_dir: Path, quick: bool, *, eval_names: list[str] | None = None, hosts: tuple[str, ...] = ("alpaca", "sharegpt"),
        k: int | None = None, seed: int = 0, params: dict | None = None, baseline: bool = True,
        verbose: bool = False) -> list[dict]:
    from itaudit.audit.contamination import Contamination, words
    from itaudit.audit.runner import AuditContext
    from itaudit.ingest import ingest
    from itaudit.ingest.eval_formats import read_eval_set
    from itaudit.store import Store

    k = k or (5 if quick else 20)
    eval_names = eval_names or list(EVAL_FILES)
    evals = {e: read_eval_set(data_dir / FILES[e], e) for e in eval_names}
    rows: list[dict] = []
    embedder = None
    with tempfile.TemporaryDirectory() as tmp:
        for host in hosts:
            rng = random.Random(f"{seed}-{host}")
            orig = _host_records(data_dir, host, quick)
            plan: list[dict] = []   # one per planted row: eval set, item idx, kind
            controls: dict[str, list[int]] = {}
            planted_recs = []
            for e, ev in evals.items():
                f = ev.frame
                pool = [i for i in range(f.height) if len(f["instruction"][i].split()) >= 4
                        and (e != "mt_bench" or i % 2 == 0)]     # MT-Bench turn 2 is not standalone
                kk = min(k, len(pool) // 4)       # small sets (Vicuna's 80) plant fewer
                pick = rng.sample(pool, 4 * kk)
                controls[e] = pick[3 * kk:]
                for n_kind, kind in enumerate(KINDS):
                    for i in pick[n_kind * kk:(n_kind + 1) * kk]:
                        row = f.row(i, named=True)
                        q = row["instruction"]
                        n_swap = None
                        if kind == "reworded":
                            q, n_swap = reword(q, rng)
                        prompt = q + (f"\n{row['input']}" if row.get("input") else "")
                        if kind == "wrapped":
                            prompt = wrap(prompt, rng)
                        plan.append({"eval": e, "item": int(row["idx"]), "kind": kind, "swaps": n_swap})
                        planted_recs.append(_planted_record(host, prompt, row["response"]))
            path = Path(tmp) / f"{host}.jsonl"
            with path.open("w") as fh:
                for r in orig + planted_recs:
                    fh.write(json.dumps(r) + "\n")
            store = Store(Path(tmp) / f"{host}.duckdb")
            ingest(store, path, host, skip_invalid=True, show_progress=False)
            inst = store.query("SELECT idx, source_row, instruction, input, response FROM instances WHERE dataset = ? "
                               "ORDER BY idx", [host])
            n_orig_src = len(orig)
            src = inst["source_row"].to_list()
            orig_idx = {i for i, s in zip(inst["idx"].to_list(), src, strict=True) if s < n_orig_src}
            planted_idx = {s - n_orig_src: i for i, s in zip(inst["idx"].to_list(), src, strict=True) if s >= n_orig_src}
            source_of = {i: (plan[n]["eval"], plan[n]["item"]) for n, i in planted_idx.items()}
            ctx = AuditContext(store, host, show_progress=False, _embedder=embedder)
            step = Contamination({"against": [f"{e}={data_dir / FILES[e]}" for e in evals], **(params or {})})
            t0 = time.perf_counter()
            res, *back = step.compute(ctx)
            secs = time.perf_counter() - t0
            embedder = ctx._embedder
            flagged = set(res.idx[res.flag].tolist())
            found_pairs = {(a, d, b) for a, d, b in res.pairs.select("idx_a", "other_dataset", "idx_b").iter_rows()}
            back_flag = {b.dataset: set(b.idx[b.flag].tolist()) for b in back}
            base_found: set = set()
            t_base = None
            if baseline:
                t0 = time.perf_counter()
                it_rows = [[r[2], r[3] or "", r[4]] for r in inst.iter_rows()]
                for e, ev in evals.items():
                    f = ev.frame
                    ev_rows = [[a or "", b or "", c or ""] for a, b, c in zip(f["instruction"], f["input"], f["response"], strict=True)]
                    base_found |= {(i, e, j) for i, j in _baseline(it_rows, ev_rows)}
                t_base = time.perf_counter() - t0
            for e in evals:
                for kind in KINDS:
                    mine = [p for n_p, p in enumerate(plan) if p["eval"] == e and p["kind"] == kind
                            and n_p in planted_idx]
                    got = sum((planted_idx[plan.index(p)], e, p["item"]) in found_pairs for p in mine)
                    got_b = sum((planted_idx[plan.index(p)], e, p["item"]) in base_found for p in mine)
                    rows.append({"bench": "contamination", "metric": f"{host} {e} {kind} recall",
                                 "itaudit": got / max(1, len(mine)), "baseline": got_b / max(1, len(mine)) if baseline else None,
                                 "ratio": None, "unit": "share", "note": f"{got}/{len(mine)} (13-gram rule {got_b})"})
                    if verbose:
                        for p in mine:
                            i = planted_idx[plan.index(p)]
                            if (i, e, p["item"]) not in found_pairs:
                                print(f"MISS {host} {e} {kind}: {inst['instruction'][i][:200]!r}", file=sys.stderr)
                # A control flagged only by the same question planted from another eval set (LIMA test,
                # IFBench and AlpacaEval share prompts with Vicuna 80) is a correct match, not a false one.
                ctrl = dup = 0
                for c in controls[e]:
                    if c not in back_flag.get(e, set()):
                        continue
                    rows_of = sorted(a for a, d, b in found_pairs if d == e and b == c)
                    text = words(evals[e].frame["instruction"][c])
                    same = all(a in source_of and words(evals[source_of[a][0]].frame["instruction"][source_of[a][1]]) == text
                               for a in rows_of)
                    dup += same
                    ctrl += not same
                    print(f"CONTROL FLAGGED {host} {e} item {c}{' (same question planted from another set)' if same else ''}: "
                          f"{evals[e].frame['instruction'][c][:120]!r} <- {[inst['instruction'][a][:120] for a in rows_of[:2]]}",
                          file=sys.stderr)
                rows.append({"bench": "contamination", "metric": f"{host} {e} controls flagged", "itaudit": ctrl,
                             "baseline": None, "ratio": None, "unit": "items",
                             "note": f"of {len(controls[e])}" + (f" (+{dup} same question planted from another set)" if dup else "")})
            fp = sorted(flagged & orig_idx)
            fp_b = sorted({a for a, _, _ in base_found} & orig_idx)
            for i in fp:
                ev_of = sorted({(d, b) for a, d, b in found_pairs if a == i})
                print(f"FLAGGED ORIGINAL {host} idx {i}: {inst['instruction'][i][:160]!r} ~ {ev_of[:3]}", file=sys.stderr)
            per_k = 1000 * len(fp) / max(1, len(orig_idx))
            rows.append({"bench": "contamination", "metric": f"{host} original rows flagged per 1,000",
                         "itaudit": per_k, "baseline": 1000 * len(fp_b) / max(1, len(orig_idx)) if baseline else None,
                         "ratio": None, "unit": "per 1,000",
                         "note": f"{len(fp)} of {len(orig_idx):,} original rows (13-gram rule {len(fp_b)})"})
            for kind in KINDS:
                sel = [r for r in rows if r["metric"].startswith(f"{host} ") and r["metric"].endswith(f"{kind} recall")]
                got = sum(int(r["note"].split("/")[0]) for r in sel)
                tot = sum(int(r["note"].split("/")[1].split()[0]) for r in sel)
                got_b = sum(int(r["note"].split("rule ")[1].rstrip(")")) for r in sel)
                rows.append({"bench": "contamination", "metric": f"{host} ALL {kind} recall", "itaudit": got / max(1, tot),
                             "baseline": got_b / max(1, tot) if baseline else None,
                             "ratio": (got / got_b) if baseline and got_b else None, "unit": "share",
                             "note": f"{got}/{tot}"})
            rows.append({"bench": "contamination", "metric": f"{host} check time ({inst.height:,} rows x {len(evals)} eval sets)",
                         "itaudit": secs, "baseline": t_base, "ratio": secs / t_base if t_base else None, "unit": "s",
                         "note": f"baseline = Python 13-gram rule; {res.summary['by_eval_set'] and sum(v['candidate_pairs'] for v in res.summary['by_eval_set'].values())} candidate pairs"})
            store.close()
    return rows


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--evals", default=",".join(EVAL_FILES))
    ap.add_argument("--hosts", default="alpaca,sharegpt")
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--set", action="append", default=[], help="check param, e.g. --set confirm_threshold=0.8")
    ap.add_argument("-v", action="store_true")
    a = ap.parse_args()
    ps = dict(s.split("=", 1) for s in a.set)
    for r in run(Path(a.data), a.quick, eval_names=a.evals.split(","), hosts=tuple(a.hosts.split(",")), k=a.k,
                 seed=a.seed, params=ps, baseline=not a.no_baseline, verbose=a.v):
        base = "" if r["baseline"] is None else f"{r['baseline']:8.3f}"
        print(f"{r['metric']:<60} {r['itaudit']:>8.3f} {base:>8}  {r['note']}")
