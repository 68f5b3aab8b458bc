"""Exact duplicates, duplicate instructions, near-duplicates (embedding + MinHash), the runner, CLI, reports."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from itaudit.audit.near_duplicates import UnionFind, instance_shingles, jaccard, minhash_pairs
from itaudit.audit.runner import CHECKS, AuditContext, register_check, resolve, run_checks
from itaudit.embed import Embedder
from itaudit.errors import ItauditError
from itaudit.ingest import ingest

LONG = ("The quick brown fox jumps over the lazy dog while the farmer watches from the porch and "
        "drinks his morning coffee slowly, thinking about the harvest, the rain that did not come, "
        "and the prices at the market in town next week")
ROWS = [
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris is the capital."},      # 0
    {"instruction": "what is the capital of france", "input": "", "output": "Paris is the capital!"},      # 1 exact dup of 0
    {"instruction": "Name a colour.", "input": "", "output": "Blue."},                                      # 2
    {"instruction": "Name a colour.", "input": "", "output": "Green."},                                     # 3 same instr, other resp
    {"instruction": "Describe the scene.", "input": "", "output": LONG},                                    # 4
    {"instruction": "Describe the scene.", "input": "", "output": LONG.replace("next week", "next month")},  # 5 near dup of 4
    {"instruction": "Describe this scene.", "input": "", "output": LONG.replace("slowly", "quietly")},      # 6 near dup of 4, 5
    {"instruction": "Write a haiku about winter.", "input": "", "output": "Snow on silent pines."},         # 7
    {"instruction": "How do I reverse a list in Python?", "input": "", "output": "Use xs[::-1]."},         # 8
    {"instruction": "Give me a recipe for pancakes.", "input": "", "output": "Flour, eggs, milk; fry."},    # 9
    {"instruction": "Name a colour.", "input": "", "output": "blue"},                                       # 10 same as 2 normalized
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture
def ctx(store, tmp_path, embedder):
    p = tmp_path / "d.json"
    p.write_text(json.dumps(ROWS))
    ingest(store, p, "toy", show_progress=False)
    return AuditContext(store, "toy", tmp_path / "idx", show_progress=False, _embedder=embedder)


def shingles(*responses: str) -> list[np.ndarray]:
    """Shingles of whole instances with only a response, through the production path."""
    n = len(responses)
    return instance_shingles(pl.DataFrame({"instruction": [""] * n, "input": [""] * n, "response": list(responses)}))


def test_instance_shingles_and_union_find() -> None:
    a, b, short, empty = shingles("a b c d e f g", "  A, b. C!  d e\nf G ", "x y", "")
    assert len(a) == 3 and jaccard(a, a) == 1.0
    assert np.array_equal(a, b)  # case, punctuation and whitespace do not matter
    assert len(short) == 1 and len(empty) == 0  # short text: one shingle; empty: none
    uf = UnionFind(5)
    uf.union(3, 1)
    uf.union(1, 4)
    assert list(uf.clusters()) == [0, 1, 2, 1, 1]


def test_exact_and_duplicate_instruction_checks_stored_and_queryable(ctx, store) -> None:
    outs = run_checks(store, "toy", ["exact_duplicates", "duplicate_instructions"], context=ctx)
    ex, di = outs[0].result, outs[1].result
    assert list(np.flatnonzero(ex.flag)) == [1, 10]      # the second copy of each cluster
    assert ex.cluster_id[0] == ex.cluster_id[1] == 0 and ex.cluster_id[2] == ex.cluster_id[10] == 2
    assert ex.cluster_id[3] == -1 and ex.summary["n_clusters"] == 2
    assert list(np.flatnonzero(di.flag)) == [2, 3, 4, 5, 10]   # "Name a colour." / "Describe the scene."
    assert di.score[3] == pytest.approx(0.5) and di.score[0] == 0
    rows = store.query("SELECT idx, flag, cluster_id FROM check_results WHERE check_name = 'exact_duplicates' "
                       "AND cluster_id IS NOT NULL ORDER BY idx")
    assert rows["idx"].to_list() == [0, 1, 2, 10]
    pairs = store.query("SELECT idx_a, idx_b FROM check_pairs WHERE check_name = 'duplicate_instructions' ORDER BY 1")
    assert pairs.rows() == [(2, 3), (4, 5)]   # 10 repeats 2's response: no new pair
    from itaudit import sqlfiles

    rep = store.query(sqlfiles.report_sql("duplicates"))
    assert set(rep["size"].to_list()) == {2, 3}


def test_near_duplicates_clusters_with_both_similarities(ctx, store) -> None:
    res = run_checks(store, "toy", ["near_duplicates"], context=ctx)[0].result
    assert set(np.flatnonzero(res.flag)) >= {0, 1, 4, 5, 6}
    assert res.cluster_id[4] == res.cluster_id[5] == res.cluster_id[6] == 4   # transitive, id = smallest idx
    assert not res.flag[[7, 8, 9]].any()
    pairs = store.query("SELECT idx_a, idx_b, score, evidence FROM check_pairs WHERE check_name = 'near_duplicates'")
    ev = {(a, b): json.loads(e) for a, b, _, e in pairs.rows()}
    e45 = ev[(4, 5)]
    assert e45["cosine"] >= 0.95 and e45["jaccard"] >= 0.8 and set(e45["found_by"]) == {"embedding", "minhash"}
    assert 0 <= e45["jaccard_minhash"] <= 1
    assert res.summary["n_pairs_both"] >= 1 and res.summary["largest_cluster"] >= 3
    from itaudit import sqlfiles

    rep = store.query(sqlfiles.report_sql("near_duplicates"))
    assert rep.height == pairs.height and rep["cosine"].min() > 0


def test_minhash_lexical_only_pair_is_found() -> None:
    docs = shingles(LONG, LONG.rsplit(" ", 1)[0] + " year", "totally other words")
    pairs, mhs = minhash_pairs(docs, threshold=0.8)
    assert list(pairs) == [(0, 1)] and pairs[(0, 1)] >= 0.8 and len(mhs) == 3


def test_registry_and_cli(ctx, store, db_path, capsys) -> None:
    assert {"exact_duplicates", "duplicate_instructions", "near_duplicates", "conflicting_neighbors"} <= set(CHECKS)
    with pytest.raises(ItauditError, match="unknown check"):
        resolve(["nope"])

    def tiny(store, dataset, show_progress=False, cutoff=5):   # a (store, dataset) style check
        from itaudit.audit import CheckResult

        idx = store.instances(dataset, "idx")["idx"].to_numpy()
        return CheckResult("tiny", dataset, idx, idx >= cutoff, (idx >= cutoff).astype(float))

    register_check("tiny", tiny, "test check", default=False)
    try:
        assert "tiny" not in [c.name for c in resolve(None)]
        out = run_checks(store, "toy", ["tiny"], context=ctx, params={"tiny": {"cutoff": 9}})
        assert int(out[0].result.flag.sum()) == 2
        from itaudit.cli import main

        store.close()
        main(["audit", "toy", "--checks", "exact_duplicates,tiny", "-s", "tiny.cutoff=10", "-q", "--db", str(db_path)])
        text = capsys.readouterr().out
        assert "exact_duplicates" in text and "tiny" in text and "audit of toy" in text
    finally:
        CHECKS.pop("tiny", None)


def test_pairs_per_row_are_capped_but_clusters_stay_whole() -> None:
    from itaudit.audit.near_duplicates import UnionFind

    docs = shingles(*[LONG] * 30)
    pairs, _ = minhash_pairs(docs, threshold=0.8, max_per_row=3)
    assert len(pairs) <= 30 * 3 and all(j > i for i, j in pairs)
    uf = UnionFind(30)
    for i, j in pairs:
        uf.union(i, j)
    assert set(uf.clusters().tolist()) == {0}


def test_real_alpaca_lexical_checks(store, shared_data, tmp_path) -> None:
    """The real Alpaca subset: no exact duplicates after normalization, MinHash pairs all verified."""
    ingest(store, shared_data / "alpaca" / "alpaca_5000.json", "alpaca", skip_invalid=True, show_progress=False)
    ctx = AuditContext(store, "alpaca", tmp_path, show_progress=False)
    outs = run_checks(store, "alpaca", ["exact_duplicates", "near_duplicates"], context=ctx,
                      params={"near_duplicates": {"use_embedding": False}})
    ex, nd = outs[0].result, outs[1].result
    n = store.query("SELECT count(*) AS n FROM instances WHERE dataset = 'alpaca'")["n"][0]
    assert len(ex.idx) == len(nd.idx) == n > 4900
    pairs = store.query("SELECT evidence FROM check_pairs WHERE check_name = 'near_duplicates'")["evidence"]
    assert all(json.loads(e)["jaccard"] >= 0.8 for e in pairs)
    assert nd.summary["n_pairs_embedding"] == 0 and nd.summary["n_pairs"] == pairs.len()
    flagged = store.query("SELECT count(*) AS n FROM check_results WHERE check_name = 'near_duplicates' AND flag")["n"][0]
    assert flagged == int(nd.flag.sum()) and flagged >= 2 * nd.summary["n_clusters"]
