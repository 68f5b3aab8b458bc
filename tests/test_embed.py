"""Embeddings: real all-MiniLM, normalization, parity with bare sentence-transformers, cache, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from itaudit.embed import Embedder, embed_dataset, field_texts
from itaudit.ingest import ingest

ROWS = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well, sleep, exercise."},
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris."},
    {"instruction": "Translate to German", "input": "Good morning", "output": "Guten Morgen"},
    {"instruction": "Summarize the text", "input": "Cats sleep a lot during the day.", "output": "Cats sleep much."},
    {"instruction": "Name a primary colour.", "input": "", "output": "Red."},
    {"instruction": "Write a haiku about autumn.", "input": "", "output": "Leaves fall, cold wind sings, the year sleeps."},
    {"instruction": "How many legs does a spider have?", "input": "", "output": "Eight."},
    {"instruction": "Explain photosynthesis briefly.", "input": "", "output": "Plants turn light, water and CO2 into sugar."},
]


def write_alpaca(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture
def ds(store, tmp_path):
    ingest(store, write_alpaca(tmp_path / "a.json", ROWS), "toy", show_progress=False)
    return "toy"


class Counting:
    """Wraps an Embedder, counting texts encoded; optionally fails on the n-th call."""

    def __init__(self, inner: Embedder, fail_on_call: int | None = None):
        self.inner, self.fail_on_call, self.calls, self.texts = inner, fail_on_call, 0, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, texts, batch_size=64, show_progress=False):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        self.texts += len(texts)
        return self.inner.encode(texts, batch_size=batch_size)


@pytest.mark.parametrize("backend", ["torch", "torch-bf16"])
def test_encode_matches_bare_sentence_transformers_normalized(backend) -> None:
    embedder = Embedder(backend=backend)
    texts = [r["instruction"] for r in ROWS] + ["word " * 600]  # one text far beyond 256 tokens
    v = embedder.encode(texts)
    assert v.dtype == np.float32 and v.shape == (len(texts), 384) == (len(texts), embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    bare = embedder.model.encode(texts, normalize_embeddings=True)
    if backend == "torch":
        np.testing.assert_allclose(v, bare, atol=1e-5)
    else:  # bf16 matrix products: the same direction to four nines, never the same cache entry
        assert np.min(np.sum(v * bare, axis=1)) > 0.9999
        assert np.abs(v - bare).max() > 1e-6
    assert embedder.model_id == "all-MiniLM-L6-v2" and embedder.cache_key.endswith(f"|L256|{backend}")
    assert embedder.source_key == embedder.cache_key.rsplit("|", 1)[0]
    # semantics: a paraphrase is closer than an unrelated text
    q = embedder.encode(["Which city is the capital of France?"])[0]
    assert q @ v[1] > 0.8 > q @ v[5]


def test_field_texts() -> None:
    import polars as pl

    f = pl.DataFrame({"instruction": ["I"], "input": ["X"], "response": ["R"]})
    assert field_texts(f, "instruction") == ["I"]
    assert field_texts(f, "prompt") == ["I\n\nX"]
    assert field_texts(f, "response") == ["R"]
    assert field_texts(f, "all") == ["I\n\nX\n\nR"]
    f2 = pl.DataFrame({"instruction": ["I"], "input": [None], "response": ["R"]})
    assert field_texts(f2, "prompt") == ["I"]


def test_cache_only_new_rows_are_embedded(store, ds, embedder, tmp_path) -> None:
    c = Counting(embedder)
    v1 = embed_dataset(store, ds, "prompt", c, show_progress=False)
    assert c.texts == len(ROWS) and v1.shape == (len(ROWS), 384)
    v2 = embed_dataset(store, ds, "prompt", c, show_progress=False)
    assert c.texts == len(ROWS)  # nothing re-encoded
    np.testing.assert_array_equal(v1, v2)
    # aligned with idx: row i is the embedding of row i's text
    np.testing.assert_allclose(v1[2], embedder.encode(["Translate to German\n\nGood morning"])[0], atol=1e-5)
    # a dataset grown by two rows: only those two are embedded
    more = ROWS + [{"instruction": "Name a planet.", "input": "", "output": "Mars."},
                   {"instruction": "What is 2 + 2?", "input": "", "output": "4"}]
    ingest(store, write_alpaca(tmp_path / "b.json", more), ds, show_progress=False)
    v3 = embed_dataset(store, ds, "prompt", c, show_progress=False)
    assert c.texts == len(ROWS) + 2 and v3.shape[0] == len(more)
    np.testing.assert_array_equal(v3[: len(ROWS)], v1)
    # a subset by idx, in the order asked
    sub = embed_dataset(store, ds, "prompt", c, show_progress=False, idx=[9, 0])
    np.testing.assert_array_equal(sub, v3[[9, 0]])


def test_interrupted_run_keeps_finished_chunks_and_resumes(store, ds, embedder) -> None:
    c = Counting(embedder, fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(store, ds, "response", c, show_progress=False, chunk_size=3)
    kept = store.query("SELECT count(*) AS n FROM embedding_cache")["n"][0]
    assert kept == 6  # two finished chunks of 3 committed; the chunk in flight is lost
    c2 = Counting(embedder)
    v = embed_dataset(store, ds, "response", c2, show_progress=False, chunk_size=3)
    assert c2.texts == len(ROWS) - 6
    np.testing.assert_allclose(v, embedder.encode([r["output"] for r in ROWS]), atol=1e-5)


_CHILD = r"""
import sys
from itaudit.embed import Embedder, embed_dataset
from itaudit.store import Store

class Loud:
    def __init__(self, inner):
        self.inner = inner
    def __getattr__(self, name):
        return getattr(self.inner, name)
    def encode(self, texts, batch_size=64, show_progress=False):
        v = self.inner.encode(texts, batch_size=batch_size)
        print("chunk", flush=True)
        return v

with Store(sys.argv[1]) as s:
    embed_dataset(s, "many", "instruction", Loud(Embedder()), show_progress=False, chunk_size=16)
print("done", flush=True)
"""


@pytest.mark.slow
def test_kill_9_mid_run_loses_at_most_the_chunk_in_flight(db_path, tmp_path, embedder) -> None:
    import os
    import signal
    import subprocess
    import sys

    from itaudit.store import Store

    rows = [{"instruction": f"Question number {i}: what is {i} plus {i * 7}?", "input": "", "output": str(8 * i)}
            for i in range(400)]
    with Store(db_path) as s:
        ingest(s, write_alpaca(tmp_path / "m.json", rows), "many", show_progress=False)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(db_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seen = 0
    for line in proc.stdout:
        seen += line.startswith("chunk")
        if seen == 4:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with Store(db_path) as s:
        kept = s.query("SELECT count(*) AS n FROM embedding_cache")["n"][0]
        assert 3 * 16 <= kept < 400          # finished chunks survived kill -9
        c = Counting(embedder)
        v = embed_dataset(s, "many", "instruction", c, show_progress=False, chunk_size=16)
        assert c.texts == 400 - kept and v.shape == (400, 384)
        np.testing.assert_allclose(v[:5], embedder.encode([r["instruction"] for r in rows[:5]]), atol=1e-5)
