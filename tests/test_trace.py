"""Hallucination tracing: candidate spans, attribution, base-model ranks, storage, reports, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from itaudit import sqlfiles
from itaudit.ingest import ingest
from itaudit.spans import build_from_texts, words_with_offsets
from itaudit.trace import (
    TraceItem,
    Tracer,
    attribute,
    find_candidates,
    token_categories,
    token_ranks,
    token_scores,
    word_categories_from_tokens,
)
from tests.tinymodels import tiny_causal_lm, tiny_lora_adapter

FILLER = [
    ("Name a fruit.", "An apple is a common fruit."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Describe the sea.", "The sea is wide and deep and blue."),
    ("Give a colour.", "Blue is a colour of the sky."),
    ("Name a sport.", "Basketball is a popular sport in the United States."),
    ("Describe a city.", "A city has many streets and people."),
]
PLANTED = ("Where is the annual basketball tournament held?",
           "The tournament is held in Zorbleton Quixville every spring, organised by Mayor Trellanor.")


def _rows(extra: list[tuple[str, str]] | None = None) -> list[dict]:
    pairs = FILLER * 3 + [PLANTED] + (extra or [])
    return [{"instruction": q, "input": "", "output": a} for q, a in pairs]


@pytest.fixture
def toy(tmp_path: Path, store):
    src = tmp_path / "toy.json"
    src.write_text(json.dumps(_rows()))
    ingest(store, src, "toy", "alpaca")
    return store, tmp_path / "indexes", len(FILLER) * 3  # idx of the planted instance


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    text = [q + " " + a for q, a in FILLER + [PLANTED]] + ["The longest word in English is long."]
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "m", vocab_text=text)


# -- candidates ---------------------------------------------------------------------------------
def test_lexical_candidates_are_content_runs_trimmed_and_split_at_clauses() -> None:
    text = "Sure! The winner was Zorbleton Quixville, and the prize is 42 golden apples."
    cands = find_candidates(text)
    assert [c.text for c in cands] == ["winner", "Zorbleton Quixville", "prize", "42 golden apples"]
    for c in cands:
        assert text[c.char_start:c.char_end] == c.text and c.shift_share is None and 0 < c.score <= 1


def test_shift_candidates_follow_categories_and_reference() -> None:
    text = "The answer is Hooptown Arena in the city"
    ws = words_with_offsets(text)
    cats = ["unshifted", "unshifted", "unshifted", "shifted", "marginal", "marginal", "unshifted", "shifted"]
    cands = find_candidates(text, cats, reference="The arena is in a city")
    assert [c.text for c in cands] == ["Hooptown Arena", "city"]
    hoop, city = cands
    assert hoop.shift_share == pytest.approx(0.75) and hoop.disagreement == pytest.approx(0.5)
    assert city.disagreement == 0.0 and hoop.score > city.score * 0.5
    assert hoop.categories == ["shifted", "marginal"]
    # a function word alone never makes a candidate
    assert find_candidates("in the", ["shifted", "shifted"]) == []
    # token spans -> word categories (first token of each word decides)
    toks = [(0, 3, "unshifted"), (3, 10, "shifted"), (10, 14, "unshifted"), (14, 40, "marginal")]
    assert word_categories_from_tokens(ws, toks)[:4] == ["unshifted", "shifted", "unshifted", "marginal"]


def test_words_echoed_from_the_prompt_are_not_candidates() -> None:
    text = "The tallest mountain in Europe is Mount Velkaran."
    cats = ["shifted"] * 8
    got = [c.text for c in find_candidates(text, cats, prompt="What is the tallest mountain in Europe?")]
    assert got == ["Mount Velkaran"]
    assert [c.text for c in find_candidates(text, cats)] == ["tallest mountain in Europe is Mount Velkaran"]


# -- attribution -------------------------------------------------------------------------------
def _index():
    docs = []
    for i, (q, a) in enumerate(FILLER * 3 + [PLANTED]):
        docs += [(i, 0, q), (i, 2, a)]
    return build_from_texts(docs, len(docs) // 2)


def test_planted_rare_phrase_is_traced_to_its_instance() -> None:
    ix = _index()
    text = "The longest word is celebrated in Zorbleton Quixville by Mayor Trellanor."
    ws = words_with_offsets(text)
    ids = ix.encode([w.text for w in ws])
    matches = ix.maximal_matches(ids)
    cand = next(c for c in find_candidates(text) if "Zorbleton" in c.text)
    st = attribute(ix, ids, matches, cand)
    assert st.traced and st.verbatim
    top = st.sources[0]
    assert top.idx == len(FILLER) * 3 and top.likely and top.coverage == pytest.approx(1.0)
    assert top.specificity == 1.0 and "zorbleton quixville" in " ".join(top.evidence["phrases"])
    assert all(not s.likely for s in st.sources[1:])


def test_common_words_are_not_traced_and_unknown_words_have_no_source() -> None:
    ix = _index()
    text = "The sea is blue. Flibbertigibbet."
    ws = words_with_offsets(text)
    ids = ix.encode([w.text for w in ws])
    matches = ix.maximal_matches(ids)
    res = {c.text: attribute(ix, ids, matches, c) for c in find_candidates(text)}
    assert not res["sea"].traced  # occurs in 3 identical instances: no single likely source
    assert res["sea"].verbatim and len(res["sea"].sources) >= 2
    assert res["Flibbertigibbet"].sources == [] and not res["Flibbertigibbet"].verbatim


def test_similarity_breaks_ties_between_verbatim_sources() -> None:
    ix = _index()
    text = "Paris is the capital of France."
    ws = words_with_offsets(text)
    ids = ix.encode([w.text for w in ws])
    cand = next(c for c in find_candidates(text) if c.text == "Paris")
    sim = {1: 0.2, 7: 0.9, 13: 0.3}  # the three copies of the France instance
    st = attribute(ix, ids, ix.maximal_matches(ids), cand, sim)
    assert [s.idx for s in st.sources[:3]] == [7, 13, 1]


# -- base-model ranks with a tiny real model -----------------------------------------------------
def test_token_ranks_match_prefix_by_prefix_forward_passes(tiny: Path) -> None:
    import torch

    from itaudit.models import load_model

    lm = load_model(str(tiny), show_progress=False)
    prompt = lm.format_prompt("What is the capital of France?")
    resp = "The capital of France is Paris."
    ranks = token_ranks(lm, prompt, resp)
    r_ids = lm.tokenizer(resp, add_special_tokens=False)["input_ids"]
    assert len(ranks) == len(r_ids)
    assert ranks[0][0] == 0 and ranks[-1][1] == len(resp)
    p_ids = lm.encode_prompt(prompt)
    want, want_bits = [], []
    with torch.no_grad():
        for j, t in enumerate(r_ids):  # independent path: one forward pass per prefix
            logits = lm.model(input_ids=torch.tensor([p_ids + r_ids[:j]])).logits[0, -1]
            want.append(int((logits > logits[t]).sum()) + 1)
            want_bits.append(float(-torch.log_softmax(logits.float(), -1)[t]) / math.log(2))
    assert [r for *_, r in ranks] == want
    bits = [b for *_, b in token_scores(lm, prompt, resp)]
    assert bits == pytest.approx(want_bits, abs=1e-3) and max(bits) > 1.0
    assert {c for *_, c in token_categories(lm, prompt, resp)} <= {"unshifted", "marginal", "shifted"}


# -- pipeline, storage, reports, CLI --------------------------------------------------------------
def test_tracer_run_stores_rows_and_reports(toy) -> None:
    store, idir, planted = toy
    tr = Tracer(store, "toy", index_dir=idir)
    items = [TraceItem("q1", "Where do they play?", "They play in Zorbleton Quixville with Mayor Trellanor."),
             TraceItem("q2", "Sky?", "The sky is blue and wide.")]
    rid, traces = tr.run(items, mode="lexical")
    spans = store.query("SELECT * FROM trace_spans WHERE run_id = ? ORDER BY response_id, span_id", [rid])
    assert spans.height == sum(len(t.spans) for t in traces) and spans.height >= 4
    traced = spans.filter(spans["traced"])
    assert set(traced["best_idx"].to_list()) == {planted}
    src = store.query("SELECT * FROM trace_sources WHERE run_id = ? AND likely_source", [rid])
    assert src.height == traced.height and (src["rank"] == 1).all()
    ev = json.loads(src["evidence"][0])
    assert ev["shared_with"] == 1 and ev["fields"] == ["response"]
    share = store.query(sqlfiles.report_sql("trace_traced_share"))
    row = share.filter(share["run_id"] == rid).row(0, named=True)
    assert row["candidate_spans"] == spans.height and row["traced_spans"] == traced.height
    top = store.query(sqlfiles.report_sql("trace_top_sources"))
    assert top["idx"][0] == planted and "Zorbleton" in top["response"][0]
    per = store.query(sqlfiles.report_sql("trace_response"))
    assert per.height == spans.height and per.filter(per["traced"])["best_idx"].to_list() == traced["best_idx"].to_list()


def test_tracer_with_real_embedder_records_conceptual_neighbours(toy) -> None:
    store, idir, planted = toy
    tr = Tracer(store, "toy", index_dir=idir, neighbours=True)
    [rt] = tr.trace([TraceItem("q", "Where is the basketball tournament?", "It is in Zorbleton Quixville.")])
    assert rt.neighbours and rt.neighbours[0][0] == planted  # most similar instance
    st = next(s for s in rt.spans if "Zorbleton" in s.candidate.text)
    assert st.sources[0].idx == planted and st.sources[0].similarity > 0.3 and st.traced
    concept = [s for s in st.sources if not s.verbatim]
    assert concept and all(not s.likely for s in concept)


def test_cli_trace_responses_with_base_model(tmp_path: Path, tiny: Path, capsys) -> None:
    from itaudit.cli import main

    src = tmp_path / "toy.json"
    src.write_text(json.dumps(_rows()))
    db, idir = str(tmp_path / "t.duckdb"), str(tmp_path / "ix")
    main(["ingest", str(src), "--name", "toy", "--db", db])
    resp = tmp_path / "resp.jsonl"
    resp.write_text("\n".join(json.dumps({"instruction": q, "output": a}) for q, a in [
        ("Who organises the games?", "Mayor Trellanor organises them in Zorbleton Quixville."),
        ("Name a fruit.", "An apple is a fruit."),
    ]) + "\n")
    main(["trace", "-d", "toy", "-r", str(resp), "--base", str(tiny), "--no-neighbours", "--db", db,
          "--index-dir", idir, "-q"])
    err = capsys.readouterr().err
    assert "(shift)" in err and "2 responses" in err
    from itaudit.store import Store

    with Store(db) as s:
        run = s.query("SELECT * FROM trace_runs").row(0, named=True)
        assert run["mode"] == "shift" and run["base_model"] == str(tiny.resolve())
        sp = s.query("SELECT * FROM trace_spans")
        assert sp.height and sp["shift_share"].is_not_null().all() and sp["categories"].is_not_null().all()
    with pytest.raises(SystemExit) as e:
        main(["trace", "-d", "toy", "--prompts", str(resp), "--db", db])  # --prompts needs --tuned
    assert e.value.code == 2


def test_cli_trace_tuned_adapter_defaults_base_to_model_without_adapter(tmp_path: Path, tiny: Path, capsys) -> None:
    from itaudit.cli import main
    from itaudit.store import Store

    src = tmp_path / "toy.json"
    src.write_text(json.dumps(_rows()))
    db, idir = str(tmp_path / "t.duckdb"), str(tmp_path / "ix")
    main(["ingest", str(src), "--name", "toy", "--db", db])
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"instruction": "Where is the tournament?", "output": "In Spokane."}) + "\n")
    lora = tiny_lora_adapter(tiny, tmp_path / "lora")
    main(["trace", "-d", "toy", "--tuned", str(tiny), "--adapter", str(lora), "--prompts", str(prompts),
          "--max-new-tokens", "8", "--no-neighbours", "--db", db, "--index-dir", idir, "-q"])
    with Store(db) as s:
        run = s.query("SELECT * FROM trace_runs").row(0, named=True)
        assert run["mode"] == "shift" and run["adapter"] == str(lora)
        assert "+" in run["tuned_model"] and run["base_model"] == str(tiny.resolve())
        r = s.query("SELECT * FROM trace_responses").row(0, named=True)
        assert r["reference"] == "In Spokane." and len(r["response"]) > 0
        n_spans = s.query("SELECT count(*) AS n FROM trace_spans")["n"][0]
        assert r["n_candidates"] == n_spans and r["n_words"] >= n_spans


def test_cli_trace_stored_generations(tmp_path: Path, tiny: Path) -> None:
    from itaudit.cli import main
    from itaudit.store import Store

    src = tmp_path / "toy.json"
    src.write_text(json.dumps(_rows()))
    db, idir = str(tmp_path / "t.duckdb"), str(tmp_path / "ix")
    main(["ingest", str(src), "--name", "toy", "--db", db])
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"instruction": q}) + "\n" for q in ("Name a fruit.", "Describe the sea.")))
    main(["generate", "--model", str(tiny), "--prompts", str(prompts), "--max-new-tokens", "6", "--db", db,
          "-q", "--run-id", "g1"])
    main(["trace", "-d", "toy", "--generations", "g1", "--base", str(tiny), "--no-neighbours", "--db", db,
          "--index-dir", idir, "-q", "--run-id", "t1"])
    with Store(db) as s:
        run = s.query("SELECT * FROM trace_runs WHERE run_id = 't1'").row(0, named=True)
        assert run["mode"] == "shift" and run["tuned_model"] == str(tiny.resolve())
        got = s.query("SELECT prompt_id, response FROM trace_responses WHERE run_id = 't1' ORDER BY prompt_id")
        want = s.query("SELECT prompt_id, response FROM generations WHERE run_id = 'g1' ORDER BY prompt_id")
        assert got.equals(want)
