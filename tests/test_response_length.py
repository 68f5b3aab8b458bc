"""The example check added through the public registration API (one module + this file)."""

from __future__ import annotations

import json
from importlib.metadata import entry_points

import pytest

from itaudit.audit.runner import resolve, run_checks
from itaudit.ingest import ingest

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


@pytest.fixture
def ds(store, tmp_path):
    rows = [{"instruction": f"Question {i}?", "input": "",
             "output": " ".join(WORDS[(i + k) % len(WORDS)] for k in range(8 + i % 5))} for i in range(30)]
    rows.append({"instruction": "Tell me everything.", "input": "", "output": "word " * 3000})  # idx 30: long
    rows.append({"instruction": "Yes or no?", "input": "", "output": "y"})                      # idx 31: short
    p = tmp_path / "d.json"
    p.write_text(json.dumps(rows))
    ingest(store, p, "d", show_progress=False)
    return "d"


def test_found_through_the_entry_point_and_ordered_before_risk():
    eps = {e.name: e.value for e in entry_points(group="itaudit.checks")}
    assert eps["response_length_outliers"] == "itaudit.audit.response_length:ResponseLengthOutliers"
    assert [c.name for c in resolve(["risk", "response_length_outliers"])] == ["response_length_outliers", "risk"]
    assert "response_length_outliers" not in [c.name for c in resolve(None)]  # not a default check


def test_flags_the_far_too_long_and_short_responses(store, ds):
    outs = run_checks(store, ds, ["response_length_outliers", "risk"], show_progress=False)
    r = outs[0].result
    assert r.idx[r.flag].tolist() == [30, 31]
    assert r.summary["n_long"] == 1 and r.summary["n_short"] == 1 and r.summary["n_flagged"] == 2
    assert r.details[30]["n_chars"] == len("word " * 3000) and r.details[30]["z"] > 3.5 > -3.5 > r.details[31]["z"]
    assert (r.score[r.flag] >= 0.5).all() and (r.score[~r.flag] < 0.5).all()
    assert outs[0].render_text() == [f"1 short, 1 long (median {r.summary['median_chars']:,.0f} chars)"]
    risk = outs[1].result
    assert "response_length_outliers" in risk.summary["checks"]
    assert risk.score[30] == pytest.approx(0.3) and risk.score[0] < 0.1  # weight 0.3 x score (1 when far out)


def test_threshold_is_a_typed_parameter(store, ds):
    r = run_checks(store, ds, ["response_length_outliers"], show_progress=False,
                   params={"response_length_outliers": {"z_threshold": "100"}})[0].result
    assert not r.flag.any() and r.params["z_threshold"] == 100.0
