"""The one chunked LM scorer (itaudit.models.scoring) equals a plain full-logits forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from itaudit.models import load_model, pad_id
from itaudit.models.batching import pad_batch
from itaudit.models.scoring import Scorer, chunk_size, score, scorer_for
from tests.tinymodels import perturbed_copy, tiny_causal_lm

TEXTS = [("Name three colours.", "Red, blue and yellow are colours."),
         ("What is the capital of France?", "The capital of France is Paris, on the Seine."),
         ("Hi", "Hola!"),
         ("Give me a list of fruits", "")]


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    d = tmp_path_factory.mktemp("scoring")
    base = tiny_causal_lm(d / "base")
    return load_model(str(base), show_progress=False), load_model(str(perturbed_copy(base, d / "t", scale=0.8, seed=3)),
                                                                  show_progress=False)


def _reference(base, tuned, ctx, resp):
    """Full logits of the whole sequence (what trace/ranks.py and novelty computed before)."""
    with torch.no_grad():
        lb = base.model(torch.tensor([ctx + resp])).logits[0, len(ctx) - 1: -1].float()
        lt = tuned.model(torch.tensor([ctx + resp])).logits[0, len(ctx) - 1: -1].float()
    tgt = torch.tensor(resp)[:, None]
    actual = lb.gather(1, tgt)
    rank = ((lb > actual).sum(1) + 1).numpy()
    nll = torch.nn.functional.cross_entropy(lb, tgt[:, 0], reduction="none").double().numpy()
    lpb, lpt = lb.log_softmax(-1), lt.log_softmax(-1)
    kl = (lpb.exp() * (lpb - lpt)).sum(-1).double().numpy()
    return rank, np.exp(-nll), nll, lpt.gather(1, tgt)[:, 0].exp().double().numpy(), kl


@pytest.mark.parametrize("positions_per_chunk", [1, 3, 1000])
def test_chunked_scores_equal_full_logits(lms, positions_per_chunk):
    base, tuned = lms
    seqs = [(base.encode_prompt(base.format_prompt(p)), list(base.tokenizer(r, add_special_tokens=False)["input_ids"]))
            for p, r in TEXTS]
    budget = positions_per_chunk * 4 * 4 * base.vocab_size / 2**20
    assert chunk_size(base.vocab_size, budget) == positions_per_chunk
    got = score(Scorer(base.model), seqs, Scorer(tuned.model), seqs, batch_size=3, pad_id=pad_id(base), budget_mb=budget)
    only_base = score(Scorer(base.model), seqs, batch_size=2, pad_id=pad_id(base), budget_mb=budget, ranks=False)
    assert len(got[3].nll) == 0 and only_base[3].rank is None
    n_shifted = 0
    for (ctx, resp), st, sb in zip(seqs[:3], got, only_base, strict=False):
        rank, prob, nll, tprob, kl = _reference(base, tuned, ctx, resp)
        assert st.rank.tolist() == rank.tolist()
        np.testing.assert_allclose(st.base_prob, prob, rtol=1e-4)
        np.testing.assert_allclose(st.nll, nll, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(sb.nll, nll, rtol=1e-4, atol=1e-5)   # base-only code path
        np.testing.assert_allclose(st.tuned_prob, tprob, rtol=1e-4)
        np.testing.assert_allclose(st.kl, kl, rtol=1e-3, atol=1e-6)
        n_shifted += int((rank > 1).sum())
    assert n_shifted > 0     # the comparison covers ranks above 1


def test_scorer_for_reuses_one_scorer_per_model(lms):
    base, tuned = lms
    assert scorer_for(base.model) is scorer_for(base.model)
    assert scorer_for(base.model) is not scorer_for(tuned.model)


def test_pad_batch_right_and_left():
    ids, mask = pad_batch([[5, 6, 7], [8]], 0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_batch([[5, 6, 7], [8], []], 9, left=True)
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8], [9, 9, 9]] and mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
