"""Multi-turn ingest: the stored history and content_hash are exactly json.dumps of each turn's
history (the pipeline encodes each message once per record and joins the texts)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from itaudit.ingest import formats, ingest
from itaudit.store import Store

CONVS = [
    # repeated identical messages (equal dicts that are different objects), escapes, non-BMP text
    {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hi"},
                       {"from": "human", "value": "hi"}, {"from": "gpt", "value": 'say "x"\n\\ 😀'},
                       {"from": "human", "value": "again"}, {"from": "gpt", "value": "ok\u2028"}]},
    # opens with the assistant (kept as history), a system prompt, two user messages in a row
    {"conversations": [{"from": "gpt", "value": "earlier part"}, {"from": "system", "value": "be kind"},
                       {"from": "human", "value": "q1"}, {"from": "human", "value": "q1b"},
                       {"from": "gpt", "value": "a1"}, {"from": "human", "value": "q2"},
                       {"from": "gpt", "value": "a2"}]},
    {"conversations": [{"from": "human", "value": "single"}, {"from": "gpt", "value": "turn"}]},
    # a system message part-way: the later turns have another system prompt
    {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
                       {"from": "system", "value": "now terse"}, {"from": "human", "value": "c"},
                       {"from": "gpt", "value": "d"}, {"from": "human", "value": "e"}, {"from": "gpt", "value": "f"}]},
]

# an OASST tree: branches share a prefix and then differ (the histories are not one growing list)
TREE = {"prompt": {"role": "prompter", "text": "root q", "replies": [
    {"role": "assistant", "text": "answer 1", "replies": [
        {"role": "prompter", "text": "follow-up", "replies": [{"role": "assistant", "text": "deep"}]}]},
    {"role": "assistant", "text": "answer 2", "replies": [
        {"role": "prompter", "text": "other follow-up", "replies": [
            {"role": "assistant", "text": "deep 2"}, {"role": "assistant", "text": "deep 3"}]}]}]}}


def _stored_and_expected(tmp_path: Path, recs: list[dict], norm) -> tuple[list, list]:
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in recs), encoding="utf-8")
    with Store(tmp_path / "db.duckdb") as st:
        ingest(st, path, "s", show_progress=False)
        got = st.query("SELECT source_row, turn, history, content_hash FROM instances ORDER BY idx").rows()
    want = []
    for row, rec in enumerate(recs):
        for t in norm(rec):
            hist = json.dumps(t.history, ensure_ascii=False) if t.history else None
            key = json.dumps([t.system, hist, t.instruction, t.input, t.response], ensure_ascii=False)
            want.append((row, t.turn, hist, hashlib.sha1(key.encode()).hexdigest()))
    return got, want


def test_history_and_hash_equal_json_dumps(tmp_path: Path):
    got, want = _stored_and_expected(tmp_path, CONVS, formats.sharegpt)
    assert got == want
    assert sum(1 for w in want if w[2] is not None) == 6  # the later turns carry a history


def test_oasst_tree_branches(tmp_path: Path):
    got, want = _stored_and_expected(tmp_path, [TREE, TREE], formats.oasst_tree)
    assert got == want and len(want) == 10
    assert len({w[3] for w in want}) == 5  # each branch hashes differently; the copy the same


def test_small_batches_written_in_the_background_give_the_same_rows(tmp_path: Path, monkeypatch):
    from itaudit.ingest import pipeline

    recs = CONVS * 5 + [{"conversations": [{"from": "gpt", "value": "only the assistant"}]}]
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in recs), encoding="utf-8")
    frames = []
    for batch in (pipeline.BATCH, 2):  # 2: many inserts, each written while the next is built
        monkeypatch.setattr(pipeline, "BATCH", batch)
        with Store(tmp_path / f"b{batch}.duckdb") as st:
            r = ingest(st, path, "s", skip_invalid=True, show_progress=False)
            frames.append((st.query("SELECT * EXCLUDE (dataset) FROM instances ORDER BY idx"),
                           st.query("SELECT * EXCLUDE (dataset) FROM rejected_rows"), r.n_rows, r.n_rejected))
    (a, ra, na, ja), (b, rb, nb, jb) = frames
    assert a.equals(b) and ra.equals(rb) and (na, ja) == (nb, jb) == (a.height, 1)
    assert a["idx"].to_list() == list(range(a.height))
