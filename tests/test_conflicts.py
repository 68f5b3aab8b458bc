"""Conflicting neighbours: the same task with contradictory claims, evidence stored, report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from itaudit.audit.claims import contradictions, final_answer, tokens
from itaudit.audit.conflicts import ConflictingNeighbors, is_open_ended, judge_pair, same_task
from itaudit.audit.runner import AuditContext, run_checks
from itaudit.embed import Embedder
from itaudit.errors import ItauditError
from itaudit.ingest import ingest

ROWS = [
    {"instruction": "How many legs does a spider have?", "input": "", "output": "A spider has 8 legs and two body parts."},  # 0
    {"instruction": "How many legs do spiders have?", "input": "", "output": "A spider has 6 legs and two body parts."},    # 1 number
    {"instruction": "Who wrote the play Hamlet?", "input": "", "output": "Hamlet was written by William Shakespeare around 1600."},  # 2
    {"instruction": "Who is the author of the play Hamlet?", "input": "", "output": "Hamlet was written by Christopher Marlowe around 1600."},  # 3 entity
    {"instruction": "Write a short poem about the sea.", "input": "", "output": "Blue waves roll over Jenna's shore at 5 am."},  # 4
    {"instruction": "Write a short poem about the ocean.", "input": "", "output": "Grey tides hum to Marco at 9 pm."},  # 5 creative
    {"instruction": "What is 12 times 3?", "input": "", "output": "12 times 3 is 36."},                         # 6
    {"instruction": "What is 12 times 4?", "input": "", "output": "12 times 4 is 48."},                         # 7 another slot value
    {"instruction": "Is a tomato a fruit?", "input": "", "output": "Yes, botanically a tomato is a fruit."},      # 8
    {"instruction": "Is the tomato a fruit?", "input": "", "output": "No, botanically a tomato is not a fruit."},  # 9 yes/no + negation
    {"instruction": "Translate 'cat' into French.", "input": "", "output": "Chat."},                              # 10
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_tokens_normalise_numbers_possessives_units() -> None:
    t = tokens("Caulfield's 1,000 km, eight legs; it isn't 4.50")
    norms = [x.norm for x in t if x.kind != "punct"]
    assert norms[:5] == ["caulfield", "1000.0", "kilometer", "8.0", "leg"]
    assert "not" in norms and "4.5" in norms


@pytest.mark.parametrize("a, b", [
    ("Holden Caulfield's journey ends in New York.", "Holden Caulfield journey ends in New York."),   # possessive
    ("The novel was published by Little, Brown.", "The novel was published in 1951 by Little, Brown."),  # added fact
    ("The planets are Mercury, Venus and Mars.", "The planets are Venus, Mars and Mercury."),          # reordered list
    ("It runs 3 km every day.", "It runs three kilometres every day."),                               # number word + unit
    ("The answer is 18.", "So the final answer is 18."),
    ("The tower is 330 metres tall.", "The tower is 330 m tall."),
])
def test_consistent_pairs_are_not_contradictions(a: str, b: str) -> None:
    assert contradictions(a, b, prompt_a="q", prompt_b="q") == []


@pytest.mark.parametrize("a, b, kind", [
    ("Mars has 2 moons, Phobos and Deimos.", "Mars has 3 moons, Phobos and Deimos.", "number"),
    ("It was written by William Shakespeare in 1600.", "It was written by Christopher Marlowe in 1600.", "entity"),
    ("Whales are mammals that breathe air.", "Whales are not mammals that breathe air.", "negation"),
    ("Yes, water boils at 100 degrees.", "No, water boils at 100 degrees.", "yes_no"),
    ("Janet sells 9 eggs.\nThe answer is 18.", "Janet sells 9 eggs.\nThe answer is 20.", "final_answer"),
    ("The temperature will increase over time.", "The temperature will decrease over time.", "negation"),
])
def test_contradictions_found_with_evidence(a: str, b: str, kind: str) -> None:
    got = contradictions(a, b, prompt_a="q", prompt_b="q")
    assert kind in {c["type"] for c in got}
    c = next(c for c in got if c["type"] == kind)
    assert c["a"] and c["b"] and c["a"] != c["b"]


def test_ordering_and_final_answer() -> None:
    got = contradictions("2, 4, 5, 8", "8, 5, 4, 2", prompt_a="Sort the numbers from smallest to largest: 8, 4, 5, 2",
                         prompt_b="Sort the numbers from smallest to largest: 8, 4, 5, 2")
    assert [c["type"] for c in got] == ["order"]
    assert final_answer("Step 1 ... Therefore, the final answer is yes.") == "yes"
    assert final_answer("No verdict here") is None


def test_negated_claim_about_the_same_subject() -> None:
    a = ("Buddhism and Hinduism differ. Buddhism is an atheist religion, believing in no God or gods. "
         "Hinduism is a polytheistic religion.")
    b = ("Hinduism and Buddhism share many similarities. Both faiths value the existence of multiple gods and "
         "goddesses and view karma as a result of one's actions.")
    claims, why = judge_pair("Compare and contrast the beliefs of Buddhism and Hinduism.", "", a,
                             "What are the similarities between Hinduism and Buddhism?", "", b)
    assert why == "contradiction" and claims[0]["type"] == "negation" and claims[0]["word"] == "god"
    # the same negation on both sides is agreement
    claims, _ = judge_pair("Compare Buddhism and Hinduism.", "", a, "Compare Buddhism and Hinduism.", "",
                           a.replace("differ", "are different"))
    assert claims == []


def test_task_gates() -> None:
    assert is_open_ended("Write a poem about the sea.") and is_open_ended("Give me a synonym for happy.")
    assert is_open_ended("Generate a random password of length 8.") and is_open_ended("Name three fruits.")
    assert not is_open_ended("What is the capital of France?") and not is_open_ended("Calculate the mean of 2, 4.")
    assert same_task("What is 12 times 3?", "What is 12 times 4?", "36", "48") == (False, "slot values differ")
    ok, why = same_task("How many legs does a spider have?", "How many legs does an insect have?",
                        "A spider has 8 legs.", "An insect has 6 legs.")
    assert not ok and "only one prompt" in why
    assert same_task("How many legs does a spider have?", "How many legs do spiders have?", "8", "6")[0]


def test_programs_are_not_compared() -> None:
    a = "int factorial(int n) {\n  if (n == 0) return 1;\n  return n * factorial(n - 1);\n}"
    b = "int factorial(int n) {\n  if (n <= 1) return 1;\n  return n * factorial(n - 1);\n}"
    ins = "Implement a C++ function that calculates the factorial of an integer."
    assert judge_pair(ins, "", a, ins, "", b) == ([], "code answer")


def test_params_are_typed() -> None:
    assert ConflictingNeighbors({"threshold": "0.9"}).params.threshold == 0.9
    with pytest.raises(ItauditError, match="unknown parameter"):
        ConflictingNeighbors({"response_threshold": 0.5})


def test_conflicting_neighbors_check(store, tmp_path, embedder) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps(ROWS))
    ingest(store, p, "toy", show_progress=False)
    ctx = AuditContext(store, "toy", tmp_path / "idx", show_progress=False, _embedder=embedder)
    res = run_checks(store, "toy", ["conflicting_neighbors"], context=ctx)[0].result
    pairs = store.query("SELECT idx_a, idx_b, score, evidence FROM check_pairs WHERE check_name = 'conflicting_neighbors'")
    ev = {(a, b): (s, json.loads(e)) for a, b, s, e in pairs.rows()}
    assert (0, 1) in ev and ev[(0, 1)][1]["reasons"] == ["number"]
    assert ev[(0, 1)][1]["numbers"] == [["8", "6"]] and ev[(0, 1)][1]["instruction_sim"] >= 0.85
    assert (2, 3) in ev and ev[(2, 3)][1]["reasons"] == ["entity"]
    assert ev[(2, 3)][1]["entities"][0] == ["William Shakespeare", "Christopher Marlowe"]
    assert (8, 9) in ev and {"yes_no", "negation"} <= set(ev[(8, 9)][1]["reasons"])
    assert (4, 5) not in ev and (6, 7) not in ev     # creative task; another slot value
    assert res.flag.tolist() == [True, True, True, True, False, False, False, False, True, True, False]
    for a, b in ev:  # row score = strongest conflict it is part of, in [0, 1]
        assert res.score[a] >= ev[(a, b)][0] and res.score[b] >= ev[(a, b)][0]
    assert 0 < res.score.max() <= 1 and res.summary["n_conflict_pairs"] == len(ev) == 3
    # the creative pair and the translation are never searched: open-ended tasks cannot conflict
    assert res.summary["n_rows_searched"] == 8 and "open-ended task" not in res.summary["candidates_by_outcome"]
    step = ConflictingNeighbors()
    assert step.render_text(res) == ["3 conflict pairs (entity 1, negation 1, number 1, yes_no 1)"]
    from itaudit.report.view import CheckView

    run = store.query("SELECT * FROM latest_checks WHERE check_name = 'conflicting_neighbors'").row(0, named=True)
    assert "Shakespeare" in step.render_html(CheckView.load(store, "toy", run))
    from itaudit import sqlfiles

    rep = store.query(sqlfiles.report_sql("conflicts"))
    assert rep.height == len(ev)
    assert np.all(rep["strength"].to_numpy()[:-1] >= rep["strength"].to_numpy()[1:])


def test_multiple_choice_letters_resolve_to_their_options() -> None:
    pa = "What is used as energy by most organisms?\nOptions:\n- (A) sodium\n- (B) water\n- (E) sugar"
    pb = "What is used as energy by most organisms?\nOptions:\n- (A) sugar\n- (B) heat\n- (D) water"
    same = contradictions("Sugar is used for energy. So the final answer is (E).",
                          "Sugar is used for energy. So the final answer is (A).", prompt_a=pa, prompt_b=pb)
    assert same == []
    other = contradictions("Sugar is used for energy. So the final answer is (E).",
                           "Sugar is used for energy. So the final answer is (B).", prompt_a=pa, prompt_b=pb)
    assert [c["type"] for c in other] == ["final_answer"] and other[0]["b"] == "heat"


def test_multiple_choice_questions_must_ask_the_same_thing() -> None:
    """Real CoT-collection pairs (ECQA, AQuA, CREAK): close prompts, shared options, different tasks."""
    opts = "\nOptions:\n- eat more\n- starve\n- period of recovery\n- jogging"
    a = ("Use reasoning to lead to the answer of the following question:\nWhen getting in shape, this is something "
         "that does wonders?" + opts)
    b = "Use reasoning to lead to the answer of the following question:\nWhen getting in shape you need to have this in between workouts?" + opts
    assert judge_pair(a, "", "Jogging burns calories. So the final answer is jogging.", b, "",
                      "Muscles recover. So the final answer is period of recovery.") == ([], "different questions over options")
    # the same question reworded on one side only still conflicts
    claims, _ = judge_pair(a, "", "So the final answer is jogging.", "Please answer. " + a, "", "So the final answer is starve.")
    assert [c["type"] for c in claims] == ["final_answer"]
    mc = "\nOptions:\n(A) 20 km/hr\n(B) 24 km/hr\n(C) 30 km/hr"
    assert judge_pair("A boy runs 200 metres in 30 seconds. What is his speed?" + mc, "", "The answer: (B).",
                      "A boy runs 200 metres in 24 seconds. What is his speed?" + mc, "", "The answer: (C).")[1] \
        == "slot values differ"   # 30 sits in both prompts (an option), not in both questions
    who = "\nOptions:\n(A) V and U\n(B) P and Q\n(C) O and P"
    assert judge_pair("In case O is the only one on committee B, who serves on A?" + who, "", "The answer: (B).",
                      "In case N is the only one on committee B, who serves on A?" + who, "", "The answer: (C).")[1] \
        == "slot values differ"
    claim = "\nIs the above claim true?\nOptions:\n- yes\n- no"
    assert judge_pair("System administrators have great power over a network." + claim, "", "The answer: yes.",
                      "System administrators have no power over a network." + claim, "", "The answer: no.") \
        == ([], "one prompt negates")
