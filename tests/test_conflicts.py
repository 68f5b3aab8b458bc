"""Conflicting neighbours: numbers / names extraction, pair rules, stored evidence, report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from itaudit.audit.conflicts import compare, entities, numbers
from itaudit.audit.runner import AuditContext, run_checks
from itaudit.embed import Embedder
from itaudit.ingest import ingest

ROWS = [
    {"instruction": "How many legs does a spider have?", "input": "", "output": "A spider has 8 legs."},          # 0
    {"instruction": "How many legs do spiders have?", "input": "", "output": "A spider has 6 legs."},             # 1 number conflict
    {"instruction": "Who wrote the novel Hamlet?", "input": "", "output": "It was written by William Shakespeare."},  # 2
    {"instruction": "Who is the author of the novel Hamlet?", "input": "", "output": "It was written by Christopher Marlowe."},  # 3
    {"instruction": "Give me a synonym for happy.", "input": "", "output": "Joyful."},                            # 4
    {"instruction": "Give me a synonym for happy.", "input": "", "output": "The stock market fell sharply today amid fears of inflation."},  # 5 dissimilar
    {"instruction": "What is 12 times 3?", "input": "", "output": "36"},                                          # 6
    {"instruction": "What is 12 times 4?", "input": "", "output": "48"},                                          # 7 instructions differ: fine
    {"instruction": "Write a poem about the sea.", "input": "", "output": "Blue waves roll."},                     # 8
    {"instruction": "Translate 'cat' into French.", "input": "", "output": "Chat."},                              # 9
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_numbers_and_entities() -> None:
    assert numbers("1. Mix 1,000 g.\n2) Bake 30 min at 180.\nIt costs $4.50 or 12%.") == {"1000", "30", "180", "4.50", "12%"}
    assert entities("The capital is Canberra. Sydney is bigger than Perth.") == {"Canberra", "Perth"}


def test_compare_rules() -> None:
    c = compare("How many moons has Mars?", "Number of moons of Mars?", "Mars has 2 moons.", "Mars has 3 moons.")
    assert c["numbers"]["conflict"] and c["numbers"]["only_a"] == ["2"] and c["numbers"]["only_b"] == ["3"]
    assert not c["entities"]["conflict"]   # Mars is in the instructions: topic, not a fact
    c = compare("What is 12 times 3?", "What is 12 times 4?", "36", "48")
    assert c["numbers"]["instructions_differ"] and not c["numbers"]["conflict"]
    c = compare("q", "q", "Answer with 8.", "Answer with 8 and 9.")
    assert not c["numbers"]["conflict"]    # one side only adds: not a contradiction


def test_conflicting_neighbors_check(store, tmp_path, embedder) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps(ROWS))
    ingest(store, p, "toy", show_progress=False)
    ctx = AuditContext(store, "toy", tmp_path / "idx", show_progress=False, _embedder=embedder)
    res = run_checks(store, "toy", ["conflicting_neighbors"], context=ctx)[0].result
    pairs = store.query("SELECT idx_a, idx_b, score, evidence FROM check_pairs WHERE check_name = 'conflicting_neighbors'")
    ev = {(a, b): (s, json.loads(e)) for a, b, s, e in pairs.rows()}
    assert (0, 1) in ev and "numbers" in ev[(0, 1)][1]["reasons"]
    assert ev[(0, 1)][1]["numbers"] == {"only_a": ["8"], "only_b": ["6"]}
    assert ev[(0, 1)][1]["instruction_sim"] >= 0.85 and ev[(0, 1)][1]["response_sim"] > 0.5
    assert (2, 3) in ev and "entities" in ev[(2, 3)][1]["reasons"]
    assert set(ev[(2, 3)][1]["entities"]["only_a"]) >= {"Shakespeare"}
    assert (4, 5) in ev and "dissimilar_response" in ev[(4, 5)][1]["reasons"] and ev[(4, 5)][1]["response_sim"] <= 0.5
    assert (6, 7) not in ev
    assert not res.flag[[8, 9]].any() and res.flag[[0, 1, 2, 3, 4, 5]].all()
    for a, b in ev:  # row score = strongest conflict it is part of, in [0, 1]
        assert res.score[a] >= ev[(a, b)][0] and res.score[b] >= ev[(a, b)][0]
    assert 0 < res.score.max() <= 1 and res.summary["n_conflict_pairs"] == len(ev)
    # response embeddings were computed only for rows in candidate pairs
    assert res.summary["n_responses_embedded"] < len(ROWS)
    from itaudit import sqlfiles

    rep = store.query(sqlfiles.report_sql("conflicts"))
    assert rep.height == len(ev) and rep["response_sim"].max() <= 1.0001
    assert np.all(rep["strength"].to_numpy()[:-1] >= rep["strength"].to_numpy()[1:])
