"""Integration with the real models (slow: the first load dequantizes the GGUF, ~20-80 s, then cached)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_smollm2_loads_from_cache_and_generates() -> None:
    from itaudit.models import cache_root, generate, load_model

    lm = load_model("smollm2")
    assert lm.model_id == "smollm2" and lm.has_chat_template
    assert str(cache_root()) in lm.source and lm.vocab_size == 49152
    out = generate(lm, ["What is the capital of France?"], max_new_tokens=12, show_progress=False)
    assert "Paris" in out[0]


def test_shift_real_models_on_mt_bench(shared_data, tmp_path) -> None:
    from itaudit import sqlfiles
    from itaudit.cli import main
    from itaudit.store import Store

    q = shared_data / "mt_bench" / "question.jsonl"
    db = tmp_path / "shift.duckdb"
    lima = shared_data / "lima_train" / "lima.json"
    main(["ingest", str(lima), "--name", "lima", "--db", str(db)])
    # same model as base and tuned: every greedy token is the base's top token, KL ~ 0
    main(["shift", "--base", "smollm2", "--tuned", "smollm2", "--prompts", str(q), "--limit", "2",
          "--max-new-tokens", "12", "--db", str(db), "-q", "--run-id", "self"])
    # Gemma-3-270M base vs SmolLM2-Instruct: vocabularies differ -> re-tokenized, no KL
    main(["shift", "--base", "gemma3-270m", "--tuned", "smollm2", "--prompts", str(q), "--limit", "2",
          "--max-new-tokens", "16", "--reference", "lima", "--db", str(db), "-q", "--run-id", "gemma"])
    with Store(db) as s:
        self_ = s.query("SELECT * FROM shift_tokens WHERE run_id = 'self'")
        assert self_.height > 0 and (self_["base_rank"] == 1).mean() > 0.95 and self_["kl"].max() < 1e-3
        g = s.query("SELECT * FROM shift_tokens WHERE run_id = 'gemma'")
        assert g.height > 0 and g["kl"].null_count() == g.height
        run = s.query("SELECT * FROM shift_runs WHERE run_id = 'gemma'").row(0, named=True)
        assert run["retokenized"] and not run["kl_available"]
        for name in ("shift_categories", "shift_top_tokens", "shift_position_kl", "shift_verbatim"):
            assert s.query(sqlfiles.report_sql(name)).height > 0, name
