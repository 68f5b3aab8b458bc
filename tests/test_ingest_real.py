"""Ingest of the real datasets in ../shared/data (skipped when the folder is absent)."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest

from itaudit.cli import main
from itaudit.errors import InputError
from itaudit.ingest import ingest
from itaudit.store import Store


def test_alpaca_5000_strict_fails_on_empty_output(store, shared_data: Path):
    path = shared_data / "alpaca" / "alpaca_5000.json"
    with pytest.raises(InputError) as e:
        ingest(store, path, "alpaca", show_progress=False)
    # elements 2336 and 4659 (1-based) have output == ""
    assert e.value.location.startswith("element 2336 ") and e.value.field == "output"
    assert e.value.reason == "empty response"
    assert store.dataset_info("alpaca") is None


def test_alpaca_5000_skip_invalid(store, shared_data: Path):
    path = shared_data / "alpaca" / "alpaca_5000.json"
    r = ingest(store, path, "alpaca", skip_invalid=True, show_progress=False)
    assert (r.format, r.n_source, r.n_rows, r.n_rejected) == ("alpaca", 5000, 4998, 2)
    rej = store.query("SELECT location, field, reason, raw FROM rejected_rows ORDER BY location").to_dicts()
    assert [x["location"].split(" (")[0] for x in rej] == ["element 2336", "element 4659"]
    assert {x["field"] for x in rej} == {"output"} and json.loads(rej[0]["raw"])["output"] == ""
    src = json.loads(path.read_text())
    got = store.instances("alpaca", "source_row, instruction, input, response")
    assert 2335 not in got["source_row"].to_list() and got["source_row"][-1] == 4999
    first = got.row(0, named=True)
    assert first["instruction"] == src[0]["instruction"] and first["response"] == src[0]["output"]
    assert got["input"].null_count() == sum(1 for x in src if not x["input"] and x["output"].strip())
    assert ingest(store, path, "alpaca", skip_invalid=True, show_progress=False).unchanged


def test_lima_train(store, shared_data: Path):
    r = ingest(store, shared_data / "lima_train" / "lima.json", "lima", show_progress=False)
    assert (r.format, r.n_source, r.n_rows, r.n_rejected) == ("alpaca", 1029, 1029, 0)
    df = store.instances("lima", "turn, history, response")
    with_hist = df.filter(df["history"].is_not_null())
    assert with_hist.height == 29 and (with_hist["turn"] >= 1).all()  # LIMA's multi-turn rows
    assert df["response"].str.len_chars().mean() > 1500  # long curated answers


def test_sharegpt_prefix_skip_invalid_sample(store, shared_data: Path, tmp_path: Path):
    """The first 2,000 conversations (the whole file is in the slow test below)."""
    sample = tmp_path / "sharegpt_2000.jsonl"
    with (shared_data / "sharegpt" / "sharegpt_v3_prefix.jsonl").open("rb") as f:
        sample.write_bytes(b"".join(islice(f, 2000)))
    r = ingest(store, sample, "sg", skip_invalid=True, show_progress=False)
    assert r.format == "sharegpt" and r.n_source == 2000
    assert r.n_rows > 1.5 * (r.n_source - r.n_rejected)  # multi-turn: several instances per record
    assert r.n_rejected < 0.05 * r.n_source
    reasons = set(store.query("SELECT DISTINCT reason FROM rejected_rows")["reason"].to_list())
    assert reasons <= {"conversation has no assistant turn", "no assistant turn follows a user turn", "empty response"}
    df = store.instances("sg", "turn, history, instruction, response")
    assert df.filter(df["turn"] > 0)["history"].null_count() == 0  # later turns carry their context
    assert df["turn"].max() >= 5


@pytest.mark.slow
def test_sharegpt_prefix_whole_file(store, shared_data: Path):
    r = ingest(store, shared_data / "sharegpt" / "sharegpt_v3_prefix.jsonl", "sg", skip_invalid=True,
               show_progress=False)
    assert (r.n_source, r.n_rows, r.n_rejected) == (17671, 61208, 281)
    n = store.query("SELECT reason, count(*) AS n FROM rejected_rows GROUP BY 1").rows()
    assert dict(n)["conversation has no assistant turn"] == 143  # 126 empty + 17 human-only


def test_truthfulqa_csv(store, shared_data: Path):
    r = ingest(store, shared_data / "truthfulqa" / "TruthfulQA.csv", "tqa", show_progress=False)
    assert (r.format, r.n_rows) == ("qa", 817)
    df = store.instances("tqa", "instruction, response, category, source")
    assert df["category"].null_count() == 0 and df["category"].n_unique() > 30
    assert df.row(0) == ("What happens to you if you eat watermelon seeds?",
                         "The watermelon seeds pass through your digestive system", "Misconceptions",
                         "https://wonderopolis.org/wonder/will-a-watermelon-grow-in-your-belly-if-you-swallow-a-seed")


def test_mt_bench_prompts(store, shared_data: Path):
    r = ingest(store, shared_data / "mt_bench" / "question.jsonl", "mt", show_progress=False)
    assert (r.format, r.n_source, r.n_rows) == ("prompts", 80, 160)
    df = store.instances("mt", "turn, category, response, history")
    assert df["category"].n_unique() == 8 and (df["response"] == "").all()
    assert df.filter(df["turn"] == 1)["history"].null_count() == 0


def test_gsm8k_qa(store, shared_data: Path):
    r = ingest(store, shared_data / "gsm8k" / "test.jsonl", "gsm", show_progress=False)
    assert (r.format, r.n_rows) == ("qa", 1319)
    assert store.instances("gsm", "response")["response"].str.contains(r"#### -?[\d,.]+$").all()


def test_mmlu_stray_header_rows(db_path: Path, shared_data: Path, capsys):
    path = shared_data / "mmlu" / "mmlu.jsonl"
    with pytest.raises(SystemExit) as e:
        main(["ingest", str(path), "--name", "mmlu", "--db", str(db_path)])
    assert e.value.code == 2
    err = "".join(capsys.readouterr().err.split())
    assert "line11777:field'correct_answer':expectedaletterA-D,got'answer'" in err
    main(["ingest", str(path), "--name", "mmlu", "--db", str(db_path), "--skip-invalid"])
    with Store(db_path) as s:
        info = s.dataset_info("mmlu")
        assert (info["format"], info["n_source"], info["n_rows"], info["n_rejected"]) == ("qa", 14044, 14042, 2)
        locs = s.query("SELECT location FROM rejected_rows ORDER BY location")["location"].to_list()
        assert locs == ["line 11777", "line 12794"]
        row = s.instances("mmlu").row(0, named=True)
        assert row["input"].startswith("A. Wrong, Wrong\nB. ") and row["response"] == "Not wrong, Not wrong"  # 'D'
        assert row["category"] == "moral scenarios"
