"""Golden results: the checks whose results must not change across refactors, on committed fixtures.

Covers exact_duplicates, duplicate_instructions, near_duplicates (real all-MiniLM), style and risk
combining exactly those four. Flags, scores, cluster ids, details and pairs must match the golden
file exactly; summaries must contain every golden key with the same value (new keys may be added).

Regenerate only when a result change is intended (say why in the commit message):

    ITAUDIT_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from itaudit.audit.runner import run_checks
from itaudit.ingest import ingest

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden" / "checks.json"
CHECKS = ["exact_duplicates", "duplicate_instructions", "near_duplicates", "style", "risk"]
DATASETS = {"golden_alpaca": HERE / "fixtures" / "golden_alpaca.jsonl", "golden_sharegpt": HERE / "fixtures" / "sharegpt.json"}
# Volatile or environment-dependent summary keys.
SKIP_SUMMARY = {"seconds"}


def _snapshot(store, dataset: str) -> dict:
    out: dict = {}
    runs = store.query("SELECT check_name, run_id, summary FROM latest_checks WHERE dataset = ? ORDER BY check_name",
                       [dataset])
    for check, run_id, summary in runs.iter_rows():
        rows = store.query("SELECT idx, flag, score, cluster_id, details FROM check_rows WHERE run_id = ? ORDER BY idx",
                           [run_id])
        pairs = store.query("SELECT idx_a, idx_b, score, evidence FROM check_pairs WHERE run_id = ? "
                            "ORDER BY idx_a, idx_b", [run_id])
        s = {k: v for k, v in json.loads(summary).items() if k not in SKIP_SUMMARY}
        if check == "risk":  # run ids differ per run
            s["checks"] = {c: {k: v for k, v in u.items() if k != "run_id"} for c, u in s.get("checks", {}).items()}
        out[check] = {
            "rows": [[i, f, sc, c, json.loads(d) if d else None] for i, f, sc, c, d in rows.iter_rows()],
            "pairs": [[a, b, sc, json.loads(e) if e else None] for a, b, sc, e in pairs.iter_rows()],
            "summary": s,
        }
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from itaudit.embed import Embedder
    from itaudit.store import Store

    tmp = tmp_path_factory.mktemp("golden")
    embedder = Embedder()
    got = {}
    with Store(tmp / "g.duckdb") as store:
        for name, path in DATASETS.items():
            ingest(store, path, name, show_progress=False)
            from itaudit.audit.runner import AuditContext

            ctx = AuditContext(store, name, tmp / "idx", show_progress=False, _embedder=embedder)
            run_checks(store, name, CHECKS, context=ctx)
            got[name] = _snapshot(store, name)
    return got


def test_owned_checks_match_the_golden_file(results):
    if os.environ.get("ITAUDIT_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        pytest.skip("golden file regenerated")
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert set(results) == set(golden)
    for ds, checks in golden.items():
        assert set(results[ds]) == set(checks), ds
        for check, want in checks.items():
            have = results[ds][check]
            assert have["rows"] == want["rows"], f"{ds}/{check}: rows differ"
            assert have["pairs"] == want["pairs"], f"{ds}/{check}: pairs differ"
            for k, v in want["summary"].items():
                assert have["summary"].get(k) == v, f"{ds}/{check}: summary[{k!r}] {have['summary'].get(k)!r} != {v!r}"


def test_golden_fixture_exercises_every_check(results):
    """The fixture is only useful if each check flags something on it."""
    flagged = {c: sum(1 for r in v["rows"] if r[1]) for c, v in results["golden_alpaca"].items()}
    assert all(flagged[c] > 0 for c in CHECKS), flagged
