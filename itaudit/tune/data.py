"""Training examples for supervised fine-tuning: select instances by SQL, tokenize, mask, batch.

Each example is the model's formatted prompt (`LoadedModel.format_prompt`: chat template, else
the plain '### Instruction' template) followed by the response and EOS. Labels are -100 on the
prompt and on padding, so the loss is on response tokens only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import duckdb
import polars as pl
import torch

from ..errors import ItauditError
from ..models.batching import pad_batch
from ..store import Store
from ..usersql import NO_FILES_HINT, is_file_access_error, sandboxed_query

IGNORE = -100



def select_instances(store: Store, dataset: str, where: str | None = None, rows: int | None = None, *,
                     allow_files: bool = False) -> pl.DataFrame:
    """The instances of `dataset` that satisfy `where`, in idx order, the first `rows` of them.

    `where` runs on copies of the tables it names, without file access unless `allow_files`.
    """
    store.require_dataset(dataset)
    sql = (
        "SELECT i.idx, i.system, i.history, i.instruction, i.input, i.response FROM instances i"
        " WHERE i.dataset = ?" + (f" AND ({where})" if where and where.strip() else "") + " ORDER BY i.idx"
        + (f" LIMIT {int(rows)}" if rows is not None else "")
    )
    try:
        stmts = store.conn.extract_statements(sql)
    except duckdb.Error as e:
        raise ItauditError(f"--where {where!r} is not valid SQL: {e}") from None
    if len(stmts) != 1 or stmts[0].type != duckdb.StatementType.SELECT:
        raise ItauditError(f"--where {where!r} must be a single predicate, not extra statements")
    try:
        if allow_files or not (where and where.strip()):
            return store.query(sql, [dataset])
        return sandboxed_query(store.conn, sql, [dataset], row_filters={"instances": ("dataset", dataset)})
    except duckdb.Error as e:
        hint = f" ({NO_FILES_HINT})" if is_file_access_error(e) else ""
        raise ItauditError(f"--where {where!r} failed: {e}{hint}") from None


def rows_sha(idx: list[int]) -> str:
    return hashlib.sha1(json.dumps([int(i) for i in idx]).encode()).hexdigest()


@dataclass
class Example:
    idx: int
    input_ids: list[int]
    labels: list[int]            # IGNORE on prompt tokens

    @property
    def n_target(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def eos_id(lm: Any) -> int:
    tok = lm.tokenizer
    if tok.eos_token_id is not None:
        return int(tok.eos_token_id)
    eos = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    if eos is None:
        raise ItauditError(f"{lm.model_id}: the tokenizer has no EOS token")
    return int(eos)


def build_examples(lm: Any, frame: pl.DataFrame, max_len: int) -> tuple[list[Example], int]:
    """Tokenized examples (prompt + response + EOS, cut to `max_len`) and the number skipped
    because the prompt alone leaves no room for a response token."""
    eos = eos_id(lm)
    out: list[Example] = []
    skipped = 0
    for r in frame.iter_rows(named=True):
        history = json.loads(r["history"]) if r["history"] else None
        prompt = lm.format_prompt(r["instruction"], r["input"], r["system"], history)
        p_ids = lm.encode_prompt(prompt)
        r_ids = list(lm.tokenizer(r["response"], add_special_tokens=False)["input_ids"]) + [eos]
        if len(p_ids) >= max_len:
            skipped += 1
            continue
        ids = (p_ids + r_ids)[:max_len]
        labels = ([IGNORE] * len(p_ids) + r_ids)[:max_len]
        out.append(Example(int(r["idx"]), ids, labels))
    return out, skipped


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels (IGNORE on padding)."""
    ids, mask = pad_batch([e.input_ids for e in batch], pad_id)
    labels, _ = pad_batch([e.labels for e in batch], IGNORE)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
