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
    r = risk_check(ds, "d", weights={"contamination": 1.0, "style": 0.2, "novelty": 0.5})
    expect = 1 - np.array([(1 - 1.0) * (1 - 0) * 1, 1 * (1 - 0.2) * 1, 1 * (1 - 0.1) * (1 - 0.45),
                           (1 - 0.5) * (1 - 0.1) * 1])
    assert np.allclose(r.score, expect)
    assert r.flag.tolist() == [True, False, True, True]   # 1.0, 0.2, 0.505, 0.55 vs threshold 0.5
    assert r.details[0]["top"] == "contamination"
    assert r.summary["checks"]["novelty"]["rows_scored"] == 1
    save_result(ds, r)
    # risk never feeds on itself, and the latest run of a check wins
    _save(ds, "contamination", [0.0, 0.0, 0.0, 0.0])
    r2 = risk_check(ds, "d", weights="contamination=1,style=0.2,novelty=0")
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


def test_weights_are_measured_precisions_and_unmeasured_checks_are_listed(ds):
    from itaudit.audit.risk import DEFAULT_OTHER, DEFAULT_WEIGHTS, MEASURED

    for check, m in MEASURED.items():   # every default weight is a smoothed share of judged-right flags
        assert 0 <= m["right"] <= m["judged"] and m["source"]
        assert DEFAULT_WEIGHTS[check] == pytest.approx((m["right"] + 1) / (m["judged"] + 2), abs=1e-3)
    _save(ds, "verifier", [1.0, 0.0, 0.0, 0.0])
    _save(ds, "some_new_check", [0.0, 1.0, 0.0, 0.0])
    r = risk_check(ds, "d")
    assert r.score[0] == pytest.approx(DEFAULT_WEIGHTS["verifier"]) and r.score[1] == pytest.approx(DEFAULT_OTHER)
    assert r.summary["unmeasured"] == ["some_new_check"]
    assert r.summary["checks"]["verifier"]["weight_source"] == "measured"


def test_top_of_ranking_not_dominated_by_a_noisy_check(store, tmp_path):
    """A low-precision check flagging many rows at full score stays below the precise checks' flags."""
    from itaudit.audit.risk import DEFAULT_WEIGHTS, Risk

    n = 60
    p = tmp_path / "n.jsonl"
    p.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(n)))
    ingest(store, p, "n", show_progress=False)
    noisy = min(DEFAULT_WEIGHTS, key=DEFAULT_WEIGHTS.get)
    precise = sorted((c for c in DEFAULT_WEIGHTS if c != noisy), key=DEFAULT_WEIGHTS.get)[-2:]
    s_noisy = np.zeros(n)
    s_noisy[:40] = 1.0                       # the noisy check flags two thirds of the rows, all at score 1
    save_result(store, CheckResult(noisy, "n", np.arange(n), s_noisy > 0.5, s_noisy))
    for k, c in enumerate(precise):          # each precise check flags 5 rows at a middling score
        s = np.zeros(n)
        s[40 + 5 * k:45 + 5 * k] = 0.7
        save_result(store, CheckResult(c, "n", np.arange(n), s > 0.5, s))

    class Ctx:
        dataset = "n"

        def read(self, sql, params=None):
            return store.query(sql, params)

    r = Risk({"top": 10}).compute(Ctx())
    top = np.argsort(-r.score, kind="stable")[:10]
    assert set(top.tolist()) == set(range(40, 50))
    assert r.summary["top_by_check"] == {precise[0]: 5, precise[1]: 5}
    assert f"top 10: {precise[0]} 5, {precise[1]} 5" in Risk().render_text(r)[0] or \
        f"top 10: {precise[1]} 5, {precise[0]} 5" in Risk().render_text(r)[0]
