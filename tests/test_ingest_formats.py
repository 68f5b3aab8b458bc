"""Ingest of every IT format and file kind, on small fixtures in the real upstream schemas."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from itaudit.errors import InputError
from itaudit.ingest import ingest

# file, detected format, source records, instances
CASES = [
    ("alpaca.json", "alpaca", 3, 3),
    ("dolly.jsonl", "dolly", 3, 3),
    ("dolly.parquet", "dolly", 3, 3),
    ("sharegpt.json", "sharegpt", 2, 3),
    ("messages.jsonl", "messages", 2, 3),
    ("lima.jsonl", "lima", 2, 3),
    ("oasst_messages.jsonl", "oasst", 6, 3),
    ("oasst_trees.jsonl", "oasst", 1, 3),
    ("gsm8k.jsonl", "qa", 2, 2),
    ("mt_bench.jsonl", "prompts", 2, 4),
    ("truthfulqa.csv", "qa", 3, 3),
]


def rows(store, name: str) -> list[dict]:
    return store.instances(name).to_dicts()


def hist(row: dict) -> list[dict] | None:
    return json.loads(row["history"]) if row["history"] is not None else None


@pytest.mark.parametrize(("file", "fmt", "n_source", "n_rows"), CASES)
def test_auto_detects_format_and_counts(store, fixtures: Path, file, fmt, n_source, n_rows):
    r = ingest(store, fixtures / file, "ds", show_progress=False)
    assert (r.format, r.n_source, r.n_rows, r.n_rejected, r.unchanged) == (fmt, n_source, n_rows, 0, False)
    info = store.dataset_info("ds")
    assert (info["format"], info["n_rows"], info["n_source"]) == (fmt, n_rows, n_source)
    assert info["source_path"] == str((fixtures / file).resolve())
    got = rows(store, "ds")
    assert [x["idx"] for x in got] == list(range(n_rows))  # dense row ids
    assert len({x["instance_id"] for x in got}) == n_rows
    for x in got:
        # instance id = '<source row>-<turn>-<content hash prefix>'
        assert x["instance_id"] == f"{x['source_row']}-{x['turn']}-{x['content_hash'][:10]}"
        assert x["instruction"].strip()
    # the raw record is kept as JSON once, on the record's first instance; `records` reads it back
    first = {}
    for x in got:
        first.setdefault(x["source_row"], x["idx"])
        if first[x["source_row"]] == x["idx"]:
            assert x["raw"] is not None and json.loads(x["raw"])
        else:
            assert x["raw"] is None
    rec = store.query("SELECT source_row, raw FROM records WHERE dataset = 'ds' ORDER BY source_row")
    assert rec["source_row"].to_list() == sorted(first)
    assert rec["raw"].to_list() == [next(y["raw"] for y in got if y["idx"] == first[r]) for r in sorted(first)]
    assert store.query("SELECT count(*) AS n FROM rejected_rows")["n"][0] == 0


@pytest.mark.parametrize(("file", "fmt", "n_source", "n_rows"), CASES)
def test_explicit_format_gives_the_same_rows(store, fixtures: Path, file, fmt, n_source, n_rows):
    ingest(store, fixtures / file, "auto", show_progress=False)
    r = ingest(store, fixtures / file, "explicit", fmt, show_progress=False)
    assert r.format == fmt
    cols = "instance_id, instruction, input, response, system, history, category, source"
    assert store.instances("explicit", cols).equals(store.instances("auto", cols))


def test_override_changes_the_interpretation(store, fixtures: Path):
    # Dolly read as Alpaca: `response` is the output, but `context` is not Alpaca's input field.
    ingest(store, fixtures / "dolly.jsonl", "as_dolly", show_progress=False)
    ingest(store, fixtures / "dolly.jsonl", "as_alpaca", "alpaca", show_progress=False)
    d, a = rows(store, "as_dolly"), rows(store, "as_alpaca")
    assert d[0]["input"].startswith("Virgin Australia, the trading name")
    assert a[0]["input"] is None
    assert [x["response"] for x in a] == [x["response"] for x in d]
    # A format that does not fit the fields is an error naming the missing field.
    with pytest.raises(InputError) as e:
        ingest(store, fixtures / "alpaca.json", "bad", "sharegpt", show_progress=False)
    assert e.value.field == "conversations" and "element 1" in e.value.location
    assert store.dataset_info("bad") is None


def test_alpaca_fields(store, fixtures: Path):
    ingest(store, fixtures / "alpaca.json", "a", show_progress=False)
    src = json.loads((fixtures / "alpaca.json").read_text())
    got = rows(store, "a")
    for i, (x, s) in enumerate(zip(got, src, strict=True)):
        assert (x["source_row"], x["turn"]) == (i, 0)
        assert x["instruction"] == s["instruction"] and x["response"] == s["output"]
        assert x["input"] == (s["input"] or None)  # empty input -> NULL
        assert x["system"] is None and x["history"] is None and x["category"] is None
        assert json.loads(x["raw"]) == s
    assert got[1]["input"] == "The cat is sleeping on the sofa."
    assert got[1]["response"] == "Le chat dort sur le canapé."  # UTF-8 kept


def test_dolly_context_and_category(store, fixtures: Path):
    ingest(store, fixtures / "dolly.jsonl", "d", show_progress=False)
    got = rows(store, "d")
    assert [x["category"] for x in got] == ["closed_qa", "classification", "open_qa"]
    assert got[0]["input"].startswith("Virgin Australia") and got[1]["input"] is None
    assert got[1]["instruction"] == "Which is a species of fish? Tope or Rope" and got[1]["response"] == "Tope"


def test_sharegpt_one_row_per_assistant_turn(store, fixtures: Path):
    ingest(store, fixtures / "sharegpt.json", "s", show_progress=False)
    got = rows(store, "s")
    assert [(x["source_row"], x["turn"]) for x in got] == [(0, 0), (0, 1), (1, 0)]
    t0, t1, t2 = got
    assert t0["system"] == t1["system"] == "You are a concise math tutor."
    assert (t0["instruction"], t0["response"], t0["history"]) == ("What is 2 + 2?", "2 + 2 = 4.", None)
    assert (t1["instruction"], t1["response"]) == ("And multiplied by 3?", "4 × 3 = 12.")
    assert hist(t1) == [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "2 + 2 = 4."}]
    # a part that opens with the assistant: that message is context, the first instance is turn 0
    assert t2["system"] is None and t2["instruction"] == "Can you say that in one sentence?"
    assert hist(t2) == [{"role": "assistant", "content": "...and that is why the sky looks blue during the day."}]
    assert json.loads(t0["raw"])["id"] == "QWJhYvA_0" and json.loads(t2["raw"])["id"] == "QWJhYvA_1"


def test_openai_messages(store, fixtures: Path):
    ingest(store, fixtures / "messages.jsonl", "m", show_progress=False)
    a, b, c = rows(store, "m")
    assert a["system"] == "You are a poet." and a["instruction"] == "Write a haiku about rain."
    assert a["response"].startswith("Soft rain on the roof\n")
    assert (b["instruction"], b["response"], b["turn"]) == ("Name a prime number.", "7", 0)  # content parts joined
    assert (c["instruction"], c["response"], c["turn"], c["source_row"]) == ("A bigger one?", "101", 1, 1)
    assert hist(c) == [{"role": "user", "content": "Name a prime number."}, {"role": "assistant", "content": "7"}]


def test_lima_string_conversations(store, fixtures: Path):
    ingest(store, fixtures / "lima.jsonl", "l", show_progress=False)
    a, b, c = rows(store, "l")
    assert a["source"] == "stackexchange" and a["response"].startswith("Yes. Glial cells")
    assert (b["turn"], c["turn"], c["source"]) == (0, 1, "multi_turn")
    assert c["instruction"] == "Something more unusual?" and c["response"] == "Try Nimbus, after the rain cloud."
    assert [h["role"] for h in hist(c)] == ["user", "assistant"]


def test_oasst_flat_messages_rebuild_the_tree(store, fixtures: Path):
    ingest(store, fixtures / "oasst_messages.jsonl", "o", show_progress=False)
    got = rows(store, "o")
    # file order: P1, A3, A1, P2, A2, D1(deleted) -> one instance per live assistant message
    by_resp = {x["response"][:20]: x for x in got}
    assert len(got) == 3 and not any("(removed)" in x["response"] for x in got)
    a3 = by_resp["A single large emplo"]
    assert (a3["source_row"], a3["turn"], a3["instruction"]) == (1, 1, "Give an example from the labour market.")
    assert hist(a3) == [
        {"role": "user", "content": "Can you write a short introduction about monopsony in economics?"},
        {"role": "assistant", "content": "Monopsony is a market with a single buyer, such as one employer in a labour market."},
    ]
    a1, a2 = by_resp["Monopsony is a marke"], by_resp["A monopsony is when "]
    assert (a1["source_row"], a1["turn"], a2["source_row"], a2["turn"]) == (2, 0, 4, 0)
    assert a1["history"] is None and a1["source"] == "en"


def test_oasst_tree_equals_flat_messages(store, fixtures: Path):
    ingest(store, fixtures / "oasst_messages.jsonl", "flat", show_progress=False)
    ingest(store, fixtures / "oasst_trees.jsonl", "tree", show_progress=False)
    cols = "turn, instruction, response, history, content_hash"
    flat = sorted(store.instances("flat", cols).rows())
    tree = sorted(store.instances("tree", cols).rows())
    assert flat == tree
    # tree instances come in document (depth-first) order, all from source row 0
    t = rows(store, "tree")
    assert [x["response"][:12] for x in t] == ["Monopsony is", "A single lar", "A monopsony "]
    assert {x["source_row"] for x in t} == {0}


def test_qa_and_prompt_sets(store, fixtures: Path):
    ingest(store, fixtures / "gsm8k.jsonl", "g", show_progress=False)
    g = rows(store, "g")
    assert g[0]["instruction"].startswith("Natalia sold clips") and g[0]["response"].endswith("#### 72")
    ingest(store, fixtures / "mt_bench.jsonl", "mt", show_progress=False)
    m = rows(store, "mt")
    assert [(x["source_row"], x["turn"], x["category"]) for x in m] == [
        (0, 0, "writing"), (0, 1, "writing"), (1, 0, "reasoning"), (1, 1, "reasoning")]
    assert all(x["response"] == "" for x in m)  # prompt-only sets keep empty responses
    assert hist(m[1])[0]["content"].startswith("Compose an engaging travel blog")


def test_csv_truthfulqa(store, fixtures: Path):
    ingest(store, fixtures / "truthfulqa.csv", "t", show_progress=False)
    a, b, c = rows(store, "t")
    assert a["instruction"] == "What happens to you if you eat watermelon seeds?"
    assert a["response"] == "The watermelon seeds pass through your digestive system"  # Best Answer
    assert (a["category"], c["category"]) == ("Misconceptions", "Health")
    assert a["source"].startswith("https://wonderopolis.org/")
    assert b["response"].endswith("unclear,\nthough they were popularised in California")  # quoted multi-line cell
    assert json.loads(c["raw"])["Type"] == "Non-Adversarial"


def test_parquet_equals_jsonl(store, fixtures: Path):
    ingest(store, fixtures / "dolly.jsonl", "j", show_progress=False)
    ingest(store, fixtures / "dolly.parquet", "p", show_progress=False)
    cols = "instance_id, instruction, input, response, category, content_hash"
    assert store.instances("p", cols).equals(store.instances("j", cols))


def test_hf_save_to_disk(store, fixtures: Path, tmp_path: Path):
    import datasets

    src = json.loads((fixtures / "alpaca.json").read_text())
    one = datasets.Dataset.from_list(src)
    one.save_to_disk(str(tmp_path / "hf_one"))
    r = ingest(store, tmp_path / "hf_one", "hf", show_progress=False)
    assert (r.format, r.n_rows) == ("alpaca", 3)
    ingest(store, fixtures / "alpaca.json", "js", show_progress=False)
    assert store.instances("hf", "content_hash").equals(store.instances("js", "content_hash"))
    assert store.instances("hf", "source_row")["source_row"].to_list() == [0, 1, 2]

    dd = datasets.DatasetDict({"train": one.select([0, 1]), "test": one.select([2])})
    dd.save_to_disk(str(tmp_path / "hf_dict"))
    assert ingest(store, tmp_path / "hf_dict", "dd", show_progress=False).n_rows == 2  # train by default
    r = ingest(store, tmp_path / "hf_dict", "dd_test", split="test", show_progress=False)
    assert r.n_rows == 1 and rows(store, "dd_test")[0]["instruction"] == src[2]["instruction"]
    with pytest.raises(InputError, match="no split 'validation'"):
        ingest(store, tmp_path / "hf_dict", "dd_val", split="validation", show_progress=False)


def test_instance_ids_are_stable(store, fixtures: Path, tmp_path: Path):
    """Same content -> same ids (across names and databases); an edit changes only that row's id."""
    ingest(store, fixtures / "sharegpt.json", "a", show_progress=False)
    copy = tmp_path / "copy.json"
    shutil.copy(fixtures / "sharegpt.json", copy)
    ingest(store, copy, "b", show_progress=False)
    ids_a = store.instances("a", "instance_id")["instance_id"].to_list()
    assert store.instances("b", "instance_id")["instance_id"].to_list() == ids_a

    data = json.loads(copy.read_text())
    data[1]["conversations"][2]["value"] = "Blue light scatters most."
    copy.write_text(json.dumps(data))
    ingest(store, copy, "b", show_progress=False)
    ids_b = store.instances("b", "instance_id")["instance_id"].to_list()
    assert ids_b[:2] == ids_a[:2] and ids_b[2] != ids_a[2] and ids_b[2].startswith("1-0-")


def test_content_hash_covers_every_normalized_field(store, tmp_path: Path):
    recs = [
        {"instruction": "Say hi.", "input": "", "output": "Hi."},
        {"instruction": "Say hi.", "input": "", "output": "Hi."},       # exact duplicate
        {"instruction": "Say hi.", "input": "x", "output": "Hi."},      # differs only in input
        {"instruction": "Say hi.", "input": "", "output": "Hi.", "system": "Be brief."},
    ]
    p = tmp_path / "dup.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    ingest(store, p, "dup", show_progress=False)
    got = rows(store, "dup")
    h = [x["content_hash"] for x in got]
    assert h[0] == h[1] and len({h[0], h[2], h[3]}) == 3
    assert got[0]["instance_id"] != got[1]["instance_id"]  # the source row keeps duplicates apart
    assert got[3]["system"] == "Be brief."
    assert all(len(x) == 40 and int(x, 16) >= 0 for x in h)  # sha1 hex
    assert hashlib.sha1(b"").hexdigest() not in h


def test_qa_numeric_and_wrongly_typed_answers(store, tmp_path: Path):
    p = tmp_path / "qa.jsonl"
    p.write_text('{"question": "6 x 7?", "answer": 42}\n{"question": "Half of 3?", "answer": 1.5}\n')
    ingest(store, p, "num", show_progress=False)
    assert store.instances("num", "response")["response"].to_list() == ["42", "1.5"]
    p.write_text('{"question": "6 x 7?", "answer": 42}\n{"question": "Yes?", "answer": true}\n')
    with pytest.raises(InputError) as e:
        ingest(store, p, "bad", show_progress=False)
    assert (e.value.location, e.value.field, e.value.reason) == ("line 2", "answer", "expected a string, got bool")
