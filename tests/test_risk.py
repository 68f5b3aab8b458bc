"""The risk score: a weighted noisy-OR over the latest runs of the other checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from itaudit.audit import CheckResult, save_result
from itaudit.audit.risk import load_weights, risk_check
from itaudit.errors import InputError
from itaudit.ingest import ingest


@pytest.fixture
def ds(store, tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(4)))
    ingest(store, p, "d", show_progress=False)
    return store


def _save(store, check, scores, idx=None):
    idx = np.arange(len(scores)) if idx is None else np.asarray(idx)
    s = np.asarray(scores, dtype=float)
    save_result(store, CheckResult(check, "d", idx, s > 0.5, s))


def test_formula_weights_and_missing_rows(ds):
    _save(ds, "contamination", [1.0, 0.0, 0.0, 0.5])
    _save(ds, "style", [0.0, 1.0, 0.5, 0.5])
    _save(ds, "novelty", [0.9], idx=[2])          # scored on a sample: rows 0, 1, 3 missing
    r = risk_check(ds, "d", weights={"style": 0.2, "novelty": 0.5})
    expect = 1 - np.array([(1 - 1.0) * (1 - 0) * 1, 1 * (1 - 0.2) * 1, 1 * (1 - 0.1) * (1 - 0.45),
                           (1 - 0.5) * (1 - 0.1) * 1])
    assert np.allclose(r.score, expect)
    assert r.flag.tolist() == [True, False, True, True]   # 1.0, 0.2, 0.505, 0.55 vs threshold 0.5
    assert r.details[0]["top"] == "contamination"
    assert r.summary["checks"]["novelty"]["rows_scored"] == 1
    save_result(ds, r)
    # risk never feeds on itself, and the latest run of a check wins
    _save(ds, "contamination", [0.0, 0.0, 0.0, 0.0])
    r2 = risk_check(ds, "d", weights="style=0.2,novelty=0")
    assert "risk" not in r2.summary["checks"] and "novelty" not in r2.summary["checks"]
    assert np.allclose(r2.score, [0, 0.2, 0.1, 0.1])


def test_weights_files(tmp_path, ds):
    j = tmp_path / "w.json"
    j.write_text(json.dumps({"weights": {"style": 0.25}}))
    t = tmp_path / "w.toml"
    t.write_text("[weights]\nstyle = 0.75\n")
    assert load_weights(j) == {"style": 0.25} and load_weights(t) == {"style": 0.75}
    _save(ds, "style", [1.0, 0.0, 0.0, 0.0])
    assert risk_check(ds, "d", weights_file=t).score[0] == pytest.approx(0.75)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"style": 2}))
    with pytest.raises(InputError, match="weights.style"):
        load_weights(bad)
