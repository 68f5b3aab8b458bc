"""Validation of calibrated attribution (issue 10), parts (a)-(d). One command:

    python experiments/attribution_setup.py --work /tmp/itaudit-attr      # once: tune, answer, score (slow)
    python experiments/calibrated_attribution.py --work /tmp/itaudit-attr  # trace + metrics (seconds)

(a) invented-word planted facts and (b) plausible-but-false planted facts made of real words whose
borrowable words also occur in other rows (experiments/attribution_setup.py): precision@1 and
recall of the planted row on the spans/answers of the fully fine-tuned (and LoRA) model that hold
borrowed words, in shift mode with the untuned SmolLM2 as base (its rank categories and surprisal).
A word counts as borrowed when it belongs to a planted fact and the control (the untuned model,
same prompt) did not say it.
(c) negative control: the untuned SmolLM2 answers the same 32 prompts; every span of its answers
marked "likely source" is false. Measured in lexical mode and with a cross-model base (Gemma-3-270M
scoring SmolLM2's answers), at the default threshold, and with a threshold calibrated on the
control answers of the other half of the prompts (cross-fitted, so the share is not fitted to itself).
Excess borrowing (tuned share - control share, paired bootstrap over prompts) for full FT and LoRA.
Near-copy recall on LoRA: response words within a small edit distance of a planted invented word.
(d) the README demo: SmolLM2-135M-Instruct (never tuned on Alpaca) answers 20 MT-Bench prompts,
traced into Alpaca 5,000 with Gemma-3-270M as base: every likely mark is false.

Writes <work>/calibrated_results.json and prints the tables of docs/trace.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attribution_setup import DATASET, FACTS, ROOT, answers, data_dir  # noqa: E402

sys.path.insert(0, str(ROOT))


def items_from(ans: list[dict[str, Any]], base: str | None) -> list:
    """TraceItems with the categories and surprisal of `base` ('smollm2' | 'gemma' | None: lexical)."""
    from itaudit.trace import TraceItem
    from itaudit.trace.ranks import category

    out = []
    for a in ans:
        it = TraceItem(a["prompt_id"], a["instruction"], a["response"])
        if base is not None:
            toks = a[f"tokens_{base}"]
            it.token_spans = [(s, e, category(r)) for s, e, r, _ in toks]
            it.token_bits = [(s, e, b) for s, e, _, b in toks]
        out.append(it)
    return out


def words(text: str) -> set[str]:
    from itaudit.spans import words as w

    return set(w(text))


def borrow_metrics(traces, ans, control, planted_idx: list[int], kinds: tuple[str, ...]) -> dict[str, Any]:
    """P@1 / likely / recall on spans and answers holding words of planted facts the control lacks."""
    tok_fact = {t: fi for fi, f in enumerate(FACTS) for t in f["tokens"] if f["kind"] in kinds}
    spans_b = top1 = likely = resp_b = resp_hit = 0
    other_likely = 0
    detail = []
    for t, a, c in zip(traces, ans, control, strict=True):
        if a["kind"] not in kinds:
            continue
        borrowed = {w for w in words(a["response"]) if w in tok_fact} - words(c["response"])
        want = {planted_idx[tok_fact[w]] for w in borrowed}
        got = False
        for s in t.spans:
            top = s.sources[0] if s.sources else None
            if words(s.candidate.text) & borrowed:
                spans_b += 1
                if top is not None and top.idx in want:
                    top1 += 1
                    if top.likely:
                        likely += 1
                        got = True
            elif s.traced and top.idx not in planted_idx:
                other_likely += 1
        resp_b += bool(borrowed)
        resp_hit += got
        detail.append({"prompt": a["instruction"], "response": a["response"], "borrowed": sorted(borrowed),
                       "traced_to_planted": got,
                       "traced": [[s.candidate.text, s.sources[0].idx, round(s.evidence, 3)] for s in t.spans if s.traced]})
    return {"borrowing_answers": resp_b, "spans_with_borrowed_words": spans_b,
            "precision_at_1": _r(top1, spans_b), "likely_rate": _r(likely, spans_b),
            "recall_answers": _r(resp_hit, resp_b), "recall": f"{resp_hit}/{resp_b}",
            "likely_spans_not_on_planted_rows": other_likely, "detail": detail}


def _r(a: int, b: int) -> float | None:
    return round(a / b, 3) if b else None


def idf_rule(s) -> bool:
    """The pre-issue-10 rule (in-dataset IDF rarity only), recomputed from the same evidence: coverage
    >= 0.5 and (IDF rarity x specificity >= 0.5 or a >= 4-word match in <= 5 instances), top not tied."""
    if not s.sources or not s.sources[0].verbatim:
        return False
    top = s.sources[0]
    runner = next((x.score for x in s.sources[1:] if x.verbatim), 0.0)
    strong = top.coverage >= 0.5 and (top.rarity * top.specificity >= 0.5 or (
        top.longest >= 4 and (top.evidence.get("shared_with") or 99) <= 5))
    return strong and top.score - runner >= 0.02


def false_likely(traces) -> dict[str, Any]:
    n = sum(len(t.spans) for t in traces)
    k = sum(t.n_traced for t in traces)
    old = [s for t in traces for s in t.spans if idf_rule(s)]
    ex = [[s.candidate.text, s.sources[0].idx, round(s.evidence, 3)] for t in traces for s in t.spans if s.traced]
    return {"candidate_spans": n, "likely": k, "share": _r(k, n), "examples": ex[:12],
            "idf_rule_likely": len(old), "idf_rule_share": _r(len(old), n),
            "idf_rule_examples": [s.candidate.text for s in old][:15]}


def near_copy_recall(traces, ans, planted_idx: list[int], index) -> dict[str, Any]:
    """Response words within edit distance max(1, len//4) of a planted invented word, not equal to any
    dataset word: share whose span lists the planted row as a near-copy source."""
    from itaudit.trace.nearcopy import levenshtein

    invented = {t: fi for fi, f in enumerate(FACTS) if f["kind"] == "invented" for t in f["tokens"]}
    found = total = 0
    cases = []
    for t, a in zip(traces, ans, strict=True):
        for w in words(a["response"]):
            if w in invented or index.word_id.get(w) is not None or len(w) < 5:
                continue
            near = [v for v in invented if levenshtein(w, v, max(1, len(w) // 4)) <= max(1, len(w) // 4)]
            if not near:
                continue
            total += 1
            rows = {planted_idx[invented[v]] for v in near}
            hit = any(src.near_copy and src.idx in rows for s in t.spans if w in words(s.candidate.text)
                      for src in s.sources)
            traced = any(s.traced and s.sources[0].idx in rows for s in t.spans if w in words(s.candidate.text))
            found += hit
            cases.append({"word": w, "planted": near, "found": hit, "traced": traced})
    return {"altered_names": total, "found": found, "recall": _r(found, total), "cases": cases}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/itaudit-attr"))
    ap.add_argument("--neighbours", action="store_true", help="FAISS similarity (embeds the datasets: slow)")
    ap.add_argument("--boot", type=int, default=2000)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from itaudit.ingest import ingest
    from itaudit.store import Store
    from itaudit.trace import Tracer, calibrate, excess, relabel_all
    from itaudit.trace.attribute import DEFAULT_THRESHOLD

    lay = json.loads((a.work / "layout.json").read_text())
    planted = lay["planted_idx"]
    t0 = time.perf_counter()
    res: dict[str, Any] = {"planted_idx": planted, "threshold": DEFAULT_THRESHOLD}
    store = Store(a.work / "eval.duckdb")   # its own file: the tuning process may hold attr.duckdb
    if store.dataset_info(DATASET) is None:       # same file, same ingest: the same idx as attr.duckdb
        ingest(store, a.work / "alpaca_planted.json", DATASET, "alpaca", show_progress=False)
    tracer = Tracer(store, DATASET, index_dir=a.work / "indexes", neighbours=a.neighbours)
    ix = tracer.index
    res["plausible_word_rows"] = {t: len(ix.instances_containing([t])) for f in FACTS if f["kind"] == "plausible"
                                  for t in f["tokens"]}
    have = {n for n in ("full", "lora", "control") if (a.work / f"answers_{n}.json").is_file()}
    ans = {n: answers(a.work, n) for n in have}
    ctrl = ans.get("control")
    # (a), (b): shift mode with the untuned SmolLM2 as base
    for m in ("full", "lora"):
        if m not in ans or ctrl is None:
            continue
        tr = tracer.trace(items_from(ans[m], "smollm2"))
        res[f"{m}_shift"] = {"a_invented": borrow_metrics(tr, ans[m], ctrl, planted, ("invented",)),
                             "b_plausible": borrow_metrics(tr, ans[m], ctrl, planted, ("plausible",))}
        trl = tracer.trace(items_from(ans[m], None))
        res[f"{m}_lexical"] = {"a_invented": borrow_metrics(trl, ans[m], ctrl, planted, ("invented",)),
                               "b_plausible": borrow_metrics(trl, ans[m], ctrl, planted, ("plausible",))}
        if m == "lora":
            res["lora_near_copy"] = near_copy_recall(tr, ans[m], planted, ix)
    # (c) negative control and excess borrowing, lexical and cross-model base
    if ctrl is not None:
        for setting, base in (("lexical", None), ("gemma", "gemma")):
            c_tr = tracer.trace(items_from(ctrl, base))
            res[f"control_{setting}"] = false_likely(c_tr)
            half = [x["kind"] == "invented" for x in ctrl]
            cf: dict[str, Any] = {}
            for k, (fit, test) in enumerate(((True, False), (False, True))):
                fit_tr = [t for t, h in zip(c_tr, half, strict=True) if h == fit]
                test_tr = [t for t, h in zip(c_tr, half, strict=True) if h == test]
                th = calibrate(fit_tr, 0.05, floor=DEFAULT_THRESHOLD)
                relabel_all(test_tr, th)
                cf[f"fold{k}"] = {"threshold": round(th, 4), **false_likely(test_tr)}
                relabel_all(test_tr, DEFAULT_THRESHOLD)
            n = sum(f["candidate_spans"] for f in cf.values())
            cf["share"] = _r(sum(f["likely"] for f in cf.values()), n)
            res[f"control_{setting}_calibrated_crossfit"] = cf
            for m in ("full", "lora"):
                if m in ans:
                    t_tr = tracer.trace(items_from(ans[m], base))
                    e = excess(t_tr, c_tr, n_boot=a.boot).as_dict()
                    res[f"excess_{m}_{setting}"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in e.items()}
                    th = calibrate(c_tr, 0.05, floor=DEFAULT_THRESHOLD)
                    relabel_all(t_tr, th)
                    relabel_all(c_tr, th)
                    e = excess(t_tr, c_tr, n_boot=a.boot).as_dict()
                    res[f"excess_{m}_{setting}_calibrated"] = {"threshold": round(th, 4), **{
                        k: (round(v, 4) if isinstance(v, float) else v) for k, v in e.items()}}
                    relabel_all(c_tr, DEFAULT_THRESHOLD)
    # (d) README demo into Alpaca 5,000
    if (a.work / "answers_demo.json").is_file():
        if store.dataset_info("alpaca") is None:
            ingest(store, data_dir() / "alpaca" / "alpaca_5000.json", "alpaca", "alpaca", show_progress=False,
                   skip_invalid=True)   # as the README demo does
        demo = answers(a.work, "demo")
        dt = Tracer(store, "alpaca", index_dir=a.work / "indexes", neighbours=a.neighbours)
        from wordfreq import zipf_frequency

        for setting, base in (("gemma", "gemma"), ("lexical", None)):
            d_tr = dt.trace(items_from(demo, base))
            fl = false_likely(d_tr)
            fl["traced_word_zipf"] = [[w, zipf_frequency(w, "en")] for t in d_tr for s in t.spans if s.traced
                                      for w in words(s.candidate.text)][:20]
            res[f"demo_{setting}"] = fl
    res["seconds"] = round(time.perf_counter() - t0, 1)
    store.close()
    (a.work / "calibrated_results.json").write_text(json.dumps(res, indent=1, ensure_ascii=False))
    report(res)


def report(res: dict[str, Any]) -> None:
    def g(path: str, default: Any = "-") -> Any:
        cur: Any = res
        for p in path.split("."):
            if not isinstance(cur, dict) or p not in cur:
                return default
            cur = cur[p]
        return cur

    print(f"\nplausible facts: rows containing each borrowable word: {res.get('plausible_word_rows')}")
    print("\n| part | metric | full FT | LoRA |\n| --- | --- | --- | --- |")
    for part, key in (("(a) invented", "a_invented"), ("(b) plausible", "b_plausible")):
        for mode in ("shift", "lexical"):
            for met in ("precision_at_1", "recall_answers", "recall", "spans_with_borrowed_words",
                        "likely_spans_not_on_planted_rows"):
                print(f"| {part}, {mode} | {met} | {g(f'full_{mode}.{key}.{met}')} | {g(f'lora_{mode}.{key}.{met}')} |")
    for setting in ("lexical", "gemma"):
        c = g(f"control_{setting}", {})
        cf = g(f"control_{setting}_calibrated_crossfit", {})
        print(f"| (c) control, {setting} | false likely (default threshold) | {c.get('likely')}/{c.get('candidate_spans')} "
              f"= {c.get('share')} | old IDF rule: {c.get('idf_rule_likely')} = {c.get('idf_rule_share')} |")
        print(f"| (c) control, {setting} | false likely (calibrated, cross-fitted) | {cf.get('share')} | |")
        for m in ("full", "lora"):
            for suffix in ("", "_calibrated"):
                e = g(f"excess_{m}_{setting}{suffix}", {})
                if e:
                    print(f"| (c) excess, {setting}{suffix} | {m}: {e.get('tuned_share')} - {e.get('control_share')} | "
                          f"{e.get('excess')} [{e.get('ci_low')}, {e.get('ci_high')}] | th {e.get('threshold', res['threshold'])} |")
    print(f"| near copies (LoRA) | recall | {g('lora_near_copy.found')}/{g('lora_near_copy.altered_names')} | |")
    for setting in ("gemma", "lexical"):
        d = g(f"demo_{setting}", {})
        if d:
            print(f"| (d) demo, {setting} | false likely | {d['likely']}/{d['candidate_spans']} = {d['share']} | "
                  f"old IDF rule: {d['idf_rule_likely']} = {d['idf_rule_share']} |")
    print(f"\nseconds: {res['seconds']}")


if __name__ == "__main__":
    main()
