"""Real-model tuning (slow): SmolLM2-135M-Instruct on a few LIMA rows, LoRA and full, then shift."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["lora", "full"])
def test_tune_smollm2_then_shift(shared_data: Path, store, tmp_path: Path, method: str) -> None:
    from itaudit.ingest import ingest
    from itaudit.models import PromptItem, load_model
    from itaudit.models.loading import LoadedModel, resolve
    from itaudit.shift import analyze
    from itaudit.tune import TuneConfig, tune

    ingest(store, shared_data / "lima_train" / "lima.json", "lima")
    out = tmp_path / method
    cfg = TuneConfig(base="smollm2", dataset="lima", out=out, method=method, rows=6, epochs=1, max_len=128,
                     batch_size=2, lr=1e-3 if method == "lora" else 1e-4, where="length(instruction) < 300")
    res = tune(store, cfg, show_progress=False)
    assert res.status == "done" and res.n_examples >= 1 and all(x == x for x in res.losses)
    meta = json.loads((out / "itaudit_tune.json").read_text())
    assert meta["base"] == "smollm2"
    if method == "lora":
        tuned = load_model("smollm2", adapter=out)
        base = LoadedModel(tuned.model, tuned.tokenizer, resolve("smollm2")[1], tuned.source)
    else:
        base, tuned = load_model("smollm2"), load_model(str(out))
    ids = torch.tensor([tuned.encode_prompt(tuned.format_prompt("Name three colours."))])
    with torch.no_grad():
        if method == "lora":
            with tuned.model.disable_adapter():
                ref = tuned.model(ids).logits
        else:
            ref = base.model(ids).logits
        assert not torch.allclose(tuned.model(ids).logits, ref)
    items = [PromptItem("p0", "Name three colours."), PromptItem("p1", "What is the capital of France?")]
    sr = analyze(store, base, items, tuned=tuned, adapter_mode=method == "lora", max_new_tokens=12,
                 show_progress=False)
    assert sr.n_tokens > 0
    from itaudit import sqlfiles

    rows = store.query(sqlfiles.report_sql("tune_shift").strip().rstrip(";"))
    assert rows.height == 1 and rows["method"][0] == method and rows["tune_run"][0] == res.run_id
