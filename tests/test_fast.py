"""The fast path: static embedder distilled from the real MiniLM, candidate pairs re-scored exactly,
lazy neighbours for trace, and IVF-PQ with an exact re-rank."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from itaudit.embed import Embedder
from itaudit.embed.static import StaticEmbedder
from itaudit.index import auto_params, build_index, load_index, make_index, recall_at_k
from itaudit.index.fast import neighbours_for, similar_pairs, static_embedder
from itaudit.index.vector import VectorIndex
from itaudit.ingest import ingest

TOPICS = [
    "What is the capital of France?", "Give three tips for staying healthy.", "Translate 'good morning' to German.",
    "Write a haiku about the ocean.", "How do I sort a list in Python?", "Name the largest planet in the solar system.",
    "Explain what a neural network is.", "Suggest a name for a new bakery.", "How many legs does a spider have?",
    "Describe the water cycle in simple terms.", "Convert 100 degrees Fahrenheit to Celsius.",
    "Who wrote the novel Pride and Prejudice?", "List the primary colours.", "What causes the seasons on Earth?",
    "Write a SQL query that counts the rows of a table.", "Recommend a book about the history of Rome.",
    "What is the boiling point of water at sea level?", "Summarize the plot of Romeo and Juliet.",
    "Give an example of a prime number greater than 50.", "How do vaccines train the immune system?",
]
# near-duplicates of some topics (a changed word or punctuation) and one exact copy
VARIANTS = ["What is the capital city of France?", "Give three tips for staying healthy!",
            "How do I sort a list in Python 3?", "Name the largest planet in our solar system.",
            "Who wrote the novel Pride and Prejudice?"]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def static(embedder) -> StaticEmbedder:
    return static_embedder(embedder)  # distilled once per machine, then loaded from ~/.cache/itaudit


def test_static_table_is_cached_and_reloads_identically(static, embedder, tmp_path) -> None:
    from itaudit.embed.static import cache_dir

    files = list(cache_dir().glob("*.safetensors"))
    assert files, "the distilled table is cached on disk"
    again = StaticEmbedder.from_embedder(embedder)  # loads, no distillation
    assert np.array_equal(again.table, static.table) and again.cache_key == static.cache_key
    assert static.table.shape == (embedder.model.tokenizer.vocab_size, 256)


def test_static_vectors_rank_paraphrases_above_other_topics(static) -> None:
    v = static.encode(TOPICS + VARIANTS + [""])
    assert np.allclose(np.linalg.norm(v[:-1], axis=1), 1, atol=1e-5) and not v[-1].any()
    sims = v[len(TOPICS):-1] @ v[:len(TOPICS)].T
    # each variant's nearest topic is the one it was made from
    assert sims.argmax(axis=1).tolist() == [0, 1, 4, 5, 11]
    corpus = static.fit(TOPICS + VARIANTS)
    q = corpus.encode(["What's the capital of France?"])
    assert int((corpus.vectors @ q[0]).argmax()) in (0, len(TOPICS))


def test_similar_pairs_equal_exact_search_and_embed_only_candidates(static, embedder) -> None:
    texts = TOPICS + VARIANTS
    full = embedder.encode(texts)
    asked: list[int] = []

    def exact(pos: np.ndarray) -> np.ndarray:
        asked.extend(pos.tolist())
        return full[pos]

    sims = full @ full.T
    for thr in (0.9, 0.8):
        truth = {(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts)) if sims[i, j] >= thr - 1e-6}
        asked.clear()
        stats: dict = {}
        got = similar_pairs(texts, thr, exact, static=static, stats=stats)
        assert set(got) == truth, (thr, set(got) ^ truth)
        for (i, j), c in got.items():
            assert abs(c - sims[i, j]) < 1e-4
        assert (11, len(TOPICS) + 4) in got and got[(11, len(TOPICS) + 4)] == 1.0  # the exact copy
        assert stats["n_distinct"] == len(texts) - 1
        assert len(set(asked)) == stats["n_exact_rows"] < len(texts)  # not every row was embedded
    # k: only each row's nearest pairs
    got1 = similar_pairs(texts, 0.5, exact, k=1, static=static)
    nearest = {tuple(sorted((i, int(np.argsort(-sims[i])[1])))) for i in range(len(texts))}
    assert set(got1) <= nearest | {p for p in got1 if got1[p] == 1.0}


def test_neighbours_for_embeds_only_candidates_and_matches_flat(store, tmp_path, embedder) -> None:
    rows = [{"instruction": t, "input": "", "output": f"Answer {i}."} for i, t in enumerate(TOPICS)]
    p = tmp_path / "a.json"
    p.write_text(json.dumps(rows))
    ingest(store, p, "toy", show_progress=False)
    queries = ["capital of France", "a poem about the sea", "sorting lists in python"]
    s0, i0 = neighbours_for(store, "toy", queries, k=2, field="prompt", embedder=embedder, rescore=False)
    assert i0[0, 0] == 0 and i0[2, 0] == 4 and np.all(s0[:, 0] >= s0[:, 1])
    assert store.query("SELECT count(*) AS n FROM embedding_cache")["n"][0] == 0  # no sentence model used
    scores, idx = neighbours_for(store, "toy", queries, k=2, field="prompt", embedder=embedder)
    assert idx[:, 0].tolist() == [0, 3, 4]
    assert np.all(scores[:, 0] >= scores[:, 1])
    cached = store.query("SELECT count(*) AS n FROM embedding_cache")["n"][0]
    assert 0 < cached < len(TOPICS)  # lazily filled: the candidates only
    flat = build_index(store, "toy", "prompt", "flat", tmp_path / "idx", embedder=embedder, show_progress=False)
    fs, fi = flat.search(embedder.encode(queries), 1)
    assert fi[:, 0].tolist() == idx[:, 0].tolist() and np.allclose(fs[:, 0], scores[:, 0], atol=1e-4)


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n // 50, d))
    x = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.standard_normal((n, d))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ivfpq_refine_reaches_095_recall_at_a_quarter_of_flat_memory(tmp_path) -> None:
    x = clustered(10_000, 64)
    q = x[:300] + 0.05 * clustered(300, 64, seed=1)
    truth = faiss.IndexFlatIP(64)
    truth.add(x)
    _, exact = truth.search(q, 10)
    kind, params, _ = auto_params("ivfpq", len(x), 64)
    assert params["refine"] > 0
    index = make_index(kind, 64, params, x)
    meta = {"kind": kind, "params": params, "dim": 64, "n": len(x)}
    _, plain = VectorIndex(index, meta).search(q, 10)
    _, refined = VectorIndex(index, meta, exact=x).search(q, 10)
    r_plain, r_ref = recall_at_k(plain, exact, 10), recall_at_k(refined, exact, 10)
    assert r_ref >= 0.95 and r_ref > r_plain, (r_plain, r_ref)
    assert len(faiss.serialize_index(index)) <= len(faiss.serialize_index(truth)) / 4


def test_ivfpq_refine_vectors_saved_and_memory_mapped(store, tmp_path, embedder) -> None:
    rows = [{"instruction": f"{t} (variant {k})", "input": "", "output": "ok"} for k in range(4) for t in TOPICS]
    p = tmp_path / "a.json"
    p.write_text(json.dumps(rows))
    ingest(store, p, "toy", show_progress=False)
    vi = build_index(store, "toy", "instruction", "ivfpq", tmp_path / "idx", embedder=embedder, show_progress=False)
    assert vi.kind == "ivfpq" and vi.meta["vectors_file"]
    loaded = load_index(tmp_path / "idx", "toy", "instruction", "ivfpq", store=store)
    assert isinstance(loaded.exact, np.memmap)
    qv = embedder.encode(["What is the capital of France? (variant 2)"])
    s, i = loaded.search(qv, 3)
    assert i[0, 0] == 2 * len(TOPICS) and s[0, 0] > 0.99
    (tmp_path / "idx" / "toy" / vi.meta["vectors_file"]).write_bytes(b"torn")
    with pytest.raises(Exception, match="vectors"):
        load_index(tmp_path / "idx", "toy", "instruction", "ivfpq")


def test_similar_pairs_row_budget_stops_early_and_estimates_what_it_left(static, embedder) -> None:
    """On large data the re-scoring has a row budget; what it leaves is sampled and extrapolated."""
    forms = ["{}", "Please answer: {}", "{} Thanks a lot.", "Quick question: {}", "{} (a short answer is fine)"]
    texts = [f.format(t) for t in TOPICS for f in forms]
    full = embedder.encode(texts)
    sims = full @ full.T
    thr = 0.85
    truth = {(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts)) if sims[i, j] >= thr}
    asked: list[int] = []

    def exact(pos: np.ndarray) -> np.ndarray:
        asked.extend(pos.tolist())
        return full[pos]

    unbounded: dict = {}
    all_pairs = similar_pairs(texts, thr, exact, static=static, stats=unbounded)
    assert not unbounded["stopped_by_budget"] and unbounded["est_recall"] is None
    asked.clear()
    st: dict = {}
    got = similar_pairs(texts, thr, exact, static=static, max_exact_rows=15, stats=st)
    assert st["stopped_by_budget"] and st["n_exact_rows"] < unbounded["n_exact_rows"]
    assert len(got) < len(all_pairs) and set(got) <= truth          # fewer, never false
    assert all(abs(got[p] - sims[p]) < 1e-5 for p in got)
    # the estimate of what was left is of the right size (the truth within the candidates is known here)
    missed = len(set(all_pairs) - set(got))
    assert missed > 0 and 0.5 * missed <= st["est_missed_pairs"] <= 2 * missed
    assert 0 < st["est_recall"] < 1
