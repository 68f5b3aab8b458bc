"""The Python API: in-memory ingest, filter to a datasets.Dataset, report frame, and the example
script driving the whole pipeline (ingest -> index -> audit -> generate -> shift -> tune -> trace
with a control -> filter -> report -> query) on tiny real models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pandas as pd
import polars as pl
import pytest

import itaudit
from itaudit.errors import InputError, ItauditError

ROOT = Path(__file__).resolve().parent.parent
ROWS = [
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris is the capital of France."},
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris is the capital of France."},
    {"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5."},
    {"instruction": "Write a haiku about rain.", "input": "", "output": "Soft rain on the roof / drums a slow grey song / "
                                                                         "the garden drinks deep"},
]


@pytest.mark.parametrize("kind", ["list", "polars", "pandas", "datasets"])
def test_ingest_in_memory(tmp_path, kind):
    data = {"list": ROWS, "polars": pl.DataFrame(ROWS), "pandas": pd.DataFrame(ROWS),
            "datasets": datasets.Dataset.from_list(ROWS)}[kind]
    with itaudit.open(tmp_path / "m.duckdb") as ws:
        r = ws.ingest(data, "mem")
        assert (r.format, r.n_rows, r.unchanged) == ("alpaca", 4, False)
        assert ws.instances("mem")["response"].to_list() == [x["output"] for x in ROWS]
        assert ws.ingest(data, "mem").unchanged      # same content: nothing to do
        src = ws.datasets().filter(pl.col("name") == "mem")["source_path"][0]
        assert Path(src).parent == tmp_path / "m.duckdb.inputs" and Path(src).is_file()


def test_ingest_in_memory_errors_name_the_row(tmp_path):
    bad = [dict(ROWS[0]), {"instruction": "Say hi.", "input": "", "output": ""}]
    with itaudit.open(tmp_path / "e.duckdb") as ws:
        with pytest.raises(InputError, match=r"line 2.*empty"):
            ws.ingest(bad, "bad")
        assert ws.ingest(bad, "bad", skip_invalid=True).n_rejected == 1
        with pytest.raises(ItauditError, match="cannot read int"):
            ws.ingest(42, "nope")
        with pytest.raises(ItauditError, match="cannot read list"):
            ws.ingest([1, 2], "nope")


def test_filter_as_dataset_and_report_frame(tmp_path):
    with itaudit.open(tmp_path / "f.duckdb", index_dir=tmp_path / "idx") as ws:
        ws.ingest(ROWS, "d")
        checks = ws.audit("d", ["exact_duplicates", "style"])
        assert set(checks["check_name"]) == {"exact_duplicates", "style"}
        ds = ws.filter("d", policy="default", as_dataset=True)
        assert isinstance(ds, datasets.Dataset) and ds.num_rows == 3          # one of the duplicate pair dropped
        assert ds["output"] == [ROWS[0]["output"], ROWS[2]["output"], ROWS[3]["output"]]
        kept = ws.filter("d", where=["response LIKE '%rain%' OR response LIKE '%5%'"], as_dataset=True, normalized=True)
        assert kept["instruction"] == ["Add 2 and 3.", "Write a haiku about rain."] and "instance_id" in kept.column_names
        res = ws.filter("d", tmp_path / "out.jsonl", drop=["idx = 0"])
        assert res.n_kept == 3 and [json.loads(x)["output"] for x in res.out.read_text().splitlines()][0] == ROWS[1]["output"]
        with pytest.raises(ItauditError, match="allow-files"):
            ws.filter("d", where=[f"idx IN (SELECT 1 FROM read_csv('{tmp_path / 'x.csv'}'))"], as_dataset=True)
        with pytest.raises(ItauditError, match="out=PATH"):
            ws.filter("d")
        frame = ws.report("d", html=tmp_path / "r.html")
        assert frame.columns == ["check", "scored", "flagged", "share", "finding"]
        dup = frame.row(frame["check"].to_list().index("exact_duplicates"), named=True)
        assert (dup["scored"], dup["flagged"], dup["share"]) == (4, 1, 0.25)   # the second copy
        assert 'id="check-exact_duplicates"' in (tmp_path / "r.html").read_text()
        assert ws.query(report="datasets")["name"].to_list() == ["d"]
        with pytest.raises(ItauditError, match="either SQL or report"):
            ws.query()


def test_api_walkthrough_example_runs(tmp_path):
    """examples/api_walkthrough.py end to end on tiny real models (seeded random Llamas)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tinymodels import tiny_causal_lm

    base = tiny_causal_lm(tmp_path / "base", seed=0)
    tuned = tiny_causal_lm(tmp_path / "tuned", seed=1)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ITAUDIT_TORCH_THREADS="1")
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "api_walkthrough.py"), "--base", str(base),
                        "--tuned", str(tuned), "--out", str(tmp_path / "walk"), "--max-new-tokens", "12"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = json.loads((tmp_path / "walk" / "summary.json").read_text())
    assert summary["ingested"] == {"alpaca": 16, "eval": 3}
    assert summary["checks"] >= 4 and summary["flagged"]["exact_duplicates"] == 1
    assert summary["generations"] == 3 and summary["shift_tokens"] > 0
    assert summary["tune_steps"] >= 1 and summary["trace_responses"] == 3 and summary["control"] is not None
    assert 0 < summary["kept"] < 16 and summary["report_sections"] >= 5
    html = (tmp_path / "walk" / "report.html").read_text()
    assert 'id="traced"' in html and 'id="check-contamination"' in html
