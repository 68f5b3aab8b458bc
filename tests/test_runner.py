"""The check runner: order of execution and persistence of results."""

from __future__ import annotations

from pathlib import Path

from itaudit.audit.runner import resolve, run_checks
from itaudit.ingest import ingest

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sample_alpaca.jsonl"


def test_combiner_runs_after_the_checks_it_combines_whatever_the_order_asked(store, tmp_path):
    ingest(store, SAMPLE, "sample", show_progress=False)
    names = [s.name for s in resolve(["risk", "exact_duplicates,risk"])]
    assert names == ["exact_duplicates", "risk"]  # deduplicated, risk last
    outcomes = run_checks(store, "sample", ["risk", "exact_duplicates"], index_dir=tmp_path, show_progress=False)
    assert [o.check for o in outcomes] == ["exact_duplicates", "risk"]
    # the planted exact duplicate (rows 1 and 2) reaches the risk score
    risk = store.query(
        "SELECT idx, score FROM check_results WHERE dataset = 'sample' AND check_name = 'risk' ORDER BY idx"
    )
    dup = store.query(
        "SELECT idx FROM check_results WHERE dataset = 'sample' AND check_name = 'exact_duplicates' AND flag"
    )["idx"].to_list()
    assert dup, "the sample has an exact duplicate pair"
    scores = dict(zip(risk["idx"].to_list(), risk["score"].to_list(), strict=True))
    assert all(scores[i] > 0 for i in dup)
    assert min(scores.values()) == 0.0


def test_workspace_api_mirrors_the_cli(tmp_path):
    import itaudit

    with itaudit.open(tmp_path / "ws.duckdb", index_dir=tmp_path / "idx") as ws:
        ws.ingest(SAMPLE, name="sample")
        summary = ws.audit("sample", ["exact_duplicates", "duplicate_instructions"])
        assert set(summary["check_name"]) == {"exact_duplicates", "duplicate_instructions"}
        assert summary.filter(summary["check_name"] == "exact_duplicates")["flagged"][0] == 1  # the redundant copy of the one duplicated pair
        hits = ws.neighbors("sample", "What is the capital city of Australia?", k=3)
        assert hits.height == 3
        assert "Australia" in hits["instruction"][0]
        assert (tmp_path / "idx").is_dir()
