"""MinHash near-duplicate pairs in stages that parallelize (datatrove's multi-stage MinHash).

The pairs equal those of the datasketch path (`near_duplicates.minhash_pairs`: MinHashLSH
candidates, kept when the exact shingle Jaccard >= threshold, at most `max_per_row` partners per
row), computed as:

1. signatures (row-parallel, `chunk_signatures` on chunks of rows; executors run it anywhere):
   shingle hashes of each normalized instance (`instance_shingles`), their datasketch-identical
   MinHash values (same permutations and affine32 scheme, vectorized over rows), and a 128-bit
   digest of the shingle set;
2. grouping (driver): rows with identical shingle sets form one group, represented by its first
   row; each band of `r` signature values of every representative is a bucket key (datasketch's
   `(b, r)` for the threshold), and representatives sharing a bucket are candidate pairs;
3. verification: exact Jaccard of candidate representative pairs (shingles recomputed only for
   those rows);
4. expansion: row i's partners are the later rows of its group (Jaccard 1) and the rows of
   verified neighbour groups, the `max_per_row` most similar kept - exactly the datasketch cap.

Identical shingle sets never cost m^2 pair checks (a group is one representative), so planted or
natural exact copies stay cheap. Connected components are left to the caller (union-find).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl
from datasketch import MinHash
from datasketch.lsh import _optimal_param
from datasketch.minhash import _fmix

from ..steps.base import Params, Step
from .near_duplicates import instance_shingles, jaccard

MAX_BATCH = 1 << 16  # shingles per vectorized step (memory: MAX_BATCH x num_perm x 4 bytes)


@lru_cache(maxsize=4)
def permutations(num_perm: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's (a, b) affine32 permutations for seed 1 (what `MinHash(num_perm)` uses)."""
    m = MinHash(num_perm=num_perm, hashfunc=int)
    a, b = m.permutations
    return np.asarray(a, dtype=np.uint32), np.asarray(b, dtype=np.uint32)


def signatures(shingles: list[np.ndarray], num_perm: int = 128) -> np.ndarray:
    """(n, num_perm) uint32 MinHash values, equal to `minhash_of(h, num_perm).hashvalues` per row
    (an empty row keeps datasketch's initial all-max values)."""
    a, b = permutations(num_perm)
    n = len(shingles)
    out = np.full((n, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    lens = np.fromiter((len(h) for h in shingles), dtype=np.int64, count=n)
    nz = np.flatnonzero(lens)
    start = 0
    while start < len(nz):
        # non-empty rows with about MAX_BATCH shingles together (one row at least)
        csum = np.cumsum(lens[nz[start:]])
        stop = start + max(1, int(np.searchsorted(csum, MAX_BATCH, side="right")))
        rows = nz[start:stop]
        hv = _fmix(np.concatenate([shingles[r] for r in rows]).astype(np.uint32), 32)
        with np.errstate(over="ignore"):
            phv = a[:, None] * hv[None, :] + b[:, None]  # (num_perm, shingles): rows reduce contiguously
        offs = np.concatenate([[0], np.cumsum(lens[rows])[:-1]])
        out[rows] = np.minimum.reduceat(phv, offs, axis=1).T
        start = stop
    return out


def set_digests(shingles: list[np.ndarray]) -> np.ndarray:
    """(n, 2) uint64: a 128-bit blake2b digest of each (sorted, unique) shingle set."""
    out = np.zeros((len(shingles), 2), dtype=np.uint64)
    for i, h in enumerate(shingles):
        out[i] = np.frombuffer(hashlib.blake2b(h.tobytes(), digest_size=16).digest(), dtype=np.uint64)
    return out


def chunk_signatures(rows: pl.DataFrame, *, shingle: int = 5, max_words: int = 2000,
                     num_perm: int = 128) -> pl.DataFrame:
    """Stage 1 on one chunk: idx, n_shingles, digest (2 x uint64) and signature (num_perm x uint32)."""
    return signature_frame(rows["idx"], instance_shingles(rows, shingle, max_words), num_perm)


def signature_frame(idx: pl.Series, sh: list[np.ndarray], num_perm: int = 128) -> pl.DataFrame:
    """The stage-1 frame of rows `idx` from their shingle hashes."""
    sig = signatures(sh, num_perm)
    dig = set_digests(sh)
    return pl.DataFrame({
        "idx": idx.cast(pl.Int64),
        "n_shingles": pl.Series([len(h) for h in sh], dtype=pl.Int64),
        "digest_hi": dig[:, 0], "digest_lo": dig[:, 1],
        "sig": pl.Series(list(sig), dtype=pl.Array(pl.UInt32, num_perm)),
    })


def band_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) datasketch's MinHashLSH picks for `threshold` (weights 0.5/0.5)."""
    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def groups_of(digests: np.ndarray, nonempty: np.ndarray) -> np.ndarray:
    """Group id per row (-1 for empty rows): rows with equal digests share the id of their first row."""
    n = len(digests)
    out = np.full(n, -1, dtype=np.int64)
    pos = np.flatnonzero(nonempty)
    if not len(pos):
        return out
    _, first, inv = np.unique(digests[pos], axis=0, return_index=True, return_inverse=True)
    out[pos] = pos[first][inv.ravel()]
    return out


def candidate_pairs(sig: np.ndarray, reps: np.ndarray, bands: int, r: int) -> np.ndarray:
    """(k, 2) unique position pairs (a < b) of representatives sharing at least one band key."""
    found = []
    for k in range(bands):
        key = np.ascontiguousarray(sig[reps, k * r:(k + 1) * r]).view(np.dtype((np.void, 4 * r))).ravel()
        order = np.argsort(key, kind="stable")
        sk = key[order]
        brk = np.flatnonzero(sk[1:] != sk[:-1]) + 1
        starts = np.concatenate([[0], brk])
        ends = np.concatenate([brk, [len(sk)]])
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            if e - s > 1:
                m = np.sort(reps[order[s:e]])
                ii, jj = np.triu_indices(len(m), 1)
                found.append(np.stack([m[ii], m[jj]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


def expand_pairs(group: np.ndarray, linked: dict[int, list[tuple[float, int]]],
                 max_per_row: int) -> dict[tuple[int, int], float]:
    """Row pairs (i < j) -> Jaccard from groups (identical sets) and verified group links, with
    each row's partners j > i cut to the `max_per_row` most similar (ties: smaller j)."""
    members: dict[int, np.ndarray] = {}
    pos = np.flatnonzero(group >= 0)
    order = pos[np.argsort(group[pos], kind="stable")]
    g_sorted = group[order]
    brk = np.flatnonzero(g_sorted[1:] != g_sorted[:-1]) + 1
    for chunk in np.split(order, brk):
        if len(chunk) > 1 or int(chunk[0]) in linked:
            members[int(chunk[0])] = np.sort(chunk)
    out: dict[tuple[int, int], float] = {}
    for g, mem in members.items():
        neigh = linked.get(g, [])
        for t, i in enumerate(mem.tolist()):
            same = mem[t + 1:t + 1 + max_per_row].tolist()
            cands = [(1.0, j) for j in same]
            if len(cands) < max_per_row and neigh:
                more = []
                for jac, h in neigh:
                    mh = members[h]
                    more.extend((jac, j) for j in mh[np.searchsorted(mh, i, side="right"):].tolist())
                more.sort(key=lambda x: (-x[0], x[1]))
                cands.extend(more[:max_per_row - len(cands)])
            for jac, j in cands:
                out[(i, j)] = jac
    return out


def minhash_pairs(frame: pl.DataFrame, *, threshold: float = 0.8, num_perm: int = 128, shingle: int = 5,
                  max_words: int = 2000, max_per_row: int = 50, sig_frame: pl.DataFrame | None = None,
                  shingles: list[np.ndarray] | None = None) -> tuple[dict[tuple[int, int], float], np.ndarray]:
    """(pairs i < j by row position -> exact Jaccard, signatures) for the rows of `frame`.

    `sig_frame`: the concatenated `chunk_signatures` of `frame` (stage 1 run by an executor);
    computed here when None (from `shingles`, every row's `instance_shingles`, when given).
    Equal to the datasketch path's pairs for the same rows."""
    if sig_frame is None:
        sig_frame = (signature_frame(frame["idx"], shingles, num_perm) if shingles is not None else
                     chunk_signatures(frame, shingle=shingle, max_words=max_words, num_perm=num_perm))
    if sig_frame.height != frame.height or not (sig_frame["idx"] == frame["idx"].cast(pl.Int64)).all():
        raise ValueError("signature rows do not match the frame's rows (idx order)")
    sig = sig_frame["sig"].to_numpy().astype(np.uint32, copy=False).reshape(frame.height, num_perm)
    digests = np.stack([sig_frame["digest_hi"].to_numpy(), sig_frame["digest_lo"].to_numpy()], axis=1)
    group = groups_of(digests, sig_frame["n_shingles"].to_numpy() > 0)
    reps = np.unique(group[group >= 0])
    bands, r = band_params(threshold, num_perm)
    cand = candidate_pairs(sig, reps, bands, r)
    linked: dict[int, list[tuple[float, int]]] = defaultdict(list)
    if len(cand):
        need = np.unique(cand.ravel())
        sh = ({i: shingles[i] for i in need.tolist()} if shingles is not None else
              dict(zip(need.tolist(), instance_shingles(frame[need.tolist()], shingle, max_words), strict=True)))
        for a, b in cand.tolist():
            jac = jaccard(sh[a], sh[b])
            if jac >= threshold:
                linked[a].append((jac, b))
                linked[b].append((jac, a))
    return expand_pairs(group, dict(linked), max_per_row), sig


def estimate(sig: np.ndarray, i: int, j: int) -> float:
    """MinHash Jaccard estimate of rows i and j (datasketch's `MinHash.jaccard`)."""
    return float(np.count_nonzero(sig[i] == sig[j])) / float(sig.shape[1])


@dataclass(frozen=True)
class SignatureParams(Params):
    shingle: int = 5
    max_words: int = 2000
    num_perm: int = 128


class MinHashSignatures(Step):
    """Stage 1 as a row-parallel step: executors map it over chunks (locally or on Ray)."""

    name = "minhash_signatures"
    description = "MinHash signatures and shingle-set digests of every instance (near-duplicate stage 1)"
    Params = SignatureParams
    default = False
    chunk_columns = "idx, instruction, input, response"

    def compute_chunk(self, rows: pl.DataFrame, rank: int = 0, world_size: int = 1) -> pl.DataFrame:
        p = self.params
        return chunk_signatures(rows, shingle=p.shingle, max_words=p.max_words, num_perm=p.num_perm)
