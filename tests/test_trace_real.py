"""Integration of `itaudit trace` with the real small models (slow: real LMs, MiniLM over LIMA)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_trace_real_tuned_and_base_models_into_lima(shared_data, tmp_path) -> None:
    from itaudit import sqlfiles
    from itaudit.cli import main
    from itaudit.store import Store

    db, idir = str(tmp_path / "t.duckdb"), str(tmp_path / "ix")
    main(["ingest", str(shared_data / "lima_train" / "lima.json"), "--name", "lima", "--db", db])
    q = shared_data / "mt_bench" / "question.jsonl"
    # SmolLM2-Instruct answers, Gemma-3-270M (another vocabulary) decides shifted/marginal words
    main(["trace", "-d", "lima", "--tuned", "smollm2", "--prompts", str(q), "--limit", "2", "--base", "gemma3-270m",
          "--max-new-tokens", "40", "--db", db, "--index-dir", idir, "-q", "--run-id", "real"])
    with Store(db) as s:
        run = s.query("SELECT * FROM trace_runs WHERE run_id = 'real'").row(0, named=True)
        assert run["mode"] == "shift" and run["tuned_model"] == "smollm2" and run["base_model"] == "gemma3-270m"
        resp = s.query("SELECT * FROM trace_responses WHERE run_id = 'real' ORDER BY response_id")
        assert resp.height == 2 and all(len(r) > 20 for r in resp["response"].to_list())
        neigh = json.loads(resp["neighbours"][0])
        assert len(neigh) >= 5 and -1 <= neigh[0]["similarity"] <= 1
        spans = s.query("SELECT * FROM trace_spans WHERE run_id = 'real'")
        assert spans.height >= 1 and spans["categories"].is_not_null().all()
        for r in spans.iter_rows(named=True):  # every candidate holds a shifted or marginal word
            assert set(json.loads(r["categories"])) & {"shifted", "marginal"}
            text = resp.filter(resp["response_id"] == r["response_id"])["response"][0]
            assert text[r["char_start"]:r["char_end"]] == r["text"]
        src = s.query("SELECT * FROM trace_sources WHERE run_id = 'real'")
        assert src.height and src["similarity"].is_not_null().all()
        assert s.query(sqlfiles.report_sql("trace_traced_share")).height == 1


def test_trace_reuses_stored_shift_rows(shared_data, tmp_path) -> None:
    from itaudit.cli import main
    from itaudit.store import Store

    db, idir = str(tmp_path / "t.duckdb"), str(tmp_path / "ix")
    main(["ingest", str(shared_data / "alpaca_eval" / "alpaca_eval_gpt4_1106_preview_outputs.json"), "--name", "vic",
          "--db", db])
    q = shared_data / "mt_bench" / "question.jsonl"
    main(["shift", "--base", "smollm2", "--tuned", "smollm2", "--prompts", str(q), "--limit", "2",
          "--max-new-tokens", "16", "--db", db, "-q", "--run-id", "sh"])
    main(["trace", "-d", "vic", "--shift-run", "sh", "--no-neighbours", "--db", db, "--index-dir", idir, "-q",
          "--run-id", "tr"])
    with Store(db) as s:
        run = s.query("SELECT * FROM trace_runs WHERE run_id = 'tr'").row(0, named=True)
        assert run["mode"] == "shift_rows" and run["base_model"] == "smollm2"
        n = s.query("SELECT count(*) AS n FROM trace_responses WHERE run_id = 'tr'")["n"][0]
        assert n == 2
        # same model as base and tuned: greedy tokens are the base's top choice, so few candidates
        sp = s.query("SELECT * FROM trace_spans WHERE run_id = 'tr'")
        assert sp.height <= 4
