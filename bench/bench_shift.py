"""Shift analysis throughput and peak memory vs a bare HF forward pass over the same sequences.

SmolLM2-135M-Instruct answers MT-Bench questions greedily (not timed). Then, each in a fresh
process (so peak RSS is its own), over identical right-padded batches:
  - itaudit: `itaudit.shift.score` (body once, chunked LM head on response positions, ranks,
    probabilities, and KL when the tuned model shares the vocabulary);
  - baseline: `model(input_ids, attention_mask).logits` (the same forwards, nothing else).
Pairs: Gemma-3-270M base vs SmolLM2 (vocabularies differ: re-tokenized, base-only stats) and
SmolLM2 vs itself (KL over the full vocabulary: two forwards on both sides); without --quick,
also long LIMA responses under Gemma (memory bound).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path

N_PROMPTS, N_PROMPTS_QUICK = 8, 3
MAX_NEW, MAX_NEW_QUICK = 64, 24
BATCH = 4


def _status_mib(field: str) -> float:
    """VmRSS / VmHWM of this process from /proc (ru_maxrss would include the parent's peak,
    since it survives exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def _worker(kind: str, base_spec: str, kl: bool, seqs: list, q: mp.Queue) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from itaudit.models import load_model, pad_id
    from itaudit.models.scoring import _batch
    from itaudit.shift import Scorer, score

    lm = load_model(base_spec, show_progress=False)
    torch.set_grad_enabled(False)
    _reset_peak()
    rss0 = _status_mib("VmRSS")
    pad = pad_id(lm)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]) + len(seqs[i][1]))
    batches = [[tuple(seqs[i]) for i in order[s : s + BATCH]] for s in range(0, len(order), BATCH)]

    def bare() -> None:
        with torch.inference_mode():
            for b in batches:
                ids, mask = _batch([(list(c), list(r)) for c, r in b], pad)
                for _ in range(2 if kl else 1):
                    lm.model(input_ids=ids, attention_mask=mask).logits.sum()

    def ours() -> None:
        sc = Scorer(lm.model)
        s = [(list(c), list(r)) for c, r in seqs]
        score(sc, s, sc if kl else None, s if kl else None, batch_size=BATCH, pad_id=pad)

    fn = bare if kind == "bare" else ours
    # warm-up on the shortest sequence (allocator, kernels), then the timed run
    warm = seqs[order[0]]
    if kind == "bare":
        with torch.inference_mode():
            ids, mask = _batch([(list(warm[0]), list(warm[1]))], pad)
            lm.model(input_ids=ids, attention_mask=mask)
    else:
        sc = Scorer(lm.model)
        score(sc, [(list(warm[0]), list(warm[1]))], sc if kl else None, [(list(warm[0]), list(warm[1]))] if kl else None, pad_id=pad)
    t0 = time.perf_counter()
    fn()
    q.put({"seconds": time.perf_counter() - t0, "peak_rss_mib": _status_mib("VmHWM"), "rss_after_load_mib": rss0})


def _measure(kind: str, base_spec: str, kl: bool, seqs: list) -> dict:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    p = ctx.Process(target=_worker, args=(kind, base_spec, kl, seqs, q))
    p.start()
    res = q.get()
    p.join()
    return res


def _pair(name: str, base_spec: str, kl: bool, seqs: list, reps: int) -> list[dict]:
    n_tok = sum(len(r) for _, r in seqs)
    best = {"ours": None, "bare": None}
    for _ in range(reps):  # alternate, keep the fastest of each (the machine is shared)
        for kind in ("bare", "ours"):
            m = _measure(kind, base_spec, kl, seqs)
            if best[kind] is None or m["seconds"] < best[kind]["seconds"]:
                best[kind] = m
    o, b = best["ours"], best["bare"]
    tps_o, tps_b = n_tok / o["seconds"], n_tok / b["seconds"]
    note = f"{len(seqs)} seqs, {n_tok} response tokens, batch {BATCH}; overhead {100 * (1 - tps_o / tps_b):+.1f}%"
    return [
        {"bench": "shift", "metric": f"{name}: tokens/s", "itaudit": tps_o, "baseline": tps_b,
         "ratio": tps_o / tps_b, "unit": "tokens/s", "note": note},
        {"bench": "shift", "metric": f"{name}: peak RSS", "itaudit": o["peak_rss_mib"], "baseline": b["peak_rss_mib"],
         "ratio": o["peak_rss_mib"] / b["peak_rss_mib"], "unit": "MiB",
         "note": f"after load: {o['rss_after_load_mib']:.0f} MiB"},
    ]


def run(data_dir: Path, quick: bool) -> list[dict]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from itaudit.models import generate_ids, load_model, read_prompts
    from itaudit.models.loading import LoadedModel, load_tokenizer, resolve

    n, max_new = (N_PROMPTS_QUICK, MAX_NEW_QUICK) if quick else (N_PROMPTS, MAX_NEW)
    items = read_prompts(data_dir / "mt_bench" / "question.jsonl", limit=n)
    tuned = load_model("smollm2", show_progress=False)
    base_tok = LoadedModel(None, load_tokenizer(resolve("gemma3-270m")[0]), "gemma3-270m")
    texts = [tuned.format_prompt(it.instruction) for it in items]
    ctx = [tuned.encode_prompt(t) for t in texts]
    t0 = time.perf_counter()
    gen = generate_ids(tuned, ctx, max_new, BATCH, show_progress=False)
    gen_s = time.perf_counter() - t0
    smol_seqs = [(c, g) for c, g in zip(ctx, gen, strict=True)]
    gemma_seqs = [(base_tok.encode_prompt(t), list(base_tok.tokenizer(tuned.tokenizer.decode(g, skip_special_tokens=True),
                                                                       add_special_tokens=False)["input_ids"]))
                  for t, g in zip(texts, gen, strict=True)]
    del tuned
    reps = 1 if quick else 2
    rows = [{"bench": "shift", "metric": "smollm2 greedy generation (setup, not compared)",
             "itaudit": sum(len(g) for g in gen) / gen_s, "baseline": None, "ratio": None, "unit": "tokens/s",
             "note": f"{n} MT-Bench prompts, max_new_tokens {max_new}"}]
    rows += _pair("gemma3-270m base vs smollm2 (ranks, probs; 262k vocab)", "gemma3-270m", False, gemma_seqs, reps)
    rows += _pair("smollm2 vs smollm2 (ranks, probs, full-vocab KL)", "smollm2", True, smol_seqs, reps)
    if not quick:
        lima = json.loads((data_dir / "lima_train" / "lima.json").read_text())
        long = sorted(lima, key=lambda r: len(r["output"]))[-200:][:4]
        tok = base_tok.tokenizer
        long_seqs = [(base_tok.encode_prompt(base_tok.format_prompt(r["instruction"])),
                      list(tok(r["output"], add_special_tokens=False)["input_ids"])[:1024]) for r in long]
        rows += _pair("gemma3-270m base on 4 long LIMA responses (<=1024 tokens)", "gemma3-270m", False, long_seqs, 1)
    return rows
