"""Staged MinHash (signatures per chunk, grouped bands, verified, expanded) equals the datasketch path."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from itaudit.audit import minhash as mh
from itaudit.audit import near_duplicates as nd
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    """1,500 real Alpaca rows + near copies (one word changed) + 40 exact copies of one row + empties."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    rows = json.loads((SHARED_DATA / "alpaca" / "alpaca_5000.json").read_text())[:1500]
    rng = np.random.default_rng(0)
    extra = []
    for k in range(150):
        r = dict(rows[int(rng.integers(len(rows)))])
        w = r["output"].split()
        if len(w) > 10 and k % 2:
            w[int(rng.integers(len(w)))] = "zebra"
        r["output"] = " ".join(w)
        extra.append(r)
    long = max(rows, key=lambda r: len(r["output"]))
    near_long = dict(long, output=long["output"] + " And one more closing sentence.")
    rows = rows + extra + [dict(long) for _ in range(40)] + [near_long] * 3 + [{"instruction": "", "input": "", "output": ""}] * 3
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    return pl.DataFrame({"idx": np.arange(len(rows)), "instruction": [r["instruction"] for r in rows],
                         "input": [r["input"] for r in rows], "response": [r["output"] for r in rows]})


@pytest.mark.parametrize("max_per_row", [5, 50])
def test_pairs_and_signatures_equal_datasketch(frame: pl.DataFrame, max_per_row: int) -> None:
    sh = nd.instance_shingles(frame)
    want, mhs = nd.minhash_pairs(sh, threshold=0.8, num_perm=128, max_per_row=max_per_row)
    # stage 1 in chunks (as an executor runs it), concatenated in chunk order
    parts = [mh.chunk_signatures(frame.slice(s, 400)) for s in range(0, frame.height, 400)]
    got, sig = mh.minhash_pairs(frame, threshold=0.8, max_per_row=max_per_row, sig_frame=pl.concat(parts))
    assert len(want) > 200  # the planted copies are found
    assert got == want
    assert all(np.array_equal(sig[i], mhs[i].hashvalues) for i in range(frame.height))
    i, j = next(iter(want))
    assert mh.estimate(sig, i, j) == mhs[i].jaccard(mhs[j])
    # the same clusters (connected components) and hence the same flags
    def flags(pairs):
        uf = nd.UnionFind(frame.height)
        for a, b in pairs:
            uf.union(a, b)
        roots = uf.clusters()
        return np.bincount(roots, minlength=frame.height)[roots] > 1
    assert np.array_equal(flags(got), flags(want))


def test_exact_copies_are_one_group_and_the_cap_holds(frame: pl.DataFrame) -> None:
    got, _ = mh.minhash_pairs(frame, threshold=0.8, max_per_row=5)
    per_row: dict[int, int] = {}
    for i, _j in got:
        per_row[i] = per_row.get(i, 0) + 1
    assert max(per_row.values()) == 5
    sig_frame = mh.chunk_signatures(frame)
    digests = np.stack([sig_frame["digest_hi"].to_numpy(), sig_frame["digest_lo"].to_numpy()], axis=1)
    group = mh.groups_of(digests, sig_frame["n_shingles"].to_numpy() > 0)
    sizes = np.bincount(group[group >= 0])
    assert sizes.max() >= 41  # the 40 copies and the original share one representative
    assert (group == -1).sum() == 3  # empty rows are never paired
