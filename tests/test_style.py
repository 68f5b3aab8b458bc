"""Style features and the `style` check on a small real DuckDB dataset."""

from __future__ import annotations

import json

from itaudit.audit import save_result
from itaudit.audit.style import features, opening, style_check
from itaudit.ingest import ingest


def _ingest(store, tmp_path, rows, name="ds"):
    p = tmp_path / f"{name}.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest(store, p, name, show_progress=False)


def test_features_structure_and_boilerplate():
    text = ("Certainly! Here is a plan.\n\n# Plan\n\n- first\n- second\n* third\n1. one\n2) two\n\n"
            "```python\nprint(1)\n```\nAs an AI language model, I hope this helps.")
    f = features(text)
    assert f["n_bullets"] == 3 and f["n_numbered"] == 2 and f["n_headings"] == 1 and f["n_code_blocks"] == 1
    assert f["opening"] == "certainly here is a"
    assert {"certainly", "as_an_ai", "hope_helps"} <= set(f["boilerplate"])
    assert f["n_chars"] == len(text) and f["n_words"] == len(text.split())
    # "sure" only counts as an opener, not in the middle of a sentence
    assert "sure" not in features("I am not sure about that.")["boilerplate"]
    assert "sure" in features("Sure, here you go.")["boilerplate"]
    assert opening("") == "" and opening("  Hello,   WORLD!! again and again", 2) == "hello world"


def test_style_check_flags_copied_openings_and_boilerplate(store, tmp_path):
    rows = [{"instruction": f"Question {i}?", "output": f"Sure thing, here it is: answer {i}."} for i in range(6)]
    rows += [{"instruction": f"Other {i}?", "output": f"Unique reply number {i} about topic {i}."} for i in range(30)]
    rows += [{"instruction": "Do it", "output": "I'm sorry, but I cannot help with that."}]
    _ingest(store, tmp_path, rows)
    r = style_check(store, "ds", min_share=0.1, min_count=3)
    save_result(store, r)
    assert r.flag[:6].all()                      # over-represented opening "sure thing here it"
    assert not r.flag[6:36].any()                # unique openings, no boilerplate
    assert r.flag[36] and r.score[36] == 1.0     # boilerplate
    assert r.summary["top_openings"][0] == {"opening": "sure thing here it", "count": 6, "share": 6 / 37}
    assert r.summary["boilerplate"]["sorry"] == 1 and r.summary["boilerplate"]["cannot"] == 1
    feats = store.query("SELECT idx, opening, boilerplate, n_words FROM style_features WHERE dataset = 'ds' ORDER BY idx")
    assert feats.height == 37 and feats["opening"][0] == "sure thing here it"
    assert sorted(feats["boilerplate"][36]) == ["cannot", "sorry"]
    # rerun replaces the stored features (no duplicate primary keys)
    style_check(store, "ds")
    assert store.query("SELECT count(*) AS n FROM style_features WHERE dataset = 'ds'")["n"][0] == 37
