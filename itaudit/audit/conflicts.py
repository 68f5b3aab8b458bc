"""Conflicting neighbours: close instructions whose responses disagree.

The pairs that let a tuned model borrow wrong facts: two prompts that mean nearly the same thing
(cosine of prompt embeddings >= `threshold`, default 0.85) but whose responses
- are dissimilar (response cosine <= `response_threshold`, default 0.5), or
- state different numbers or capitalized names (each response has some the other lacks),
  unless the instructions themselves differ in numbers / names (which explains it).
Follow-up turns (with conversation history) are compared only with rows of the same history.

Pair strength = instruction cosine * max(1 - response cosine if dissimilar, token distance *
response cosine if the numbers/names differ), token distance = 1 - Jaccard of the two responses'
number+name sets (tokens also in an instruction are ignored).
A row's score is its strongest conflict; pairs go to `check_pairs` with both similarities.
"""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl

from ..index import exact_index
from ..progress import progress_bar
from .base import CheckResult

_NUM = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?%?")
_CAP = re.compile(r"\b[A-Z][\w'-]*[A-Za-z0-9]\b|\b[A-Z]\b")
_SENT_START = re.compile(r"(?:^|[.!?:;]\s+|\n\s*(?:[-*#>\d.)]+\s*)?)$")
_STOP = {
    "I", "A", "The", "This", "That", "These", "Those", "It", "In", "On", "At", "For", "If", "And", "But", "Or",
    "As", "To", "Of", "By", "With", "We", "You", "He", "She", "They", "My", "Your", "Our", "Their", "Its",
    "Here", "There", "Yes", "No", "Note", "However", "Also", "So", "Then", "When", "What", "Which", "Who",
    "How", "Why", "Where", "OK", "Ok", "Sure", "Hi", "Hello", "Thanks", "Thank", "Please", "Step", "Example",
}


def numbers(text: str, max_chars: int = 2000) -> set[str]:
    """Numbers in `text` ("1,000" -> "1000"), not counting list markers ("1." / "2)" starting a line)."""
    t = text[:max_chars]
    out = set()
    for m in _NUM.finditer(t):
        after = t[m.end():m.end() + 2]
        if after[:1] in (".", ")") and (len(after) < 2 or after[1].isspace()) \
                and not t[t.rfind("\n", 0, m.start()) + 1:m.start()].strip():
            continue  # a list marker
        v = m.group(0).replace(",", "").lstrip("+")
        if v.endswith("."):
            v = v[:-1]
        out.add(v)
    return out


def entities(text: str, max_chars: int = 2000) -> set[str]:
    """Capitalized tokens that do not start a sentence or list item (crude named entities)."""
    t = text[:max_chars]
    out = set()
    for m in _CAP.finditer(t):
        tok = m.group(0)
        if tok in _STOP or len(tok) < 2 or tok.split("'")[0] in _STOP:  # also I've, It's, ...
            continue
        if _SENT_START.search(t[max(0, m.start() - 12):m.start()]):
            continue
        out.add(tok)
    return out


def _facts(text: str | None, max_chars: int) -> tuple[set[str], set[str]]:
    t = text or ""
    return numbers(t, max_chars), entities(t, max_chars)


def compare(ins_a: str, ins_b: str, res_a: str, res_b: str, *, max_chars: int = 2000, max_facts: int = 10) -> dict:
    """Numbers / names each response has that the other lacks, and whether the instructions explain it.

    Tokens that occur in either instruction are the topic, not a fact, and are ignored. A side
    conflicts when both responses have tokens the other lacks, neither response has more than
    `max_facts` of them (long, fact-dense answers always differ somewhere), and the instructions
    do not differ in that kind of token themselves.
    """
    ia, ib = _facts(ins_a, max_chars), _facts(ins_b, max_chars)
    ra, rb = _facts(res_a, max_chars), _facts(res_b, max_chars)
    out: dict = {}
    sets = []
    for k, name in ((0, "numbers"), (1, "entities")):
        topic = ia[k] | ib[k]
        a, b = ra[k] - topic, rb[k] - topic
        sets.append((a, b))
        only_a, only_b = sorted(a - b), sorted(b - a)
        explained = ia[k] != ib[k]
        small = len(a) <= max_facts and len(b) <= max_facts
        out[name] = {"only_a": only_a[:10], "only_b": only_b[:10], "n_only_a": len(only_a), "n_only_b": len(only_b),
                     "instructions_differ": explained,
                     "conflict": bool(only_a and only_b and small and not explained)}
    ua, ub = sets[0][0] | sets[1][0], sets[0][1] | sets[1][1]
    union = ua | ub
    out["token_distance"] = 1 - len(ua & ub) / len(union) if union else 0.0
    return out


def neighbour_pairs(vecs: np.ndarray, threshold: float, k: int, *, chunk: int = 4096,
                    show_progress: bool = False) -> dict[tuple[int, int], float]:
    """(i < j) positions among each row's k nearest with cosine >= threshold (exact search)."""
    index = exact_index(vecs)
    out: dict[tuple[int, int], float] = {}
    with progress_bar("neighbours", total=len(vecs), unit="rows", enabled=show_progress) as bar:
        for s in range(0, len(vecs), chunk):
            d, ids = index.search(np.ascontiguousarray(vecs[s:s + chunk]), k + 1)
            for q in range(len(d)):
                i = s + q
                for j, c in zip(ids[q].tolist(), d[q].tolist(), strict=True):
                    if j < 0 or j == i or c < threshold:
                        continue
                    key = (i, j) if i < j else (j, i)
                    out[key] = max(out.get(key, -1.0), float(c))
            bar.advance(len(d))
    return out


def conflicting_neighbors(ctx, field: str = "prompt", threshold: float = 0.85, response_threshold: float = 0.5,
                          k: int = 10, use_tokens: bool = True, include_followups: bool = False,
                          max_chars: int = 2000, max_facts: int = 10) -> CheckResult:
    """Pairs of near-identical prompts with disagreeing responses; score per row = max conflict strength."""
    frame = ctx.instances()
    n = frame.height
    idx = frame["idx"].to_numpy().astype(np.int64)
    vecs = ctx.vectors(field)
    cand = neighbour_pairs(vecs, threshold, k, show_progress=ctx.show_progress)
    hist = frame["history"].cast(pl.Utf8).fill_null("").to_list() if "history" in frame.columns else [""] * n
    sysp = frame["system"].fill_null("").to_list() if "system" in frame.columns else [""] * n
    n_followup_skipped = 0
    if not include_followups:
        keep = {}
        for (i, j), c in cand.items():
            if (hist[i] or hist[j]) and (hist[i] != hist[j] or sysp[i] != sysp[j]):
                n_followup_skipped += 1
                continue
            keep[(i, j)] = c
        cand = keep
    rows_needed = sorted({i for p in cand for i in p})
    rvec = ctx.vectors("response", idx=idx[rows_needed]) if rows_needed else np.zeros((0, vecs.shape[1]), np.float32)
    where = {r: p for p, r in enumerate(rows_needed)}
    ins = frame["instruction"].to_list()
    inp = frame["input"].fill_null("").to_list()
    res = frame["response"].to_list()
    score = np.zeros(n)
    count = np.zeros(n, dtype=np.int64)
    partner = np.full(n, -1, dtype=np.int64)
    pairs = []
    reasons_count = {"dissimilar_response": 0, "numbers": 0, "entities": 0}
    for (i, j), isim in sorted(cand.items()):
        rsim = float(rvec[where[i]] @ rvec[where[j]])
        reasons = []
        strength = 0.0
        if rsim <= response_threshold:
            reasons.append("dissimilar_response")
            strength = max(strength, 1 - rsim)
        cmp = None
        if use_tokens and rsim < 0.999:
            cmp = compare(f"{ins[i]}\n{inp[i]}", f"{ins[j]}\n{inp[j]}", res[i], res[j], max_chars=max_chars,
                          max_facts=max_facts)
            for name in ("numbers", "entities"):
                if cmp[name]["conflict"]:
                    reasons.append(name)
            if "numbers" in reasons or "entities" in reasons:
                # the same answer with other facts conflicts most: weight by response similarity
                strength = max(strength, cmp["token_distance"] * max(rsim, 0.0))
        if not reasons:
            continue
        for r in reasons:
            reasons_count[r] += 1
        s = float(np.clip(isim * strength, 0.0, 1.0))
        for a, b in ((i, j), (j, i)):
            count[a] += 1
            if s > score[a]:
                score[a], partner[a] = s, idx[b]
        ev = {"instruction_sim": round(isim, 4), "response_sim": round(rsim, 4), "reasons": reasons, "field": field}
        if cmp is not None:
            ev["numbers"] = {"only_a": cmp["numbers"]["only_a"], "only_b": cmp["numbers"]["only_b"]}
            ev["entities"] = {"only_a": cmp["entities"]["only_a"], "only_b": cmp["entities"]["only_b"]}
        pairs.append((int(idx[i]), int(idx[j]), s, json.dumps(ev, ensure_ascii=False)))
    flag = count > 0
    details = [{"n_conflicts": int(count[r]), "strongest_with": int(partner[r])} if flag[r] else None for r in range(n)]
    summary = {
        "n_rows": n,
        "n_candidate_pairs": len(cand),
        "n_followup_pairs_skipped": n_followup_skipped,
        "n_conflict_pairs": len(pairs),
        "n_rows_flagged": int(flag.sum()),
        "pct_flagged": round(100 * flag.sum() / n, 3) if n else 0.0,
        "reasons": reasons_count,
        "n_responses_embedded": len(rows_needed),
    }
    params = {"field": field, "threshold": threshold, "response_threshold": response_threshold, "k": k,
              "use_tokens": use_tokens, "include_followups": include_followups, "max_chars": max_chars,
              "max_facts": max_facts, "model": ctx.embedder.cache_key}
    return CheckResult("conflicting_neighbors", ctx.dataset, idx, flag, score, summary=summary, params=params,
                       details=details,
                       pairs=pl.DataFrame(pairs, schema={"idx_a": pl.Int64, "idx_b": pl.Int64, "score": pl.Float64,
                                                         "evidence": pl.Utf8}, orient="row"))
