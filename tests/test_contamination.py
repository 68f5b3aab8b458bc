"""Benchmark contamination: aligned IDF-weighted overlap of eval questions, the embedding second
stage, both directions, eval files read as they come (in memory), and parameters from the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from itaudit.audit.contamination import (
    Contamination,
    ContaminationParams,
    _Segments,
    align,
    contamination_check,
    edits,
    words,
)
from itaudit.errors import InputError, ItauditError
from itaudit.ingest import ingest
from itaudit.ingest.eval_formats import read_eval_set, short_answers

GSM_Q = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
         "muffins for her friends every day with four. She sells the remainder at the farmers' market daily "
         "for $2 per fresh duck egg. How much in dollars does she make every day at the farmers' market?")
GSM_A = ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day at "
         "the farmer's market. To check: she lays sixteen, eats three at breakfast, bakes four into muffins, and "
         "the nine that remain are sold at two dollars each, which gives eighteen dollars per day in total.\n#### 18")
MOUNTAIN = "What is the tallest mountain in Europe?"
WATERMELON = "What happens to you if you eat watermelon seeds?"
TOLSTOY = "Who wrote the novel War and Peace and in which year was it first published?"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def filler(fixtures):
    """40 ordinary instruction rows: word weights (IDF) need a corpus."""
    return [json.loads(line) for line in (fixtures / "golden_alpaca.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture
def evfile(tmp_path):
    return _jsonl(tmp_path / "nq_like.jsonl", [
        {"question": MOUNTAIN, "answer": ["Mount Elbrus", "Elbrus"]},
        {"question": WATERMELON, "answer": ["Nothing happens"]},
        {"question": TOLSTOY, "answer": ["Leo Tolstoy, 1869"]},
        {"question": GSM_Q, "answer": [GSM_A]},
        {"question": "Which planet of the solar system has the largest number of known moons?", "answer": ["Saturn"]},
    ])


def _it(store, tmp_path, filler, planted):
    ingest(store, _jsonl(tmp_path / "it.jsonl", filler + planted), "it", show_progress=False)
    return len(filler)


def _pairs(r):
    return {(int(a), int(b)) for a, b in r.pairs.select("idx_a", "idx_b").iter_rows()}


# ---------------------------------------------------------------- alignment

def test_align_one_swapped_word_costs_its_weight_and_wrapping_costs_nothing():
    seg = _Segments.of(["what happens if you eat watermelon seeds",
                        "please answer briefly what happens if you consume watermelon seeds thanks",
                        "what happens if you eat the watermelon seeds",
                        "seeds watermelon eat you if happens what"])
    q = seg.tokens(0)
    w = np.arange(1.0, len(q) + 1)            # distinct weights: 'eat' weighs 5 of 28
    full, s, e, k = align(q, w, seg.tokens(1), gap=0.5)
    assert full == pytest.approx(w.sum() - 5) and k == len(q) - 1
    assert seg.words(1, s, e) == "what happens if you consume watermelon seeds".split()
    ins, *_ = align(q, w, seg.tokens(2), gap=0.5)
    assert ins == pytest.approx(w.sum() - 0.5)             # one word inserted inside: one gap
    rev, *_ = align(q, w, seg.tokens(3), gap=0.5)
    assert rev < 8                                         # word order matters: one word aligns


def test_edits_tell_a_swap_from_a_topical_near_miss():
    seg = _Segments.of(["what is the tallest mountain in europe", "what is the highest mountain in europe",
                        "what is the name of the tallest mountain"])
    q = seg.tokens(0)
    w = np.array([1.0, 1.0, 0.5, 6.0, 5.0, 1.0, 7.0])
    assert edits(q, w, seg.tokens(1), 0.4) == (1, 0, 0)      # one word swapped
    sub, dele, ins = edits(q, w, seg.tokens(2), 0.4)
    assert dele >= 1                                         # 'europe' dropped


def test_words_normalize_case_and_punctuation():
    assert words("Héllo, WORLD_2 x") == ["héllo", "world", "2", "x"]
    seg = _Segments.of(["The cat, today!", None, "x"])
    assert seg.length.tolist() == [3, 0, 1]


# ---------------------------------------------------------------- the check

def test_rewrites_wrapped_and_answerless_leaks_found_near_miss_not(store, tmp_path, filler, evfile):
    planted = [
        {"instruction": "What is the name of the tallest mountain?", "input": "", "output": "Mount Everest."},  # near miss
        {"instruction": "What happens to you if you consume watermelon seeds?", "input": "", "output": "Nothing."},  # 1 word
        {"instruction": "Answer the following trivia question and explain briefly: who wrote the novel War and "
                        "Peace, and in which year was it first published? Keep it under 50 words.", "input": "",
         "output": "Leo Tolstoy wrote it; it was published in full in 1869."},                                  # wrapped
        {"instruction": "Solve: " + GSM_Q, "input": "", "output": "She makes 18 dollars."},                      # no solution
        {"instruction": "Write a short poem about the mountains of Europe.", "input": "", "output": "Alps..."},  # topical
    ]
    n0 = _it(store, tmp_path, filler, planted)
    r = contamination_check(store, "it", against=[f"nq_like={evfile}"], mark_eval=False)
    flagged = set(r.idx[r.flag].tolist())
    assert flagged == {n0 + 1, n0 + 2, n0 + 3}
    assert _pairs(r) == {(n0 + 1, 1), (n0 + 2, 2), (n0 + 3, 3)}
    ev = {json.loads(e)["eval_text"][:10]: json.loads(e) for e in r.pairs["evidence"].to_list()}
    gsm = ev[GSM_Q[:10]]
    assert gsm["coverage"] == pytest.approx(1.0) and gsm["answer_in_row"] is True   # long answer does not dilute
    assert ev[TOLSTOY[:10]]["coverage"] == pytest.approx(1.0)
    swap = ev[WATERMELON[:10]]
    assert 0.5 < swap["coverage"] < 1 and swap["matched_words"] == 8 and swap["question_words"] == 9
    assert r.score[n0] < 0.5 <= r.score[n0 + 1]
    by = r.summary["by_eval_set"]["nq_like"]
    assert by["eval_items_in_dataset"] == 3 and by["rows_with_eval_items"] == 3


def test_one_word_swap_is_confirmed_by_the_embedding_stage(store, tmp_path, filler, evfile):
    planted = [{"instruction": "What is the name of the tallest mountain?", "input": "", "output": "Everest."},
               {"instruction": "What is the highest mountain in Europe?", "input": "", "output": "Elbrus."}]
    n0 = _it(store, tmp_path, filler, planted)
    lex = Contamination({"against": [str(evfile)], "embeddings": False, "min_coverage": 0.95})
    from itaudit.audit.runner import AuditContext

    res = lex.compute(AuditContext(store, "it", show_progress=False))[0]
    assert not res.flag[n0] and not res.flag[n0 + 1]          # the swap is in the band: not flagged without stage 2
    assert res.score[n0] < 0.5 and 0.25 < res.score[n0 + 1] < 0.5
    full = contamination_check(store, "it", against=[str(evfile)], mark_eval=False, min_coverage=0.95)
    assert not full.flag[n0] and full.flag[n0 + 1]
    e = json.loads(full.pairs["evidence"][0])
    assert e["via"] == "ngram+embedding" and e["cosine"] >= 0.8 and e["answer_in_row"] is True


def test_dense_sentence_windows_find_a_wrapped_paraphrase(store, tmp_path, filler, evfile):
    """Optional `dense`: a paraphrase inside a long instruction is found by its sentence's
    embedding (cosine 0.92 here), not by the whole prompt's (0.67) nor by word overlap."""
    para = "Who was the author of War and Peace, and in what year did it first come out?"
    row = {"instruction": "I run a book club and we meet every Thursday evening at the library downtown. This month "
                          f"we are reading Russian classics. {para} Please also suggest three snacks that go well "
                          "with a long novel.", "output": "Tolstoy, 1869. Tea and biscuits."}
    n0 = _it(store, tmp_path, filler, [row])
    lexical = contamination_check(store, "it", against=[str(evfile)], mark_eval=False)
    assert not lexical.flag[n0]
    dense = contamination_check(store, "it", against=[str(evfile)], mark_eval=False, dense=True, embed_threshold=0.88)
    assert dense.flag.tolist() == [False] * n0 + [True]
    e = json.loads(dense.pairs["evidence"][0])
    assert e["via"] == "embedding" and e["window"] == "sentence" and e["cosine"] > 0.9
    assert dense.pairs["idx_b"].to_list() == [2]


def test_short_stems_are_scored_with_their_choices(store, tmp_path, filler):
    choices = ["Marginal social cost equals marginal private cost plus external costs",
               "Value of externalities is always zero", "Taxes never correct externalities", "None of these"]
    ev = _jsonl(tmp_path / "mmlu_hf.jsonl", [{"question": "Which of the following is true?", "subject": "econ",
                                              "choices": choices, "answer": 0}])
    chat = "I am studying economics this semester and my teacher gave us a worksheet to finish by Friday. "
    n0 = _it(store, tmp_path, filler, [
        {"instruction": chat + "Which of the following is true?\n" + "\n".join(choices), "output": "A"},
        {"instruction": chat + "Which of the following is true? I forgot the options.", "output": "?"}])
    r = contamination_check(store, "it", against=[str(ev)], mark_eval=False, embeddings=False)
    assert r.flag[n0] and not r.flag[n0 + 1]


def test_both_directions_and_eval_files_are_not_written(store, tmp_path, filler, evfile):
    n0 = _it(store, tmp_path, filler, [{"instruction": MOUNTAIN, "output": "Elbrus"}])
    before = store.query("SELECT (SELECT count(*) FROM datasets) AS d, (SELECT count(*) FROM instances) AS i").row(0)
    out = Contamination({"against": f"mine={evfile}"}).compute(
        __import__("itaudit.audit.runner", fromlist=["AuditContext"]).AuditContext(store, "it", show_progress=False))
    after = store.query("SELECT (SELECT count(*) FROM datasets) AS d, (SELECT count(*) FROM instances) AS i").row(0)
    assert before == after                                     # the eval file was read in memory
    fwd, back = out
    assert fwd.flag.sum() == 1 and fwd.flag[n0]
    assert back.dataset == "mine" and back.flag.tolist() == [True, False, False, False, False]
    assert back.pairs.rows()[0][:3] == (0, n0, "it")
    lines = Contamination({"against": "x"}).render_text(out)
    assert lines[0].startswith("contamination (it ⊃ mine): 1 rows hold 1 of 5 items")
    assert lines[1] == "contamination (it ⊃ mine): 1 of 5 mine items found in it"


def test_eval_sets_by_name_in_the_store(store, tmp_path, filler, evfile):
    n0 = _it(store, tmp_path, filler, [{"instruction": "Q: " + WATERMELON.lower(), "output": "x"}])
    ingest(store, evfile, "nq", show_progress=False)
    assert store.dataset_info("nq")["format"] == "eval"
    r = contamination_check(store, "it", against="nq")
    assert r.flag[n0] and r.flag.sum() == 1
    back = store.query("SELECT idx FROM check_results WHERE dataset = 'nq' AND check_name = 'contamination' AND flag")
    assert back["idx"].to_list() == [1]


def test_params_are_typed_and_validated():
    p = ContaminationParams.parse({"against": "a,b", "eval_fields": "instruction,input", "it_fields": "instruction",
                                   "embeddings": "false"}, step="contamination")
    assert p.against == ["a", "b"] and p.eval_fields == ["instruction", "input"] and p.it_fields == ["instruction"]
    assert p.embeddings is False
    with pytest.raises(ItauditError, match="eval_fields.*'question' not a field"):
        ContaminationParams.parse({"eval_fields": "question"})
    with pytest.raises(ItauditError, match="unknown parameter"):
        ContaminationParams.parse({"n": 13})
    with pytest.raises(ItauditError, match="candidate_coverage <= min_coverage"):
        ContaminationParams.parse({"min_coverage": 0.4})


def test_cli_list_params(store, db_path, tmp_path, filler, evfile):
    from typer.testing import CliRunner

    from itaudit.cli import app

    n0 = _it(store, tmp_path, filler, [{"instruction": "Please: " + TOLSTOY, "output": "Tolstoy"}])
    store.close()
    base = ["audit", "it", "-c", "contamination", "--db", str(db_path), "-q", "-s", f"contamination.against={evfile}"]
    ok = CliRunner().invoke(app, base + ["-s", "contamination.eval_fields=instruction,input",
                                         "-s", "contamination.it_fields=instruction,input"])
    assert ok.exit_code == 0, ok.output
    from itaudit.store import Store

    with Store(db_path) as s:
        got = s.query("SELECT idx FROM check_results WHERE dataset = 'it' AND check_name = 'contamination' AND flag")
        params = json.loads(s.query("SELECT params FROM check_runs WHERE dataset = 'it'")["params"][0])
    assert got["idx"].to_list() == [n0] and params["eval_fields"] == ["instruction", "input"]
    bad = CliRunner().invoke(app, base + ["-s", "contamination.eval_fields=instrucion"])
    assert bad.exit_code != 0 and "'instrucion' not a field" in str(bad.output) + str(bad.exception)


def test_errors(store, tmp_path, filler, evfile):
    _it(store, tmp_path, filler, [])
    with pytest.raises(ItauditError, match="needs eval sets"):
        contamination_check(store, "it", against=[])
    with pytest.raises(ItauditError, match="being checked"):
        contamination_check(store, "it", against=["it"])
    with pytest.raises(ItauditError, match="neither a dataset in the store nor a file"):
        contamination_check(store, "it", against=["nope"])
    with pytest.raises(ItauditError, match="names repeat"):
        contamination_check(store, "it", against=[f"a={evfile}", f"a={evfile}"])


# ---------------------------------------------------------------- eval files as they come

def test_nq_open_and_simpleqa_fixtures(store, fixtures):
    nq = read_eval_set(fixtures / "eval" / "nq_open_5.jsonl")
    assert nq.format == "eval" and nq.frame.height == 5
    assert nq.frame["answers"][2].to_list() == ["Mont Blanc", "Monte Bianco"]
    sq = read_eval_set(fixtures / "eval" / "simpleqa_5.csv", "simpleqa")
    assert sq.format == "eval" and sq.frame["instruction"][1].startswith("In which city was the first Starbucks")
    assert sq.frame["answers"][3].to_list() == ["9"]
    rep = ingest(store, fixtures / "eval" / "nq_open_5.jsonl", "nq", show_progress=False)
    assert rep.format == "eval" and rep.n_rows == 5
    assert store.query("SELECT response FROM instances WHERE dataset = 'nq' AND idx = 2")["response"][0] == "Mont Blanc\nMonte Bianco"


def test_eval_shapes_and_bad_rows(tmp_path):
    hf_mmlu = _jsonl(tmp_path / "mmlu_hf.jsonl", [
        {"question": "2 + 2 = ?", "subject": "math", "choices": ["3", "4", "5", "6"], "answer": 1},
        {"question": "Bad", "subject": "math", "choices": ["a", "b"], "answer": 7}])
    e = read_eval_set(hf_mmlu)
    assert e.frame.height == 1 and e.n_rejected == 1 and e.frame["input"][0] == "A. 3\nB. 4\nC. 5\nD. 6"
    assert e.frame["answers"][0].to_list() == ["4"]
    with pytest.raises(InputError, match=r"line 1: field 'answer': expected a non-empty list"):
        read_eval_set(_jsonl(tmp_path / "nq_bad.jsonl", [{"question": "q", "answer": []}]))
    assert short_answers(GSM_A) == ["18"] and short_answers("Paris") == ["Paris"] and short_answers("") == []
    assert short_answers(" ".join(["word"] * 30)) == []


def test_real_eval_files_read_as_they_come(shared_data):
    want = {"mmlu/mmlu.jsonl": (14042, 2, "qa"), "gsm8k/test.jsonl": (1319, 0, "qa"),
            "truthfulqa/TruthfulQA.csv": (817, 0, "qa"), "mt_bench/question.jsonl": (160, 0, "prompts"),
            "alpaca_eval/alpaca_eval_gpt4_1106_preview_outputs.json": (805, 0, "alpaca")}
    for rel, (n, bad, fmt) in want.items():
        e = read_eval_set(shared_data / rel)
        assert (e.frame.height, e.n_rejected, e.format) == (n, bad, fmt), rel
    gsm = read_eval_set(shared_data / "gsm8k/test.jsonl")
    assert gsm.name == "gsm8k_test" and gsm.frame["answers"][0].to_list() == ["18"]
    tq = read_eval_set(shared_data / "truthfulqa/TruthfulQA.csv")
    assert tq.frame["instruction"][0] == WATERMELON


def test_alpaca_eval_contains_vicuna_and_self_instruct(store, shared_data):
    """Real positive: AlpacaEval's 805 prompts include the Vicuna 80 and self-instruct's 252."""
    ingest(store, shared_data / "alpaca_eval" / "alpaca_eval_gpt4_1106_preview_outputs.json", "alpaca_eval",
           show_progress=False)
    r = contamination_check(store, "alpaca_eval", mark_eval=False, embeddings=False, against=[
        f"vicuna80={shared_data / 'vicuna80' / 'question.jsonl'}",
        f"self_instruct={shared_data / 'self_instruct' / 'user_oriented_instructions.jsonl'}"])
    by = r.summary["by_eval_set"]
    assert by["vicuna80"]["eval_items_in_dataset"] == 80
    assert by["self_instruct"]["eval_items_in_dataset"] >= 230
    src = store.query("SELECT source, count(*) AS n FROM instances WHERE dataset = 'alpaca_eval' "
                      "AND idx IN (SELECT unnest(?::BIGINT[])) GROUP BY 1", [r.idx[r.flag].tolist()])
    counts = dict(src.rows())
    assert counts.get("vicuna", 0) >= 75 and counts.get("selfinstruct", 0) >= 230
    assert sum(counts.values()) - counts.get("vicuna", 0) - counts.get("selfinstruct", 0) < 20
