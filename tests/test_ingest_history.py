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
]


def test_history_and_hash_equal_json_dumps(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in CONVS), encoding="utf-8")
    with Store(tmp_path / "db.duckdb") as st:
        ingest(st, path, "s", show_progress=False)
        got = st.query("SELECT source_row, turn, history, content_hash FROM instances ORDER BY idx").rows()
    want = []
    for row, rec in enumerate(CONVS):
        for t in formats.sharegpt(rec):
            hist = json.dumps(t.history, ensure_ascii=False) if t.history else None
            key = json.dumps([t.system, hist, t.instruction, t.input, t.response], ensure_ascii=False)
            want.append((row, t.turn, hist, hashlib.sha1(key.encode()).hexdigest()))
    assert got == want
    assert sum(1 for w in want if w[2] is not None) == 4  # the later turns carry a history
