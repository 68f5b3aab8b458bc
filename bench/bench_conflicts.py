"""Planted-contradiction benchmark of `conflicting_neighbors` (issue 15). One command, seeded:

    .venv/bin/python bench/bench_conflicts.py [--data ../shared/data] [--quick] [--show N]
    .venv/bin/python bench/bench_conflicts.py --audit gpteacher/codegen-instruct.json --limit 5000
        (the full check with real embeddings on real data: every flag printed, to judge by hand)

Pairs of rows posing the same task, judged by the check's pair rule (`judge_pair`):

- contradicting twins (must be flagged), each an edit of a real factual row: a changed number
  (Alpaca, GSM8K), a changed name (Alpaca), an inserted negation (Alpaca), a flipped final yes/no
  (CoT Collection StrategyQA / CREAK), another MMLU option as the answer, a sorted list reversed
  (Alpaca sort tasks); and natural ones: TruthfulQA's best answer vs one of its incorrect answers;
- consistent twins (must not be flagged): the same rows with a possessive or case change, a
  number written as a word, an added sentence holding a new number and name, synonyms; and
  TruthfulQA's best answer vs another of its correct answers;
- creative pairs (must not be flagged): an open-ended Alpaca / GPTeacher roleplay prompt answered
  with two different responses to prompts of the same kind.

Half of all twins (seeded) also reword the second prompt ("Please ...", "What's", "Keep the answer
short."), so the same-task test is exercised, not just identical prompts.

Reports precision and recall overall and recall / false-positive rate per kind. The baseline is the
former rule (each response has numbers or capitalised names the other lacks), run on the same pairs.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from itaudit.audit.claims import NUMBER  # noqa: E402
from itaudit.audit.conflicts import is_open_ended, judge_pair  # noqa: E402

_NAME = re.compile(r"(?<=[a-z,;] )[A-Z][a-z]{2,}(?: [A-Z][a-z]{2,})?")
_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine",
          10: "ten", 11: "eleven", 12: "twelve"}
_SYN = [("important", "significant"), ("big", "large"), ("use", "utilize"), ("help", "assist"),
        ("shows", "demonstrates"), ("about", "approximately"), ("begin", "start"), ("buy", "purchase")]
_NEG = [(r"\b(is|are|was|were|can|will|should|does|do|has been|have been)\b (?!not\b)", r"\1 not "),]
_SORT = re.compile(r"\b(sort|arrange|order)\b", re.I)


def _load_json(p: Path) -> list[dict]:
    return json.loads(p.read_text(encoding="utf-8"))


def _row(ins: str, inp: str, res: str) -> dict:
    return {"instruction": ins, "input": inp, "response": res}


def _change_number(text: str, prompt: str, rng: random.Random) -> str | None:
    nums = [m for m in NUMBER.finditer(text) if m.group(0) not in prompt]
    if not nums:
        return None
    m = rng.choice(nums)
    raw = m.group(0).replace(",", "")
    try:
        v = float(raw)
    except ValueError:
        return None
    new = v + rng.choice([1, 2, 3, 5, 10]) if v < 1000 else v + rng.choice([3, 7, 12, 25])
    s = str(int(new)) if "." not in raw else f"{new:.{len(raw.split('.')[1])}f}"
    return text[:m.start()] + s + text[m.end():]


def _change_name(text: str, prompt: str, pool: list[str], rng: random.Random) -> str | None:
    names = [m for m in _NAME.finditer(text) if m.group(0) not in prompt and m.group(0).split()[0] not in
             {"The", "This", "These", "That", "It", "In", "However", "For"}]
    if not names:
        return None
    m = rng.choice(names)
    other = [p for p in pool if p not in text and p not in prompt]
    return text[:m.start()] + rng.choice(other) + text[m.end():]


def _negate(text: str, rng: random.Random) -> str | None:
    first = re.split(r"(?<=[.!?])\s+", text.strip())
    k = rng.randrange(len(first))
    for pat, rep in _NEG:
        if re.search(pat, first[k]):
            first[k] = re.sub(pat, rep, first[k], count=1)
            return " ".join(first)
    return None


def _paraphrase(text: str, prompt: str, rng: random.Random) -> tuple[str, str] | None:
    """A consistent twin: one of possessive/case, number as a word, an added sentence, synonyms."""
    kind = rng.choice(["possessive_case", "number_word", "added_fact", "synonyms"])
    if kind == "number_word":
        m = next((m for m in NUMBER.finditer(text) if m.group(0).isdigit() and int(m.group(0)) in _WORDS), None)
        if m:
            return "number_word", text[:m.start()] + _WORDS[int(m.group(0))] + text[m.end():]
        kind = "added_fact"
    if kind == "possessive_case":
        m = next(iter(_NAME.finditer(text)), None)
        if m:
            w = m.group(0)
            alt = w + "'s" if rng.random() < 0.5 else w.lower()
            return "possessive_case", text[:m.start()] + alt + text[m.end():]
        kind = "synonyms"
    if kind == "synonyms":
        out = text
        for a, b in _SYN:
            out = re.sub(rf"\b{a}\b", b, out)
        if out != text:
            return "synonyms", out
        kind = "added_fact"
    year = rng.randint(1850, 2015)
    extra = f" This was also noted by Marguerite Ellwood in {year}."
    return "added_fact", text.rstrip() + extra


def _reword(ins: str, rng: random.Random) -> str:
    """The same request in other words: a polite prefix, a contraction or a closing request."""
    t = ins.strip()
    options = [lambda x: "Please " + x[:1].lower() + x[1:], lambda x: "Can you help with this? " + x,
               lambda x: re.sub(r"\bWhat is\b", "What's", x) if "What is" in x else x.rstrip(".?!") + ". Thanks!",
               lambda x: x.rstrip(".?!") + ". Keep the answer short." if x.rstrip()[-1:] in ".?!" else x + ". Be concise."]
    return rng.choice(options)(t)


def build_pairs(data: Path, quick: bool, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    n_each = 40 if quick else 150
    pairs: list[dict] = []

    def add(kind: str, label: int, a: dict, b: dict) -> None:
        if rng.random() < 0.5:   # half the twins also reword the prompt: the same task, asked another way
            b = {**b, "instruction": _reword(b["instruction"], rng)}
        pairs.append({"kind": kind, "label": label, "a": a, "b": b})

    alpaca = _load_json(data / "alpaca" / "alpaca_5000.json")
    factual = [r for r in alpaca if not is_open_ended(r["instruction"]) and 20 <= len(r["output"]) <= 600
               and not r["output"].lstrip().startswith(("def ", "<", "{", "import", "SELECT"))]
    rng.shuffle(factual)
    pool = sorted({m.group(0) for r in alpaca for m in _NAME.finditer(r["output"])})
    counts = {"number": 0, "entity": 0, "negation": 0, "paraphrase": 0}
    for r in factual:
        a = _row(r["instruction"], r["input"], r["output"])
        prompt = r["instruction"] + " " + r["input"]
        if counts["number"] < n_each and (t := _change_number(r["output"], prompt, rng)):
            counts["number"] += 1
            add("alpaca_number", 1, a, _row(r["instruction"], r["input"], t))
        elif counts["entity"] < n_each and (t := _change_name(r["output"], prompt, pool, rng)):
            counts["entity"] += 1
            add("alpaca_entity", 1, a, _row(r["instruction"], r["input"], t))
        elif counts["negation"] < n_each and (t := _negate(r["output"], rng)):
            counts["negation"] += 1
            add("alpaca_negation", 1, a, _row(r["instruction"], r["input"], t))
        if counts["paraphrase"] < 2 * n_each and (pp := _paraphrase(r["output"], prompt, rng)):
            counts["paraphrase"] += 1
            add(f"consistent_{pp[0]}", 0, a, _row(r["instruction"], r["input"], pp[1]))
    sorts = [r for r in alpaca if _SORT.search(r["instruction"]) and "," in r["output"]
             and len(r["output"]) < 200 and "\n" not in r["output"].strip()]
    for r in sorts[:n_each]:
        items = [x.strip() for x in r["output"].strip().rstrip(".").split(",")]
        if len(items) >= 3 and len(set(items)) == len(items):
            add("alpaca_order", 1, _row(r["instruction"], r["input"], r["output"]),
                _row(r["instruction"], r["input"], ", ".join(reversed(items))))
    # GSM8K: the final answer changed
    gsm = [json.loads(x) for x in (data / "gsm8k" / "test.jsonl").read_text().splitlines() if x.strip()]
    rng.shuffle(gsm)
    for g in gsm[:n_each]:
        ans = g["answer"].split("####")[-1].strip()
        body = re.sub(r"<<[^>]*>>", "", g["answer"].split("####")[0]).strip()
        good = f"{body}\nThe answer is {ans}."
        try:
            wrong = str(int(float(ans.replace(",", ""))) + rng.choice([1, 2, 5, 10]))
        except ValueError:
            continue
        add("gsm8k_number", 1, _row(g["question"], "", good), _row(g["question"], "", f"{body}\nThe answer is {wrong}."))
    # CoT Collection: the final yes / no flipped
    for f in ("strategyqa_train.json", "creak_train.json"):
        rows = [r for r in _load_json(data / "cot_collection" / f) if re.search(r"answer is (yes|no)\.?$", r["output"])]
        rng.shuffle(rows)
        for r in rows[:n_each // 2]:
            flip = re.sub(r"answer is (yes|no)(\.?)$", lambda m: f"answer is {'no' if m.group(1) == 'yes' else 'yes'}"
                          f"{m.group(2)}", r["output"])
            add("cot_yes_no", 1, _row(r["instruction"], "", r["output"]), _row(r["instruction"], "", flip))
    # MMLU: another option given as the answer
    mmlu = [json.loads(x) for x in (data / "mmlu" / "mmlu.jsonl").read_text().splitlines() if x.strip()]
    mmlu = [m for m in mmlu if m.get("correct_answer") in ("A", "B", "C", "D")]
    rng.shuffle(mmlu)
    for m in mmlu[:n_each]:
        right = m["answer_" + m["correct_answer"].lower()]
        wrong = m["answer_" + rng.choice([c for c in "abcd" if c != m["correct_answer"].lower()])]
        if str(right).strip().lower() == str(wrong).strip().lower():
            continue
        add("mmlu_option", 1, _row(m["question"], "", f"The answer is {right}."),
            _row(m["question"], "", f"The answer is {wrong}."))
    # TruthfulQA: natural contradictions and natural consistent paraphrases
    with (data / "truthfulqa" / "TruthfulQA.csv").open(encoding="utf-8") as fh:
        tqa = list(csv.DictReader(fh))
    rng.shuffle(tqa)
    for t in tqa[:n_each]:
        best = t["Best Answer"].strip()
        wrong = [x.strip() for x in t["Incorrect Answers"].split(";") if x.strip()]
        right = [x.strip() for x in t["Correct Answers"].split(";") if x.strip() and x.strip() != best]
        if wrong:
            add("truthfulqa_incorrect", 1, _row(t["Question"], "", best), _row(t["Question"], "", rng.choice(wrong)))
        if right:
            add("truthfulqa_correct", 0, _row(t["Question"], "", best), _row(t["Question"], "", rng.choice(right)))
    # creative pairs: the same open-ended prompt, two different answers of the same kind
    creative = [r for r in alpaca if is_open_ended(r["instruction"]) and len(r["output"]) < 800]
    by_verb: dict[str, list[dict]] = {}
    for r in creative:
        by_verb.setdefault(r["instruction"].split()[0].lower(), []).append(r)
    made = 0
    for rows in by_verb.values():
        for a, b in zip(rows[::2], rows[1::2], strict=False):
            if made >= n_each:
                break
            add("creative_alpaca", 0, _row(a["instruction"], a["input"], a["output"]),
                _row(a["instruction"], a["input"], b["output"]))
            made += 1
    rp = _load_json(data / "gpteacher" / "roleplay-simple-deduped-roleplay-instruct.json")
    rng.shuffle(rp)
    for a, b in list(zip(rp[::2], rp[1::2], strict=False))[:n_each // 2]:
        add("creative_roleplay", 0, _row(a["instruction"], a.get("input", ""), a["response"]),
            _row(a["instruction"], a.get("input", ""), b["response"]))
    return pairs


_CAP = re.compile(r"\b[A-Z][a-z]+\b")


def baseline(a: dict, b: dict) -> bool:
    """The former rule: each response has numbers or capitalised words the other lacks."""
    p = a["instruction"] + a["input"] + b["instruction"] + b["input"]
    fa = {x for x in NUMBER.findall(a["response"]) + _CAP.findall(a["response"]) if x not in p}
    fb = {x for x in NUMBER.findall(b["response"]) + _CAP.findall(b["response"]) if x not in p}
    return bool(fa - fb) and bool(fb - fa)


def evaluate(pairs: list[dict]) -> dict:
    res: dict = {"kinds": {}}
    tp = fp = fn = btp = bfp = bfn = 0
    for p in pairs:
        a, b = p["a"], p["b"]
        claims, why = judge_pair(a["instruction"], a["input"], a["response"], b["instruction"], b["input"],
                                 b["response"])
        hit = bool(claims)
        p["flagged"], p["claims"], p["why"] = hit, claims, why
        bh = baseline(a, b)
        k = res["kinds"].setdefault(p["kind"], {"n": 0, "flagged": 0, "baseline_flagged": 0, "label": p["label"]})
        k["n"] += 1
        k["flagged"] += hit
        k["baseline_flagged"] += bh
        tp += hit and p["label"] == 1
        fp += hit and p["label"] == 0
        fn += (not hit) and p["label"] == 1
        btp += bh and p["label"] == 1
        bfp += bh and p["label"] == 0
        bfn += (not bh) and p["label"] == 1
    res["precision"] = tp / (tp + fp) if tp + fp else 0.0
    res["recall"] = tp / (tp + fn) if tp + fn else 0.0
    res["baseline_precision"] = btp / (btp + bfp) if btp + bfp else 0.0
    res["baseline_recall"] = btp / (btp + bfn) if btp + bfn else 0.0
    res["n_pairs"] = len(pairs)
    res["n_contradicting"] = tp + fn
    res["tp"], res["fp"], res["fn"] = tp, fp, fn
    return res


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def run(data_dir: Path, quick: bool) -> list[dict]:
    """bench/__main__ entry: precision, recall and F1 against the former rule on the same pairs."""
    r = evaluate(build_pairs(Path(data_dir), quick))
    note = f"{r['n_pairs']} pairs, {r['n_contradicting']} contradicting"
    rows = []
    for metric, ours, base in (("precision", r["precision"], r["baseline_precision"]),
                               ("recall", r["recall"], r["baseline_recall"]),
                               ("F1", _f1(r["precision"], r["recall"]),
                                _f1(r["baseline_precision"], r["baseline_recall"]))):
        rows.append({"bench": "conflicts", "metric": f"planted contradictions {metric}", "itaudit": round(ours, 3),
                     "baseline": round(base, 3), "ratio": round(ours / base, 2) if base else None, "unit": "",
                     "note": note})
    return rows


def audit_flags(data: Path, files: list[str], limit: int, seed: int = 0) -> None:
    """Run the full check (real embeddings) on shared-data files and print every flagged pair to judge."""
    import tempfile

    from itaudit.audit.conflicts import ConflictingNeighbors
    from itaudit.audit.runner import AuditContext
    from itaudit.ingest import ingest
    from itaudit.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "audit.duckdb")
        for k, f in enumerate(files):
            rows = _load_json(data / f)
            random.Random(seed).shuffle(rows)
            path = Path(tmp) / f"d{k}.json"
            path.write_text(json.dumps(rows[:limit]), encoding="utf-8")
            name = f"d{k}"
            ingest(store, path, name, show_progress=False, skip_invalid=True)
            ctx = AuditContext(store, name, show_progress=False)
            r = ConflictingNeighbors().compute(ctx)
            frame = ctx.instances()
            ins, res = frame["instruction"].to_list(), frame["response"].to_list()
            print(f"== {f}: {r.summary['n_rows']} rows, {r.summary['n_candidate_pairs']} candidates, "
                  f"{r.summary['n_conflict_pairs']} flagged; {r.summary['candidates_by_outcome']}")
            for a, b, score, ev in r.pairs.iter_rows():
                print(f"--- {a} / {b} ({score:.3f}) {json.loads(ev)['claims'][:2]}")
                print("  A:", ins[a][:200].replace("\n", " "), "->", res[a][:300].replace("\n", " "))
                print("  B:", ins[b][:200].replace("\n", " "), "->", res[b][:300].replace("\n", " "))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--show", type=int, default=0, help="print N misses and N false alarms")
    ap.add_argument("--json", help="write every pair with its verdict here")
    ap.add_argument("--audit", action="append", default=[],
                    help="instead: run the full check on this shared-data JSON file (repeatable) and print its flags")
    ap.add_argument("--limit", type=int, default=2500, help="rows per --audit file (seeded sample)")
    args = ap.parse_args()
    if args.audit:
        audit_flags(Path(args.data), args.audit, args.limit)
        return
    pairs = build_pairs(Path(args.data), args.quick)
    r = evaluate(pairs)
    print(f"pairs {r['n_pairs']}  contradicting {r['n_contradicting']}  precision {r['precision']:.3f}  "
          f"recall {r['recall']:.3f}  (tp {r['tp']} fp {r['fp']} fn {r['fn']})")
    print(f"baseline (former rule): precision {r['baseline_precision']:.3f}  recall {r['baseline_recall']:.3f}")
    print(f"{'kind':24} {'label':>5} {'n':>5} {'flagged':>8} {'rate':>6} {'baseline':>8}")
    for k, v in sorted(r["kinds"].items()):
        print(f"{k:24} {v['label']:>5} {v['n']:>5} {v['flagged']:>8} {v['flagged'] / v['n']:>6.2f} "
              f"{v['baseline_flagged'] / v['n']:>8.2f}")
    if args.show:
        for title, cond in (("MISSED", lambda p: p["label"] == 1 and not p["flagged"]),
                            ("FALSE ALARM", lambda p: p["label"] == 0 and p["flagged"])):
            for p in [p for p in pairs if cond(p)][:args.show]:
                print(f"--- {title} {p['kind']} ({p['why']}) {p['a']['instruction'][:100]!r}")
                print("  A:", p["a"]["response"][:300].replace("\n", " "))
                print("  B:", p["b"]["response"][:300].replace("\n", " "))
                print("  claims:", p["claims"][:2])
    if args.json:
        Path(args.json).write_text(json.dumps(pairs, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
