"""Attribution: rank the instances a candidate span may have been borrowed from, and decide whether
the best one is a *likely source* (borrowing, not chance overlap).

Evidence per (span, instance), every factor kept in `Source.evidence`:
- coverage: IDF-weighted share of the span's words lying in a maximal verbatim match (of the whole
  response against the dataset) that occurs in the instance;
- prior: how unlikely each such match is a priori (`prior.match_prior`: general-language rarity
  of its content words, and the base model's surprisal when token scores are given, with the
  co-occurrence rarity of its content words in the dataset as a separate factor);
- specificity: 1 when the match occurs in a single instance, falling with log(#instances);
- strength = max over the instance's matches of prior x specificity: unlikely a priori AND
  specific in the dataset;
- length: the longest verbatim match (in words) shared with the instance, saturating at 5;
- similarity: cosine between the instance and the prompt or response embedding (FAISS neighbours);
- near copies: rare response words within a small edit distance of rare words of the instance
  ("Ellowynn" ~ "Ellowyn"), a separate kind of evidence with strength
  NEAR_WEIGHT x similarity x prior x specificity (NEAR_WEIGHT < 1: below verbatim).

score = 0.50 coverage + 0.20 strength + 0.15 min(1, longest/5) + 0.15 similarity (near-copy-only
sources: NEAR_WEIGHT x the same with near-copy coverage). The top instance is the *likely source*
when its strength >= the threshold (default 0.5, or calibrated on a control run), its coverage >=
0.3, and it beats the runner-up by >= 0.02. `SpanTrace.evidence` keeps the top strength of an
eligible span, so the decision can be re-made for any threshold (`relabel`).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from ..spans.index import SpanIndex, SpanMatch
from .candidates import Candidate, is_content
from .nearcopy import NearCopy
from .prior import cooccurrence_rarity, match_prior

W_COVERAGE, W_STRENGTH, W_LENGTH, W_SIM = 0.50, 0.20, 0.15, 0.15
STOP_WEIGHT = 0.1     # IDF weight factor of function words inside a span
NEAR_WEIGHT = 0.8     # near-copy evidence weighs less than verbatim evidence
DEFAULT_THRESHOLD = 0.5
MIN_COVERAGE = 0.3   # share of the span (IDF-weighted) the top source must explain
MIN_MARGIN = 0.02


@dataclass
class Source:
    idx: int
    score: float
    coverage: float
    rarity: float          # in-dataset rarity: max IDF of matched content words / max IDF
    specificity: float     # of the strongest match
    longest: int
    similarity: float
    verbatim: bool
    likely: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)
    prior: float = 0.0     # a-priori unlikeliness of the strongest match
    strength: float = 0.0  # prior x specificity of the strongest evidence (verbatim or near copy)
    near_copy: bool = False


@dataclass
class SpanTrace:
    candidate: Candidate
    sources: list[Source]
    verbatim: bool            # the span's content occurs contiguously in the data
    traced: bool              # a likely source was found
    longest_match: int
    matches: list[dict[str, Any]]
    evidence: float = 0.0     # strength of the top source when it passes coverage and margin, else 0
    near_copy: bool = False   # the top source is supported by a near copy only


@dataclass
class ResponseWords:
    """Per-word facts of one response shared by all its spans."""

    ids: list[int]
    words: list[str]
    content: list[bool]                 # content word, not echoed from the prompt
    rarity: list[float]                 # a-priori rarity (general language)
    bits: list[float] | None = None     # base-model surprisal per word (None: no base scores)
    near: dict[int, list[NearCopy]] = field(default_factory=dict)   # word position -> near copies


def specificity(n_instances: int, n_total: int) -> float:
    if n_instances <= 1:
        return 1.0
    return max(0.0, 1.0 - math.log(n_instances) / math.log(max(n_total, 2) + 1))


def _prior(rw: ResponseWords, lo: int, hi: int, index: SpanIndex) -> tuple[float, dict[str, float]]:
    ks = [k for k in range(lo, hi) if rw.content[k]]
    if rw.bits is None:
        return match_prior([rw.rarity[k] for k in ks], None)
    return match_prior([rw.rarity[k] for k in ks], [rw.bits[k] for k in ks], _cooccurrence(index, rw, ks))


def _cooccurrence(index: SpanIndex, rw: ResponseWords, ks: list[int]) -> float:
    """`cooccurrence_rarity` of a match's content words, with the dependence the dataset shows.

    Neighbouring content words that also meet in another instance ("fresh fruits", "whole grains"
    in several diet rows) are one unit (its instances: those holding all its words); the units are
    then taken as independent. 0 when another instance holds every word of the match."""
    seq: list[int] = []
    for k in ks:
        t = rw.ids[k]
        if t >= 0 and t not in seq:
            seq.append(t)
    if len(seq) < 3 or cooccurrence_rarity([int(index.df[t]) for t in seq], index.n_instances) == 0.0:
        return 0.0   # common even as independent words (merging words that meet more often than
        #              independence says only raises the expected count further)
    sets = {t: set(index.instances_containing([t], limit=None)) for t in seq}
    units: list[set[int]] = [sets[seq[0]]]
    for t in seq[1:]:
        joint = units[-1] & sets[t]
        if len(joint) > 1:      # they meet elsewhere too: dependent, one unit
            units[-1] = joint
        else:
            units.append(sets[t])
    if len(set.intersection(*units)) > 1:
        return 0.0              # the whole combination occurs in other instances
    return cooccurrence_rarity([len(u) for u in units], index.n_instances)


def attribute(index: SpanIndex, ids: list[int] | ResponseWords, matches: list[SpanMatch], cand: Candidate,
              similarity: dict[int, float] | None = None, *, top_k: int = 5, max_occurrences: int = 200,
              n_conceptual: int = 2, threshold: float = DEFAULT_THRESHOLD,
              near_occurrences: dict[int, list[int]] | None = None) -> SpanTrace:
    """Rank source instances for one candidate span of a response (word ids or `ResponseWords`).

    `near_occurrences`: dataset word id -> instances containing it (for the near copies in `ids`)."""
    rw = ids if isinstance(ids, ResponseWords) else response_words(index, ids)
    ids_l = rw.ids
    a, b = cand.word_start, cand.word_end
    span_ids = ids_l[a:b]
    idf = index.idf(span_ids).tolist()
    content = cand.content or rw.content[a:b]
    weights = [idf[k] * (1.0 if content[k] else STOP_WEIGHT) for k in range(len(span_ids))]
    total_w = sum(weights) or 1.0
    max_idf = index.max_idf()
    sim = similarity or {}

    covered: dict[int, set[int]] = {}     # instance -> span word offsets covered
    longest: dict[int, int] = {}
    best: dict[int, tuple[float, float, float, int, dict[str, float]]] = {}  # strength, prior, spec, match, factors
    fields: dict[int, set[str]] = {}
    via: dict[int, list[int]] = {}        # instance -> matches (indices) it shares
    used: list[dict[str, Any]] = []
    verbatim = False
    longest_any = 0
    # maximal matches have increasing starts and ends: the overlapping ones are contiguous
    j = bisect.bisect_right([m.end for m in matches], a)
    for mi in range(j, len(matches)):
        m = matches[mi]
        if m.start >= b:
            break
        lo, hi = max(m.start, a), min(m.end, b)
        if lo <= a and hi >= b:
            verbatim = True
        longest_any = max(longest_any, m.length)
        inside = range(lo - a, hi - a)
        if not any(content[k] for k in inside):
            continue  # only function words (or words echoed from the prompt) matched
        insts = m.instances
        prior, factors = _prior(rw, m.start, m.end, index)
        used.append({"words": [m.start, m.end], "count": m.count,
                     "instances": len(insts) if m.count <= max_occurrences else None,
                     "prior": round(prior, 4)})
        if m.count > max_occurrences:
            continue  # too common to be evidence for any single instance
        spec = specificity(len(insts), index.n_instances)
        strength = prior * spec
        for o in m.occurrences:
            d = o.idx
            if d not in covered:
                covered[d], longest[d], fields[d], via[d] = set(), 0, set(), []
                best[d] = (-1.0, 0.0, 0.0, mi, {})
            covered[d].update(inside)
            longest[d] = max(longest[d], m.length)
            fields[d].add(o.field)
            if not via[d] or via[d][-1] != mi:
                via[d].append(mi)
            if strength > best[d][0]:
                best[d] = (strength, prior, spec, mi, factors)

    # near copies of the span's words: instance -> [(offset, NearCopy, specificity)]
    near: dict[int, list[tuple[int, NearCopy, float]]] = {}
    for k in range(a, b):
        for nc in rw.near.get(k, ()):
            insts = (near_occurrences or {}).get(nc.word_id) or index.instances_containing([nc.word_id], limit=max_occurrences)
            spec = specificity(len(insts), index.n_instances)
            for d in insts:
                near.setdefault(d, []).append((k - a, nc, spec))

    scored = []
    for d, ks in covered.items():
        cov = sum(weights[k] for k in ks) / total_w
        rar = max((idf[k] for k in ks if content[k]), default=max(idf[k] for k in ks)) / max_idf
        strength = best[d][0]
        sd = sim.get(d, 0.0)
        score = W_COVERAGE * cov + W_STRENGTH * strength + W_LENGTH * min(1.0, longest[d] / 5) + W_SIM * max(0.0, sd)
        scored.append((score, d, cov, rar, sd, True))
    for d, hits in near.items():
        if d in covered:
            continue
        ks = {k for k, _, _ in hits}
        cov = sum(weights[k] for k in ks) / total_w
        sd = sim.get(d, 0.0)
        strength = _near_strength(rw, a, hits)
        score = NEAR_WEIGHT * (W_COVERAGE * cov + W_STRENGTH * strength + W_LENGTH * 0.2 + W_SIM * max(0.0, sd))
        scored.append((score, d, cov, 0.0, sd, False))
    scored.sort(key=lambda x: (-x[0], x[1]))
    sources: list[Source] = []
    for score, d, cov, rar, sd, is_verbatim in scored[:top_k]:
        near_ev = [{"word": nc.word, "dataset_word": nc.match, "distance": nc.distance,
                    "similarity": nc.similarity, "specificity": round(spec, 4)} for _, nc, spec in near.get(d, [])]
        near_strength = _near_strength(rw, a, near.get(d, [])) if d in near else 0.0
        if is_verbatim:
            strength, prior, spec, mi, factors = best[d]
            ks_l = sorted(covered[d])
            phrases = {" ".join(index.vocab[t] for t in ids_l[matches[x].start:matches[x].end]) for x in via[d]}
            m = matches[mi]
            ev: dict[str, Any] = {
                "matched_words": [index.vocab[span_ids[k]] for k in ks_l if span_ids[k] > 0],
                "phrases": sorted(phrases, key=lambda x: (-len(x), x))[:3],
                "fields": sorted(fields[d]), "shared_with": len(m.instances),
                "strongest_match": " ".join(index.vocab[t] for t in ids_l[m.start:m.end]),
                "prior": round(prior, 4), **{f"prior_{k}": v for k, v in factors.items()},
                "specificity": round(spec, 4), "strength": round(strength, 4), "coverage": round(cov, 4),
                "longest": longest[d], "similarity": round(sd, 4),
            }
            if near_ev:
                ev["near_copies"] = near_ev
            src = Source(d, score, cov, rar, spec, longest[d], sd, True, evidence=ev, prior=prior,
                         strength=max(strength, near_strength))
        else:
            hits = near[d]
            spec = max(s for _, _, s in hits)
            ev = {"near_copies": near_ev, "strength": round(near_strength, 4), "coverage": round(cov, 4),
                  "near_weight": NEAR_WEIGHT, "similarity": round(sd, 4), "shared_with": None}
            src = Source(d, score, cov, 0.0, spec, 0, sd, False, evidence=ev, prior=0.0, strength=near_strength,
                         near_copy=True)
        sources.append(src)
    # Conceptual neighbours without lexical evidence: listed, never likely.
    have = {s.idx for s in sources}
    concept = sorted(((d, s) for d, s in sim.items() if d not in have), key=lambda x: (-x[1], x[0]))[:n_conceptual]
    for d, s in concept:
        sources.append(Source(d, W_SIM * max(0.0, s), 0.0, 0.0, 0.0, 0, s, False,
                              evidence={"conceptual_only": True, "similarity": round(s, 4)}))
    ev_top = 0.0
    if sources and (sources[0].verbatim or sources[0].near_copy):
        top = sources[0]
        lexical = [s for s in sources[1:] if s.verbatim or s.near_copy]
        runner = lexical[0].score if lexical else 0.0
        if top.coverage >= MIN_COVERAGE and top.score - runner >= MIN_MARGIN:
            ev_top = top.strength
    for s in sources:
        s.score = round(float(s.score), 6)
    st = SpanTrace(cand, sources, verbatim, False, longest_any, used, evidence=round(ev_top, 6),
                   near_copy=bool(sources) and sources[0].near_copy)
    relabel(st, threshold)
    return st


def _near_strength(rw: ResponseWords, a: int, hits: list[tuple[int, NearCopy, float]]) -> float:
    out = 0.0
    for k, nc, spec in hits:
        bits = None if rw.bits is None else [rw.bits[a + k]]
        prior, _ = match_prior([nc.rarity], bits)
        out = max(out, NEAR_WEIGHT * nc.similarity * prior * spec)
    return out


def relabel(st: SpanTrace, threshold: float) -> bool:
    """Mark the top source likely (and the span traced) iff the span's evidence reaches `threshold`."""
    for s in st.sources:
        s.likely = False
    st.traced = bool(st.sources) and st.evidence > 0 and st.evidence >= threshold
    if st.traced:
        st.sources[0].likely = True
    return st.traced


def response_words(index: SpanIndex, ids: list[int], words: list[str] | None = None,
                   content: list[bool] | None = None, bits: list[float] | None = None) -> ResponseWords:
    """Per-word facts of a response from its word ids (words default to the index vocabulary)."""
    from .prior import word_rarity

    ws = words if words is not None else [index.vocab[t] if t > 0 else "" for t in ids]
    cont = content if content is not None else [bool(w) and is_content(w) for w in ws]
    return ResponseWords(list(ids), ws, cont, [word_rarity(w) if w else 1.0 for w in ws], bits)
