"""Benchmark contamination: word n-gram overlap, embedding near-matches, both directions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from itaudit.audit import save_result
from itaudit.audit.contamination import _Segments, contamination_check, words
from itaudit.errors import ItauditError
from itaudit.ingest import ingest

EVAL_LONG = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
             "muffins for her friends every day with four. How much does she make every day?")
EVAL_SHORT = "What are the most effective ways to deal with stress?"   # 10 words: matched whole
TEMPLATE = "Answer the following question with one of the four options given below please"


def _write(tmp_path, name, rows):
    p = tmp_path / f"{name}.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.fixture
def sets(store, tmp_path):
    it = [
        {"instruction": "Solve this: " + EVAL_LONG.upper().replace(".", " ,"), "output": "She makes $18."},  # 0 leak
        {"instruction": "Write a poem about autumn leaves.", "output": "Leaves fall..."},                      # 1 clean
        {"instruction": "Help me.", "input": "What are the most effective ways to deal with stress? Thanks!",
         "output": "Exercise, sleep."},                                                                          # 2 short leak
        {"instruction": "Tell me a joke about cats.", "output": "Why did the cat..."},                          # 3 paraphrase
        {"instruction": TEMPLATE + " : what is 2 + 2?", "output": "4"},                                         # 4 template only
        {"instruction": "Explain what stress is.", "output": "Stress is the body's response."},                # 5 clean
    ]
    ev = [{"question": EVAL_LONG, "answer": "18"},
          {"question": EVAL_SHORT, "answer": "Exercise."},
          {"question": "Please tell me a funny joke about cats!", "answer": "..."},
          {"question": "Who painted the Mona Lisa?", "answer": "Leonardo."}]
    ev += [{"question": TEMPLATE + f" : item {i} of the quiz", "answer": "A"} for i in range(12)]
    ingest(store, _write(tmp_path, "it", it), "it", show_progress=False)
    ingest(store, _write(tmp_path, "ev", ev), "ev", "qa", show_progress=False)
    return store


def test_ngram_windows_are_order_sensitive_normalized_and_stay_inside_texts():
    seg = _Segments.of(["The cat sat on the mat, today!", "the CAT sat on the mat today", "cat the sat on the mat today",
                        None, "x y"])
    assert seg.length.tolist() == [7, 7, 7, 0, 2]
    h, s, off = (np.concatenate(x) for x in zip(*seg.windows(3), strict=True))
    for small in (1, 5, 8):   # pieces of any size give the same windows
        hs = np.concatenate([p[0] for p in seg.windows(3, max_words=small)])
        assert np.array_equal(hs, h)
    assert s.tolist() == [0] * 5 + [1] * 5 + [2] * 5 and off.tolist()[:5] == [0, 1, 2, 3, 4]
    a, b, c = h[:5], h[5:10], h[10:]
    assert np.array_equal(a, b)                                  # case and punctuation do not matter
    assert a[0] != c[0] and a[1] != c[1] and np.array_equal(a[2:], c[2:])   # word order does
    assert seg.words(1, 1, 4) == ["cat", "sat", "on"]
    assert words("Héllo, WORLD_2 x") == ["héllo", "world", "2", "x"]


def test_ngram_contamination_both_directions(sets):
    r = contamination_check(sets, "it", against=["ev"], embeddings=False)
    assert r.flag.tolist() == [True, False, True, False, False, False]
    assert r.score[0] == pytest.approx(1.0) and r.score[2] == pytest.approx(1.0)
    assert r.summary["by_eval_set"]["ev"]["eval_items_in_dataset"] == 2
    p = r.pairs.sort("idx_a")
    assert p["idx_a"].to_list() == [0, 2] and p["idx_b"].to_list() == [0, 1]
    assert set(p["other_dataset"].to_list()) == {"ev"}
    ev0 = json.loads(p["evidence"][0])
    assert ev0["via"] == "ngram" and "janet s ducks lay 16 eggs per day" in ev0["overlap"]
    assert ev0["overlap_words"] == len(words(EVAL_LONG))
    # the other direction was saved on the eval set, with pairs pointing back
    back = sets.query("SELECT idx, flag FROM check_results WHERE dataset = 'ev' AND check_name = 'contamination' ORDER BY idx")
    assert back["flag"].to_list()[:4] == [True, True, False, False]
    bp = sets.query("SELECT idx_a, idx_b, other_dataset FROM check_pairs WHERE dataset = 'ev' ORDER BY idx_a")
    assert bp.rows() == [(0, 0, "it"), (1, 2, "it")]


def test_templates_shared_by_many_eval_items_are_ignored(sets):
    on = contamination_check(sets, "it", against=["ev"], embeddings=False, mark_eval=False)
    off = contamination_check(sets, "it", against=["ev"], embeddings=False, max_eval_df=100, mark_eval=False)
    assert on.score[4] == 0 and on.summary["by_eval_set"]["ev"]["ngram_pairs"] == 2
    # with the template filter off, row 4 shares the template 13-gram with all 12 quiz items
    assert off.score[4] > 0 and off.summary["by_eval_set"]["ev"]["ngram_pairs"] == 2 + 12


def test_embedding_near_match(sets):
    r = contamination_check(sets, "it", against=["ev"], embeddings=True, embed_threshold=0.9, mark_eval=False)
    assert r.flag[3] and not r.flag[1] and not r.flag[5]
    ev = [json.loads(e) for e in r.pairs.filter(r.pairs["idx_a"] == 3)["evidence"].to_list()]
    assert ev[0]["via"] == "embedding" and ev[0]["cosine"] > 0.9 and "Mona" not in ev[0]["eval_text"]
    save_result(sets, r)


def test_errors(sets):
    with pytest.raises(ItauditError, match="needs eval datasets"):
        contamination_check(sets, "it", against=[])
    with pytest.raises(ItauditError, match="being checked"):
        contamination_check(sets, "it", against=["it"])
    with pytest.raises(KeyError, match="nope"):
        contamination_check(sets, "it", against=["nope"])


def test_alpaca_eval_contains_vicuna_and_self_instruct(store, shared_data):
    """Real positive: AlpacaEval's 805 prompts include the Vicuna 80 and self-instruct's 252."""
    ingest(store, shared_data / "alpaca_eval" / "alpaca_eval_gpt4_1106_preview_outputs.json", "alpaca_eval", show_progress=False)
    ingest(store, shared_data / "vicuna80" / "question.jsonl", "vicuna80", "prompts", show_progress=False)
    ingest(store, shared_data / "self_instruct" / "user_oriented_instructions.jsonl", "self_instruct", "prompts",
           show_progress=False)
    r = contamination_check(store, "alpaca_eval", against=["vicuna80", "self_instruct"], embeddings=False)
    by = r.summary["by_eval_set"]
    assert by["vicuna80"]["eval_items_in_dataset"] == 80
    assert by["self_instruct"]["eval_items_in_dataset"] >= 230
    src = store.query("SELECT source, count(*) AS n FROM instances WHERE dataset = 'alpaca_eval' "
                      "AND idx IN (SELECT unnest(?::BIGINT[])) GROUP BY 1", [r.idx[r.flag].tolist()])
    counts = dict(src.rows())
    assert counts.get("vicuna", 0) >= 75 and counts.get("selfinstruct", 0) >= 230
    assert sum(counts.values()) - counts.get("vicuna", 0) - counts.get("selfinstruct", 0) < 20


def test_eval_sets_given_as_files_are_ingested_once(store, tmp_path):
    from itaudit.audit.contamination import resolve_eval_sets

    d = tmp_path / "gsm8k"
    d.mkdir()
    f = d / "test.jsonl"
    f.write_text(json.dumps({"question": EVAL_LONG, "answer": "18"}) + "\n" + json.dumps({"question": "q", "answer": ""}) + "\n")
    names = resolve_eval_sets(store, f"{f},mine={f}")
    assert names == ["gsm8k_test", "mine"]
    info = store.dataset_info("gsm8k_test")
    assert info["format"] == "qa" and info["n_rows"] == 1 and info["n_rejected"] == 1
    assert resolve_eval_sets(store, ["gsm8k_test"]) == ["gsm8k_test"]
    assert store.dataset_info("gsm8k_test")["ingested_at"] == info["ingested_at"]   # unchanged: not re-ingested
    resolve_eval_sets(store, [str(f)])
    assert store.dataset_info("gsm8k_test")["ingested_at"] == info["ingested_at"]
    g = d / "GSM8K_main.jsonl"
    g.write_text(f.read_text())
    assert resolve_eval_sets(store, [str(g)]) == ["gsm8k_main"]


def test_cosine_score_is_half_at_the_threshold():
    from itaudit.audit.contamination import cosine_score

    assert cosine_score(np.array([0.5, 0.84, 0.92, 0.96, 1.0]), 0.92) == pytest.approx([0, 0, 0.5, 0.75, 1.0])
