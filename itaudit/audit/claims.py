"""Claims in a response and whether two responses to the same task contradict each other.

Rule-based, no model: both responses are tokenized (words through `itaudit.text`, numbers kept
whole: "1,000" -> 1000, "4.50" -> 4.5, number words -> digits), normalised (case, possessives,
plural "s", units) and aligned word by word (difflib). A contradiction is a *substitution*
inside the alignment, never an addition:

- `number`: a short replaced span holds a number on both sides and the values differ (after
  rounding to the less precise one), and neither value occurs anywhere in the other response;
- `entity`: a short replaced span holds a capitalised name on both sides, the names differ, and
  neither occurs anywhere in the other response (so reordering a list is not a substitution);
- `negation`: one side inserts or swaps in a negator ("not", "no", "never", "n't", "without")
  where the other, otherwise aligned, affirms; or a polar pair is swapped (yes/no, true/false,
  increase/decrease, more/less, before/after, ...);
- `yes_no`: the two answers open with opposite verdicts (Yes/No, True/False, Correct/Incorrect);
- `order`: a sort / rank / order task answered with the same items in another order;
- `label`: a short closed answer (<= 4 words) to an identical prompt replaced by another one.

Each claim says what each side states, with a few words of context, so a reader can judge it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from ..text import WORD_OR_PUNCT, word_spans

NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])")
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
    "thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000,
}
_UNITS = {
    "km": "kilometer", "kms": "kilometer", "kilometre": "kilometer", "m": "meter", "metre": "meter",
    "cm": "centimeter", "centimetre": "centimeter", "mm": "millimeter", "kg": "kilogram", "g": "gram",
    "lb": "pound", "lbs": "pound", "mi": "mile", "ft": "foot", "feet": "foot", "in": "in", "hr": "hour",
    "hrs": "hour", "h": "hour", "min": "minute", "mins": "minute", "sec": "second", "secs": "second",
    "s": "second", "percent": "%", "per": "per", "°c": "celsius", "°f": "fahrenheit", "c": "celsius",
    "f": "fahrenheit", "mph": "mph", "l": "liter", "litre": "liter", "ml": "milliliter",
}
NEGATORS = {"not", "no", "never", "n't", "none", "neither", "nor", "without", "cannot", "nothing", "nobody",
            "isn't", "aren't", "wasn't", "weren't", "doesn't", "don't", "didn't", "can't", "won't",
            "wouldn't", "shouldn't", "couldn't", "hasn't", "haven't", "hadn't"}
_POLAR = [("yes", "no"), ("true", "false"), ("correct", "incorrect"), ("increase", "decrease"),
          ("increases", "decreases"), ("increased", "decreased"), ("more", "less"), ("more", "fewer"),
          ("larger", "smaller"), ("bigger", "smaller"), ("greater", "less"), ("higher", "lower"),
          ("before", "after"), ("positive", "negative"), ("always", "never"), ("all", "none"),
          ("can", "cannot"), ("possible", "impossible"), ("legal", "illegal"), ("odd", "even"),
          ("north", "south"), ("east", "west"), ("above", "below"), ("maximum", "minimum"),
          ("hot", "cold"), ("warmer", "colder"), ("faster", "slower"), ("older", "younger"),
          ("first", "last"), ("largest", "smallest"), ("highest", "lowest"), ("longest", "shortest"),
          ("most", "least"), ("rise", "fall"), ("rises", "falls"), ("prime", "composite"),
          ("acid", "base"), ("acidic", "basic"), ("living", "nonliving"), ("mammal", "reptile")]
POLAR = {a: b for a, b in _POLAR} | {b: a for a, b in _POLAR}
_VERDICT = {"yes": 1, "true": 1, "correct": 1, "right": 1, "no": 0, "false": 0, "incorrect": 0, "wrong": 0}
# words that are no names even when capitalised mid-sentence
_NOT_NAMES = {
    "i", "a", "the", "this", "that", "these", "those", "it", "in", "on", "at", "for", "if", "and", "but", "or",
    "as", "to", "of", "by", "with", "we", "you", "he", "she", "they", "my", "your", "our", "their", "its",
    "here", "there", "yes", "no", "note", "however", "also", "so", "then", "when", "what", "which", "who",
    "how", "why", "where", "ok", "sure", "first", "second", "third", "finally", "step", "example", "true",
    "false", "input", "output", "answer", "question", "one", "two", "some", "many",
}
_SORT_TASK = re.compile(r"\b(sort|order|rank|arrange|alphabeti[sz]e|chronological|sequence)\w*\b", re.I)
_LIST_SPLIT = re.compile(r"\s*(?:,|;|\n|\band\b|<|>|→|->)\s*")
_FINAL = re.compile(r"\b(?:final answer|the answer|answer)\s*(?:is|:)\s*:?\s*([^\n]{1,80}?)\s*(?:\.|$)", re.I | re.M)
_OPTION = re.compile(r"(?:^|\n|\s)[-*]?\s*\(?([A-Ha-h])\)\s*([^\n]{1,80})")
_LETTER = re.compile(r"^\(?([A-Ha-h])\)?$")
MAX_SPAN = 4        # a substitution replaces at most this many words on each side


@dataclass(frozen=True)
class Token:
    norm: str          # normalised form compared across responses
    raw: str           # as written
    kind: str          # "num", "word" or "punct"
    value: float | None = None
    decimals: int = 0
    name: bool = False  # a capitalised word that is not the first of a sentence


def _stem(w: str) -> str:
    if w.endswith("'s") or w.endswith("’s"):
        w = w[:-2]
    elif w.endswith("s'") or w.endswith("s’"):
        w = w[:-1]
    if len(w) > 3 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss") and not w.endswith("us") and not w.endswith("is"):
        return w[:-1]
    return w


def tokens(text: str, max_chars: int = 3000) -> list[Token]:
    """Normalised tokens of `text`: numbers whole, words stemmed, possessives and units folded."""
    t = (text or "")[:max_chars]
    spans: list[tuple[int, int, str]] = []
    for m in NUMBER.finditer(t):
        spans.append((m.start(), m.end(), "num"))
    taken = sorted(spans)
    out: list[tuple[int, Token]] = []
    for s, e, _ in taken:
        raw = t[s:e]
        v = raw.replace(",", "").lstrip("+")
        dec = len(v.split(".")[1]) if "." in v else 0
        out.append((s, Token(str(float(v)), raw, "num", float(v), dec)))
    k = 0
    for w, s, e in word_spans(t, WORD_OR_PUNCT, lower=False):
        while k < len(taken) and taken[k][1] <= s:
            k += 1
        if k < len(taken) and taken[k][0] < e and s < taken[k][1]:
            continue  # part of a number
        low = w.lower().replace("’", "'")
        if not any(ch.isalnum() for ch in w):
            out.append((s, Token(w, w, "punct")))
            continue
        if low in _NUMBER_WORDS:
            v = float(_NUMBER_WORDS[low])
            out.append((s, Token(str(v), w, "num", v, 0)))
            continue
        if low.endswith("n't"):
            stem = {"can't": "can", "won't": "will", "shan't": "shall"}.get(low, low[:-3])
            out.append((s, Token(stem or "do", w, "word")))
            out.append((s + 1, Token("not", "n't", "word")))
            continue
        before = t[max(0, s - 3):s]
        sent_start = not before.strip() or bool(re.search(r"[.!?:;\n]\s*[\"'(“*#-]*\s*$", t[max(0, s - 6):s])) \
            or s == 0
        name = w[:1].isupper() and not sent_start and low not in _NOT_NAMES and len(w) > 1
        norm = _UNITS.get(low, _stem(low))
        out.append((s, Token(norm, w, "word", name=name)))
    out.sort(key=lambda x: x[0])
    return [tok for _, tok in out]


def _num_equal(a: Token, b: Token) -> bool:
    if a.value is None or b.value is None:
        return False
    d = min(a.decimals, b.decimals)
    return round(a.value, d) == round(b.value, d) or abs(a.value - b.value) <= 1e-9 * max(1.0, abs(a.value))


def _count(x: Token, nums: list[Token]) -> int:
    return sum(_num_equal(x, y) for y in nums)


def final_answer(text: str, prompt: str = "") -> str | None:
    """The stated final answer ("... the answer is 18.", "Answer: (B)"), normalised, if short.

    A multiple-choice letter is resolved to its option's text in `prompt` (the same answer sits
    under other letters when the options are shuffled); a letter without its options is None.
    """
    found = list(_FINAL.finditer((text or "")[-400:]))
    m = found[-1] if found else None
    if not m:
        return None
    raw = m.group(1).strip().rstrip(".")
    letter = _LETTER.match(raw)
    if letter:
        options = {k.upper(): v for k, v in _OPTION.findall((prompt or "").replace("\\n", "\n"))}
        raw = options.get(letter.group(1).upper(), "")
        if not raw:
            return None
    ans = " ".join(t.norm for t in _words(tokens(raw)))
    return ans if ans and len(ans.split()) <= 6 else None


def _context(toks: list[Token], i1: int, i2: int, width: int = 4) -> str:
    left = " ".join(t.raw for t in toks[max(0, i1 - width):i1])
    mid = " ".join(t.raw for t in toks[i1:i2])
    right = " ".join(t.raw for t in toks[i2:i2 + width])
    return f"{left} [{mid}] {right}".strip()


def _words(toks: list[Token]) -> list[Token]:
    return [t for t in toks if t.kind != "punct"]


def verdict(text: str) -> int | None:
    """1 / 0 when the answer opens with Yes/True/Correct or No/False/Incorrect, else None."""
    m = re.match(r"\s*[\"'*(]*\s*(\w+)\b", text or "")
    return _VERDICT.get(m.group(1).lower()) if m else None


def _items(text: str) -> list[str]:
    first = (text or "").strip().split("\n\n")[0]
    first = re.sub(r"^[^:]{0,80}:\s*", "", first) if ":" in first[:80] else first
    parts = [re.sub(r"^\s*(?:\d+[.)]|[-*•])\s*", "", p).strip(" .\"'").lower() for p in _LIST_SPLIT.split(first)]
    return [p for p in parts if p]


def contradictions(res_a: str, res_b: str, *, prompt_a: str = "", prompt_b: str = "",
                   same_prompt: bool = False, max_chars: int = 3000) -> list[dict]:
    """The claims on which two responses to the same task disagree (empty when they agree).

    Tokens that occur in either prompt are the topic of the task: a substitution of one is not
    counted (the prompts' own numbers / names are their slots, handled by the caller).
    """
    out: list[dict] = []
    va, vb = verdict(res_a), verdict(res_b)
    if va is not None and vb is not None and va != vb:
        out.append({"type": "yes_no", "a": res_a.strip().split()[0].strip(",.!"),
                    "b": res_b.strip().split()[0].strip(",.!")})
    fa, fb = final_answer(res_a, prompt_a), final_answer(res_b, prompt_b)
    # one answer a prefix of the other ("h20" / "h20 let's be accurate": a last option ran on) agrees
    if fa is not None and fb is not None and fa != fb and not out \
            and not (fa + " ").startswith(fb + " ") and not (fb + " ").startswith(fa + " "):
        out.append({"type": "final_answer", "a": fa, "b": fb})
    prompt = prompt_a + "\n" + prompt_b
    if _SORT_TASK.search(prompt):
        ia, ib = _items(res_a), _items(res_b)
        if len(ia) >= 3 and sorted(ia) == sorted(ib) and ia != ib:
            out.append({"type": "order", "a": ", ".join(ia[:8]), "b": ", ".join(ib[:8])})
    ta, tb = _words(tokens(res_a, max_chars)), _words(tokens(res_b, max_chars))
    if not ta or not tb:
        return out
    if same_prompt and len(ta) <= 3 and len(tb) <= 3 and not out:
        na, nb = [t.norm for t in ta], [t.norm for t in tb]
        if set(na).isdisjoint(nb) and not any(t.kind == "num" for t in ta + tb):
            out.append({"type": "label", "a": " ".join(t.raw for t in ta), "b": " ".join(t.raw for t in tb)})
            return out
    topic = {t.norm for t in _words(tokens(prompt, max_chars))}
    names_a: dict[str, int] = {}
    names_b: dict[str, int] = {}
    for toks, counts in ((ta, names_a), (tb, names_b)):
        for t in toks:   # how often each side states a name (written capitalised anywhere)
            if t.raw[:1].isupper():
                counts[t.norm] = counts.get(t.norm, 0) + 1
    nums_a = [t for t in ta if t.kind == "num"]
    nums_b = [t for t in tb if t.kind == "num"]
    sm = difflib.SequenceMatcher(None, [t.norm for t in ta], [t.norm for t in tb], autojunk=False)
    seen: set[tuple[str, str, str]] = set()
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            continue
        sa, sb = ta[i1:i2], tb[j1:j2]
        # a negator inserted, deleted or swapped in between aligned words
        neg_a = [t for t in sa if t.norm in NEGATORS]
        neg_b = [t for t in sb if t.norm in NEGATORS]
        anchored = i1 > 0 and j1 > 0 and i2 < len(ta) and j2 < len(tb)
        if anchored and bool(neg_a) != bool(neg_b) and len(sa) <= 2 and len(sb) <= 2:
            rest_a = [t.norm for t in sa if t.norm not in NEGATORS]
            rest_b = [t.norm for t in sb if t.norm not in NEGATORS]
            # "no gods" / "multiple gods": a quantifier swapped for a negator is a negation too
            if rest_a == rest_b or (op == "replace" and len(sa) == 1 and len(sb) == 1):
                key = ("negation", _context(ta, i1, i2), _context(tb, j1, j2))
                if key not in seen:
                    seen.add(key)
                    out.append({"type": "negation", "a": key[1], "b": key[2]})
                continue
        if op != "replace" or len(sa) > MAX_SPAN or len(sb) > MAX_SPAN:
            continue
        if len(sa) == 1 and len(sb) == 1 and POLAR.get(sa[0].norm) == sb[0].norm and i1 > 0 and j1 > 0:
            out.append({"type": "negation", "a": _context(ta, i1, i2), "b": _context(tb, j1, j2)})
            continue
        xa = [t for t in sa if t.kind == "num"]
        xb = [t for t in sb if t.kind == "num"]
        if xa and xb:
            # a value the other response states less often (so a reordering is no substitution)
            lone_a = [x for x in xa if _count(x, nums_b) < _count(x, nums_a) and x.norm not in topic]
            lone_b = [y for y in xb if _count(y, nums_a) < _count(y, nums_b) and y.norm not in topic]
            if lone_a and lone_b:
                out.append({"type": "number", "a": _context(ta, i1, i2), "b": _context(tb, j1, j2),
                            "values": [lone_a[0].raw, lone_b[0].raw]})
                continue
        ea = [t for t in sa if t.name and names_b.get(t.norm, 0) < names_a.get(t.norm, 0) and t.norm not in topic]
        eb = [t for t in sb if t.name and names_a.get(t.norm, 0) < names_b.get(t.norm, 0) and t.norm not in topic]
        if ea and eb:
            out.append({"type": "entity", "a": _context(ta, i1, i2), "b": _context(tb, j1, j2),
                        "values": [" ".join(t.raw for t in ea), " ".join(t.raw for t in eb)]})
    return out


_SENT = re.compile(r"(?<=[.!?;])\s+|\n+")
_FALSE_NEG = {"only", "just", "necessarily", "matter", "doubt", "longer", "less", "more", "exactly", "always",
              "limited", "restricted", "surprisingly", "unlike", "too", "to", "be", "been", "very", "so"}
_BOTH = {"both", "all", "each", "every", "they", "these", "either"}
_VERBS = {"believe", "have", "has", "exist", "contain", "require", "need", "include", "use", "allow", "be", "is",
          "are", "do", "doe", "involve", "support", "produce", "cause"}
_STOPWORDS = {"for", "to", "with", "from", "that", "this", "what", "which", "there", "their", "them", "they",
              "have", "has", "had", "been", "being", "was", "were", "are", "will", "would", "should", "could",
              "may", "might", "must", "can", "into", "onto", "than", "then", "about", "over", "under", "way",
              "thing", "one", "other", "another", "need", "matter", "longer", "only", "just", "well", "much",
              "many", "such", "same", "all", "any", "some", "very", "more", "less", "also", "even", "yet"}
_FUNC = {"a", "an", "the", "any", "or", "and", "in", "of", "one", "single", "such", "its", "their", "his", "her"}


def _sentences(text: str, max_chars: int) -> list[list[Token]]:
    return [w for s in _SENT.split((text or "")[:max_chars]) if (w := _words(tokens(s, max_chars)))]


def _negated_words(sent: list[Token]) -> set[str]:
    """Content words a negator governs: "no God or gods", "does not believe in an afterlife", "never X"."""
    out: set[str] = set()
    for k, t in enumerate(sent):
        if t.norm not in {"no", "not", "never", "without", "none", "neither", "nor", "cannot"}:
            continue
        nxt = sent[k + 1:k + 6]
        if nxt and nxt[0].norm in _FALSE_NEG:
            continue
        verbal = t.norm in {"not", "never", "cannot"}
        for u in nxt:
            if u.norm in _FUNC or (verbal and u.norm in _VERBS):
                continue
            if u.kind == "word" and u.norm.isalpha() and len(u.norm) > 2 and u.norm not in _STOPWORDS \
                    and not u.norm.endswith(("ly", "wise")):
                out.add(u.norm)
            else:
                break
            nxt_or = nxt[nxt.index(u) + 1:nxt.index(u) + 3]
            if len(nxt_or) == 2 and nxt_or[0].norm in {"or", "nor"} and nxt_or[1].norm.isalpha() \
                    and len(nxt_or[1].norm) > 2 and nxt_or[1].norm not in _STOPWORDS:
                out.add(nxt_or[1].norm)   # "no God or gods": the word after "or" is governed too
            break
    return out


def negated_claims(res_a: str, res_b: str, subjects: set[str], *, max_chars: int = 3000) -> list[dict]:
    """A word one response negates about a subject and the other affirms about the same subject.

    `subjects` are the prompts' content words (the things the task is about); a sentence is about
    the subjects it names ("both" / "all" / "they" name every subject). The negated word must not
    be a subject itself, and the affirming sentence must hold no negator at all.
    """
    out: list[dict] = []
    sa, sb = _sentences(res_a, max_chars), _sentences(res_b, max_chars)
    neg_all_a = set().union(*map(_negated_words, sa)) if sa else set()
    neg_all_b = set().union(*map(_negated_words, sb)) if sb else set()
    for first, second, flip in ((sa, sb, False), (sb, sa, True)):
        for s1 in first:
            neg = _negated_words(s1) - subjects - (neg_all_a if flip else neg_all_b)
            if not neg:
                continue
            sub1 = {t.norm for t in s1} & subjects
            if not sub1:
                continue
            for s2 in second:
                norms2 = {t.norm for t in s2}
                if norms2 & NEGATORS:
                    continue
                sub2 = subjects if norms2 & _BOTH else norms2 & subjects
                hit = neg & norms2
                if hit and sub1 & sub2:
                    a = " ".join(t.raw for t in s1)[:160]
                    b = " ".join(t.raw for t in s2)[:160]
                    c = {"type": "negation", "a": b if flip else a, "b": a if flip else b, "word": sorted(hit)[0]}
                    out.append(c)
                    break
            if out:
                return out
    return out
