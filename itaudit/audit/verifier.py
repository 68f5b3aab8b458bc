"""Verifier: answers that can be checked mechanically, and are wrong.

Conservative by design: a row is checked only when its task is parsed unambiguously, and flagged
only when the answer it states is parsed too and disagrees. Plain Python, no model.

- `arithmetic`: "What is 12 times 3?", "Calculate (4 + 5) * 2", "15% of 200", "square root of 144",
  "5 factorial"; the prompt must hold nothing but the expression.
- `statistics`: mean / average, median, sum, product, minimum / maximum, range of the one list
  of numbers in the prompt (no other number in it).
- `sorting`: a list of numbers (or words, alphabetically) sorted in a stated direction.
- `primes`: "Is 7 a prime number?", "prime numbers between 10 and 30", "first 5 primes".
- `fibonacci`: "the 10th Fibonacci number" (either indexing convention is accepted).
- `unit_conversion`: temperature, length, mass, volume between named units (2 % tolerance).
- `code_syntax`: Python code (the task names Python or the answer is unmistakably Python) that
  `ast.parse` rejects.
- `format`: JSON asked for but no valid JSON given; "answer with one word" / "yes or no" ignored.

A stated number is right when it equals the expected value to the precision it is written with
("5.25", "5.3", "5.2" or "5" for 5.25; "5.4" for 5.2 is wrong, and so is "4" or "5" for a median of 4.5:
an exact tie is right only when written with decimals).
Evidence: {"kind", "expected", "answer", "message": "expected 5.2, answer says 5.4"}.
"""

from __future__ import annotations

import ast
import html
import json
import math
import operator
import re
import statistics
import textwrap
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import polars as pl

from ..steps.base import Params, Step
from .base import CheckResult

SCORES = {"arithmetic": 1.0, "statistics": 1.0, "sorting": 1.0, "primes": 1.0, "fibonacci": 0.9,
          "unit_conversion": 0.9, "code_syntax": 0.8, "format": 0.7}

_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
NUM = re.compile(rf"(?<![\w.]){_NUM}(?![\w])")
_LIST = re.compile(rf"^[\s\[\(\{{]*{_NUM}(?:\s*(?:,\s*and\b|,|;|\s|\band\b)\s*{_NUM})+[\s\]\)\}}.]*$")
_STAT = {
    "gcd": re.compile(r"\b(greatest common (?:divisor|factor)|highest common factor|gcd|gcf|hcf)\b", re.I),
    "lcm": re.compile(r"\b(least|lowest|smallest) common multiple|\blcm\b", re.I),
    "mean": re.compile(r"\b(mean|average|arithmetic mean)\b", re.I),
    "median": re.compile(r"\bmedian\b", re.I),
    "sum": re.compile(r"\b(sum|total|add up|add together|add the)\b", re.I),
    "product": re.compile(r"\bproduct\b", re.I),
    "max": re.compile(r"\b(maximum|largest|biggest|highest|greatest)\b(?! common)", re.I),
    "min": re.compile(r"\b(minimum|smallest|lowest|least)\b(?! common)", re.I),
    "range": re.compile(r"\brange\b", re.I),
}
_AMBIGUOUS = re.compile(
    r"\b(weighted|geometric|harmonic|moving|standard deviation|variance|mode|percent|percentage|round|"
    r"decimal|nearest|approximately|estimate|even|odd|prime|digits?|squares?|cubes?|except|excluding|only|"
    r"first|last|second|number of|how many|count|each|per|times|multiply|divide|ratio|difference|between|"
    r"if|when|after|before|code|function|program|algorithm|write|script|python|java|sql|formula|equation|"
    r"explain|why|describe|array|matrix|vector|class|method|implement)\b", re.I)
_SORT = re.compile(r"\b(sort|arrange|order|rank)\b", re.I)
_ASC = re.compile(r"\b(ascending|increasing|smallest to (?:largest|biggest|greatest|highest)|"
                  r"lowest to highest|least to greatest|low to high|small to large|alphabetical(?:ly)?|a to z)\b", re.I)
_DESC = re.compile(r"\b(descending|decreasing|largest to smallest|biggest to smallest|greatest to least|"
                   r"highest to lowest|high to low|large to small|reverse alphabetical|z to a)\b", re.I)
_LEAD = re.compile(r"^\s*(?:please\s+)?(?:what\s+is|what's|calculate|compute|evaluate|find|solve|work out|"
                   r"determine|simplify|give)\s+(?:the\s+)?(?:(?:value|result|answer)\s+of\s*|"
                   r"(?:following\s+)?(?:expression|equation|calculation)\s*:?\s*)?", re.I)
_WORD_OPS = [(r"\bmultiplied by\b|\btimes\b|×|\bx\b", "*"), (r"\bdivided by\b|÷", "/"), (r"\bplus\b", "+"),
             (r"\bminus\b", "-"), (r"\bto the power of\b|\^", "**"), (r"\bsquared\b", "**2"), (r"\bcubed\b", "**3")]
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}
_PRIME_Q = re.compile(rf"^\s*(?:is|(?:check|determine|find out|decide|tell me)\s+(?:if|whether))\s+({_NUM})\s+(?:is\s+)?"
                      rf"(?:a\s+)?prime(?:\s+number)?\s*\??\.?\s*$", re.I)
_PRIMES_BETWEEN = re.compile(rf"\bprime numbers?\s+(?:between|from)\s+({_NUM})\s+(?:and|to)\s+({_NUM})\b", re.I)
_FIRST_PRIMES = re.compile(r"\bfirst\s+(\d+|ten|five|three|four|six|seven|eight|nine|two)\s+prime numbers?\b", re.I)
_FIB = re.compile(r"\b(\d+)(?:st|nd|rd|th)\s+(?:number\s+(?:in|of)\s+the\s+)?fibonacci(?:\s+(?:number|sequence))?\b",
                  re.I)
_WORD_NUM = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_UNITS: dict[str, tuple[str, float]] = {   # unit -> (dimension, factor to the base unit)
    "kilometers": ("len", 1000), "kilometres": ("len", 1000), "km": ("len", 1000), "meters": ("len", 1),
    "metres": ("len", 1), "m": ("len", 1), "centimeters": ("len", 0.01), "centimetres": ("len", 0.01),
    "cm": ("len", 0.01), "millimeters": ("len", 0.001), "mm": ("len", 0.001), "miles": ("len", 1609.344),
    "mi": ("len", 1609.344), "feet": ("len", 0.3048), "foot": ("len", 0.3048), "ft": ("len", 0.3048),
    "inches": ("len", 0.0254), "inch": ("len", 0.0254), "in": ("len", 0.0254), "yards": ("len", 0.9144),
    "kilograms": ("mass", 1000), "kg": ("mass", 1000), "grams": ("mass", 1), "g": ("mass", 1),
    "pounds": ("mass", 453.59237), "lbs": ("mass", 453.59237), "lb": ("mass", 453.59237),
    "ounces": ("mass", 28.349523125), "oz": ("mass", 28.349523125), "liters": ("vol", 1), "litres": ("vol", 1),
    "l": ("vol", 1), "milliliters": ("vol", 0.001), "ml": ("vol", 0.001), "gallons": ("vol", 3.785411784),
    "celsius": ("temp", 0), "fahrenheit": ("temp", 0), "kelvin": ("temp", 0), "°c": ("temp", 0), "°f": ("temp", 0),
}
_CONVERT = re.compile(
    rf"^\s*(?:convert|change|transform|express|how many|what is)\s+(?:the\s+)?(?:following\s+)?(?:\w+\s+)?"
    rf"(?:from\s+)?({_NUM})\s*(?:degrees?\s+)?([a-z°]+\.?)\s+(?:\w+\s+)?(?:to|into|in)\s+(?:degrees?\s+)?([a-z°]+)\s*\??\.?\s*$",
    re.I)
_PY_START = re.compile(r"^(?:def |class |import |from \S+ import |@\w|if __name__|print\(|for \w+ in |while )")
_OTHER_LANG = re.compile(r"\b(javascript|java|c\+\+|c#|html|css|sql|ruby|golang|php|swift|kotlin|bash|shell|"
                         r"typescript|rust|perl|scala|matlab|r language|react|node)\b", re.I)
_CODE_LINE = re.compile(r"^\s*(?:def |function |import |#include|#!|for \w+ in |public |echo |print\(|console\.)|"
                        r"\breturn\b|=>|\brange\(|;\s*$|^\s*[{}]\s*$|\w+\s*=\s*\S", re.M)
_CODE_TASK = re.compile(r"\b(code|program|script|function|api|implement\w*|javascript|python|class|endpoint|query|"
                        r"library|snippet|node\.?js|request)\b", re.I)
_FENCE = re.compile(r"^[ \t]*```([\w+-]*)[ \t]*\n(.*?)^[ \t]*```", re.S | re.M)
_JSON_ASK = re.compile(r"\b(?:return|output|give|provide|format|respond|reply|answer|present|convert|express|put|"
                       r"generate|produce|write|list)\b(?:(?![.?!\n]).){0,60}?\b(?:in|as|into)\s+(?:a\s+|an\s+|valid\s+)?json\b",
                       re.I)


def _num(s: str) -> float:
    return float(s.replace(",", ""))


def _decimals(s: str) -> int:
    return len(s.split(".")[1]) if "." in s else 0


def matches(stated: str, expected: float, rel: float = 0.0) -> bool:
    """A stated number is right when it equals `expected` to the precision it is written with."""
    v = _num(stated)
    if rel:
        return abs(v - expected) <= rel * max(abs(expected), 1e-9) + 0.5 * 10 ** -_decimals(stated)
    if v == expected:
        return True
    if abs(expected) > 1e15:   # beyond float precision: relative comparison
        return abs(v - expected) <= 1e-12 * abs(expected)
    d = _decimals(stated)
    eps = min(1e-9 * max(1.0, abs(expected)), 0.1 * 10 ** -d)
    # a tie (5.25 as "5.3" or "5.2") is right when written with decimals; 4.5 as "4" or "5" is not
    return abs(v - expected) < 0.5 * 10 ** -d + (eps if d else -eps)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}" if abs(x) < 1e4 else f"{x:.6g}"


def _safe_eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _safe_eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _safe_eval(node.left), _safe_eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
            raise ValueError("too large")
        return float(_OPS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_safe_eval(node.operand)))
    raise ValueError("not arithmetic")


def parse_expression(prompt: str) -> tuple[str, float] | None:
    """(expression, value) when the whole prompt is one arithmetic question, else None."""
    p = prompt.strip()
    m = _LEAD.match(p)
    if not m:
        return None
    rest = p[m.end():].strip().rstrip("?.!= ").strip()
    rest = re.sub(r"\s*=\s*\??$", "", rest)
    pct = re.fullmatch(rf"({_NUM})\s*%\s+of\s+({_NUM})", rest, re.I)
    if pct:
        return rest, _num(pct.group(1)) / 100 * _num(pct.group(2))
    sq = re.fullmatch(rf"(?:the\s+)?square root of\s+({_NUM})", rest, re.I)
    if sq:
        return rest, math.sqrt(_num(sq.group(1)))
    fac = re.fullmatch(r"(?:the\s+)?factorial of\s+(\d{1,2})|(\d{1,2})\s*(?:!|factorial)", rest, re.I)
    if fac:
        return rest, float(math.factorial(int(fac.group(1) or fac.group(2))))
    sm = re.fullmatch(rf"(?:the\s+)?(sum|product) of\s+({_NUM})\s+and\s+({_NUM})", rest, re.I)
    if sm:
        a, b = _num(sm.group(2)), _num(sm.group(3))
        return rest, a + b if sm.group(1).lower() == "sum" else a * b
    expr = rest
    for pat, rep in _WORD_OPS:
        expr = re.sub(pat, f" {rep} ", expr, flags=re.I)
    expr = re.sub(r"(?<=\d),(?=\d{3}\b)", "", expr)
    if not re.fullmatch(r"[\d\s.+\-*/()]+", expr) or not re.search(r"\d\s*(?:\*\*|[+\-*/])\s*[\d(]", expr):
        return None
    try:
        return rest, _safe_eval(ast.parse(expr.strip(), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError):
        return None


def stated_answer(response: str, inputs: list[str]) -> str | None:
    """The number the response gives as its answer: after "is / = / :", or a bare number."""
    r = (response or "").strip()
    bare = re.fullmatch(rf"[^\d\n]{{0,40}}?({_NUM})\s*[^\d\w]{{0,3}}", r)
    if bare:
        return bare.group(1)
    eq = list(re.finditer(rf"(?:=|\bis\b|\bequals\b|\bequal to\b|\bare\b|:|\bbe\b|\bof\b)\s*"
                          rf"(?:approximately\s+|about\s+|roughly\s+)?\$?({_NUM})"
                          rf"(?!\s*(?:,\s*{_NUM}|\s*[-+*/x×]\s*\d|,?\s*and\s+{_NUM}))", r))
    return eq[-1].group(1) if eq else None


def _numbers(text: str) -> list[str]:
    return [m.group(0) for m in NUM.finditer(text or "")]


def _one_list(prompt: str) -> list[str] | None:
    """The numbers of the prompt when they form one list and nothing else in it is a number."""
    nums = _numbers(prompt)
    if len(nums) < 2:
        return None
    for line in re.split(r"[:\n]", prompt):
        line = line.strip()
        if line and _LIST.match(line):
            if len(_numbers(line)) == len(nums):
                return nums
    m = re.search(rf"(?:of|numbers|values|set|list|data|:)\s*[\[\(\{{]?\s*({_NUM}(?:\s*(?:,\s*and|,|and)\s*{_NUM})+)\s*[\]\)\}}]?"
                  r"\s*[?.]?\s*$", prompt, re.I)
    if m and len(_numbers(m.group(1))) == len(nums):
        return nums
    return None


def _verdict(response: str, n: int) -> bool | None:
    r = (response or "").strip().lower()
    first = re.match(r"[\W_]*(\w+)", r)
    if first and first.group(1) in ("yes", "true", "correct"):
        return True
    if first and first.group(1) in ("no", "false", "incorrect"):
        return False
    if re.search(rf"\b{n}\s+is\s+(?:not|neither)\b|\bnot\s+(?:a\s+)?prime\b|\bis\s+(?:a\s+)?composite\b", r):
        return False
    if re.search(rf"\b{n}\s+is\s+(?:a\s+)?prime\b", r):
        return True
    return None


def _primes_upto(n: int) -> list[int]:
    return [k for k in range(2, n + 1) if all(k % d for d in range(2, int(k ** 0.5) + 1))]


def _issue(kind: str, expected: Any, answer: Any, message: str | None = None) -> dict:
    return {"kind": kind, "expected": expected, "answer": answer,
            "message": message or f"expected {expected}, answer says {answer}"}


def check_math(instruction: str, inp: str, response: str) -> dict | None:
    """An arithmetic / statistics / sorting / primes / conversion issue, or None (right or not parsed)."""
    prompt = f"{instruction}\n{inp}".strip()
    resp = response or ""
    if _FENCE.search(resp) or _CODE_LINE.search(resp):
        return None   # a program, not a stated answer
    # primes
    m = _PRIME_Q.match(prompt)
    if m and float(m.group(1)).is_integer():
        n = int(_num(m.group(1)))
        truth = n in _primes_upto(max(n, 2)) if n >= 2 else False
        said = _verdict(resp, n)
        if said is not None and said != truth:
            return _issue("primes", f"{n} is {'' if truth else 'not '}prime", f"{n} is {'' if said else 'not '}prime")
        return None
    m = _PRIMES_BETWEEN.search(prompt) or _FIRST_PRIMES.search(prompt)
    if m and "prime" in prompt.lower() and len(_numbers(prompt)) <= 2:
        if m.re is _PRIMES_BETWEEN:
            lo, hi = sorted((int(_num(m.group(1))), int(_num(m.group(2)))))
            if hi > 10_000:
                return None
            want = [p for p in _primes_upto(hi) if p >= lo]
        else:
            k = int(m.group(1)) if m.group(1).isdigit() else _WORD_NUM[m.group(1).lower()]
            want = _primes_upto(10_000)[:k]
        got = [int(_num(x)) for x in _numbers(resp) if float(_num(x)).is_integer()]
        for x in _numbers(prompt):   # the prompt's own numbers echoed in the answer
            if int(_num(x)) in got and int(_num(x)) not in want:
                got.remove(int(_num(x)))
        if m.re is _PRIMES_BETWEEN:   # prime bounds in or out: both readings are right
            got = [g for g in got if g not in (lo, hi) or g not in _primes_upto(hi)]
            want = [w for w in want if w not in (lo, hi)]
        if got and len(got) >= 2 and sorted(set(got)) != want:
            return _issue("primes", ", ".join(map(str, want)), ", ".join(map(str, got[:20])))
        return None
    m = _FIB.search(prompt)
    if m and len(_numbers(prompt)) <= 1 and int(m.group(1)) <= 90:
        n = int(m.group(1))
        fib = [0, 1]
        while len(fib) <= n + 1:
            fib.append(fib[-1] + fib[-2])
        ok = {fib[n], fib[n - 1]} if n >= 1 else {0}
        said = stated_answer(resp, [m.group(1)])
        if said is not None and not any(matches(said, v) for v in ok):
            return _issue("fibonacci", " or ".join(_fmt(v) for v in sorted(ok)), said)
        return None
    # unit conversion
    m = _CONVERT.match(prompt.replace("\n", " "))
    if m:
        v, u1, u2 = _num(m.group(1)), m.group(2).lower().rstrip("."), m.group(3).lower()
        if u1 in _UNITS and u2 in _UNITS and _UNITS[u1][0] == _UNITS[u2][0] and u1 != u2:
            want = _convert(v, u1, u2)
            said = stated_answer(resp, [m.group(1)])
            if want is not None and said is not None and not matches(said, want, rel=0.02):
                return _issue("unit_conversion", _fmt(round(want, 2)), said,
                              f"{m.group(1)} {u1} is {_fmt(round(want, 2))} {u2}, answer says {said}")
        return None
    # sorting
    if _SORT.search(instruction or ""):
        return _check_sort(prompt, resp)
    # statistics over one list
    ops = [k for k, rx in _STAT.items() if rx.search(prompt)]
    nums = _one_list(prompt)
    if len(ops) == 1 and nums and not _AMBIGUOUS.search(prompt):
        vals = [_num(x) for x in nums]
        op = ops[0]
        if op in ("gcd", "lcm") and not all(v.is_integer() and v > 0 for v in vals):
            return None
        want = {"mean": lambda: statistics.fmean(vals), "median": lambda: float(statistics.median(vals)),
                "sum": lambda: math.fsum(vals), "product": lambda: float(math.prod(vals)),
                "max": lambda: max(vals), "min": lambda: min(vals), "range": lambda: max(vals) - min(vals),
                "gcd": lambda: float(math.gcd(*map(int, vals))), "lcm": lambda: float(math.lcm(*map(int, vals)))}[op]()
        said = stated_answer(resp, nums)
        shown = [x for x in _numbers(resp) if x not in nums]
        if said is not None and not matches(said, want) and not any(matches(x, want) for x in shown):
            return _issue("statistics", _fmt(round(want, 4)), said,
                          f"the {op} of {', '.join(nums)} is {_fmt(round(want, 4))}, answer says {said}")
        return None
    # arithmetic expression
    parsed = parse_expression(prompt)
    if parsed:
        expr, want = parsed
        said = stated_answer(resp, _numbers(expr))
        if said is not None and not matches(said, want):
            return _issue("arithmetic", _fmt(round(want, 6)), said,
                          f"{expr} = {_fmt(round(want, 6))}, answer says {said}")
    return None


def _convert(v: float, u1: str, u2: str) -> float | None:
    d = _UNITS[u1][0]
    if d != "temp":
        return v * _UNITS[u1][1] / _UNITS[u2][1]
    norm = {"°c": "celsius", "°f": "fahrenheit"}
    a, b = norm.get(u1, u1), norm.get(u2, u2)
    c = v if a == "celsius" else (v - 32) * 5 / 9 if a == "fahrenheit" else v - 273.15
    return c if b == "celsius" else c * 9 / 5 + 32 if b == "fahrenheit" else c + 273.15


def _check_sort(prompt: str, resp: str) -> dict | None:
    asc, desc = bool(_ASC.search(prompt)), bool(_DESC.search(prompt))
    if asc == desc:
        return None   # no direction, or both: ambiguous
    nums = _one_list(prompt)
    if nums:
        got = _numbers(resp)
        if len(got) != len(nums) or sorted(map(_num, got)) != sorted(map(_num, nums)):
            return None   # answers with other numbers (counts, positions): not parsed
        want = sorted(nums, key=_num, reverse=desc)
        if [_num(x) for x in got] != [_num(x) for x in want]:
            return _issue("sorting", ", ".join(want), ", ".join(got))
        return None
    if "alphabetic" not in prompt.lower():
        return None
    src = prompt.split(":")[-1] if ":" in prompt else prompt.split("\n")[-1]
    items = [x.strip(" .\"'") for x in re.split(r",|\n", src) if x.strip(" .\"'")]
    got = [x.strip(" .\"'") for x in re.split(r",|\n", resp.strip()) if x.strip(" .\"'")]
    got = [re.sub(r"^\s*(?:\d+[.)]|[-*•])\s*", "", g) for g in got]
    if len(items) < 3 or sorted(i.lower() for i in items) != sorted(g.lower() for g in got):
        return None
    want = sorted(items, key=str.lower, reverse=desc)
    if [g.lower() for g in got] != [w.lower() for w in want]:
        return _issue("sorting", ", ".join(want), ", ".join(got))
    return None


def _looks_code(line: str) -> bool:
    return bool(re.search(r"[=()\[\]{}:]|^\s*(?:def|class|return|import|from|if|for|while|print|try|with)\b", line))


_NOT_PY = re.compile(r"^\s*(?:import\s.*\sfrom\s+['\"]|const |let |var |function |#include|public |private |package |"
                     r"using |fn |<\?php|<!DOCTYPE|<html|\$ |npm |pip3? |git |curl |sudo |apt|brew |docker |gem |"
                     r"SELECT |CREATE |INSERT |export )|=>\s*\{|;\s*$", re.M | re.I)


def _pythonic_start(block: str) -> bool:
    """The block opens like Python and has no marks of another language (`;` line ends, `const`, shell)."""
    code = [ln for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if not code or len(_NOT_PY.findall(block)) > max(1, len(code) // 10):
        return False
    first = code[0].strip()
    return bool(_PY_START.match(first) or re.match(r"^[A-Za-z_][\w.]*\s*(?:\[[^\]]*\])?\s*=[^=]", first))


def python_blocks(instruction: str, inp: str, response: str) -> list[str]:
    """The Python code blocks of a response, when the task or the answer is unmistakably Python."""
    prompt = f"{instruction}\n{inp}"
    text = html.unescape(response or "")
    blocks = _FENCE.findall(text)
    if blocks:
        # a "python" label alone is not trusted (exported chats label every block python)
        py = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3") and _pythonic_start(code)]
        if "python" in prompt.lower() and not _OTHER_LANG.search(prompt):
            py += [code for lang, code in blocks if not lang and _pythonic_start(code)]
        return py
    r = text.strip("\n")
    lines = [ln for ln in r.splitlines() if ln.strip()]
    if not lines or not _PY_START.match(lines[0].lstrip()) or _OTHER_LANG.search(prompt) or not _pythonic_start(r):
        return []
    if ("{" in r and ";" in r and "def " not in r) or re.search(r"\)?\s*\{\s*$", lines[0]) \
            or any(re.search(r"(?:\)|\w)\s*\{\s*$", ln) and not ln.rstrip().endswith("({") for ln in lines) \
            or re.search(r"^\s*[\w.]+\s*::|^import [\w.]+ \(", r, re.M):
        return []   # braces: C-like code (Swift, Java, JavaScript); `::`: Haskell
    return [r]


def _annotation(line: str) -> bool:
    """A line that is prose or a shown result, not code: "The code defines ...", "/* Changes:", "f(5) => 120"."""
    t = line.strip()
    words = t.split()
    if t.startswith(("/*", "*/", "//")) or re.search(r"\)\s*=>\s*\S", t):
        return True
    alpha = sum(w.strip(".,:;'\"()").isalpha() for w in words)
    return len(words) >= 5 and t[:1].isupper() and alpha / len(words) >= 0.6 and not re.search(r"[=\[{]", t)


def _syntax_issue(code: str) -> dict | None:
    # output pasted after the code ("Output:", "# Output", "// Output: 6") is not code; nbsp is layout
    code = re.split(r"^\s*(?:(?:#|//)\s*|example\s+)?outputs?\s*(?::.*)?$", code, maxsplit=1, flags=re.M | re.I)[0]
    # nbsp is layout; "\\_" is a markdown escape left by chat exports
    lines = textwrap.dedent(code.replace("\u00a0", " ").replace("\\_", "_")).splitlines()
    for _ in range(3):
        try:
            ast.parse("\n".join(lines))
            return None
        except SyntaxError as e:
            bad = (e.text or "").strip()
            at = (e.lineno or 1) - 1
            if not 0 <= at < len(lines):
                break
            if _annotation(lines[at]) or (at >= 3 and not _looks_code(lines[at]) and _parses(lines[:at])):
                lines = lines[:at]   # the code ended before this line (prose or printed output follows)
                continue
            nxt = next((ln.strip() for ln in lines[at:] if ln.strip()), "")
            head = re.search(r"function definition on line (\d+)", e.msg)
            body = lines[int(head.group(1)):at] if head else []
            if e.msg.startswith("expected an indented block") and (
                    nxt.startswith(("#", "...", "pass")) or (any(b.strip().startswith("#") for b in body)
                                                          and all(not b.strip() or b.strip().startswith("#") for b in body))):
                return None   # a stub to fill in ("# Implement your solution here", "# ... as before")
            code_lines = [ln for ln in lines if ln.strip() and not ln.strip().startswith("#")]
            if len(code_lines) <= 1 or (e.msg.startswith("unexpected indent") and at <= 1):
                return None   # a quoted header line, or a fragment from inside a block (a continuation)
            if re.search(r"=\s*(?:#|\.\.\.|$)|<[a-z][^<>]*>|#\s*(?:missing|error|bug|wrong|typo)\b", bad, re.I):
                return None   # a template to fill in ("x = # ...", "<list of columns>") or a bug shown on purpose
            cut = at >= len(lines) - 1 or not any(ln.strip() for ln in lines[at + 1:])
            return _issue("code_syntax", "Python that parses", f"SyntaxError: {e.msg} (line {e.lineno})",
                          f"the Python code does not parse{' (the answer is cut off mid-code)' if cut else ''}: "
                          f"{e.msg} at line {e.lineno}: {bad[:80]!r}")
    return None


def _parses(lines: list[str]) -> bool:
    try:
        ast.parse("\n".join(lines))
        return True
    except SyntaxError:
        return False


def check_code(instruction: str, inp: str, response: str) -> dict | None:
    """Python code in the answer that `ast.parse` rejects (prose or results after the code are cut off)."""
    if re.search(r"\b(signature|declaration|header|stub|skeleton|pseudo-?code|outline)\b", instruction or "", re.I):
        return None   # a bare `def f(x):` is the requested answer
    for block in python_blocks(instruction, inp, response):
        got = _syntax_issue(block)
        if got:
            return got
    return None


def _json_in(text: str) -> bool:
    t = (text or "").strip().replace("\\_", "_")   # markdown-escaped underscores (exported chats)
    cands = [code for _, code in _FENCE.findall(t)] + [t]
    for s in (t.find("{"), t.find("[")):
        if s >= 0:
            e = max(t.rfind("}"), t.rfind("]"))
            if e > s:
                cands.append(t[s:e + 1])
    for c in cands:
        try:
            json.loads(c)
            return True
        except ValueError:
            continue
    return False


def check_format(instruction: str, inp: str, response: str) -> dict | None:
    if _JSON_ASK.search(instruction or "") and not _CODE_TASK.search(f"{instruction}\n{inp}") \
            and not _json_in(response):
        return _issue("format", "JSON", "no valid JSON", "JSON was asked for; the answer holds no valid JSON")
    return None


def verify(instruction: str, inp: str, response: str) -> dict | None:
    """The first mechanical issue found in one row (math, then code, then format), or None."""
    for fn in (check_math, check_code, check_format):
        got = fn(instruction or "", inp or "", response or "")
        if got:
            return got
    return None


@dataclass(frozen=True)
class VerifierParams(Params):
    kinds: tuple[str, ...] = tuple(SCORES)


class Verifier(Step):
    """Rows whose answer can be checked mechanically and is wrong (math, Python syntax, JSON)."""

    name: ClassVar[str] = "verifier"
    description: ClassVar[str] = ("mechanically checkable wrong answers: arithmetic, statistics, sorting, primes, "
                                  "unit conversion, Python that does not parse, JSON not given")
    Params: ClassVar[type[Params]] = VerifierParams

    def compute(self, ctx: Any) -> CheckResult:
        frame = ctx.instances()
        idx = frame["idx"].to_numpy().astype(np.int64)
        ins = frame["instruction"].fill_null("").to_list()
        inp = frame["input"].fill_null("").to_list()
        res = frame["response"].fill_null("").to_list()
        return self.verify_rows(ctx.dataset, idx, ins, inp, res)

    def verify_rows(self, dataset: str, idx: np.ndarray, ins: list[str], inp: list[str],
                    res: list[str]) -> CheckResult:
        kinds = set(self.params.kinds)  # type: ignore[attr-defined]
        unknown = kinds - set(SCORES)
        if unknown:
            from ..errors import ItauditError

            raise ItauditError(f"verifier.kinds: unknown kind(s) {', '.join(sorted(unknown))}; "
                               f"valid: {', '.join(SCORES)}")
        n = len(idx)
        flag = np.zeros(n, dtype=bool)
        score = np.zeros(n)
        details: list[dict | None] = [None] * n
        by_kind: dict[str, int] = {}
        for r in range(n):
            got = verify(ins[r], inp[r], res[r])
            if got and got["kind"] in kinds:
                flag[r], score[r], details[r] = True, SCORES[got["kind"]], got
                by_kind[got["kind"]] = by_kind.get(got["kind"], 0) + 1
        summary = {"n_rows": n, "n_flagged": int(flag.sum()), "by_kind": by_kind,
                   "examples": [{"idx": int(idx[r]), "message": details[r]["message"]}  # type: ignore[index]
                                for r in np.flatnonzero(flag)[:5]]}
        return CheckResult(self.name, dataset, idx, flag, score, summary=summary, params=self.params.as_dict(),
                           details=details)

    def render_text(self, result: CheckResult) -> list[str]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(result.summary.get("by_kind", {}).items()))
        return [f"{result.summary.get('n_flagged', 0)} wrong answers" + (f" ({kinds})" if kinds else "")]

    def render_html(self, view: Any) -> str:
        """From the report's `CheckView` of the stored run (`itaudit.report.view`)."""
        flagged = view.rows.filter(pl.col("details").is_not_null()).sort("idx").head(100)
        rows = [f"<tr><td>{int(i)}</td><td>{html.escape(d['kind'])}</td><td>{html.escape(d['message'])}</td></tr>"
                for i, d in ((i, json.loads(t)) for i, t in flagged.select("idx", "details").iter_rows())]
        if not rows:
            return "<p>No mechanically checkable wrong answers.</p>"
        return ("<table><thead><tr><th>row</th><th>kind</th><th>evidence</th></tr></thead><tbody>"
                + "".join(rows) + "</tbody></table>")


def verifier(ctx: Any, **params: Any) -> CheckResult:
    """Runner entry point (`register_check`): the `Verifier` step."""
    return Verifier(params).compute(ctx)
