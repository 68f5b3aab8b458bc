"""FAISS indexes: kinds, auto parameters, persistence, staleness, recall, CLI index/neighbors."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from itaudit.embed import Embedder
from itaudit.errors import ItauditError
from itaudit.index import (
    StaleIndexError,
    auto_params,
    build_index,
    load_index,
    make_index,
    recall_at_k,
)
from itaudit.index.vector import VectorIndex, evaluate
from itaudit.ingest import ingest

ROWS = [
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris."},
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat, sleep, move."},
    {"instruction": "Translate 'good morning' to German.", "input": "", "output": "Guten Morgen."},
    {"instruction": "Write a haiku about the ocean.", "input": "", "output": "Waves fold into foam."},
    {"instruction": "How do I sort a list in Python?", "input": "", "output": "Use sorted(xs)."},
    {"instruction": "Name the largest planet.", "input": "", "output": "Jupiter."},
    {"instruction": "Explain what a neural network is.", "input": "", "output": "Layers of weighted sums."},
    {"instruction": "Suggest a name for a bakery.", "input": "", "output": "Rise & Shine."},
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture
def ds(store, tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps(ROWS))
    ingest(store, p, "toy", show_progress=False)
    return "toy"


def unit(n: int, d: int = 64, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_auto_params_scale_with_rows_and_clamp_for_tiny_sets() -> None:
    kind, p, notes = auto_params("ivfpq", 40_000, 384)
    assert kind == "ivfpq" and p["nlist"] == 800 and 384 % p["m"] == 0 and p["m"] == 48 and p["nbits"] == 8
    assert 8 <= p["nprobe"] <= p["nlist"] and not notes
    kind, p, notes = auto_params("ivfpq", 500, 384)
    assert p["nlist"] == 500 // 39 and p["nbits"] < 8 and any("clamped" in n for n in notes)
    kind, p, notes = auto_params("ivfpq", 10, 384)
    assert kind == "flat" and "flat" in notes[0]
    assert auto_params("hnsw", 1000, 384)[1] == {"M": 16, "efConstruction": 80, "efSearch": 64}
    assert auto_params("hnsw", 1000, 384, M=32)[1]["M"] == 32
    with pytest.raises(ItauditError, match="unknown parameter"):
        auto_params("hnsw", 1000, 384, nlist=4)
    with pytest.raises(ItauditError, match="must divide"):
        auto_params("ivfpq", 5000, 384, m=7)


def test_approximate_kinds_recall_against_exact() -> None:
    x = unit(2000, 32)
    truth = faiss.IndexFlatIP(32)
    truth.add(x)
    q = x[:200] + 0.05 * unit(200, 32, seed=1)
    _, exact = truth.search(q, 10)
    for kind, floor in (("hnsw", 0.9), ("ivfpq", 0.2)):
        k2, params, _ = auto_params(kind, len(x), 32)
        vi = VectorIndex(make_index(k2, 32, params, x), {"kind": k2, "params": params, "dim": 32, "n": len(x)})
        _, got = vi.search(q, 10)
        r = recall_at_k(got, exact, 10)
        assert floor <= r <= 1.0, (kind, r)
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(np.full_like(exact, -1), exact) == 0.0


def test_build_save_load_search_and_padding(store, ds, embedder, tmp_path) -> None:
    idir = tmp_path / "idx"
    build_index(store, ds, "instruction", "flat", idir, embedder=embedder, show_progress=False)
    f, j = idir / ds / "instruction.flat.faiss", idir / ds / "instruction.flat.json"
    assert f.exists() and j.exists() and not list((idir / ds).glob(".*tmp*"))
    meta = json.loads(j.read_text())
    assert meta["model"] == embedder.cache_key and meta["dim"] == 384 and meta["normalization"] == "l2"
    assert meta["n"] == len(ROWS) and meta["ids"] == "identity" and meta["dataset_fingerprint"]
    loaded = load_index(idir, ds, "instruction", store=store)
    scores, idx = loaded.search(embedder.encode(["Which city is France's capital?", "biggest planet"]), 3)
    assert idx[0, 0] == 0 and idx[1, 0] == 5 and scores.dtype == np.float32 and idx.dtype == np.int64
    assert scores[0, 0] > scores[0, 1] and 0.5 < scores[0, 0] <= 1.0001
    s, i = loaded.search(embedder.encode(["x"]), 20)  # k > n: -1 padding
    assert (i[0, len(ROWS):] == -1).all() and np.isneginf(s[0, len(ROWS):]).all()
    lims, rs, ri = loaded.range_search(embedder.encode([ROWS[3]["instruction"]]), 0.99)
    assert list(ri[lims[0]:lims[1]]) == [3]
    from itaudit.index import neighbors

    nb = neighbors(store, ds, ["Which city is France's capital?", "biggest planet"], 2, index_dir=idir)
    assert nb.height == 4 and nb.filter(nb["rank"] == 1)["idx"].to_list() == [0, 5]
    assert nb["instance_id"].null_count() == 0 and nb["score"][0] >= nb["score"][1]
    # ivfpq on 8 rows falls back to flat and says so
    vq = build_index(store, ds, "instruction", "ivfpq", idir, embedder=embedder, show_progress=False)
    assert vq.kind == "flat" and vq.meta["requested_kind"] == "ivfpq" and vq.meta["notes"]
    assert store.query("SELECT count(*) AS n FROM vector_indexes")["n"][0] == 2
    assert evaluate(load_index(idir, ds, "instruction", "ivfpq"), loaded.index.reconstruct_n(0, 8))["recall"] == 1.0


def test_stale_index_is_detected_and_cli_rebuilds(store, ds, embedder, tmp_path, db_path, capsys) -> None:
    from itaudit.cli import main

    idir = tmp_path / "idx"
    build_index(store, ds, "instruction", "hnsw", idir, embedder=embedder, show_progress=False)
    p = tmp_path / "b.json"
    p.write_text(json.dumps(ROWS + [{"instruction": "Name a fruit.", "input": "", "output": "Apple."}]))
    ingest(store, p, ds, show_progress=False)
    with pytest.raises(StaleIndexError, match="stale"):
        load_index(idir, ds, "instruction", store=store)
    store.close()
    main(["index", ds, "--field", "instruction", "--kind", "hnsw", "--index-dir", str(idir), "--db", str(db_path),
          "--eval-recall"])
    assert "recall@10 vs exact" in capsys.readouterr().err
    from itaudit.store import Store

    with Store(db_path) as s2:
        vi = load_index(idir, ds, "instruction", "hnsw", store=s2)
        assert vi.ntotal == len(ROWS) + 1


def test_missing_or_corrupt_index_errors(store, ds, embedder, tmp_path) -> None:
    idir = tmp_path / "idx"
    with pytest.raises(ItauditError, match="itaudit index"):
        load_index(idir, ds, "response")
    build_index(store, ds, "response", "flat", idir, embedder=embedder, show_progress=False)
    f = idir / ds / "response.flat.faiss"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ItauditError, match="does not match"):
        load_index(idir, ds, "response", "flat")


def test_cli_neighbors(store, ds, tmp_path, db_path, capsys) -> None:
    from itaudit.cli import main

    store.close()
    idir = tmp_path / "idx"
    main(["neighbors", ds, "sorting lists in python", "-k", "2", "--json", "--index-dir", str(idir), "--db", str(db_path)])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert [r["rank"] for r in lines] == [1, 2] and lines[0]["idx"] == 4 and lines[0]["instance_id"]
    assert Path(idir / ds / "instruction.flat.faiss").exists()
