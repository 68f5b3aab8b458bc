"""Token distribution shift: ranks, probabilities, KL, words/sentences, storage, reports, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from itaudit.errors import ItauditError
from itaudit.models import PromptItem, load_model
from itaudit.shift import Scorer, analyze, chunk_size, layout, score, set_reference
from tests.tinymodels import perturbed_copy, tiny_causal_lm, tiny_lora_adapter

PROMPTS = ["Name three colours", "What is the capital of France?", "Write a short poem about the sea",
           "Give me a list of fruits", "Translate hello into Spanish"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("shift")
    base = tiny_causal_lm(d / "base")
    return {
        "base": base,
        "tuned": perturbed_copy(base, d / "tuned", scale=0.8, seed=3),
        "lora": tiny_lora_adapter(base, d / "lora", scale=1.0),
        "other": tiny_causal_lm(d / "other", ["completely different words here", "zebra yak walrus"] * 3,
                                vocab_size=300, seed=5),
    }


def items() -> list[PromptItem]:
    return [PromptItem(f"p{i}", p) for i, p in enumerate(PROMPTS)]


def test_base_equals_tuned_every_token_rank_one_and_zero_kl(store, models) -> None:
    base, tuned = load_model(str(models["base"])), load_model(str(models["base"]))
    res = analyze(store, base, items(), tuned=tuned, max_new_tokens=12, batch_size=2, show_progress=False)
    df = store.query("SELECT * FROM shift_tokens WHERE run_id = ?", [res.run_id])
    assert df.height == res.n_tokens > 0
    assert set(df["base_rank"]) == {1} and set(df["category"]) == {"unshifted"}
    assert df["kl"].abs().max() < 1e-5
    np.testing.assert_allclose(df["base_prob"].to_numpy(), df["tuned_prob"].to_numpy(), rtol=1e-5)
    run = store.query("SELECT * FROM shift_runs WHERE run_id = ?", [res.run_id]).row(0, named=True)
    assert run["kl_available"] and not run["retokenized"] and run["mode"] == "models"
    assert json.loads(run["summary"])["unshifted"] == 1.0


def test_ranks_probs_kl_match_full_forward(store, models) -> None:
    """Perturbed tuned model: some tokens shift; every number matches a plain full forward pass."""
    base, tuned = load_model(str(models["base"])), load_model(str(models["tuned"]))
    res = analyze(store, base, items(), tuned=tuned, max_new_tokens=16, batch_size=3, show_progress=False)
    df = store.query("SELECT * FROM shift_tokens WHERE run_id = ? ORDER BY prompt_id, position", [res.run_id])
    assert (df["base_rank"] > 3).sum() > 0 and (df["base_rank"] == 1).sum() > 0
    resp = store.query("SELECT * FROM shift_responses WHERE run_id = ? ORDER BY prompt_id", [res.run_id])
    row = resp.row(1, named=True)
    ctx = base.encode_prompt(row["prompt"])
    toks = df.filter(df["prompt_id"] == row["prompt_id"])
    ids = toks["token_id"].to_list()
    with torch.no_grad():
        lb = base.model(torch.tensor([ctx + ids])).logits[0, len(ctx) - 1 : -1]
        lt = tuned.model(torch.tensor([ctx + ids])).logits[0, len(ctx) - 1 : -1]
    # the tuned model's greedy tokens are its own argmax
    assert lt.argmax(-1).tolist() == ids
    lpb, lpt = lb.log_softmax(-1), lt.log_softmax(-1)
    tgt = torch.tensor(ids)
    rank = (lb > lb.gather(1, tgt[:, None])).sum(1) + 1
    assert toks["base_rank"].to_list() == rank.tolist()
    np.testing.assert_allclose(toks["base_prob"].to_numpy(), lpb.gather(1, tgt[:, None]).squeeze(1).exp().numpy(), rtol=1e-4)
    np.testing.assert_allclose(toks["tuned_prob"].to_numpy(), lpt.gather(1, tgt[:, None]).squeeze(1).exp().numpy(), rtol=1e-4)
    kl = (lpb.exp() * (lpb - lpt)).sum(-1).numpy()
    np.testing.assert_allclose(toks["kl"].to_numpy(), kl, rtol=1e-3, atol=1e-6)
    cats = {"unshifted": rank == 1, "marginal": (rank > 1) & (rank <= 3), "shifted": rank > 3}
    for name, mask in cats.items():
        assert (np.array(toks["category"].to_list()) == name).tolist() == mask.tolist()


def test_chunking_and_batching_do_not_change_results(models) -> None:
    base, tuned = load_model(str(models["base"])), load_model(str(models["tuned"]))
    seqs = [(base.encode_prompt(base.format_prompt(p)), base.encode_prompt(p)[1:]) for p in PROMPTS]
    a = score(Scorer(base.model), seqs, Scorer(tuned.model), seqs, batch_size=1, budget_mb=64)
    tiny_budget = 3 * 4 * 4 * base.vocab_size / 2**20  # 3 positions per chunk
    assert chunk_size(base.vocab_size, tiny_budget) == 3
    assert chunk_size(base.vocab_size, tiny_budget, with_tuned=False) == 6
    b = score(Scorer(base.model), seqs, Scorer(tuned.model), seqs, batch_size=4, budget_mb=tiny_budget)
    c = score(Scorer(base.model), seqs, batch_size=2, budget_mb=tiny_budget)  # base-only code path
    for x, y, z in zip(a, b, c, strict=True):
        assert x.rank.tolist() == y.rank.tolist() == z.rank.tolist()
        np.testing.assert_allclose(x.kl, y.kl, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(x.base_prob, y.base_prob, rtol=1e-4)
        np.testing.assert_allclose(x.base_prob, z.base_prob, rtol=1e-4)
        assert z.kl is None and z.tuned_prob is None


def test_adapter_mode_uses_one_model(store, models) -> None:
    from itaudit.models.loading import LoadedModel

    tuned = load_model(str(models["base"]), adapter=str(models["lora"]))
    base = LoadedModel(tuned.model, tuned.tokenizer, "base")
    res = analyze(store, base, items(), tuned=tuned, adapter_mode=True, max_new_tokens=10, show_progress=False)
    df = store.query("SELECT * FROM shift_tokens WHERE run_id = ?", [res.run_id])
    # same numbers as the separately loaded base model gives for these tokens
    plain = load_model(str(models["base"]))
    resp = store.query("SELECT * FROM shift_responses WHERE run_id = ? ORDER BY prompt_id", [res.run_id]).row(0, named=True)
    ids = df.filter(df["prompt_id"] == resp["prompt_id"]).sort("position")["token_id"].to_list()
    ctx = plain.encode_prompt(resp["prompt"])
    with torch.no_grad():
        lb = plain.model(torch.tensor([ctx + ids])).logits[0, len(ctx) - 1 : -1]
    got = df.filter(df["prompt_id"] == resp["prompt_id"]).sort("position")["base_prob"].to_numpy()
    np.testing.assert_allclose(got, lb.softmax(-1).gather(1, torch.tensor(ids)[:, None]).squeeze(1).numpy(), rtol=1e-4)
    assert df["kl"].max() > 1e-3 and df["kl"].null_count() == 0


def test_different_vocabularies_retokenize_without_kl(store, models) -> None:
    base, tuned = load_model(str(models["other"])), load_model(str(models["base"]))
    res = analyze(store, base, items()[:2], tuned=tuned, max_new_tokens=8, show_progress=False)
    run = store.query("SELECT * FROM shift_runs WHERE run_id = ?", [res.run_id]).row(0, named=True)
    assert run["retokenized"] and not run["kl_available"]
    df = store.query("SELECT * FROM shift_tokens WHERE run_id = ?", [res.run_id])
    assert df.height > 0 and df["kl"].null_count() == df.height and df["tuned_prob"].null_count() == df.height
    resp = store.query("SELECT * FROM shift_responses WHERE run_id = ?", [res.run_id])
    first = resp.row(0, named=True)
    ids = df.filter(df["prompt_id"] == first["prompt_id"]).sort("position")["token_id"].to_list()
    assert base.tokenizer.decode(ids) == first["response"]


def test_responses_mode_and_resume(store, models) -> None:
    base = load_model(str(models["base"]))
    its = items()
    texts = ["Red, blue and yellow.", "Paris. It is in France!", "The sea is wide.\nIt is deep.", "apples", "hola"]
    res = analyze(store, base, its[:3], responses=texts[:3], run_id="r1", show_progress=False)
    res = analyze(store, base, its, responses=texts, run_id="r1", show_progress=False)  # resumes: 2 new
    assert res.n_tokens == sum(len(base.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts[3:])
    df = store.query("SELECT * FROM shift_tokens WHERE run_id = 'r1' ORDER BY prompt_id, position")
    assert df["prompt_id"].n_unique() == 5 and df["kl"].null_count() == df.height
    run = store.query("SELECT * FROM shift_runs WHERE run_id = 'r1'").row(0, named=True)
    assert run["mode"] == "responses" and run["retokenized"] and run["tuned_model"] is None
    p2 = df.filter(df["prompt_id"] == "p2")
    assert p2["sentence_idx"].max() == 1  # "The sea is wide." / "It is deep."


def test_layout_words_and_sentences(models) -> None:
    tok = load_model(str(models["base"])).tokenizer
    text = "Sure! Here is the answer. Don't worry,\nit is 3.5 apples."
    lay = layout(tok, tok(text, add_special_tokens=False)["input_ids"])
    assert lay.text == text
    assert "".join(lay.text[s:e] for s, e in lay.spans) == text
    words = [w for w, st in zip(lay.words, lay.is_word_start, strict=True) if st]
    assert words == ["Sure", "!", "Here", "is", "the", "answer", ".", "Don't", "worry", ",", "it", "is",
                     "3", ".", "5", "apples", "."]
    by_sent: dict[int, list[float]] = {}
    for s, f in zip(lay.sentence_idx, lay.sentence_frac, strict=True):
        by_sent.setdefault(s, []).append(f)
    assert len(by_sent) == 4  # "Sure!" / "Here is the answer." / "Don't worry," / "it is 3.5 apples."
    assert all(v[0] == 0.0 and all(0 <= x < 1 for x in v) for v in by_sent.values())
    # multi-byte characters split across byte tokens still map onto the text
    emoji = "Café 🙂 ok"
    lay2 = layout(tok, tok(emoji, add_special_tokens=False)["input_ids"])
    assert lay2.text == emoji and "".join(emoji[s:e] for s, e in lay2.spans) == emoji


def test_reports_and_verbatim(store, models, tmp_path: Path) -> None:
    from itaudit import sqlfiles
    from itaudit.ingest import ingest

    ds = tmp_path / "it.jsonl"
    ds.write_text("\n".join(json.dumps({"instruction": "q", "output": o}) for o in ["Red and blue", "Paris is nice"]))
    ingest(store, ds, "it", show_progress=False)
    base = load_model(str(models["base"]))
    res = analyze(store, base, items()[:2], responses=["Red and green", "Paris and Rome"], reference_dataset="it",
                  show_progress=False)
    for name in ("shift_categories", "shift_top_tokens", "shift_position_kl", "shift_verbatim"):
        df = store.query(sqlfiles.report_sql(name))
        assert df.height > 0, name
    v = store.query(sqlfiles.report_sql("shift_verbatim"))
    words = store.query("SELECT lower(word) AS w, category FROM shift_tokens WHERE is_word_start AND run_id = ?", [res.run_id])
    known = {"red", "and", "blue", "paris", "is", "nice"}
    exp_n = sum(1 for w in words["w"] if w.isalpha())
    exp_in = sum(1 for w in words["w"] if w in known)
    assert v["words"].sum() == exp_n and v["in_dataset"].sum() == exp_in
    set_reference(store, res.run_id, "it")
    with pytest.raises(ItauditError, match="no dataset named 'nope'"):
        set_reference(store, res.run_id, "nope")


def test_cli_shift(tmp_path: Path, models) -> None:
    from itaudit.cli import main
    from itaudit.store import Store

    f = tmp_path / "q.jsonl"
    f.write_text("\n".join(json.dumps({"question_id": i, "turns": [p, "more"]}) for i, p in enumerate(PROMPTS)))
    db = tmp_path / "s.duckdb"
    main(["shift", "--base", str(models["base"]), "--tuned", str(models["tuned"]), "--prompts", str(f),
          "--max-new-tokens", "6", "--db", str(db), "-q", "--run-id", "c1"])
    main(["shift", "--base", str(models["base"]), "--adapter", str(models["lora"]), "--prompts", str(f),
          "--limit", "2", "--max-new-tokens", "6", "--db", str(db), "-q", "--run-id", "c2"])
    r = tmp_path / "r.jsonl"
    r.write_text(json.dumps({"instruction": "Say hi", "output": "Hi there."}))
    main(["shift", "--base", str(models["base"]), "--responses", str(r), "--db", str(db), "-q", "--run-id", "c3"])
    main(["ingest", str(r), "--name", "it", "--db", str(db)])
    main(["shift", "--base", str(models["base"]), "--dataset", "it", "--reference", "it", "--db", str(db), "-q",
          "--run-id", "c4"])
    main(["generate", "--model", str(models["tuned"]), "--prompts", str(f), "--limit", "3", "--max-new-tokens", "5",
          "--db", str(db), "-q", "--run-id", "g"])
    main(["shift", "--base", str(models["base"]), "--generations", "g", "--db", str(db), "-q", "--run-id", "c5"])
    with Store(db) as s:
        runs = s.query("SELECT run_id, mode, kl_available FROM shift_runs ORDER BY run_id").rows()
        n = s.query("SELECT run_id, count(DISTINCT prompt_id) AS n FROM shift_tokens GROUP BY ALL ORDER BY run_id").rows()
        c4 = s.query("SELECT response FROM shift_responses WHERE run_id = 'c4'")["response"].to_list()
        c5 = s.query("SELECT prompt, response FROM shift_responses WHERE run_id = 'c5' ORDER BY prompt_id")
        gen = s.query("SELECT prompt, response FROM generations WHERE run_id = 'g' ORDER BY prompt_id")
    assert runs == [("c1", "models", True), ("c2", "adapter", True), ("c3", "responses", False),
                    ("c4", "responses", False), ("c5", "responses", False)]
    assert n[:4] == [("c1", 5), ("c2", 2), ("c3", 1), ("c4", 1)]
    assert c4 == ["Hi there."] and c5["prompt"].to_list() == gen["prompt"].to_list()
    with pytest.raises(SystemExit) as e:
        main(["shift", "--base", str(models["base"]), "--db", str(db)])
    assert e.value.code == 2


def test_shift_step_is_pure_and_chunking_does_not_change_rows(models) -> None:
    """ShiftStep.compute_chunk needs no database; two chunks give the same rows as one."""
    from itaudit.shift.run import ShiftParams, ShiftStep, items_frame

    base, tuned = load_model(str(models["base"])), load_model(str(models["tuned"]))
    step = ShiftStep(ShiftParams(run_id="x", max_new_tokens=6, batch_size=2), base=base, tuned=tuned)
    rows = items_frame(items())
    whole = step.compute_chunk(rows)
    parts = [step.compute_chunk(rows.slice(0, 2), 0, 2), step.compute_chunk(rows.slice(2), 1, 2)]
    tables = {f.table: f.frame for f in whole.frames}
    assert set(tables) == {"shift_tokens", "shift_responses"} and tables["shift_responses"].height == len(PROMPTS)
    floats = ["kl", "base_prob", "tuned_prob"]
    for name, want in tables.items():
        got = pl.concat([f.frame for p in parts for f in p.frames if f.table == name])
        if name == "shift_tokens":
            for c in floats:
                np.testing.assert_allclose(got[c].to_numpy(), want[c].to_numpy(), rtol=1e-4, atol=1e-7)
            got, want = got.drop(floats), want.drop(floats)
        assert got.equals(want)
    assert whole.n_tokens == sum(p.n_tokens for p in parts) == tables["shift_tokens"].height
    with pytest.raises(ItauditError, match="unknown parameter"):
        ShiftParams.parse({"max_new_token": 3})


def test_shift_step_from_specs_pickles_without_weights_and_equals_the_loaded_one(models) -> None:
    """What an executor ships to a worker: params only; the worker loads the models itself."""
    import pickle

    from itaudit.shift.run import ShiftParams, ShiftStep, items_frame

    spec = ShiftStep(ShiftParams(run_id="x", max_new_tokens=5, base=str(models["base"]), adapter=str(models["lora"])))
    assert spec.mode == "adapter"
    blob = pickle.dumps(spec)
    assert len(blob) < 20_000                       # no weights inside
    rows = items_frame(items()[:3])
    worker = pickle.loads(blob)
    got = worker.compute_chunk(rows)
    assert worker.base is not None and len(pickle.dumps(worker)) < 20_000   # loaded, still shipped as specs
    tuned = load_model(str(models["base"]), adapter=str(models["lora"]))
    from itaudit.models.loading import LoadedModel
    base = LoadedModel(tuned.model, tuned.tokenizer, str(models["base"]), tuned.source)
    want = ShiftStep(ShiftParams(run_id="x", max_new_tokens=5, adapter_mode=True), base=base, tuned=tuned).compute_chunk(rows)
    for a, b in zip(got.frames, want.frames, strict=True):
        assert a.table == b.table and a.frame.drop("kl", "base_prob", "tuned_prob", strict=False).equals(
            b.frame.drop("kl", "base_prob", "tuned_prob", strict=False))
    assert got.n_tokens == want.n_tokens > 0
