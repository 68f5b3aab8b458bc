"""Attribution: rank the instances a candidate span may have been borrowed from.

Evidence per (span, instance):
- coverage: IDF-weighted share of the span's words that lie in a maximal verbatim match (of the
  whole response against the dataset) occurring in the instance;
- rarity: the largest IDF among those matched words, scaled to 0..1 (a rare name borrowed from one
  instance is strong evidence, "the" is none), times specificity (1 when the match occurs in a
  single instance, falling with log(#instances));
- length: the longest verbatim match (in words) shared with the instance, saturating at 5;
- similarity: cosine between the instance and the prompt or response embedding (FAISS neighbours).

score = 0.50 coverage + 0.20 rarity*specificity + 0.15 length + 0.15 similarity, all in 0..1.
The top instance is the *likely source* when the evidence is strong: coverage >= 0.5 and either a
rare, specific match (rarity*specificity >= 0.5) or a long one (>= 4 words in <= 5 instances),
and it is not tied with the runner-up. A span with no verbatim evidence has no source (only
conceptual neighbours are listed, never marked likely).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from ..spans.index import SpanIndex, SpanMatch
from .candidates import Candidate, is_content

W_COVERAGE, W_RARITY, W_LENGTH, W_SIM = 0.50, 0.20, 0.15, 0.15
STOP_WEIGHT = 0.1   # IDF weight factor of function words inside a span


@dataclass
class Source:
    idx: int
    score: float
    coverage: float
    rarity: float
    specificity: float
    longest: int
    similarity: float
    verbatim: bool
    likely: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class SpanTrace:
    candidate: Candidate
    sources: list[Source]
    verbatim: bool            # the span's content occurs contiguously in the data
    traced: bool              # a likely source was found
    longest_match: int
    matches: list[dict[str, Any]]


def specificity(n_instances: int, n_total: int) -> float:
    if n_instances <= 1:
        return 1.0
    return max(0.0, 1.0 - math.log(n_instances) / math.log(max(n_total, 2) + 1))


def attribute(index: SpanIndex, ids: list[int], matches: list[SpanMatch], cand: Candidate,
              similarity: dict[int, float] | None = None, *, top_k: int = 5, max_occurrences: int = 200,
              n_conceptual: int = 2) -> SpanTrace:
    """Rank source instances for one candidate span of a response with word ids `ids`."""
    a, b = cand.word_start, cand.word_end
    span_ids = ids[a:b]
    idf = index.idf(span_ids).tolist()
    content = cand.content or [is_content(index.vocab[t]) if t > 0 else True for t in span_ids]
    weights = [idf[k] * (1.0 if content[k] else STOP_WEIGHT) for k in range(len(span_ids))]
    total_w = sum(weights) or 1.0
    max_idf = index.max_idf()
    sim = similarity or {}

    covered: dict[int, set[int]] = {}     # instance -> span word offsets covered
    longest: dict[int, int] = {}
    n_inst: dict[int, int] = {}           # instance -> fewest instances sharing one of its matches
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
        used.append({"words": [m.start, m.end], "count": m.count,
                     "instances": len(insts) if m.count <= max_occurrences else None})
        if m.count > max_occurrences:
            continue  # too common to be evidence for any single instance
        for o in m.occurrences:
            d = o.idx
            if d not in covered:
                covered[d], longest[d], n_inst[d], fields[d], via[d] = set(), 0, 1 << 30, set(), []
            covered[d].update(inside)
            longest[d] = max(longest[d], m.length)
            n_inst[d] = min(n_inst[d], len(insts))
            fields[d].add(o.field)
            if not via[d] or via[d][-1] != mi:
                via[d].append(mi)

    scored = []
    for d, ks in covered.items():
        cov = sum(weights[k] for k in ks) / total_w
        rar = max((idf[k] for k in ks if content[k]), default=max(idf[k] for k in ks)) / max_idf
        spec = specificity(n_inst[d], index.n_instances)
        sd = sim.get(d, 0.0)
        score = W_COVERAGE * cov + W_RARITY * rar * spec + W_LENGTH * min(1.0, longest[d] / 5) + W_SIM * max(0.0, sd)
        scored.append((score, d, cov, rar, spec, sd))
    scored.sort(key=lambda x: (-x[0], x[1]))
    sources: list[Source] = []
    for score, d, cov, rar, spec, sd in scored[:top_k]:
        ks_l = sorted(covered[d])
        phrases = {" ".join(index.vocab[t] for t in ids[matches[mi].start:matches[mi].end]) for mi in via[d]}
        sources.append(Source(d, score, cov, rar, spec, longest[d], sd, True, evidence={
            "matched_words": [index.vocab[span_ids[k]] for k in ks_l if span_ids[k] > 0],
            "phrases": sorted(phrases, key=lambda x: (-len(x), x))[:3],
            "fields": sorted(fields[d]), "shared_with": n_inst[d],
        }))
    # Conceptual neighbours without verbatim evidence: listed, never likely.
    have = {s.idx for s in sources}
    concept = sorted(((d, s) for d, s in sim.items() if d not in have), key=lambda x: (-x[1], x[0]))[:n_conceptual]
    for d, s in concept:
        sources.append(Source(d, W_SIM * max(0.0, s), 0.0, 0.0, 0.0, 0, s, False,
                              evidence={"conceptual_only": True}))
    traced = False
    if sources and sources[0].verbatim:
        top = sources[0]
        runner = sources[1].score if len(sources) > 1 and sources[1].verbatim else 0.0
        strong = top.coverage >= 0.5 and (top.rarity * top.specificity >= 0.5 or (top.longest >= 4 and top.evidence["shared_with"] <= 5))
        if strong and top.score - runner >= 0.02:
            top.likely = traced = True
    for s in sources:
        s.score = round(float(s.score), 6)
    return SpanTrace(cand, sources, verbatim, traced, longest_any, used)
