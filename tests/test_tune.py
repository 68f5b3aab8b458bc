"""`itaudit tune`: example masking, the loss, LoRA/full runs, checkpoints/resume, determinism, --where."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from itaudit.audit import CheckResult, save_result
from itaudit.errors import ItauditError
from itaudit.ingest import ingest
from itaudit.models import load_model, pad_id
from itaudit.tune import (
    IGNORE,
    TuneConfig,
    build_examples,
    collate,
    select_instances,
    step_loss_sum,
    tune,
)
from itaudit.tune.data import rows_sha
from tests.tinymodels import DEFAULT_TEXT, tiny_causal_lm

ROWS = [
    {"instruction": "Name three primary colours.", "input": "", "output": "Red, blue and yellow."},
    {"instruction": "What is the capital of France?", "input": "", "output": "The capital of France is Paris."},
    {"instruction": "Write a short poem about the sea.", "input": "", "output": "The sea is wide and deep and blue."},
    {"instruction": "Give me a list of fruits", "input": "short", "output": "apples, bananas, oranges"},
    {"instruction": "Translate hello into Spanish.", "input": "", "output": "Hello in Spanish is hola."},
    {"instruction": "Count to five.", "input": "", "output": "1 2 3 4 5"},
    {"instruction": "Say something nice.", "input": "", "output": "Sure! I hope this helps."},
    {"instruction": "Describe the fox.", "input": "", "output": "The quick brown fox jumps over the lazy dog."},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "m", DEFAULT_TEXT + [r["output"] for r in ROWS])


@pytest.fixture
def toy(store, tmp_path: Path):
    src = tmp_path / "toy.json"
    src.write_text(json.dumps(ROWS))
    ingest(store, src, "toy", "alpaca")
    return store


def _cfg(tiny: Path, out: Path, **kw) -> TuneConfig:
    base = dict(base=str(tiny), dataset="toy", out=out, method="full", epochs=3, lr=1e-2, batch_size=2,
                max_len=64, save_every=0, warmup=0.0)
    base.update(kw)
    return TuneConfig(**base)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    f = out / ("adapter_model.safetensors" if (out / "adapter_config.json").exists() else "model.safetensors")
    return load_file(str(f))


def test_examples_mask_prompt_and_padding(tiny: Path, toy) -> None:
    lm = load_model(str(tiny))
    frame = select_instances(toy, "toy")
    examples, skipped = build_examples(lm, frame, max_len=64)
    assert skipped == 0 and [e.idx for e in examples] == list(range(len(ROWS)))
    eos = lm.tokenizer.eos_token_id
    for e, r in zip(examples, ROWS, strict=True):
        user = r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")
        p_ids = lm.encode_prompt(lm.format_prompt(user))
        r_ids = lm.tokenizer(r["output"], add_special_tokens=False)["input_ids"] + [eos]
        assert e.input_ids == p_ids + r_ids
        assert e.labels == [IGNORE] * len(p_ids) + r_ids          # no loss on the prompt
        assert e.n_target == len(r_ids)
    cut, _ = build_examples(lm, frame, max_len=12)
    assert all(len(e.input_ids) <= 12 for e in cut)
    none, skipped = build_examples(lm, frame, max_len=3)      # prompts longer than max_len are skipped
    assert none == [] and skipped == len(ROWS)
    short, long = min(examples, key=lambda e: len(e.input_ids)), max(examples, key=lambda e: len(e.input_ids))
    n0, w = len(short.input_ids), len(long.input_ids)
    assert n0 < w                                             # the batch below needs padding
    batch = collate([short, long], pad_id(lm))
    assert batch["input_ids"].shape == (2, w)
    assert batch["input_ids"][0, :n0].tolist() == short.input_ids and batch["labels"][0, :n0].tolist() == short.labels
    assert batch["attention_mask"][0].tolist() == [1] * n0 + [0] * (w - n0)
    assert batch["input_ids"][0, n0:].tolist() == [pad_id(lm)] * (w - n0)
    assert batch["labels"][0, n0:].tolist() == [IGNORE] * (w - n0)
    assert batch["labels"][1].tolist() == long.labels and batch["attention_mask"][1].sum() == w


def test_loss_is_response_tokens_only_and_matches_hf(tiny: Path, toy) -> None:
    lm = load_model(str(tiny))
    examples, _ = build_examples(lm, select_instances(toy, "toy"), max_len=64)
    batch = collate(examples[:4], pad_id(lm))
    n_tgt = sum(e.n_target for e in examples[:4])
    with torch.no_grad():
        ours = step_loss_sum(lm.model, batch, torch.device("cpu")) / n_tgt
        hf = lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      labels=batch["labels"]).loss
        assert torch.allclose(ours, hf, atol=1e-5)
        # changing prompt tokens' labels does not matter because they are never targets
        mixed = dict(batch, labels=torch.where(batch["labels"] == IGNORE, IGNORE, batch["labels"]))
        assert torch.allclose(step_loss_sum(lm.model, mixed, torch.device("cpu")) / n_tgt, ours)
        # unmasking the prompt changes the loss (so the mask matters)
        full = dict(batch, labels=torch.where(batch["attention_mask"] == 1, batch["input_ids"], IGNORE))
        n_full = int((full["labels"][:, 1:] != IGNORE).sum())
        assert not torch.allclose(step_loss_sum(lm.model, full, torch.device("cpu")) / n_full, ours)


def test_full_tune_reduces_loss_and_saves_hf_dir(tiny: Path, toy, tmp_path: Path) -> None:
    out = tmp_path / "full"
    res = tune(toy, _cfg(tiny, out, epochs=6), show_progress=False)
    assert res.status == "done" and res.steps == 6 * 4 and len(res.losses) == 24
    assert res.losses[-1] < 0.5 * res.losses[0]
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    assert not (out / "checkpoints").exists()
    meta = json.loads((out / "itaudit_tune.json").read_text())
    assert meta["method"] == "full" and meta["n_examples"] == len(ROWS)
    tuned = load_model(str(out))
    base = load_model(str(tiny))
    ids = torch.tensor([tuned.encode_prompt(tuned.format_prompt(ROWS[1]["instruction"]))])
    assert not torch.allclose(tuned.model(ids).logits, base.model(ids).logits)
    run = toy.query("SELECT * FROM tune_runs WHERE run_id = ?", [res.run_id]).row(0, named=True)
    assert run["status"] == "done" and run["steps_done"] == 24 and run["n_rows"] == len(ROWS)
    assert json.loads(run["losses"]) == res.losses and run["final_loss"] == pytest.approx(np.mean(res.losses[-4:]), abs=1e-5)
    with pytest.raises(ItauditError, match="already holds a finished run"):
        tune(toy, _cfg(tiny, out), show_progress=False)


def test_lora_adapter_loads_and_changes_outputs(tiny: Path, toy, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    res = tune(toy, _cfg(tiny, out, method="lora", lora_r=4, lora_alpha=8, epochs=4,
                         lora_targets=("q_proj", "v_proj")), show_progress=False)
    assert res.losses[-1] < res.losses[0]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
    w = _weights(out)
    assert w and all("lora_" in k for k in w)
    base = load_model(str(tiny))
    tuned = load_model(str(tiny), adapter=out)
    ids = torch.tensor([base.encode_prompt(base.format_prompt(ROWS[0]["instruction"]))])
    with torch.no_grad():
        assert not torch.allclose(tuned.model(ids).logits, base.model(ids).logits, atol=1e-4)
        with tuned.model.disable_adapter():
            assert torch.allclose(tuned.model(ids).logits, base.model(ids).logits, atol=1e-6)
    with pytest.raises(ItauditError, match="LoRA targets"):
        tune(toy, _cfg(tiny, tmp_path / "bad", method="lora", lora_targets=("nope_proj",)), show_progress=False)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_resume_gives_the_same_weights_as_uninterrupted(tiny: Path, toy, tmp_path: Path, method: str) -> None:
    kw = dict(method=method, rows=6, epochs=2, save_every=2, grad_accum=2, batch_size=1, warmup=0.2)
    a = tune(toy, _cfg(tiny, tmp_path / "a", **kw), show_progress=False)
    b = tune(toy, _cfg(tiny, tmp_path / "b", stop_after=3, **kw), show_progress=False)
    assert b.status == "stopped" and b.steps_done == 3 and a.steps == 6
    assert (tmp_path / "b" / "checkpoints" / "step-000003").is_dir()
    assert not (tmp_path / "b" / "itaudit_tune.json").exists()
    with pytest.raises(ItauditError, match="--resume"):
        tune(toy, _cfg(tiny, tmp_path / "b", **kw), show_progress=False)
    with pytest.raises(ItauditError, match="other settings"):
        tune(toy, _cfg(tiny, tmp_path / "b", resume=True, **{**kw, "epochs": 3}), show_progress=False)
    c = tune(toy, _cfg(tiny, tmp_path / "b", resume=True, **kw), show_progress=False)
    assert c.status == "done" and c.run_id == b.run_id and c.losses == a.losses
    wa, wc = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wc.keys() and all(torch.equal(wa[k], wc[k]) for k in wa)
    runs = toy.query("SELECT run_id, status, steps_done FROM tune_runs ORDER BY run_id")
    assert runs.height == 2 and set(runs["status"]) == {"done"}


def test_same_seed_same_weights_other_seed_differs(tiny: Path, toy, tmp_path: Path) -> None:
    a = tune(toy, _cfg(tiny, tmp_path / "a", epochs=1), show_progress=False)
    b = tune(toy, _cfg(tiny, tmp_path / "b", epochs=1), show_progress=False)
    c = tune(toy, _cfg(tiny, tmp_path / "c", epochs=1, seed=7), show_progress=False)
    wa, wb, wc = (_weights(tmp_path / x) for x in "abc")
    assert a.losses == b.losses and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert c.losses != a.losses and any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_where_selects_rows(toy) -> None:
    assert select_instances(toy, "toy", "idx % 2 = 0")["idx"].to_list() == [0, 2, 4, 6]
    assert select_instances(toy, "toy", "i.input <> ''")["idx"].to_list() == [3]
    assert select_instances(toy, "toy", "response ILIKE '%fox%'", rows=3)["idx"].to_list() == [7]
    assert select_instances(toy, "toy", None, rows=3)["idx"].to_list() == [0, 1, 2]
    flag = np.zeros(len(ROWS), dtype=bool)
    flag[[1, 5]] = True
    save_result(toy, CheckResult("near_duplicates", "toy", np.arange(len(ROWS), dtype=np.int64), flag,
                                 flag.astype(float)))
    pred = ("idx NOT IN (SELECT idx FROM check_results WHERE dataset = 'toy'"
            " AND check_name = 'near_duplicates' AND flag)")
    assert select_instances(toy, "toy", pred)["idx"].to_list() == [0, 2, 3, 4, 6, 7]
    with pytest.raises(ItauditError, match="not valid SQL"):
        select_instances(toy, "toy", "true; DROP TABLE instances")
    with pytest.raises(ItauditError, match="single predicate"):
        select_instances(toy, "toy", "true); DROP TABLE instances; SELECT (1")
    with pytest.raises(ItauditError, match="failed"):
        select_instances(toy, "toy", "no_such_column > 1")
    assert toy.query("SELECT count(*) AS n FROM instances")["n"][0] == len(ROWS)
    assert rows_sha([0, 2]) != rows_sha([0, 3])


def test_cli_tune_with_where(tiny: Path, toy, db_path: Path, tmp_path: Path) -> None:
    from itaudit.cli import main

    toy.close()
    out = tmp_path / "cli_lora"
    main(["tune", "--base", str(tiny), "--dataset", "toy", "--method", "lora", "--where", "idx < 4",
          "--epochs", "2", "--lr", "1e-2", "--max-len", "48", "--batch-size", "2", "--out", str(out),
          "--db", str(db_path), "--quiet", "--run-id", "cli-run"])
    assert (out / "adapter_config.json").exists()
    from itaudit.store import Store

    with Store(db_path) as s:
        r = s.query("SELECT * FROM tune_runs WHERE run_id = 'cli-run'").row(0, named=True)
    assert r["n_rows"] == 4 and r["steps"] == 4 and r["where_sql"] == "idx < 4" and r["method"] == "lora"
    assert json.loads(r["hyperparams"])["lora_r"] == 8 and r["status"] == "done"
    with pytest.raises(SystemExit) as e:
        main(["tune", "--base", str(tiny), "--dataset", "toy", "--where", "idx > 99", "--out",
              str(tmp_path / "none"), "--db", str(db_path), "--quiet"])
    assert e.value.code == 2


def test_ctrl_c_checkpoints_the_last_finished_step(tiny: Path, toy, tmp_path: Path, monkeypatch) -> None:
    import itaudit.tune.train as train

    kw = dict(rows=6, epochs=2, batch_size=2, warmup=0.0)
    a = tune(toy, _cfg(tiny, tmp_path / "a", **kw), show_progress=False)
    real, calls = train.step_loss_sum, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "step_loss_sum", flaky)
    with pytest.raises(KeyboardInterrupt):
        tune(toy, _cfg(tiny, tmp_path / "b", **kw), show_progress=False)
    assert (tmp_path / "b" / "checkpoints" / "step-000003").is_dir()
    assert toy.query("SELECT status, steps_done FROM tune_runs WHERE status = 'stopped'").rows() == [("stopped", 3)]
    monkeypatch.setattr(train, "step_loss_sum", real)
    c = tune(toy, _cfg(tiny, tmp_path / "b", resume=True, **kw), show_progress=False)
    assert c.losses == a.losses
    wa, wc = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wc[k]) for k in wa)


def test_train_is_pure_and_tune_frees_the_database_while_training(tiny: Path, toy, tmp_path: Path, monkeypatch) -> None:
    import subprocess
    import sys

    import itaudit.tune.train as tt

    rows: list[dict] = []
    res = tt.train(_cfg(tiny, tmp_path / "p", epochs=1), select_instances(toy, "toy"), record=rows.append,
                   show_progress=False)
    assert [r["status"] for r in rows] == ["running", "done"]
    assert rows[-1]["steps_done"] == res.steps and json.loads(rows[-1]["losses"]) == res.losses
    assert toy.query("SELECT count(*) AS n FROM tune_runs WHERE run_id = ?", [res.run_id])["n"][0] == 0

    codes: list[int] = []
    real = tt.save_run

    def probing(store, row):
        real(store, row)
        if row["status"] == "running":   # training is about to start: another process can write
            probe = f"import duckdb; c = duckdb.connect({str(store.path)!r}); c.execute('CREATE TABLE probe (x INT)')"
            codes.append(subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120).returncode)
    monkeypatch.setattr(tt, "save_run", probing)
    res = tt.tune(toy, _cfg(tiny, tmp_path / "q", epochs=1), show_progress=False)
    assert codes == [0]
    assert toy.query("SELECT status FROM tune_runs WHERE run_id = ?", [res.run_id])["status"].to_list() == ["done"]
