"""Benchmark contamination: is an eval question (verbatim, reworded, or wrapped) in the dataset?

Both directions are reported: rows of the IT dataset that contain an evaluation question, and
evaluation items that are present in the IT dataset. Evidence (the aligned text, coverage,
edits, cosine, answer agreement) goes to `check_pairs` with `other_dataset` set to the eval set.

Matching (per eval item, the *question*: `eval_fields`, default the instruction, with the input
(choices, context) when the question has fewer than 8 words; the answer is separate evidence,
`answer_in_row`, and never dilutes the score):
1. Candidates: IT texts sharing word bigrams with the question (bigrams shared by more than
   `max_eval_df` eval items are templates and ignored), then an IDF-weighted bag-of-words bound.
   Word weight = log(1 + N / (1 + df)), df over the IT texts and the eval questions.
2. Aligned coverage: the best alignment of the question's words inside the IT text (free prefix
   and suffix, so a question wrapped in a longer instruction aligns whole; a swapped word costs
   its own weight; each word inserted inside the match costs a tenth of an average word).
   coverage = aligned weight / question weight. Flag at `min_coverage` (0.8). A match inside a
   text more than twice the question's length must also carry a matched weight of at least
   ln(N / 0.001): generic questions ("What do you do?") are too likely to occur by chance.
3. Second stage for the band [`candidate_coverage`, `min_coverage`) in prompt fields: the pair
   must look like a rewording, not a different question on the same topic. Its edits must be
   one or two swaps (no question word of at least half the mean weight dropped, at most one word
   inserted), and the embedding cosine of the question and the aligned text with half the
   question's length of context either side must reach `confirm_threshold` (0.8). "What is the
   tallest mountain in Europe?" vs "What is the name of the tallest mountain?" drops "Europe";
   "books banned in France" vs "books banned in Spain" is a clean swap but its cosine is low.
Optional `dense`: embeddings of whole prompts (cached) and of the sentences of multi-sentence
prompts vs the eval questions, flag at `embed_threshold` (slow on CPU: every prompt is embedded).

Eval sets are dataset names in the store or files (`path` or `name=path`), read in memory
(`itaudit.ingest.eval_formats`): the check never writes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..errors import ItauditError
from ..ingest.eval_formats import EvalSet, read_eval_set, short_answers
from ..steps.base import Params, Resources, Step
from ..text import ALNUM, ngram_hashes, texts_codes
from ..text import words as _words
from .base import CheckResult, save_result

IT_FIELDS = ("system", "instruction", "input", "response")
EVAL_FIELDS = ("instruction", "input", "response")
_PROMPT = ("system", "instruction", "input")   # IT fields joined into one prompt text
_SEED = 13
GAP = 0.5   # cost of a word inserted inside an aligned question, in average question words
_SENT = re.compile(r"(?<=[.?!:])\s+|\n+")   # sentence breaks, for the dense windows
SHORT_STEM = 8   # eval questions shorter than this are scored with their input (choices, context)
MAX_SWAPS = 2   # a light rewording swaps one or two words
CHANCE = 1e-3   # a question must be unlikely to occur by chance in a text: weight >= ln(N / CHANCE)


def words(text: str | None) -> list[str]:
    """The normalized words of `text` (lowercase letter/digit runs), as matching sees them."""
    return _words(text, ALNUM)


@dataclass(frozen=True)
class ContaminationParams(Params):
    against: list[str] = field(default_factory=list)
    it_fields: list[str] = field(default_factory=lambda: ["instruction", "input"])
    eval_fields: list[str] = field(default_factory=lambda: ["instruction"])
    min_words: int = 3
    min_coverage: float = 0.8
    candidate_coverage: float = 0.5
    confirm_threshold: float = 0.8
    embeddings: bool = True
    max_eval_df: int = 10
    max_pairs_per_row: int = 5
    dense: bool = False
    embed_threshold: float = 0.92

    def __post_init__(self) -> None:
        for name, allowed in (("it_fields", IT_FIELDS), ("eval_fields", EVAL_FIELDS)):
            got = list(getattr(self, name))
            bad = [f for f in got if f not in allowed]
            if bad or not got:
                raise ItauditError(f"contamination.{name}: {', '.join(map(repr, bad)) or 'empty'} "
                                   f"not a field; choose from {', '.join(allowed)}")
        if not 0 < self.candidate_coverage <= self.min_coverage <= 1:
            raise ItauditError("contamination: need 0 < candidate_coverage <= min_coverage <= 1, got "
                               f"{self.candidate_coverage} and {self.min_coverage}")
        for name in ("confirm_threshold", "embed_threshold"):
            if not -1 <= getattr(self, name) <= 1:
                raise ItauditError(f"contamination.{name}: a cosine in [-1, 1], got {getattr(self, name)}")
        if self.min_words < 1 or self.max_eval_df < 1 or self.max_pairs_per_row < 1:
            raise ItauditError("contamination: min_words, max_eval_df and max_pairs_per_row must be >= 1")


# ---------------------------------------------------------------------------- text -> codes

@dataclass
class _Segments:
    """Many texts tokenized at once: word codes concatenated, with each text's start and length."""

    codes: np.ndarray      # uint64 code per word
    start: np.ndarray      # int64 per text
    length: np.ndarray     # int64 per text
    texts: list[str | None]

    @classmethod
    def of(cls, texts: list[str | None]) -> _Segments:
        codes, length = texts_codes(texts, ALNUM, seed=_SEED)
        start = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64) if len(length) else length
        return cls(codes | np.uint64(1), start, length, texts)

    def tokens(self, seg: int) -> np.ndarray:
        return self.codes[self.start[seg]: self.start[seg] + self.length[seg]]

    def words(self, seg: int, a: int, b: int) -> list[str]:
        return words(self.texts[seg])[a:b]

    def windows(self, k: int, segs: np.ndarray | None = None, max_words: int = 2_000_000):
        """Yield (hash, segment, offset) arrays of every k-word window lying inside one text (of
        `segs`), in pieces of about `max_words` words (bounded memory on big datasets)."""
        n_seg = len(self.length)
        mask = None
        if segs is not None:
            mask = np.zeros(n_seg, dtype=bool)
            mask[segs] = True
        a = 0
        ends = self.start + self.length
        while a < n_seg:
            b = int(np.searchsorted(ends, self.start[a] + max_words, side="right"))
            b = min(max(b, a + 1), n_seg)
            w0, w1 = int(self.start[a]), int(ends[b - 1])
            if w1 - w0 >= k:
                h = ngram_hashes(self.codes[w0:w1], k)
                seg_of = np.repeat(np.arange(a, b), self.length[a:b])[: len(h)]
                off = np.arange(len(h)) + w0 - self.start[seg_of]
                ok = off + k <= self.length[seg_of]
                if mask is not None:
                    ok &= mask[seg_of]
                yield h[ok], seg_of[ok], off[ok]
            a = b


def align(q: np.ndarray, w: np.ndarray, t: np.ndarray, gap: float) -> tuple[float, int, int, int]:
    """Best alignment of all of question `q` (word weights `w`) inside text `t`, free prefix and
    suffix in `t`: (matched weight - gap * words inserted inside, start, end, matched words).

    A swapped word is a substitution (costs its own weight, no gap); `t[start:end]` is the span.
    Vectorized over `t`: one pass of numpy operations per question word.
    """
    n = len(t)
    ar = np.arange(n + 1)
    h = np.zeros(n + 1)
    s = ar.copy()
    c = np.zeros(n + 1, dtype=np.int64)
    for i in range(len(q)):
        m = t == q[i]
        diag = h[:-1] + w[i] * m
        better = np.concatenate([[False], diag > h[1:]])
        cand = h.copy()
        cand[better] = diag[better[1:]]
        cs = np.where(better, np.concatenate([[0], s[:-1]]), s)
        cc = np.where(better, np.concatenate([[0], c[:-1] + m]), c)
        v = cand + gap * ar
        acc = np.maximum.accumulate(v)
        pos = np.maximum.accumulate(np.where(v >= acc, ar, 0))
        h, s, c = acc - gap * ar, cs[pos], cc[pos]
    j = int(np.argmax(h))
    return float(h[j]), int(s[j]), j, int(c[j])


def edits(q: np.ndarray, w: np.ndarray, t: np.ndarray, gap: float) -> tuple[int, int, int]:
    """(substituted, deleted, inserted) words of the best alignment of `q` inside the short text
    `t` (the aligned span and a word either side, so a swapped first or last word is a swap).

    Free prefix and suffix in `t`; among equal scores the alignment that consumes more of `t` as
    swaps wins. Deleted counts only the question words weighing at least half the question's
    mean weight (dropping "the" is not an edit; dropping "Europe" is).
    """
    m, n = len(q), len(t)
    h = np.zeros((m + 1, n + 1))
    move = np.zeros((m + 1, n + 1), dtype=np.int8)  # 1 diag, 2 delete q word, 3 insert t word
    move[1:, 0], move[0, 1:] = 2, 3
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            d = h[i - 1, j - 1] + (w[i - 1] if q[i - 1] == t[j - 1] else 0.0)
            u = h[i - 1, j]
            le = h[i, j - 1] - gap
            if d >= u and d >= le:
                h[i, j], move[i, j] = d, 1
            elif u >= le:
                h[i, j], move[i, j] = u, 2
            else:
                h[i, j], move[i, j] = le, 3
    heavy = w >= 0.5 * float(w.mean())
    sub = dele = ins = 0
    i, j = m, n - int(np.argmax(h[m, ::-1]))     # the last end of the best score
    while i > 0:
        mv = move[i, j] if j > 0 else 2
        if mv == 1:
            sub += int(q[i - 1] != t[j - 1])
            i, j = i - 1, j - 1
        elif mv == 2:
            dele += int(heavy[i - 1])
            i -= 1
        else:
            ins += 1
            j -= 1
    return sub, dele, ins


# ---------------------------------------------------------------------------- eval sets

@dataclass
class _Eval:
    name: str
    path: str | None
    idx: np.ndarray
    question: list[str]
    answers: list[list[str]]
    n_rejected: int = 0


def _read(ctx: Any, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
    return ctx.read(sql, params) if hasattr(ctx, "read") else ctx.store.query(sql, params)


def _join(parts: Sequence[str | None]) -> str:
    return "\n".join(p for p in parts if p)


def load_eval_sets(ctx: Any, against: Sequence[str], eval_fields: Sequence[str], dataset: str) -> list[_Eval]:
    """Eval sets by dataset name (read from the store) or file (`path`, `name=path`; read in memory)."""
    out = []
    for item in (a.strip() for a in against if a and a.strip()):
        name, sep, path = item.partition("=")
        if not sep:
            name, path = "", item
        known = _read(ctx, "SELECT name FROM datasets WHERE name = ?", [item]).height > 0 if not sep else False
        if known:
            df = _read(ctx, "SELECT idx, instruction, input, response FROM instances WHERE dataset = ? ORDER BY idx", [item])
            ev = EvalSet(item, None, "store", df.with_columns(
                pl.Series("answers", [short_answers(r) for r in df["response"].to_list()], dtype=pl.List(pl.Utf8))))
        elif Path(path).exists():
            ev = read_eval_set(path, name.strip() or None)
        else:
            raise ItauditError(f"contamination: eval set {item!r} is neither a dataset in the store nor a file")
        if ev.name == dataset:
            raise ItauditError(f"contamination: {ev.name!r} is the dataset being checked")
        f = ev.frame
        cols = [f[c].to_list() if c in f.columns else [None] * f.height for c in eval_fields]
        questions = [_join(p) for p in zip(*cols, strict=True)]
        if "input" not in eval_fields and "input" in f.columns:
            # A short stem ("Which of the following is true?", "A wave transfers") does not identify
            # its item: its choices / context (the input) are scored with it.
            questions = [q if len(words(q)) >= SHORT_STEM or not x else _join([q, x])
                         for q, x in zip(questions, f["input"].to_list(), strict=True)]
        out.append(_Eval(ev.name, ev.path, f["idx"].to_numpy().astype(np.int64), questions,
                         f["answers"].to_list(), ev.n_rejected))
    if not out:
        raise ItauditError("contamination needs eval sets: -s contamination.against=mmlu,gsm8k "
                           "(dataset names or files, e.g. ../shared/data/gsm8k/test.jsonl)")
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise ItauditError(f"contamination: eval set names repeat ({', '.join(names)}); use name=path")
    return out


# ---------------------------------------------------------------------------- matching

@dataclass
class _Match:
    seg: int
    item: int
    coverage: float
    start: int
    end: int
    matched: int
    edits: tuple[int, int, int] | None = None   # (substituted, deleted, inserted), for the band only


def _candidates(it: _Segments, ev: _Segments, min_words: int, max_eval_df: int, low: float
                ) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """(candidate (segment, item) pairs, vocab, idf weight per vocab word, eval item weight, hit
    offsets per pair key) for one eval set."""
    n_ev = len(ev.length)
    ok_items = np.nonzero(ev.length >= min_words)[0]
    # vocabulary of the eval questions and document frequencies (eval items + IT segments)
    vocab = np.unique(ev.codes)
    V = len(vocab)
    ev_vid = np.searchsorted(vocab, ev.codes)
    ev_seg_of = np.repeat(np.arange(n_ev), ev.length)
    ev_pairs = np.unique(ev_seg_of.astype(np.int64) * V + ev_vid)
    df = np.bincount((ev_pairs % V).astype(np.int64), minlength=V).astype(np.float64)
    present: list[np.ndarray] = []
    n_seg = len(it.length)
    for a in range(0, n_seg, 20_000):
        b = min(n_seg, a + 20_000)
        w0, w1 = int(it.start[a]), int(it.start[b - 1] + it.length[b - 1])
        codes = it.codes[w0:w1]
        pos = np.minimum(np.searchsorted(vocab, codes), max(V - 1, 0))
        hit = vocab[pos] == codes if V else np.zeros(len(codes), bool)
        seg_of = np.repeat(np.arange(a, b), it.length[a:b])
        keys = np.unique(seg_of[hit].astype(np.int64) * V + pos[hit])
        present.append(keys)
        df += np.bincount((keys % V).astype(np.int64), minlength=V)
    present_keys = np.concatenate(present) if present else np.zeros(0, np.int64)   # sorted: pieces ascend
    n_docs = n_ev + n_seg
    idf = np.log1p(n_docs / (1.0 + df))
    # per eval item: the vocab ids of its question words (repeats kept) and their total weight
    item_vids = [ev_vid[ev.start[j]: ev.start[j] + ev.length[j]] for j in range(n_ev)]
    item_w = np.array([idf[v].sum() for v in item_vids])

    # anchors: question bigrams that are not templates
    parts = [np.stack([h, s.astype(np.uint64)], axis=1) for h, s, _ in ev.windows(2, ok_items)]
    if not parts:
        return [], vocab, idf, item_w, {}
    hj = np.unique(np.concatenate(parts), axis=0)
    _, inv, cnt = np.unique(hj[:, 0], return_inverse=True, return_counts=True)
    hj = hj[cnt[inv] <= max_eval_df]
    keys, rows_j = hj[:, 0], hj[:, 1].astype(np.int64)
    n_anchor = np.bincount(rows_j, minlength=n_ev)
    need = np.maximum(1, np.ceil(0.5 * n_anchor) - 2).astype(np.int64)
    hit_seg, hit_item, hit_key, hit_off = [], [], [], []
    for h, seg, off in it.windows(2):
        lo = np.searchsorted(keys, h, side="left")
        hi = np.searchsorted(keys, h, side="right")
        cnt = hi - lo
        sel = np.nonzero(cnt)[0]
        if not len(sel):
            continue
        rep = cnt[sel]
        idx = np.repeat(lo[sel], rep) + (np.arange(rep.sum()) - np.repeat(np.cumsum(rep) - rep, rep))
        hit_seg.append(np.repeat(seg[sel], rep))
        hit_off.append(np.repeat(off[sel], rep))
        hit_item.append(rows_j[idx])
        hit_key.append(idx)
    if not hit_seg:
        return [], vocab, idf, item_w, {}
    hs, hi_, hk, ho = (np.concatenate(x) for x in (hit_seg, hit_item, hit_key, hit_off))
    pair = hs.astype(np.int64) * n_ev + hi_
    # distinct anchors shared per pair
    uk = np.unique(np.stack([pair, hk.astype(np.int64)], axis=1), axis=0)
    up, n_shared = np.unique(uk[:, 0], return_counts=True)
    keep = n_shared >= need[up % n_ev]
    up = up[keep]
    # IDF-weighted bag-of-words bound: the share of the question's weight present anywhere in the text
    cand: list[tuple[int, int]] = []
    if len(up):
        segs, items = up // n_ev, up % n_ev
        lens = np.array([len(item_vids[j]) for j in items])
        flat_v = np.concatenate([item_vids[j] for j in items])
        flat_seg = np.repeat(segs, lens)
        k = flat_seg * V + flat_v
        pos = np.minimum(np.searchsorted(present_keys, k), max(len(present_keys) - 1, 0))
        has = present_keys[pos] == k if len(present_keys) else np.zeros(len(k), bool)
        got = np.bincount(np.repeat(np.arange(len(up)), lens), weights=idf[flat_v] * has, minlength=len(up))
        bound = got / np.maximum(item_w[items], 1e-9)
        ok = bound >= low
        cand = list(zip(segs[ok].tolist(), items[ok].tolist(), strict=True))
        want = set(up[ok].tolist())
        order = np.argsort(pair, kind="stable")
        ps, po = pair[order], ho[order]
        bounds = np.flatnonzero(np.diff(ps)) + 1
        offsets = {int(p[0]): o for p, o in zip(np.split(ps, bounds), np.split(po, bounds), strict=True)
                   if len(p) and int(p[0]) in want}
        return cand, vocab, idf, item_w, offsets
    return cand, vocab, idf, item_w, {}


def chance_bound(n_docs: int) -> float:
    """The matched weight (a sum of word IDFs, ~ -log document frequencies) above which a match
    inside a longer text is unlikely to be chance among `n_docs` texts: ln(n_docs / CHANCE).
    "What do you do?" or "Why is the sky blue?" carry less: they match only a text about as
    short as they are."""
    return math.log(max(n_docs, 2) / CHANCE)


def _regions(offsets: np.ndarray, n_text: int, m: int) -> list[tuple[int, int]]:
    """Merged text regions around anchor hits, wide enough to hold the question and its edits."""
    pad = 2 * m + 8
    out: list[list[int]] = []
    for o in np.unique(offsets).tolist():
        a, b = max(0, o - pad), min(n_text, o + pad)
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _match_eval_set(it: _Segments, ev_seg: _Segments, p: ContaminationParams) -> list[_Match]:
    cand, vocab, idf, item_w, offsets = _candidates(it, ev_seg, p.min_words, p.max_eval_df, p.candidate_coverage)
    n_ev = len(ev_seg.length)
    bound = chance_bound(n_ev + len(it.length))
    out = []
    for seg, j in cand:
        q = ev_seg.tokens(j)
        short_text = it.length[seg] <= 2 * len(q)
        if not short_text and item_w[j] < bound:
            continue
        w = idf[np.searchsorted(vocab, q)]
        gap = GAP * float(w.mean())
        t_all = it.tokens(seg)
        best = None
        for a, b in _regions(offsets.get(seg * n_ev + j, np.zeros(1, np.int64)), len(t_all), len(q)):
            score, s, e, k = align(q, w, t_all[a:b], gap)
            if best is None or score > best[0]:
                best = (score, s + a, e + a, k)
        cov = max(0.0, best[0]) / max(float(item_w[j]), 1e-9)
        if cov >= p.candidate_coverage and (short_text or best[0] >= bound):
            ed = edits(q, w, t_all[max(0, best[1] - 1):best[2] + 1], gap) if cov < p.min_coverage else None
            out.append(_Match(seg, j, min(1.0, cov), best[1], best[2], best[3], ed))
    return out


def _clean(mt: _Match, label: str) -> bool:
    """Band pairs worth the second stage: in a prompt field, every heavy question word is present
    or swapped for another word (none dropped, at most two swapped), at most one word inserted."""
    return (mt.edits is not None and label != "response" and mt.edits[0] <= MAX_SWAPS and mt.edits[1] == 0
            and mt.edits[2] <= 1)


def _window(it: _Segments, mt: _Match, m: int) -> str:
    """The aligned IT words with half the question's length of context on either side: a near
    miss that swaps the point of the question ("in Europe" -> "in the world") shows in context."""
    n = int(it.length[mt.seg])
    return " ".join(it.words(mt.seg, max(0, mt.start - m // 2), min(n, mt.end + m // 2)))


def _encode(ctx: Any, texts: list[str]) -> np.ndarray:
    """Embed texts with the context's embedder (shared with the other steps)."""
    if hasattr(ctx, "encode"):
        return np.asarray(ctx.encode(texts), dtype=np.float32)
    emb = getattr(ctx, "embedder", None)
    if emb is None:
        from ..embed import Embedder

        emb = Embedder()
    return emb.encode(texts)


def _answer_in(answers: list[str], text_words: str) -> bool:
    for a in answers:
        aw = " ".join(words(a))
        if aw and f" {aw} " in text_words:
            return True
    return False


# ---------------------------------------------------------------------------- the step

class Contamination(Step):
    name = "contamination"
    description = ("eval questions in the data, verbatim, reworded or wrapped: aligned IDF-weighted overlap, "
                   "ambiguous cases confirmed by embeddings (-s contamination.against=mmlu,path/to/gsm8k.jsonl)")
    Params = ContaminationParams
    default = False
    resources = Resources(cpus=1.0, memory_gb=2.0, model="all-MiniLM-L6-v2")

    def compute(self, ctx: Any) -> list[CheckResult]:
        p: ContaminationParams = self.params  # type: ignore[assignment]
        dataset = ctx.dataset
        evals = load_eval_sets(ctx, p.against, p.eval_fields, dataset)
        cols = sorted(set(p.it_fields) | {"instruction", "input", "response"})
        it = _read(ctx, f"SELECT idx, {', '.join(cols)} FROM instances WHERE dataset = ? ORDER BY idx", [dataset])
        if it.height == 0 and _read(ctx, "SELECT name FROM datasets WHERE name = ?", [dataset]).height == 0:
            raise ItauditError(f"unknown dataset {dataset!r}")
        it_idx = it["idx"].to_numpy().astype(np.int64)
        n_it = it.height
        prompt_f = [f for f in p.it_fields if f in _PROMPT]
        groups = ([prompt_f] if prompt_f else []) + [[f] for f in p.it_fields if f not in _PROMPT]
        labels = ["+".join(g) for g in groups]
        ng = len(groups)
        gcols = [[it[f].to_list() for f in g] for g in groups]
        texts = [_join([c[i] for c in gc]) for i in range(n_it) for gc in gcols]   # segment = row * ng + group
        it_seg = _Segments.of(texts)
        prompts = [_join([ins, inp]) for ins, inp in zip(it["instruction"].to_list(), it["input"].to_list(), strict=True)]
        resp_words: dict[int, str] = {}
        responses = it["response"].to_list()

        def row_words(i: int) -> str:
            """The row's response words (where a leaked answer shows), as ' w1 w2 ... '."""
            if i not in resp_words:
                resp_words[i] = " " + " ".join(words(responses[i])) + " "
            return resp_words[i]

        best = np.zeros(n_it)
        flag = np.zeros(n_it, dtype=bool)
        pair_rows: list[dict] = []
        per_eval: dict[str, dict] = {}
        reverse: dict[str, tuple] = {}
        for ev in evals:
            ev_seg = _Segments.of(ev.question)
            matches = _match_eval_set(it_seg, ev_seg, p)
            # second stage: embed the question and the aligned window of ambiguous pairs
            band = [mt for mt in matches if mt.coverage < p.min_coverage and _clean(mt, labels[mt.seg % ng])]
            cos = {}
            if band and p.embeddings:
                qs = sorted({mt.item for mt in band})
                q_text = {j: " ".join(words(ev.question[j])) for j in qs}
                wins = [_window(it_seg, mt, int(ev_seg.length[mt.item])) for mt in band]
                uniq = sorted(set(wins) | set(q_text.values()))
                vecs = _encode(ctx, uniq)
                at = {t: k for k, t in enumerate(uniq)}
                for mt, wt in zip(band, wins, strict=True):
                    cos[id(mt)] = float(vecs[at[wt]] @ vecs[at[q_text[mt.item]]])
            n_ev = len(ev.idx)
            ev_best = np.zeros(n_ev)
            ev_flag = np.zeros(n_ev, dtype=bool)
            ev_detail: dict[int, dict] = {}
            n_direct = n_confirmed = 0
            for mt in matches:
                i = mt.seg // ng
                c = cos.get(id(mt))
                direct = mt.coverage >= p.min_coverage
                confirmed = not direct and c is not None and c >= p.confirm_threshold
                hit = direct or confirmed
                n_direct += direct
                n_confirmed += confirmed
                score = 0.5 + 0.5 * mt.coverage if hit else 0.5 * mt.coverage
                agree = _answer_in(ev.answers[mt.item], row_words(i)) if ev.answers[mt.item] else None
                best[i] = max(best[i], score)
                flag[i] |= hit
                ev_best[mt.item] = max(ev_best[mt.item], score)
                ev_flag[mt.item] |= hit
                overlap = " ".join(it_seg.words(mt.seg, mt.start, mt.end))
                evidence = {"via": "ngram" if direct else "ngram+embedding", "coverage": round(mt.coverage, 4),
                            "it_field": labels[mt.seg % ng], "overlap": overlap[:2000],
                            "overlap_words": mt.end - mt.start, "matched_words": mt.matched,
                            "question_words": int(ev_seg.length[mt.item]),
                            "eval_text": " ".join(ev.question[mt.item].split())[:1000]}
                if c is not None:
                    evidence["cosine"] = round(c, 4)
                if mt.edits is not None:
                    evidence["edits"] = dict(zip(("substituted", "deleted", "inserted"), mt.edits, strict=True))
                if agree is not None:
                    evidence["answer_in_row"] = agree
                pair_rows.append({"idx_a": int(it_idx[i]), "idx_b": int(ev.idx[mt.item]), "other_dataset": ev.name,
                                  "score": score, "flag": hit, "evidence": evidence})
                if hit and score >= ev_detail.get(mt.item, {}).get("score", -1):
                    ev_detail[mt.item] = {"it_idx": int(it_idx[i]), "score": round(score, 4),
                                          "coverage": round(mt.coverage, 4), "overlap": overlap[:500]}
            if p.dense:
                self._dense(ctx, ev, it_idx, prompts, p, best, flag, ev_best, ev_flag, ev_detail, pair_rows)
            per_eval[ev.name] = {
                "n_eval": int(n_ev), "eval_items_in_dataset": int(ev_flag.sum()),
                "eval_share_in_dataset": float(ev_flag.mean()) if n_ev else 0.0,
                "rows_with_eval_items": len({r["idx_a"] for r in pair_rows if r["flag"] and r["other_dataset"] == ev.name}),
                "candidate_pairs": len(matches), "ngram_pairs": int(n_direct), "embedding_pairs": int(n_confirmed),
                "source": ev.path, "n_rejected": ev.n_rejected,
            }
            reverse[ev.name] = (ev, ev_flag, ev_best, [ev_detail.get(j) if ev_flag[j] else None for j in range(n_ev)])

        params = p.as_dict()
        pairs = _pairs_frame(pair_rows, p.max_pairs_per_row)
        flagged_sets: dict[int, set] = {}
        for ev_name, a in pairs.select("other_dataset", "idx_a").iter_rows():
            flagged_sets.setdefault(int(a), set()).add(ev_name)
        details = [{"eval_sets": sorted(flagged_sets.get(int(a), ()))} if f else None for a, f in zip(it_idx, flag, strict=True)]
        summary = {"n": n_it, "n_flagged": int(flag.sum()), "share_flagged": float(flag.mean()) if n_it else 0.0,
                   "n_candidates": int((best > 0).sum()), "by_eval_set": per_eval}
        result = CheckResult("contamination", dataset, it_idx, flag, np.clip(best, 0, 1), summary=summary,
                             params=params, details=details, pairs=pairs)
        out = [result]
        for ev_name, (ev, ev_flag, ev_score, ev_details) in reverse.items():
            back = pairs.filter(pl.col("other_dataset") == ev_name).select(
                pl.col("idx_b").alias("idx_a"), pl.col("idx_a").alias("idx_b"),
                pl.lit(dataset).alias("other_dataset"), "score", "evidence")
            out.append(CheckResult(
                "contamination", ev_name, ev.idx, ev_flag, np.clip(ev_score, 0, 1),
                summary={"n": int(len(ev.idx)), "n_flagged": int(ev_flag.sum()), "direction": "eval items found in",
                         "found_in": dataset, **per_eval[ev_name]},
                params={**params, "against": [dataset], "reverse_of": dataset}, details=ev_details, pairs=back))
        return out

    def _dense(self, ctx, ev: _Eval, it_idx, prompts: list[str], p: ContaminationParams, best, flag, ev_best,
               ev_flag, ev_detail, pair_rows) -> None:
        """Embeddings of whole prompts (cached by the context) and of the sentences of prompts
        that have several (a question wrapped in a longer instruction is one of them) vs the
        eval questions; flag at `embed_threshold`."""
        import faiss

        ev_vecs = _encode(ctx, ev.question)
        rows, texts = [], []
        for i, t in enumerate(prompts):
            parts = [x for x in _SENT.split(t or "") if len(words(x)) >= 3]
            if len(parts) > 1:
                rows += [i] * len(parts)
                texts += parts
        vecs = [np.asarray(ctx.vectors("prompt"), dtype=np.float32)]
        if texts:
            vecs.append(np.asarray(_encode(ctx, texts), dtype=np.float32))
        row_of = np.concatenate([np.arange(len(prompts)), np.asarray(rows, dtype=np.int64)])
        allv = np.concatenate(vecs)
        if not len(allv) or not len(ev_vecs):
            return
        index = faiss.IndexFlatIP(ev_vecs.shape[1])
        index.add(np.ascontiguousarray(ev_vecs, dtype=np.float32))
        sims, nn = index.search(np.ascontiguousarray(allv), 1)
        seen: set[tuple[int, int]] = set()
        for k in np.argsort(-sims[:, 0]).tolist():
            c = float(sims[k, 0])
            if c < p.embed_threshold:
                break
            i, j = int(row_of[k]), int(nn[k, 0])
            if (i, j) in seen:
                continue
            seen.add((i, j))
            score = 0.5 + 0.5 * (c - p.embed_threshold) / max(1 - p.embed_threshold, 1e-9)
            best[i] = max(best[i], score)
            flag[i] = True
            ev_best[j] = max(ev_best[j], score)
            ev_flag[j] = True
            ev_detail.setdefault(j, {"it_idx": int(it_idx[i]), "cosine": round(c, 4)})
            pair_rows.append({"idx_a": int(it_idx[i]), "idx_b": int(ev.idx[j]), "other_dataset": ev.name,
                              "score": score, "flag": True,
                              "evidence": {"via": "embedding", "cosine": round(c, 4),
                                           "window": "prompt" if k < len(prompts) else "sentence",
                                           "eval_text": " ".join(ev.question[j].split())[:1000]}})

    # -- display -------------------------------------------------------------
    def render_text(self, result: Any) -> list[str]:
        """One line per eval set and direction: "contamination (alpaca ⊃ mt_bench): ..."."""
        results = result if isinstance(result, list) else [result]
        lines = []
        for r in results:
            s = r.summary
            if s.get("direction"):
                lines.append(f"contamination ({s['found_in']} ⊃ {r.dataset}): {s['eval_items_in_dataset']:,} of "
                             f"{s['n_eval']:,} {r.dataset} items found in {s['found_in']}")
                continue
            for ev, v in (s.get("by_eval_set") or {}).items():
                lines.append(f"contamination ({r.dataset} ⊃ {ev}): {v['rows_with_eval_items']:,} rows hold "
                             f"{v['eval_items_in_dataset']:,} of {v['n_eval']:,} items "
                             f"({v['ngram_pairs']:,} by overlap, {v['embedding_pairs']:,} confirmed by embedding)")
        return lines


def _pairs_frame(rows: list[dict], per_row: int) -> pl.DataFrame:
    """Evidence pairs that flagged a row, the best `per_row` per IT row."""
    schema = {"idx_a": pl.Int64, "idx_b": pl.Int64, "other_dataset": pl.Utf8, "score": pl.Float64, "evidence": pl.Utf8}
    keep = [r for r in rows if r["flag"]]
    if not keep:
        return pl.DataFrame(schema=schema)
    df = pl.DataFrame([{k: (json.dumps(v, ensure_ascii=False) if k == "evidence" else v) for k, v in r.items() if k != "flag"}
                       for r in keep], schema=schema)
    return (df.sort(["idx_a", "score"], descending=[False, True])
              .unique(["idx_a", "other_dataset", "idx_b"], keep="first", maintain_order=True)
              .group_by("idx_a", maintain_order=True).head(per_row))


# ---------------------------------------------------------------------------- entry points

def contamination_check(store: Any, dataset: str, *, against: Sequence[str] | str = (), mark_eval: bool = True,
                        show_progress: bool = False, embedder: Any = None, **params: Any) -> CheckResult:
    """Contamination of `dataset` by the eval sets `against` (names in the store or files).

    With `mark_eval`, also saves the other direction on each eval set (its items found in `dataset`).
    """
    from .runner import AuditContext

    store.require_dataset(dataset)
    ctx = AuditContext(store, dataset, show_progress=show_progress, _embedder=embedder)
    step = Contamination({"against": against, **params})
    result, *back = step.compute(ctx)
    if mark_eval:
        for b in back:
            save_result(store, b)
    return result


def contamination(ctx: Any, **params: Any) -> list[CheckResult]:
    """Runner entry point (until the Step registry lands): the result on the dataset, then one per eval set."""
    return Contamination(params).compute(ctx)

