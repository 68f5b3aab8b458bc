"""Conflicting neighbours: the same task answered with contradictory claims.

A pair is a conflict when
1. the prompts are close (cosine of prompt embeddings >= `threshold` among each row's `k`
   nearest) and pose the *same task*: the prompts' own numbers, names and quoted strings agree
   (a different slot value - "12 times 3" / "12 times 4", "France" / "Spain" - explains different
   answers), and no content word that only one prompt has is what its response talks about
   ("legs of a spider" / "legs of an insect");
2. neither task is open-ended (write / compose / generate / suggest / name a ... / list five ...,
   synonyms, examples, passwords, poems, rewrites, summaries) and neither answer is a program:
   different answers are legitimate;
3. the responses contradict in what they claim (`itaudit.audit.claims.contradictions`): a
   substituted number, name or verdict, an inserted negation, another order of the same items -
   never an added fact. Follow-up turns are compared only with rows of the same history.

Pair strength = prompt cosine x the confidence of the strongest claim type (`CLAIM_CONFIDENCE`).
A row's score is its strongest conflict; pairs go to `check_pairs` with the disagreeing claims.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import polars as pl

from ..index import exact_index
from ..index.fast import budget_note, budget_summary
from ..progress import progress_bar
from ..steps.base import Params, Step
from .base import CheckResult
from .claims import _OPTION, NUMBER, contradictions, negated_claims, tokens

CLAIM_CONFIDENCE = {"final_answer": 1.0, "number": 1.0, "entity": 0.9, "yes_no": 1.0, "label": 0.9, "negation": 0.8, "order": 0.9}

# Open-ended generation: many different answers are right.
_OPEN = re.compile(
    r"^\s*(?:please\s+)?(?:write|compose|create|generate|produce|construct|draft|design|invent|imagine|"
    r"brainstorm|come up|make up|make a|suggest|propose|recommend|think of|devise|develop|craft|build|"
    r"rewrite|re-write|reword|re-word|rephrase|paraphrase|edit|revise|improve|continue|complete|finish|"
    r"summari[sz]e|translate|give (?:me )?(?:a|an|some|one|two|three|four|five|\d+|me)\b|"
    r"name (?:a|an|one|some|two|three|four|five|six|seven|eight|nine|ten|\d+)\b|"
    r"(?:list|identify|provide|offer|describe|outline|share|tell me|find) (?:a few|some|several|two|three|four|"
    r"five|six|seven|eight|nine|ten|\d+|one|an? (?:example|way|idea|tip))\b|"
    r"pick|choose|select a|tell (?:me )?a (?:story|joke)|role-?play|pretend|act as)",
    re.I)
_OPEN_ANYWHERE = re.compile(
    r"\b(?:poem|haiku|story|stories|essay|slogan|tagline|headline|title|tweet|joke|metaphor|simile|"
    r"hyperbole|analogy|synonyms?|antonyms?|rhymes?|examples?|ideas?|tips|password|random|creative|fictional|"
    r"hypothetical|imaginary|dialogue|conversation|letter|email|speech|lyrics|sentence using|"
    r"in your own words|opinion|recipe|name for|names for|advice|suggestions?|strategies|ways to|"
    r"which (?:other |of the )?[a-z]{3,}[^s\W]s|what are some)\b",
    re.I)
_QUOTED = re.compile(r"[\"“'‘]([^\"”'’]{2,80})[\"”'’]")
_STOP = {
    "a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "is", "are", "was", "were", "be", "what",
    "which", "who", "how", "why", "when", "where", "do", "doe", "does", "did", "given", "following", "this",
    "that", "these", "those", "it", "its", "with", "by", "from", "as", "at", "me", "you", "your", "i", "can",
    "please", "input", "no", "some", "about", "tell", "explain", "describe", "find", "identify", "state",
    "give", "provide", "name", "list", "answer", "question", "word", "sentence", "text", "between",
}

# words that name the task, not what it is about
_TASK_WORDS = {"compare", "contrast", "similarity", "difference", "different", "similar", "explain", "describe",
               "concept", "definition", "define", "meaning", "purpose", "role", "importance", "effect", "impact",
               "advantage", "disadvantage", "benefit", "main", "key", "important", "type", "kind", "way",
               "brief", "short", "detailed", "simple", "term", "overview", "summary", "fact"}


def is_open_ended(instruction: str) -> bool:
    """True for creative / open generation tasks, where different answers are legitimate."""
    first = (instruction or "").strip().split("\n")[0]
    return bool(_OPEN.search(first) or _OPEN_ANYWHERE.search(first))


_CODE_LINE = re.compile(r"```|^\s*(?:def |class |function |public |private |#include|#!|import |from \S+ import |"
                        r"return\b|for\s*\(|if\s*\(|while\s*\(|echo |\}|.*[;{]\s*$)|\$\(", re.M)


def is_code(response: str) -> bool:
    """An answer that is (mostly) a program: a fenced block or two lines of code."""
    return len(_CODE_LINE.findall((response or "")[:3000])) >= 2


def _content(text: str) -> set[str]:
    return {t.norm for t in tokens(text) if t.kind == "word" and t.norm not in _STOP and len(t.norm) > 2}


def prompt_slots(text: str) -> set[str]:
    """The values a prompt poses its task on: numbers, capitalised names, quoted strings (lowercased)."""
    toks = tokens(text)
    out = {t.norm for t in toks if t.kind == "num" or t.name}
    out |= {q.strip().lower() for q in _QUOTED.findall(text or "")}
    return out


def _slots_differ(a: str, b: str) -> bool:
    """Whether a value a task is posed on (number, name, quoted string) is in one text only."""
    all_a = {t.norm for t in tokens(a)} | {a.lower()}
    all_b = {t.norm for t in tokens(b)} | {b.lower()}
    return any(x not in all_b and x not in b.lower() for x in prompt_slots(a)) or \
        any(x not in all_a and x not in a.lower() for x in prompt_slots(b))


_NEGATION = {"no", "not", "never", "none", "nobody", "nothing", "neither", "nor", "cannot", "without"}


def _negations(text: str) -> set[str]:
    """The negation words of a prompt ("n't" counts as "not")."""
    low = text.lower()
    out = {t.norm for t in tokens(text) if t.norm in _NEGATION}
    if "n't" in low or "n’t" in low:
        out.add("not")
    return out


_OPTIONS_MARK = re.compile(r"(?:^|\n)\s*(?:options|choices|answer choices)\s*:", re.I)


def _split_options(prompt: str) -> tuple[str, str | None]:
    """(the prompt without its options list, the question: the last line before the options, or
    None when the prompt has no options list)."""
    text = prompt.replace("\\n", "\n")
    m = _OPTIONS_MARK.search(text)
    if m is not None:
        cut = m.start()
    else:
        opts = list(_OPTION.finditer(text))
        if len(opts) < 2:
            return text, None
        cut = opts[0].start()
    lines = [ln for ln in text[:cut].splitlines() if ln.strip()]
    return text[:cut], (lines[-1] if lines else None)


def _values(text: str) -> list[str]:
    """The numbers, digit-bearing words and one-letter names ("in case O is ...") of a text, with
    repeats, sorted ("A" and "I" are words, not names)."""
    return sorted(t.norm if t.kind == "num" or any(c.isdigit() for c in t.norm) else t.raw for t in tokens(text)
                  if t.kind == "num" or any(c.isdigit() for c in t.norm)
                  or (len(t.raw) == 1 and t.raw.isupper() and t.raw not in "AI"))


def same_task(prompt_a: str, prompt_b: str, res_a: str, res_b: str) -> tuple[bool, str]:
    """Whether two close prompts pose the same task (not just the same topic); with the reason if not."""
    if prompt_a.strip().lower() == prompt_b.strip().lower():
        return True, "identical"
    if _slots_differ(prompt_a, prompt_b):
        return False, "slot values differ"
    (stem_a, qa), (stem_b, qb) = _split_options(prompt_a), _split_options(prompt_b)
    if _negations(stem_a) != _negations(stem_b):
        return False, "one prompt negates"   # "have great power" / "have no power": answers flip
    if qa is not None and qb is not None:
        # choosing among options: the answer follows the question, not the options list, so its
        # values must match in the questions themselves ("3 children" / "2 children", "perimeter
        # 8P" / "16P"), and two questions that each ask something the other does not are two
        # tasks (a rewording adds words on one side only)
        if _values(qa) != _values(qb) or _slots_differ(qa, qb):
            return False, "slot values differ"
        wa, wb = _content(qa) - _TASK_WORDS, _content(qb) - _TASK_WORDS
        if wa - wb and wb - wa:
            return False, "different questions over options"
    ca, cb = _content(prompt_a), _content(prompt_b)
    ra, rb = _content(res_a), _content(res_b)
    only_a = {w for w in ca - cb if w in ra and w not in rb}
    only_b = {w for w in cb - ca if w in rb and w not in ra}
    if only_a or only_b:
        return False, "the responses follow a word only one prompt has"
    return True, "close"


def neighbour_pairs(vecs: np.ndarray, threshold: float, k: int, *, chunk: int = 4096,
                    show_progress: bool = False) -> dict[tuple[int, int], float]:
    """(i < j) positions among each row's k nearest with cosine >= threshold (exact search)."""
    index = exact_index(vecs)
    out: dict[tuple[int, int], float] = {}
    with progress_bar("neighbours", total=len(vecs), unit="rows", enabled=show_progress) as bar:
        for s in range(0, len(vecs), chunk):
            d, ids = index.search(np.ascontiguousarray(vecs[s:s + chunk]), k + 1)
            for q in range(len(d)):
                i = s + q
                for j, c in zip(ids[q].tolist(), d[q].tolist(), strict=True):
                    if j < 0 or j == i or c < threshold:
                        continue
                    key = (i, j) if i < j else (j, i)
                    out[key] = max(out.get(key, -1.0), float(c))
            bar.advance(len(d))
    return out


def eligible_rows(ins: list[str], res: list[str], hist: list[str], sysp: list[str],
                  include_followups: bool) -> np.ndarray:
    """Positions of the rows `judge_pair` can find in conflict (the others it always rejects)."""
    shared: dict[tuple[str, str], int] = {}
    if not include_followups:
        for h, sp in zip(hist, sysp, strict=True):
            if h:
                shared[(h, sp)] = shared.get((h, sp), 0) + 1
    return np.asarray([i for i in range(len(ins))
                       if not is_open_ended(ins[i]) and not is_code(res[i])
                       and (include_followups or not hist[i] or shared[(hist[i], sysp[i])] > 1)], dtype=np.int64)


def judge_pair(ins_a: str, inp_a: str, res_a: str, ins_b: str, inp_b: str, res_b: str,
               max_chars: int = 3000) -> tuple[list[dict], str]:
    """(contradicting claims, reason) for one pair of rows; claims are empty unless it is a conflict."""
    pa, pb = f"{ins_a}\n{inp_a}".strip(), f"{ins_b}\n{inp_b}".strip()
    if is_open_ended(ins_a) or is_open_ended(ins_b):
        return [], "open-ended task"
    if (res_a or "").strip() == (res_b or "").strip():
        return [], "same response"
    if is_code(res_a) or is_code(res_b):
        return [], "code answer"   # programs differ in literals and names without contradicting
    ok, why = same_task(pa, pb, res_a, res_b)
    if not ok and why == "slot values differ":
        return [], why
    subjects = _content(pa) | _content(pb) | prompt_slots(pa) | prompt_slots(pb)
    claims = []
    if ok:   # substitutions need the same task; a negated statement about one subject does not
        claims = contradictions(res_a, res_b, prompt_a=pa, prompt_b=pb,
                                same_prompt=pa.strip().lower() == pb.strip().lower(), max_chars=max_chars)
    if not any(c["type"] == "negation" for c in claims):
        claims += negated_claims(res_a, res_b, subjects - _TASK_WORDS, max_chars=max_chars)
    if claims:
        return claims, "contradiction"
    return [], "consistent" if ok else why


@dataclass(frozen=True)
class ConflictParams(Params):
    field: str = "prompt"
    threshold: float = 0.85
    k: int = 10
    include_followups: bool = False
    max_chars: int = 3000
    # False: static-embedding candidates re-scored with the sentence model (itaudit.index.fast);
    # True: embed every prompt with the sentence model and search exactly (slow)
    exact_search: bool = False
    max_exact_rows: int = 5000   # re-scoring budget of the fast path (0 = none), as in near_duplicates


class ConflictingNeighbors(Step):
    """Close prompts posing the same closed task whose responses contradict each other."""

    name: ClassVar[str] = "conflicting_neighbors"
    description: ClassVar[str] = ("the same task answered with contradictory claims (numbers, names, "
                                  "yes/no, negation, order); open-ended tasks excluded")
    Params: ClassVar[type[Params]] = ConflictParams
    requires: ClassVar[tuple[str, ...]] = ("embeddings:prompt",)

    def needs(self) -> tuple[str, ...]:
        p: ConflictParams = self.params  # type: ignore[assignment]
        return (f"embeddings:{p.field}",) if p.exact_search else ()

    def compute(self, ctx: Any) -> CheckResult:
        p: ConflictParams = self.params  # type: ignore[assignment]
        frame = ctx.instances()
        n = frame.height
        idx = frame["idx"].to_numpy().astype(np.int64)
        hist = frame["history"].cast(pl.Utf8).fill_null("").to_list() if "history" in frame.columns else [""] * n
        sysp = frame["system"].fill_null("").to_list() if "system" in frame.columns else [""] * n
        ins = frame["instruction"].fill_null("").to_list()
        inp = frame["input"].fill_null("").to_list()
        res = frame["response"].fill_null("").to_list()
        # Neighbours are searched among the rows that can be in a conflict at all: a closed task
        # (not open-ended), not a program, and (unless follow-ups are included) a first turn or a
        # turn whose history another row shares.
        pos = eligible_rows(ins, res, hist, sysp, p.include_followups)
        fast_stats: dict = {}
        if p.exact_search:
            vecs = ctx.vectors(p.field)[pos]
            sub = neighbour_pairs(vecs, p.threshold, p.k, show_progress=getattr(ctx, "show_progress", False))
        else:
            from ..embed import field_texts
            from ..index.fast import similar_pairs

            texts = field_texts(frame, p.field)
            sub = similar_pairs([texts[x] for x in pos], p.threshold,
                                lambda q: ctx.vectors(p.field, idx=idx[pos[q]]), k=p.k,
                                max_exact_rows=p.max_exact_rows or None, stats=fast_stats)
        cand = {(int(pos[a]), int(pos[b])): c for (a, b), c in sub.items()}
        score = np.zeros(n)
        count = np.zeros(n, dtype=np.int64)
        partner = np.full(n, -1, dtype=np.int64)
        pairs = []
        why: dict[str, int] = {}
        claim_types: dict[str, int] = {}
        n_followup_skipped = 0
        for (i, j), isim in sorted(cand.items()):
            if not p.include_followups and (hist[i] or hist[j]) and (hist[i] != hist[j] or sysp[i] != sysp[j]):
                n_followup_skipped += 1
                continue
            claims, reason = judge_pair(ins[i], inp[i], res[i], ins[j], inp[j], res[j], p.max_chars)
            why[reason] = why.get(reason, 0) + 1
            if not claims:
                continue
            types = sorted({c["type"] for c in claims})
            for t in types:
                claim_types[t] = claim_types.get(t, 0) + 1
            s = float(np.clip(isim * max(CLAIM_CONFIDENCE[t] for t in types), 0.0, 1.0))
            for a, b in ((i, j), (j, i)):
                count[a] += 1
                if s > score[a]:
                    score[a], partner[a] = s, idx[b]
            ev = {"instruction_sim": round(isim, 4), "reasons": types, "claims": claims[:6], "field": p.field,
                  "numbers": [c["values"] for c in claims if c["type"] == "number"][:3],
                  "entities": [c["values"] for c in claims if c["type"] == "entity"][:3]}
            pairs.append((int(idx[i]), int(idx[j]), s, json.dumps(ev, ensure_ascii=False)))
        flag = count > 0
        details = [{"n_conflicts": int(count[r]), "strongest_with": int(partner[r])} if flag[r] else None
                   for r in range(n)]
        summary = {
            "n_rows": n,
            "n_rows_searched": len(pos),
            "n_candidate_pairs": len(cand),
            "n_followup_pairs_skipped": n_followup_skipped,
            "n_conflict_pairs": len(pairs),
            "n_rows_flagged": int(flag.sum()),
            "pct_flagged": round(100 * flag.sum() / n, 3) if n else 0.0,
            "reasons": claim_types,
            "candidates_by_outcome": why,
            **budget_summary(self.name, fast_stats),
        }
        embedder = getattr(ctx, "embedder", None)
        params = {**p.as_dict(), "model": getattr(embedder, "cache_key", None)}
        return CheckResult(self.name, ctx.dataset, idx, flag, score, summary=summary, params=params, details=details,
                           pairs=pl.DataFrame(pairs, schema={"idx_a": pl.Int64, "idx_b": pl.Int64,
                                                             "score": pl.Float64, "evidence": pl.Utf8},
                                              orient="row"))

    def render_text(self, result: CheckResult) -> list[str]:
        s = result.summary
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(s.get("reasons", {}).items()))
        out = [f"{s.get('n_conflict_pairs', 0)} conflict pairs" + (f" ({kinds})" if kinds else "")]
        if s.get("embedding_budget_hit"):
            out.append(budget_note(s))
        return out

    def render_html(self, view: Any) -> str:
        """From the report's `CheckView` of the stored run (`itaudit.report.view`)."""
        import html

        pairs = view.pairs(limit=50)
        if not pairs.height:
            return "<p>No contradicting pairs.</p>"
        rows = []
        for a, b, s, ev in pairs.select("idx_a", "idx_b", "score", "evidence").iter_rows():
            claims = json.loads(ev)["claims"]
            text = "; ".join(f"{c['type']}: {c['a']} / {c['b']}" for c in claims[:3])
            rows.append(f"<tr><td>{a}</td><td>{b}</td><td>{s:.3f}</td><td>{html.escape(text)}</td></tr>")
        return ("<table><thead><tr><th>row a</th><th>row b</th><th>strength</th><th>disagreeing claims</th>"
                "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def conflicting_neighbors(ctx: Any, **params: Any) -> CheckResult:
    """Runner entry point (`register_check`): the `ConflictingNeighbors` step."""
    return ConflictingNeighbors(params).compute(ctx)


__all__ = ["NUMBER", "ConflictingNeighbors", "conflicting_neighbors", "is_open_ended", "judge_pair", "same_task"]
