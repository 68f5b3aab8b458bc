"""The one LM scorer: per-token rank, probability, NLL and KL of a response, memory-bounded.

Used by the shift analysis (base vs tuned), novelty (base-model NLL) and trace (base ranks).
The transformer body runs once per batch of sequences; the LM head is then applied to the
response positions only, a chunk of positions at a time, so no `(sequence, vocabulary)` float32
block larger than one chunk ever exists (Gemma-3's 262k vocabulary makes full logits ~1 MB per
position). Rank of a token = 1 + number of vocabulary entries with a strictly larger logit;
NLL = -ln p(token) in nats; KL = KL(base || tuned) over the full vocabulary.

    sc = Scorer(lm.model)
    [st] = score(sc, [(context_ids, response_ids)], pad_id=pad_id(lm))
    st.rank, st.base_prob, st.nll
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..threads import with_torch_threads
from .batching import pad_batch

DEFAULT_BUDGET_MB = 1024
# (chunk, vocab) float32 blocks alive at once: logits (+ tuned logits, p_base, exp temp).
_TEMPS_BASE, _TEMPS_KL = 2, 4


@dataclass
class TokenStats:
    rank: np.ndarray | None          # int32, 1-based rank under the base model (None: not asked)
    base_prob: np.ndarray            # float64
    nll: np.ndarray                  # float64, -ln p_base(token), nats
    tuned_prob: np.ndarray | None    # float64
    kl: np.ndarray | None            # float64, KL(base || tuned) over the full vocabulary


class Scorer:
    """Hidden states + LM head of a causal LM (optionally a PeftModel with its adapter disabled)."""

    def __init__(self, model: Any, *, disable_adapter: bool = False):
        self.model = model
        self.disable_adapter = disable_adapter
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.body = getattr(inner, inner.base_model_prefix)
        self.head = inner.get_output_embeddings()
        self.softcap = getattr(inner.config, "final_logit_softcapping", None)
        self.vocab = int(self.head.weight.shape[0])
        self.device = self.head.weight.device
        self._checked = False

    def _ctx(self):
        return self.model.disable_adapter() if self.disable_adapter else nullcontext()

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with self._ctx():
            out = self.body(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)
        return out[0] if isinstance(out, tuple) else out.last_hidden_state

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        with self._ctx():
            x = self.head(h).float()
        if self.softcap:
            x = torch.tanh(x / self.softcap) * self.softcap
        return x

    @torch.inference_mode()
    def check(self, ids: Sequence[int]) -> None:
        """Once per model: body + head must reproduce the model's own forward logits."""
        if self._checked:
            return
        t = torch.tensor([list(ids)[:16]], dtype=torch.long, device=self.device)
        m = torch.ones_like(t)
        with self._ctx():
            ref = self.model(input_ids=t, attention_mask=m).logits.float()
        ours = self.logits(self.hidden(t, m))
        err = (ref - ours).abs().max().item()
        if err > 1e-3 * max(1.0, ref.abs().max().item()):
            raise RuntimeError(f"{type(self.model).__name__}: chunked LM head differs from forward() by {err:.3g}")
        self._checked = True


def chunk_size(vocab: int, budget_mb: float = DEFAULT_BUDGET_MB, *, with_tuned: bool = True) -> int:
    """Positions per chunk so that the (chunk, vocab) float32 temporaries fit in `budget_mb`."""
    temps = _TEMPS_KL if with_tuned else _TEMPS_BASE
    return max(1, int(budget_mb * 2**20 // (vocab * 4 * temps)))


def _ranks(lb: torch.Tensor, tl: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """1 + count of logits strictly above the token's; rows where the token is the max are 1
    without a pass over the vocabulary (most tokens, in practice)."""
    rank = torch.ones(lb.shape[0], dtype=torch.int64)
    for r in (tl < m).squeeze(1).nonzero().squeeze(1).tolist():
        rank[r] = int(torch.count_nonzero(lb[r] > tl[r])) + 1
    return rank


def _chunk_stats(lb: torch.Tensor, tgt: torch.Tensor, lt: torch.Tensor | None, with_rank: bool = True):
    """Stats for one chunk, in place (destroys `lb`, `lt`): base logits (C, V), targets (C,),
    tuned logits (C, V) or None. Returns rank (or None), base prob, NLL, tuned prob, KL(base || tuned)."""
    idx = tgt[:, None]
    tl = lb.gather(1, idx)
    m = lb.amax(1, keepdim=True)
    rank = _ranks(lb, tl, m) if with_rank else None
    lb.sub_(m)                                   # lb - max
    if lt is None:
        s = lb.exp_().sum(1, keepdim=True)       # sum exp(lb - max)
        pb = (torch.exp(tl - m) / s).squeeze(1)
        nll = (s.log() - (tl - m)).squeeze(1)     # logsumexp - logit, as cross_entropy computes it
        return rank, pb, nll, None, None
    pb_full = torch.exp(lb)
    s = pb_full.sum(1, keepdim=True)
    pb_full.div_(s)                              # p_base
    nll = (s.log() - (tl - m)).squeeze(1)
    lb.sub_(s.log_())                            # log p_base
    pb = pb_full.gather(1, idx).squeeze(1)
    lt.sub_(lt.amax(1, keepdim=True))
    lt.sub_(torch.exp(lt).sum(1, keepdim=True).log_())  # log p_tuned
    pt = lt.gather(1, idx).squeeze(1).exp()
    lb.sub_(lt).mul_(pb_full)                    # p_b * (log p_b - log p_t)
    kl = lb.sum(1).clamp_(min=0.0)
    return rank, pb, nll, pt, kl


def _batch(seqs: list[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (ids, mask) of context + response."""
    return pad_batch([list(c) + list(r) for c, r in seqs], pad)


def _gather_positions(h: torch.Tensor, seqs: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    """Hidden states at the positions predicting each response token, concatenated."""
    parts = [h[i, len(c) - 1 : len(c) + len(r) - 1] for i, (c, r) in enumerate(seqs) if r]
    return torch.cat(parts) if parts else h.new_zeros((0, h.shape[-1]))


@with_torch_threads
@torch.inference_mode()
def score_batch(
    base: Scorer,
    base_seqs: list[tuple[list[int], list[int]]],
    tuned: Scorer | None = None,
    tuned_seqs: list[tuple[list[int], list[int]]] | None = None,
    *,
    pad_id: int = 0,
    budget_mb: float = DEFAULT_BUDGET_MB,
    ranks: bool = True,
) -> list[TokenStats]:
    """Token stats for a batch of (context ids, response ids) pairs (right padding).

    With `tuned`, `tuned_seqs` must hold the same response ids (same vocabulary) after the tuned
    model's context; KL and the tuned probability are then computed at every response position.
    `ranks=False` skips the ranks (novelty needs only the NLL).
    """
    if tuned is not None:
        if tuned_seqs is None or [r for _, r in tuned_seqs] != [r for _, r in base_seqs]:
            raise ValueError("tuned_seqs must hold the same response tokens as base_seqs")
        if tuned.vocab != base.vocab:
            raise ValueError(f"vocabulary sizes differ ({base.vocab} vs {tuned.vocab}): KL needs one vocabulary")
    hb = _gather_positions(base.hidden(*_batch(base_seqs, pad_id)), base_seqs)
    ht = _gather_positions(tuned.hidden(*_batch(tuned_seqs, pad_id)), tuned_seqs) if tuned is not None else None
    tgt = torch.tensor([t for _, r in base_seqs for t in r], dtype=torch.long, device=hb.device)
    n = tgt.shape[0]
    rank = np.empty(n, dtype=np.int32) if ranks else None
    pb = np.empty(n, dtype=np.float64)
    nll = np.empty(n, dtype=np.float64)
    pt = np.empty(n, dtype=np.float64) if tuned is not None else None
    kl = np.empty(n, dtype=np.float64) if tuned is not None else None
    step = chunk_size(base.vocab, budget_mb, with_tuned=tuned is not None)
    for s in range(0, n, step):
        e = min(n, s + step)
        lb = base.logits(hb[s:e])
        lt = tuned.logits(ht[s:e]) if tuned is not None else None
        r_, pb_, nll_, pt_, kl_ = _chunk_stats(lb, tgt[s:e], lt, ranks)
        del lb, lt
        if rank is not None:
            rank[s:e] = r_.cpu().numpy()
        pb[s:e] = pb_.double().cpu().numpy()
        nll[s:e] = nll_.double().cpu().numpy()
        if tuned is not None:
            pt[s:e] = pt_.double().cpu().numpy()
            kl[s:e] = kl_.double().cpu().numpy()
    out: list[TokenStats] = []
    o = 0
    for _, r in base_seqs:
        k = len(r)
        out.append(TokenStats(rank[o : o + k] if rank is not None else None, pb[o : o + k], nll[o : o + k],
                              pt[o : o + k] if pt is not None else None, kl[o : o + k] if kl is not None else None))
        o += k
    return out


def score(
    base: Scorer,
    base_seqs: list[tuple[list[int], list[int]]],
    tuned: Scorer | None = None,
    tuned_seqs: list[tuple[list[int], list[int]]] | None = None,
    *,
    batch_size: int = 4,
    pad_id: int = 0,
    budget_mb: float = DEFAULT_BUDGET_MB,
    on_batch: Any = None,
    ranks: bool = True,
) -> list[TokenStats]:
    """`score_batch` over many sequences, batched by similar length; results in input order."""
    if base_seqs:
        base.check(base_seqs[0][0] + base_seqs[0][1])
        if tuned is not None:
            tuned.check(tuned_seqs[0][0] + tuned_seqs[0][1])
    order = sorted(range(len(base_seqs)), key=lambda i: len(base_seqs[i][0]) + len(base_seqs[i][1]))
    out: list[TokenStats | None] = [None] * len(base_seqs)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        got = score_batch(base, [base_seqs[i] for i in idx], tuned,
                          [tuned_seqs[i] for i in idx] if tuned is not None else None,
                          pad_id=pad_id, budget_mb=budget_mb, ranks=ranks)
        for i, g in zip(idx, got, strict=True):
            out[i] = g
        if on_batch is not None:
            on_batch(len(idx))
    return out  # type: ignore[return-value]


_SCORERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def scorer_for(model: Any) -> Scorer:
    """A `Scorer` of `model`, built (and checked against forward()) once per model object."""
    sc = _SCORERS.get(model)
    if sc is None:
        sc = _SCORERS[model] = Scorer(model)
    return sc
