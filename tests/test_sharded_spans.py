"""Sharded span index: scatter/gather over per-shard suffix arrays answers like one index."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from itaudit.errors import ItauditError
from itaudit.ingest import ingest
from itaudit.spans import build_span_index
from itaudit.spans.index import StaleIndexError
from itaudit.spans.sharded import (
    ShardedSpanIndex,
    build_sharded_span_index,
    load_sharded_span_index,
)
from itaudit.trace import TraceItem, Tracer
from tests.conftest import SHARED_DATA

N_ROWS = 1200


@pytest.fixture(scope="module")
def alpaca(tmp_path_factory):
    """1,200 real Alpaca rows plus 30 planted copies of a fact spread over every shard."""
    from itaudit.store import Store

    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    shared_data = SHARED_DATA
    tmp = tmp_path_factory.mktemp("sharded_spans")
    rows = json.loads((shared_data / "alpaca" / "alpaca_5000.json").read_text())[:N_ROWS]
    fact = "The Quorvex bridge was completed in 1911 by engineer Maela Drunstrand."
    for k in range(30):
        rows[k * 40 + 7]["output"] += " " + fact
    src = tmp / "a.json"
    src.write_text(json.dumps(rows))
    store = Store(tmp / "a.duckdb")
    ingest(store, src, "alp", "alpaca")
    one = build_span_index(store, "alp", tmp / "one")
    sharded = build_sharded_span_index(store, "alp", tmp / "sharded", shard_rows=350)
    yield store, one, sharded, rows, tmp
    store.close()


def _responses(rows: list[dict]) -> list[str]:
    """Real responses, shuffled sentence by sentence, with an invented word inserted (so matches
    start and stop inside them), from rows spread over all shards."""
    rng = np.random.default_rng(0)
    out = []
    for i in rng.choice(len(rows), 40, replace=False).tolist():
        words = (rows[i]["output"] + " " + rows[(i * 7 + 3) % len(rows)]["output"]).split()
        cut = int(rng.integers(1, max(2, len(words))))
        out.append(" ".join(words[:cut] + ["zzyqxv"] + words[cut:]))
    return out


def test_shards_are_independent_and_cover_every_row(alpaca) -> None:
    store, one, sharded, _, tmp = alpaca
    assert len(sharded.shards) == 4  # 1200 rows / 350
    assert [s.n_instances for s in sharded.shards] == [350, 350, 350, 150]
    assert sharded.n_instances == one.n_instances == N_ROWS
    # each shard is an ordinary span index directory with its own (smaller) vocabulary
    assert all(len(s.vocab) < len(one.vocab) for s in sharded.shards)
    assert sorted(sharded.vocab) == sorted(one.vocab)
    # the union vocabulary in shard order numbers words as one index does: same ids, same df
    assert sharded.vocab == one.vocab
    assert np.array_equal(sharded.df, np.asarray(one.df, dtype=np.int64))
    assert (tmp / "sharded" / "alp" / "spans.shards.json").is_file()


def test_counts_occurrences_and_maximal_matches_equal_one_index(alpaca) -> None:
    _, one, sharded, rows, _ = alpaca
    fact = "completed in 1911 by engineer Maela Drunstrand"
    assert sharded.count(fact) == one.count(fact) == 30
    assert sharded.find(fact) == one.find(fact)
    assert {o.idx for o in sharded.find(fact)} == {k * 40 + 7 for k in range(30)}
    for text in _responses(rows):
        ids_one, ids_sh = one.encode(text), sharded.encode(text)
        assert ids_one == ids_sh
        assert sharded.matching_lengths(ids_sh) == one.matching_lengths(ids_one)
        assert np.array_equal(sharded.idf(ids_sh), one.idf(ids_one))
        for kw in ({"max_occurrences": 200, "skip_common": True}, {"max_occurrences": None}):
            got = sharded.maximal_matches(text, **kw)
            want = one.maximal_matches(text, **kw)
            assert [dataclasses.astuple(m) for m in got] == [dataclasses.astuple(m) for m in want]
    # a common word: counts add up over the shards
    assert sharded.count("the") == one.count("the") > 1000
    assert sharded.count("zzyqxv") == one.count("zzyqxv") == 0


def test_trace_results_are_identical(alpaca) -> None:
    store, one, sharded, rows, _ = alpaca
    items = [TraceItem(f"r{k}", "Tell me about a bridge.", text) for k, text in enumerate(_responses(rows))]
    items.append(TraceItem("fact", "Who built the Quorvex bridge?",
                           "It was completed in 1911 by engineer Maela Drunstrand of Ostrava."))
    want = Tracer(store, "alp", index=one).trace(items)
    got = Tracer(store, "alp", index=sharded).trace(items)
    assert [dataclasses.asdict(s) for t in got for s in t.spans] == \
        [dataclasses.asdict(s) for t in want for s in t.spans]
    fact_sources = {s.idx for sp in got[-1].spans for s in sp.sources if s.verbatim}
    assert fact_sources and fact_sources <= {k * 40 + 7 for k in range(30)}


def test_manifest_reload_stale_and_overlap(alpaca, tmp_path: Path) -> None:
    store, _, sharded, rows, tmp = alpaca
    again = load_sharded_span_index(store, "alp", tmp / "sharded")
    assert again.vocab == sharded.vocab and again.count("bridge") == sharded.count("bridge")
    # shards listed in any order are served in idx order
    dirs = [tmp / "sharded" / "alp" / d for d in again.meta["shards"]]
    assert ShardedSpanIndex.load(dirs[::-1]).find("Maela Drunstrand") == sharded.find("Maela Drunstrand")
    with pytest.raises(ItauditError, match="overlap"):
        ShardedSpanIndex.load([dirs[0], dirs[0]])
    # a re-ingested dataset makes the manifest stale
    rows2 = [dict(r) for r in rows[:50]]
    src = tmp_path / "b.json"
    src.write_text(json.dumps(rows2))
    ingest(store, src, "alp2", "alpaca")
    build_sharded_span_index(store, "alp2", tmp_path / "ix", shard_rows=20)
    rows2[3]["output"] = "changed"
    src.write_text(json.dumps(rows2))
    ingest(store, src, "alp2", "alpaca")
    with pytest.raises(StaleIndexError):
        load_sharded_span_index(store, "alp2", tmp_path / "ix")
