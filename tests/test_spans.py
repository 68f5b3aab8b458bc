"""Exact-span index: suffix array, find, maximal matches (vs brute force), IDF, persistence, staleness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from itaudit.ingest import ingest
from itaudit.spans import (
    StaleIndexError,
    build_from_texts,
    build_span_index,
    ensure_span_index,
    load_span_index,
    suffix_array,
    suffix_array_numpy,
    words,
    words_with_offsets,
)


def _random_docs(rng: np.random.Generator, n_docs: int, alphabet: int, max_len: int) -> list[tuple[int, int, str]]:
    """Documents over a tiny vocabulary (w0..w{alphabet-1}) so spans repeat a lot."""
    docs = []
    for i in range(n_docs):
        for f in (0, 2):
            n = int(rng.integers(0, max_len))
            docs.append((i, f, " ".join(f"w{int(t)}" for t in rng.integers(0, alphabet, n))))
    return docs


def _brute_occurrences(docs, span: list[str]) -> list[tuple[int, str, int]]:
    fields = ("instruction", "input", "response")
    out = []
    for idx, f, text in docs:
        ws = words(text)
        for p in range(len(ws) - len(span) + 1):
            if ws[p:p + len(span)] == span:
                out.append((idx, fields[f], p))
    return sorted(out)


def _brute_longest(doc_words: list[list[str]], q: list[str], i: int) -> int:
    best = 0
    for ws in doc_words:
        for p in range(len(ws)):
            k = 0
            while i + k < len(q) and p + k < len(ws) and ws[p + k] == q[i + k]:
                k += 1
            best = max(best, k)
    return best


def test_tokenizer_lowercases_unicode_and_keeps_original_offsets() -> None:
    text = "Café NAÏVE — İstanbul's 42 naïve_x!"
    ws = words_with_offsets(text)
    assert [w.text for w in ws] == ["café", "naïve", "i̇stanbul", "s", "42", "naïve_x"]
    for w in ws:
        assert text[w.start:w.end].lower() == w.text
    assert words(text) == [w.text for w in ws]


@pytest.mark.parametrize("seed", range(4))
def test_suffix_array_matches_sorted_suffixes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, size=int(rng.integers(1, 300))).astype(np.int32)
    truth = sorted(range(len(a)), key=lambda i: a[i:].tolist())
    assert suffix_array(a).tolist() == truth
    assert suffix_array_numpy(a).tolist() == truth


@pytest.mark.parametrize("seed", range(6))
def test_find_equals_brute_force_scan(seed: int) -> None:
    rng = np.random.default_rng(seed)
    docs = _random_docs(rng, 40, alphabet=int(rng.integers(2, 6)), max_len=25)
    ix = build_from_texts(docs, 40)
    doc_words = [words(t) for _, _, t in docs]
    for _ in range(60):
        src = doc_words[int(rng.integers(len(doc_words)))]
        if rng.random() < 0.8 and src:
            p = int(rng.integers(len(src)))
            span = src[p:p + int(rng.integers(1, 7))]
        else:  # random span, usually absent
            span = [f"w{int(t)}" for t in rng.integers(0, 7, int(rng.integers(1, 5)))]
        got = sorted((o.idx, o.field, o.word_pos) for o in ix.find(span, limit=None))
        assert got == _brute_occurrences(docs, span), span
        assert ix.count(span) == len(got)
        assert ix.count(" ".join(span)) == len(got)  # text queries tokenize the same way


@pytest.mark.parametrize("seed", range(6))
def test_maximal_matches_equal_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    docs = _random_docs(rng, 30, alphabet=int(rng.integers(2, 8)), max_len=30)
    ix = build_from_texts(docs, 30)
    doc_words = [words(t) for _, _, t in docs]
    for _ in range(15):
        q = [f"w{int(t)}" for t in rng.integers(0, 9, int(rng.integers(1, 25)))]
        longest = [_brute_longest(doc_words, q, i) for i in range(len(q))]
        assert ix.matching_lengths(ix.encode(q)) == longest
        # maximal spans: not contained in a span starting earlier
        want, max_end = [], 0
        for i, n in enumerate(longest):
            if n >= 2 and i + n > max_end:
                want.append((i, i + n))
            max_end = max(max_end, i + n)
        got = ix.maximal_matches(q, min_len=2, max_occurrences=None)
        assert [(m.start, m.end) for m in got] == want
        for m in got:
            assert m.count == len(_brute_occurrences(docs, q[m.start:m.end]))


def test_matches_never_cross_documents_and_unknown_words_do_not_match() -> None:
    docs = [(0, 2, "alpha beta"), (1, 2, "gamma delta")]
    ix = build_from_texts(docs, 2)
    assert ix.count("beta gamma") == 0
    assert ix.count("alpha beta") == 1
    assert [(m.start, m.end) for m in ix.maximal_matches("alpha beta gamma zzz delta")] == [(0, 2), (2, 3), (4, 5)]
    assert ix.count("zzz") == 0 and ix.find("") == []


def test_document_frequency_counts_instances_not_occurrences() -> None:
    docs = [(0, 0, "apple apple pie"), (0, 2, "apple"), (1, 2, "pie crust"), (2, 2, "crust")]
    ix = build_from_texts(docs, 3)
    df = {w: int(ix.df[ix.word_id[w]]) for w in ("apple", "pie", "crust")}
    assert df == {"apple": 1, "pie": 2, "crust": 2}
    idf = ix.idf(ix.encode("apple pie unknownword"))
    assert idf[0] > idf[1] and idf[2] == pytest.approx(ix.max_idf())


def _write_alpaca(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows))
    return path


def test_persist_load_and_stale_detection(tmp_path: Path, store) -> None:
    rows = [{"instruction": f"Question {i} about topic {i % 3}", "input": "", "output": f"Answer {i}: the zorblax value is {i}"}
            for i in range(20)]
    src = _write_alpaca(tmp_path / "a.json", rows)
    ingest(store, src, "toy", "alpaca")
    idir = tmp_path / "indexes"
    ix = build_span_index(store, "toy", idir)
    files = sorted(p.name for p in (idir / "toy").iterdir())
    assert "spans.meta.json" in files and "spans.sa.npy" in files
    assert not [f for f in files if ".tmp" in f]
    loaded = load_span_index(store, "toy", idir)
    assert loaded.count("the zorblax value is") == 20
    assert [o.idx for o in loaded.find("answer 7")] == [7]
    assert np.array_equal(np.asarray(loaded.sa), np.asarray(ix.sa))
    # re-ingest changed data: the index is stale, ensure_span_index rebuilds it
    rows[7]["output"] = "Answer 7: a brand new quuxification"
    _write_alpaca(src, rows)
    ingest(store, src, "toy", "alpaca")
    with pytest.raises(StaleIndexError):
        load_span_index(store, "toy", idir)
    fresh, built = ensure_span_index(store, "toy", idir)
    assert built and fresh.count("quuxification") == 1 and fresh.count("the zorblax value is") == 19
    again, built2 = ensure_span_index(store, "toy", idir)
    assert not built2 and again.count("quuxification") == 1


def test_cli_spans_build_find_match(tmp_path: Path, capsys) -> None:
    from itaudit.cli import main

    rows = [{"instruction": "Where is Hooptown?", "input": "", "output": "Hooptown U.S.A. hosts a basketball tournament."},
            {"instruction": "Name a city", "input": "", "output": "Spokane is a city."}]
    src = _write_alpaca(tmp_path / "a.json", rows)
    db = str(tmp_path / "t.duckdb")
    idir = str(tmp_path / "ix")
    main(["ingest", str(src), "--name", "toy", "--db", db])
    main(["spans", "build", "toy", "--db", db, "--index-dir", idir, "-q"])
    main(["spans", "find", "toy", "hooptown u.s.a", "--db", db, "--index-dir", idir])
    cap = capsys.readouterr()
    assert "1 occurrences" in cap.err and "Where is Hooptown" in cap.out
    main(["spans", "match", "toy", "They went to Hooptown U.S.A. hosts", "--db", db, "--index-dir", idir, "--min-len", "2"])
    assert "Hooptown U.S.A. hosts" in capsys.readouterr().out
