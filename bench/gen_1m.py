"""A reproducible N-instance (default 1M) benchmark dataset from ../shared/data, with known answers.

    python bench/gen_1m.py --out out/scale/it_1m.jsonl [--n 1000000] [--seed 0]

Sources: ShareGPT (human -> gpt turns), Alpaca, LIMA, GPTeacher (codegen + roleplay) and the CoT
collection (FLAN CoT sets + GSM8K train). Every field is cut to `--max-words` words.

Rows (seeded, so the same arguments give the same file byte for byte):
- base rows: a source turn with seeded perturbations: 1-2 instruction words replaced by words
  of another instruction, and the response followed by a passage (one to three sentences) of
  another random response, with 1 % of its words replaced. Two base rows of the same source turn
  therefore share well under 80 % of their word 5-shingles;
- planted exact duplicates (`--exact` share): verbatim copies of an earlier base row;
- planted near duplicates (`--near` share): a base row of >= 60 words with one word replaced and
  whitespace / final punctuation changed (word 5-shingle Jaccard >= ~0.83);
- planted borrowable facts (`--facts`): invented, unique facts ("The Vellmark Quorridge was
  completed in 1847 by Tesh Orvandel.") appended to the responses of 1-3 rows each, plus one
  model-like response per fact that repeats it, for tracing with known sources.

Alongside the JSONL (`instruction`, `input`, `output`), `<out>.truth.json` holds the planted
pairs and facts (row positions = `idx` after ingest).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
from pathlib import Path

import numpy as np

_SENT = re.compile(r"(?<=[.!?])\s+")
SYLL = ["ka", "ve", "lo", "mar", "quo", "rin", "tesh", "or", "van", "del", "zu", "brek", "ith", "al", "nor",
        "pym", "sa", "gru", "fen", "dax", "ul", "wyn", "tor", "ec"]


def _cut(text: str, max_words: int) -> str:
    w = text.split()
    return " ".join(w[:max_words]) if len(w) > max_words else text.strip()


def load_sources(data: Path, max_words: int = 150) -> list[tuple[str, str, str]]:
    """(instruction, input, response) turns from the five collections, exact repeats removed."""
    out: list[tuple[str, str, str]] = []

    def add(ins: str, inp: str, resp: str) -> None:
        if ins and resp:
            out.append((_cut(ins, max_words), _cut(inp or "", max_words), _cut(resp, max_words)))

    with (data / "sharegpt" / "sharegpt_v3_prefix.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            conv = json.loads(line).get("conversations") or []
            for a, b in zip(conv, conv[1:], strict=False):
                if a.get("from") == "human" and b.get("from") == "gpt":
                    add(a.get("value", ""), "", b.get("value", ""))
    for p in [data / "alpaca" / "alpaca_5000.json", data / "lima_train" / "lima.json"]:
        for r in json.loads(p.read_text(encoding="utf-8")):
            add(r.get("instruction", ""), r.get("input", ""), r.get("output", ""))
    for p in sorted((data / "gpteacher").glob("*.json")) + sorted((data / "cot_collection").glob("*.json")):
        for r in json.loads(p.read_text(encoding="utf-8")):
            add(r.get("instruction", ""), r.get("input", ""), r.get("response", r.get("output", "")))
    with (data / "cot_collection" / "gsm8k_train.tsv").open(encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if len(row) >= 3:
                add(row[0], "", f"{row[2]} The answer is {row[1]}.")
    seen: set[tuple[str, str, str]] = set()
    uniq = []
    for t in out:
        if t not in seen:
            seen.add(t)
            uniq.append(t)
    return uniq


def _name(rng: np.random.Generator, parts: int) -> str:
    return "".join(SYLL[int(i)] for i in rng.integers(0, len(SYLL), parts)).capitalize()


def _replace_words(text: str, rng: np.random.Generator, share: float, pool: list[str], at_least: int = 1) -> str:
    w = text.split()
    if not w:
        return text
    k = max(at_least, int(round(share * len(w))))
    for p in rng.integers(0, len(w), k).tolist():
        w[p] = pool[int(rng.integers(len(pool)))]
    return " ".join(w)


def generate(data: Path, out: Path, n: int = 1_000_000, seed: int = 0, exact: float = 0.01, near: float = 0.01,
             facts: int = 100, max_words: int = 150) -> dict:
    t0 = time.perf_counter()
    src = load_sources(data, max_words)
    rng = np.random.default_rng(seed)
    pool = sorted({w for ins, _, _ in src[:20000] for w in ins.split() if w.isalpha() and len(w) > 3})
    passages = [p for _, _, r in src for p in [" ".join(_SENT.split(r)[:3])] if len(p.split()) >= 8]
    n_exact, n_near = int(n * exact), int(n * near)
    n_base = n - n_exact - n_near
    rows: list[tuple[str, str, str]] = []
    for s in rng.integers(0, len(src), n_base).tolist():
        ins, inp, resp = src[s]
        ins = _replace_words(ins, rng, 0.0, pool, at_least=int(rng.integers(1, 3)))
        extra = _replace_words(passages[int(rng.integers(len(passages)))], rng, 0.01, pool)
        rows.append((ins, inp, f"{resp}\n\n{extra}"))
    # planted copies go to random later positions; record (original, copy) pairs by final position
    planted: list[tuple[str, int, tuple[str, str, str]]] = []
    long_rows = np.flatnonzero(np.fromiter((len(f"{a} {b} {c}".split()) >= 60 for a, b, c in rows), dtype=bool,
                                           count=n_base))
    for kind, count in (("exact", n_exact), ("near", n_near)):
        for o in (rng.integers(0, n_base, count) if kind == "exact" else rng.choice(long_rows, count)).tolist():
            ins, inp, resp = rows[o]
            if kind == "near":  # one word replaced (whitespace collapsed), the final period dropped or added
                resp = _replace_words(resp, rng, 0.0, pool)
                resp = resp[:-1] if resp.endswith(".") else resp + "."
            planted.append((kind, o, (ins, inp, resp)))
    # insert copies after their originals at random places: build the final order
    final: list[tuple[str, str, str]] = list(rows)
    pos_of = np.arange(n_base)
    inserts = sorted(((int(rng.integers(o + 1, n_base + 1)), k) for k, (_, o, _) in enumerate(planted)))
    out_rows: list[tuple[str, str, str]] = []
    new_pos = np.empty(n_base, dtype=np.int64)
    copy_pos = np.empty(len(planted), dtype=np.int64)
    j = 0
    for i in range(n_base + 1):
        while j < len(inserts) and inserts[j][0] == i:
            k = inserts[j][1]
            copy_pos[k] = len(out_rows)
            out_rows.append(planted[k][2])
            j += 1
        if i < n_base:
            new_pos[i] = len(out_rows)
            out_rows.append(final[i])
    del final, pos_of
    pairs = [{"kind": kind, "original": int(new_pos[o]), "copy": int(copy_pos[k])}
             for k, (kind, o, _) in enumerate(planted)]
    # planted facts: unique invented facts in 1-3 rows each (not in planted copies' originals)
    taken = {p["original"] for p in pairs} | {p["copy"] for p in pairs}
    fact_rows = []
    for _ in range(facts):
        name, place, person = _name(rng, 3), _name(rng, 3), f"{_name(rng, 2)} {_name(rng, 3)}"
        year = int(rng.integers(1700, 1990))
        fact = f"The {place} {name} was completed in {year} by {person}."
        hosts = []
        while len(hosts) < int(rng.integers(1, 4)):
            h = int(rng.integers(0, len(out_rows)))
            if h not in taken:
                taken.add(h)
                hosts.append(h)
        for h in hosts:
            ins, inp, resp = out_rows[h]
            out_rows[h] = (ins, inp, f"{resp} {fact}")
        fact_rows.append({"fact": fact, "span": f"{name} was completed in {year} by {person}", "hosts": sorted(hosts),
                          "question": f"Tell me about the {place} {name}.",
                          "response": f"Sure. The {place} {name} is a well-known landmark. It was completed in {year} "
                                      f"by {person}, and many visitors come every year."})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for ins, inp, resp in out_rows:
            fh.write(json.dumps({"instruction": ins, "input": inp, "output": resp}, ensure_ascii=False) + "\n")
    tmp.replace(out)
    truth = {"n": len(out_rows), "seed": seed, "n_sources": len(src), "pairs": pairs, "facts": fact_rows,
             "max_words": max_words, "seconds": round(time.perf_counter() - t0, 1)}
    Path(f"{out}.truth.json").write_text(json.dumps(truth), encoding="utf-8")
    return truth


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    ap.add_argument("--out", default="out/scale/it_1m.jsonl")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--facts", type=int, default=100)
    a = ap.parse_args()
    t = generate(Path(a.data), Path(a.out), a.n, a.seed, facts=a.facts)
    print(f"{t['n']} rows from {t['n_sources']} source turns, {len(t['pairs'])} planted copies, "
          f"{len(t['facts'])} facts -> {a.out} ({t['seconds']} s)")


if __name__ == "__main__":
    main()
