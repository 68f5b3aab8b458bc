"""Prompt sets for generation and shift analysis: from files (any ingest format) or datasets."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, ItauditError
from ..ingest import formats
from ..ingest.readers import read_records
from ..store import Store


@dataclass
class PromptItem:
    prompt_id: str
    instruction: str
    input: str | None = None
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    response: str | None = None          # a given response (reference / text to analyse)
    category: str | None = None
    dataset: str | None = None
    idx: int | None = None


def read_prompts(path: str | Path, fmt: str = "auto", *, first_turn_only: bool = True,
                 limit: int | None = None) -> list[PromptItem]:
    """Prompts from a jsonl/json/csv/parquet file in any ingest format (MT-Bench `turns`: first turn)."""
    path = Path(path)
    out: list[PromptItem] = []
    norm = None
    for rec in read_records(path):
        if not isinstance(rec.data, dict):
            raise InputError(str(path), rec.location, None, f"expected an object, got {type(rec.data).__name__}")
        if norm is None:
            try:
                name = formats.detect(rec.data) if fmt == "auto" else fmt
            except formats.FieldError as e:
                raise InputError(str(path), rec.location, e.field, e.reason) from None
            if name == "oasst":
                raise InputError(str(path), rec.location, None, "OASST trees are not a prompt format")
            norm = formats.NORMALIZERS[name]
        try:
            turns = list(norm(rec.data))
        except formats.FieldError as e:
            raise InputError(str(path), rec.location, e.field, e.reason) from None
        for t in turns:
            if first_turn_only and t.turn > 0:
                continue
            rid = rec.data.get("question_id", rec.data.get("id", rec.data.get("key")))
            pid = f"{rid if rid is not None and not isinstance(rid, (dict, list)) else rec.row}-{t.turn}"
            out.append(PromptItem(pid, t.instruction, t.input, t.system, list(t.history),
                                  t.response or None, t.category))
        if limit is not None and len(out) >= limit:
            return out[:limit]
    if not out:
        raise InputError(str(path), None, None, "no prompts in file")
    return out


def dataset_prompts(store: Store, dataset: str, *, limit: int | None = None,
                    first_turn_only: bool = False) -> list[PromptItem]:
    """Prompts from an ingested dataset (its responses kept as `response`)."""
    store.require_dataset(dataset)
    sql = "SELECT idx, turn, system, history, instruction, input, response, category FROM instances WHERE dataset = ?"
    if first_turn_only:
        sql += " AND turn = 0"
    sql += " ORDER BY idx" + (f" LIMIT {int(limit)}" if limit is not None else "")
    df = store.query(sql, [dataset])
    return [
        PromptItem(str(r["idx"]), r["instruction"], r["input"], r["system"],
                   json.loads(r["history"]) if r["history"] else [], r["response"] or None,
                   r["category"], dataset, r["idx"])
        for r in df.iter_rows(named=True)
    ]


def prompt_items(store: Store | None = None, prompts: Any = None, dataset: str | None = None, *,
                 limit: int | None = None, first_turn_only: bool = True) -> list[PromptItem]:
    """Prompts from exactly one source: a file (any ingest format), a list of strings or dicts
    (`instruction`/`prompt`/`question`, optional `input`, `response`/`output`, `id`), or an
    ingested dataset (`store` needed)."""
    if (prompts is None) == (dataset is None):
        raise ItauditError("give either prompts (--prompts FILE, or a list) or a dataset (--dataset NAME)")
    if dataset is not None:
        if store is None:
            raise ItauditError("prompts from a dataset need a store")
        return dataset_prompts(store, dataset, limit=limit, first_turn_only=first_turn_only)
    if isinstance(prompts, (str, os.PathLike)):
        return read_prompts(prompts, first_turn_only=first_turn_only, limit=limit)
    items = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            items.append(PromptItem(str(i), p))
        elif isinstance(p, Mapping):
            items.append(PromptItem(str(p.get("id", i)), p.get("instruction") or p.get("prompt") or p.get("question") or "",
                                    p.get("input") or None, response=p.get("response") or p.get("output") or None))
        else:
            raise ItauditError(f"prompt {i}: expected a string or a dict, got {type(p).__name__}")
    return items[:limit] if limit is not None else items
