"""`itaudit filter`: policies over audit tables, exports that re-ingest, manifests, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from itaudit.audit import CheckResult, save_result
from itaudit.cli import main as cli
from itaudit.errors import InputError, ItauditError
from itaudit.filter import Policy, filter_dataset, load_policy, parse_policy
from itaudit.ingest import ingest


def _write(tmp_path, name, rows):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.fixture
def alpaca(store, tmp_path):
    rows = [{"instruction": f"Question {i}?", "input": "ctx" if i % 3 == 0 else "", "output": f"Answer {i}."}
            for i in range(8)]
    ingest(store, _write(tmp_path, "a.jsonl", rows), "a", show_progress=False)
    idx = np.arange(8)
    # contamination flags 1; near-dup clusters {2, 3, 4} and {5, 6}; risk scores
    save_result(store, CheckResult("contamination", "a", idx, idx == 1, (idx == 1).astype(float)))
    cl = np.array([-1, -1, 7, 7, 7, 9, 9, -1])
    save_result(store, CheckResult("near_duplicates", "a", idx, cl >= 0, (cl >= 0) * 0.9, cluster_id=cl))
    risk = np.array([0.1, 1.0, 0.6, 0.2, 0.4, 0.3, 0.3, 0.9])
    save_result(store, CheckResult("risk", "a", idx, risk > 0.8, risk))
    return store


POLICY = {"name": "p", "rules": [
    {"name": "contaminated", "drop_flagged": "contamination"},
    {"name": "dup", "dedupe": "near_duplicates"},
    {"name": "risky", "max_score": {"risk": 0.8}},
]}


def test_policy_reasons_dedupe_and_manifest(alpaca, tmp_path):
    out = tmp_path / "out" / "kept.jsonl"
    r = filter_dataset(alpaca, "a", parse_policy(POLICY), out)
    m = r.manifest
    reasons = {d["idx"]: d["reason"] for d in m["dropped"]}
    # cluster 7 keeps its lowest-risk member (3), cluster 9 the lowest idx on a tie (5)
    assert reasons == {1: "contaminated", 2: "dup", 4: "dup", 6: "dup", 7: "risky"}
    assert m["counts"]["instances_kept"] == 3 and m["counts"]["records_written"] == 3
    assert m["counts"]["dropped_by_rule"] == {"dup": 3, "contaminated": 1, "risky": 1}
    info = alpaca.dataset_info("a")
    assert m["source"]["fingerprint"] == info["fingerprint"] and m["policy"]["rules"][1] == {"name": "dup", "dedupe": "near_duplicates"}
    assert set(m["checks"]) == {"contamination", "near_duplicates", "risk"}
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["instruction"] for x in lines] == ["Question 0?", "Question 3?", "Question 5?"]
    assert lines[0] == {"instruction": "Question 0?", "input": "ctx", "output": "Answer 0."}   # original record
    assert json.loads(r.manifest_path.read_text())["manifest_id"] == m["manifest_id"]
    row = alpaca.query("SELECT n_kept, n_dropped, source_fingerprint FROM filter_manifests").row(0)
    assert row == (3, 5, info["fingerprint"])
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]
    # the export re-ingests cleanly
    rep = ingest(alpaca, out, "kept", show_progress=False)
    assert rep.n_rows == 3 and rep.format == "alpaca"


def test_where_predicates_and_errors(alpaca, tmp_path):
    pol = parse_policy({"rules": [{"keep_where": "risk_score < 0.5 AND NOT contamination_flag"},
                                  {"drop_where": "instruction LIKE '%5%'"}]})
    r = filter_dataset(alpaca, "a", pol, tmp_path / "w.jsonl")
    assert sorted(set(range(8)) - {d["idx"] for d in r.manifest["dropped"]}) == [0, 3, 4, 6]
    with pytest.raises(ItauditError, match="cannot evaluate"):
        filter_dataset(alpaca, "a", parse_policy({"rules": [{"drop_where": "no_such_col > 1"}]}), tmp_path / "x.jsonl")
    with pytest.raises(ItauditError, match="needs check 'conflicts'"):
        filter_dataset(alpaca, "a", parse_policy({"rules": [{"drop_flagged": "conflicts"}]}), tmp_path / "x.jsonl")
    with pytest.raises(InputError, match="';'"):
        parse_policy({"rules": [{"drop_where": "1=1; DROP TABLE instances"}]})
    with pytest.raises(InputError, match="exactly one"):
        parse_policy({"rules": [{"drop_where": "x", "keep_where": "y"}]})
    assert not (tmp_path / "x.jsonl").exists()
    assert alpaca.query("SELECT count(*) AS n FROM instances")["n"][0] == 8
    with pytest.raises(ItauditError, match="refusing to overwrite the source"):
        filter_dataset(alpaca, "a", Policy(), tmp_path / "a.jsonl")


def test_policy_files(tmp_path):
    j = tmp_path / "p.json"
    j.write_text(json.dumps(POLICY))
    t = tmp_path / "p.toml"
    t.write_text('name = "t"\nmulti_turn = "any"\n[[rules]]\nname = "c"\ndrop_flagged = ["contamination"]\n'
                 '[[rules]]\nmax_score = { risk = 0.5 }\n')
    rules = load_policy(j).as_dict()["rules"]
    assert rules[0] == {"name": "contaminated", "drop_flagged": ["contamination"]} and rules[1:] == POLICY["rules"][1:]
    pt = load_policy(t)
    assert pt.multi_turn == "any" and [r.kind for r in pt.rules] == ["drop_flagged", "max_score"]
    bad = tmp_path / "b.toml"
    bad.write_text("rules = [")
    with pytest.raises(InputError, match="cannot parse"):
        load_policy(bad)


@pytest.fixture
def chats(store, tmp_path):
    def conv(i, turns):
        msgs = []
        for t in range(turns):
            msgs += [{"from": "human", "value": f"c{i} q{t}"}, {"from": "gpt", "value": f"c{i} a{t}"}]
        return {"id": f"c{i}", "conversations": msgs}
    ingest(store, _write(tmp_path, "s.jsonl", [conv(0, 2), conv(1, 3), conv(2, 1)]), "s", show_progress=False)
    # instances: c0 -> idx 0,1; c1 -> 2,3,4; c2 -> 5. Flag one turn of c1.
    idx = np.arange(6)
    save_result(store, CheckResult("style", "s", idx, idx == 3, (idx == 3).astype(float)))
    return store


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_multi_turn_records_and_formats_reingest(chats, tmp_path, fmt):
    out = tmp_path / ("whole." + fmt if fmt != "hf" else "whole_hf")
    pol = parse_policy({"rules": [{"name": "styled", "drop_flagged": "style"}]})
    r = filter_dataset(chats, "s", pol, out, fmt)
    reasons = {d["idx"]: d["reason"] for d in r.manifest["dropped"]}
    assert reasons == {2: "same record as a dropped turn (styled)", 3: "styled", 4: "same record as a dropped turn (styled)"}
    assert r.manifest["counts"]["records_written"] == 2
    rep = ingest(chats, out, f"re_{fmt}", "sharegpt", show_progress=False)
    assert rep.n_source == 2 and rep.n_rows == 3
    same = chats.query("SELECT count(*) AS n FROM instances a JOIN instances b USING (content_hash) "
                       f"WHERE a.dataset = 's' AND b.dataset = 're_{fmt}'")["n"][0]
    assert same == 3                                     # identical instances after the round trip
    # multi_turn = any: the record is kept whole through its kept turns
    pol.multi_turn = "any"
    r2 = filter_dataset(chats, "s", pol, tmp_path / f"any.{fmt}" if fmt != "hf" else tmp_path / "any_hf", fmt)
    assert r2.manifest["counts"]["records_written"] == 3 and r2.manifest["counts"]["instances_dropped"] == 0


def test_normalized_export_reingests(chats, tmp_path):
    out = tmp_path / "norm.jsonl"
    r = filter_dataset(chats, "s", parse_policy({"rules": [{"drop_flagged": "style"}]}), out, normalized=True)
    assert r.manifest["counts"]["instances_kept"] == 5 and r.manifest["output"]["reingest_format"] == "alpaca"
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert recs[3]["history"] == [["c1 q0", "c1 a0"], ["c1 q1", "c1 a1"]] and recs[3]["instruction"] == "c1 q2"
    rep = ingest(chats, out, "norm", show_progress=False)
    assert rep.n_rows == 5
    # the normalized fields survive the round trip (history, instruction, response)
    a = chats.query("SELECT instruction, response, history FROM instances WHERE dataset = 's' AND idx = 4").row(0)
    b = chats.query("SELECT instruction, response, history FROM instances WHERE dataset = 'norm' AND idx = 3").row(0)
    assert a == b


def test_atomic_export_keeps_old_output_on_failure(chats, tmp_path, monkeypatch):
    out = tmp_path / "x.parquet"
    out.write_bytes(b"old")

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr("pyarrow.parquet.write_table", boom)
    with pytest.raises(RuntimeError):
        filter_dataset(chats, "s", Policy(), out, "parquet")
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
    with pytest.raises(ItauditError, match="unknown export format 'csv'; choose one of jsonl, parquet, hf"):
        filter_dataset(chats, "s", Policy(), tmp_path / "x.csv", "csv")
    assert not (tmp_path / "x.csv").exists()


def test_cli(alpaca, db_path, tmp_path):
    alpaca.close()
    out = tmp_path / "c.jsonl"
    cli(["filter", "a", "--db", str(db_path), "--out", str(out), "--drop", "contamination_flag",
         "--where", "risk_score < 0.95"])
    m = json.loads((tmp_path / "c.jsonl.manifest.json").read_text())
    assert m["counts"]["instances_kept"] == 7 and m["dropped"][0]["reason"] == "where[0] risk_score < 0.95"
    with pytest.raises(SystemExit) as e:
        cli(["filter", "a", "--db", str(db_path), "--out", str(out), "--drop", "bogus_flag"])
    assert e.value.code == 2


def test_builtin_default_policy_skips_checks_that_did_not_run(alpaca, tmp_path):
    pol = load_policy("default")
    r = filter_dataset(alpaca, "a", pol, tmp_path / "d.jsonl")
    assert r.manifest["skipped_rules"] == ["exact duplicate"]
    assert r.manifest["counts"]["dropped_by_rule"] == {"near duplicate": 3, "contaminated": 1, "risk > 0.7": 1}
    strict = parse_policy({"rules": [{"dedupe": "exact_duplicates"}]})
    with pytest.raises(ItauditError, match="exact_duplicates"):
        filter_dataset(alpaca, "a", strict, tmp_path / "e.jsonl")


@pytest.mark.parametrize("fmt", ["parquet", "hf"])
def test_columnar_exports_keep_fields_the_first_record_lacks(store, tmp_path, fmt):
    rows = [{"instruction": "first", "output": "no history here"},
            {"instruction": "second", "output": "a2", "history": [["q1", "a1"]], "system": "be brief"}]
    ingest(store, _write(tmp_path, "h.jsonl", rows), "h", show_progress=False)
    for normalized in (False, True):
        out = tmp_path / (f"h_{normalized}.parquet" if fmt == "parquet" else f"h_{normalized}_hf")
        filter_dataset(store, "h", Policy(), out, fmt, normalized=normalized)
        ingest(store, out, f"h_{normalized}_{fmt}", show_progress=False)
        same = store.query("SELECT count(*) AS n FROM instances a JOIN instances b USING (content_hash) "
                           "WHERE a.dataset = 'h' AND b.dataset = ?", [f"h_{normalized}_{fmt}"])["n"][0]
        assert same == 2, (normalized, fmt)


def test_default_policy_keeps_one_copy_of_a_duplicate_the_risk_score_also_counts(store, tmp_path):
    """Dedupe keeps one copy; the risk rule must not drop it for the duplication dedupe resolved."""
    from itaudit.audit.risk import combine

    rows = [{"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."} for i in range(4)]
    ingest(store, _write(tmp_path, "d.jsonl", rows), "d", show_progress=False)
    idx = np.arange(4)
    cl = np.array([0, 0, -1, -1])                        # rows 0 and 1 are near-duplicates
    save_result(store, CheckResult("near_duplicates", "d", idx, cl >= 0, (cl >= 0) * 0.97, cluster_id=cl))
    save_result(store, CheckResult("contamination", "d", idx, idx == 3, (idx == 3).astype(float)))
    res = combine(store.query, "d", weights={"near_duplicates": 0.9, "contamination": 0.9})
    save_result(store, res)
    assert res.score[0] > 0.7 and res.score[1] > 0.7    # both copies carry duplication risk
    r = filter_dataset(store, "d", load_policy("default"), tmp_path / "d_out.jsonl")
    reasons = {d["idx"]: d["reason"] for d in r.manifest["dropped"]}
    # one copy deduped, the other kept; contamination still drops row 3 (and its risk stays high)
    assert reasons == {1: "near duplicate", 3: "contaminated"}
    # without a dedupe rule before it, the risk rule counts the duplication as before
    plain = filter_dataset(store, "d", parse_policy({"rules": [{"name": "r", "max_score": {"risk": 0.7}}]}),
                           tmp_path / "p.jsonl")
    assert {d["idx"] for d in plain.manifest["dropped"]} == {0, 1, 3}
