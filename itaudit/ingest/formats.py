"""Normalize records of each IT format into instances (one per assistant turn).

Every normalizer takes a parsed record and yields `Turn`s; it raises `FieldError` naming the
field when the record is bad, which the pipeline turns into an `InputError` with file and line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("alpaca", "dolly", "sharegpt", "messages", "lima", "oasst", "qa", "prompts", "eval")
# Prompt-only formats (evaluation sets) may have an empty response.
PROMPT_ONLY = {"prompts"}


class FieldError(Exception):
    def __init__(self, field: str | None, reason: str):
        self.field, self.reason = field, reason
        super().__init__(reason)


@dataclass(slots=True)
class Turn:
    instruction: str
    response: str
    input: str | None = None
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    category: str | None = None
    source: str | None = None
    turn: int = 0


def _str(rec: dict, key: str, *, required: bool = True, where: str | None = None) -> str | None:
    name = where or key
    if key not in rec or rec[key] is None:
        if required:
            raise FieldError(name, "missing required field")
        return None
    v = rec[key]
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise FieldError(name, f"expected a string, got {type(v).__name__}")
    if not isinstance(v, str):
        if required:
            raise FieldError(name, f"expected a string, got {type(v).__name__}")
        return str(v)
    return v


def _nonempty(value: str, name: str, what: str = "value") -> str:
    if not value.strip():
        raise FieldError(name, f"empty {what}")
    return value


def _first(rec: dict, keys: Iterable[str]) -> str | None:
    for k in keys:  # a plain loop: this runs several times per record
        if rec.get(k) is not None:
            return k
    return None


def _opt(rec: dict, *keys: str) -> str | None:
    k = _first(rec, keys)
    return _str(rec, k, required=False) if k else None


# -- single-turn formats ----------------------------------------------------------

def alpaca(rec: dict) -> Iterator[Turn]:
    """{instruction, input?, output} (also `response` as in GPTeacher, `history` as in LIMA-alpaca)."""
    out_key = _first(rec, ("output", "response")) or "output"
    instruction = _nonempty(_str(rec, "instruction"), "instruction")
    response = _nonempty(_str(rec, out_key), out_key, "response")
    history: list[dict[str, str]] = []
    hist = rec.get("history")
    if hist:
        if not isinstance(hist, list):
            raise FieldError("history", f"expected a list of [prompt, response] pairs, got {type(hist).__name__}")
        for i, pair in enumerate(hist):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise FieldError(f"history[{i}]", "expected a [prompt, response] pair of strings")
            history += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    yield Turn(
        instruction=instruction,
        response=response,
        input=_str(rec, "input", required=False) or None,
        system=_opt(rec, "system"),
        history=history,
        category=_opt(rec, "category", "task"),
        source=_opt(rec, "source", "dataset", "generator"),
        turn=len(history) // 2,
    )


def dolly(rec: dict) -> Iterator[Turn]:
    """databricks-dolly-15k: {instruction, context, response, category}."""
    yield Turn(
        instruction=_nonempty(_str(rec, "instruction"), "instruction"),
        response=_nonempty(_str(rec, "response"), "response", "response"),
        input=_str(rec, "context", required=False) or None,
        category=_opt(rec, "category"),
        source=_opt(rec, "source"),
    )


def qa(rec: dict) -> Iterator[Turn]:
    """Question/answer evaluation sets: GSM8K {question, answer}, TruthfulQA, MMLU (choices + letter)."""
    low = {k.lower().replace(" ", "_"): v for k, v in rec.items()}
    q_key = _first(low, ("question", "query", "prompt"))
    if q_key is None:
        raise FieldError("question", "missing required field")
    choices = [low[k] for k in ("answer_a", "answer_b", "answer_c", "answer_d") if k in low]
    if choices and "correct_answer" in low:
        letter = str(low["correct_answer"]).strip().lower()
        pos = "abcd".find(letter)
        if pos < 0 or pos >= len(choices):
            raise FieldError("correct_answer", f"expected a letter A-D, got {letter!r}")
        answer = str(choices[pos])
        inp = "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(choices))
    else:
        a_key = _first(low, ("answer", "best_answer", "response", "output"))
        if a_key is None:
            raise FieldError("answer", "missing required field")
        raw_answer = low[a_key]
        if isinstance(raw_answer, (int, float)) and not isinstance(raw_answer, bool):
            raw_answer = str(raw_answer)  # numeric answers (e.g. {"answer": 72}) are fine
        answer, inp = _str({a_key: raw_answer}, a_key), None
    yield Turn(
        instruction=_nonempty(_str(low, q_key), q_key),
        response=_nonempty(answer, "answer", "answer"),
        input=inp,
        category=_opt(low, "category", "topic", "type", "subject"),
        source=_opt(low, "source"),
    )


def prompts(rec: dict) -> Iterator[Turn]:
    """Prompt-only sets (MT-Bench `turns`, IFBench `prompt`, Vicuna `text`): empty responses allowed."""
    cat = _opt(rec, "category")
    if "turns" in rec:
        turns = rec["turns"]
        if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
            raise FieldError("turns", "expected a list of strings")
        history: list[dict[str, str]] = []
        for i, t in enumerate(turns):
            yield Turn(instruction=_nonempty(t, f"turns[{i}]"), response="", history=list(history), category=cat, turn=i)
            history += [{"role": "user", "content": t}, {"role": "assistant", "content": ""}]
        return
    key = _first(rec, ("prompt", "instruction", "text", "question"))
    if key is None:
        raise FieldError("prompt", "missing required field")
    yield Turn(
        instruction=_nonempty(_str(rec, key), key),
        response=_opt(rec, "output", "response", "answer") or "",
        input=_opt(rec, "input") or None,
        category=cat,
        source=_opt(rec, "source", "dataset"),
    )


# -- multi-turn formats ------------------------------------------------------------

_ROLE = {
    "human": "user", "user": "user", "prompter": "user",
    "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant",
    "assistant": "assistant", "model": "assistant",
    "system": "system",
}


def _dialogue(messages: list[tuple[str, str]], where: str, *, category=None, source=None) -> Iterator[Turn]:
    """Turn a role-tagged message list into one Turn per assistant message."""
    system: str | None = None
    history: list[dict[str, str]] = []
    pending: list[str] = []
    turn = 0
    n_assistant = 0
    for i, (role, content) in enumerate(messages):
        if role == "system":
            system = content if system is None else f"{system}\n{content}"
            continue
        if role == "user":
            pending.append(content)
            history.append({"role": "user", "content": content})
            continue
        n_assistant += 1
        if not pending:
            if not any(h["role"] == "user" for h in history):
                # A conversation that starts with the assistant (ShareGPT splits long chats into
                # parts; later parts open with 'gpt'): the leading message is context, not an
                # instance (as FastChat drops it). Kept in `history` for the next turns.
                if content.strip():
                    history.append({"role": "assistant", "content": content})
                continue
            raise FieldError(f"{where}[{i}]", "assistant turn without a preceding user turn")
        if not content.strip():
            raise FieldError(f"{where}[{i}]", "empty response")
        prior = history[: len(history) - len(pending)]
        yield Turn(
            instruction="\n\n".join(pending),
            response=content,
            system=system,
            history=prior,
            category=category,
            source=source,
            turn=turn,
        )
        history.append({"role": "assistant", "content": content})
        pending = []
        turn += 1
    if n_assistant == 0:
        raise FieldError(where, "conversation has no assistant turn")
    if turn == 0:
        raise FieldError(where, "no assistant turn follows a user turn")


def _messages_of(rec: dict, key: str, role_key: str, content_key: str) -> list[tuple[str, str]]:
    msgs = rec.get(key)
    if msgs is None:
        raise FieldError(key, "missing required field")
    if not isinstance(msgs, list):
        raise FieldError(key, f"expected a list, got {type(msgs).__name__}")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise FieldError(f"{key}[{i}]", f"expected an object, got {type(m).__name__}")
        role_raw = _str(m, role_key, where=f"{key}[{i}].{role_key}")
        role = _ROLE.get(role_raw.lower())
        if role is None:
            raise FieldError(f"{key}[{i}].{role_key}", f"unknown role {role_raw!r}")
        content = m.get(content_key)
        if isinstance(content, list) and content_key == "content":  # OpenAI content parts
            if not all(isinstance(p, dict) and isinstance(p.get("text", ""), str) for p in content):
                raise FieldError(f"{key}[{i}].{content_key}", "expected a string or a list of {type, text} parts")
            content = "".join(p.get("text", "") for p in content)
        if content is None:
            raise FieldError(f"{key}[{i}].{content_key}", "missing required field")
        if not isinstance(content, str):
            raise FieldError(f"{key}[{i}].{content_key}", f"expected a string, got {type(content).__name__}")
        out.append((role, content))
    return out


def sharegpt(rec: dict) -> Iterator[Turn]:
    """{id, conversations: [{from, value}]} with roles human/gpt/system (and chatgpt, bing, bard, user)."""
    yield from _dialogue(_messages_of(rec, "conversations", "from", "value"), "conversations",
                         category=_opt(rec, "category"), source=_opt(rec, "source"))


def messages(rec: dict) -> Iterator[Turn]:
    """OpenAI chat format: {messages: [{role, content}]}."""
    yield from _dialogue(_messages_of(rec, "messages", "role", "content"), "messages",
                         category=_opt(rec, "category"), source=_opt(rec, "source"))


def lima(rec: dict) -> Iterator[Turn]:
    """LIMA: {conversations: [user, assistant, user, ...] as strings, source}."""
    conv = rec.get("conversations")
    if conv is None:
        raise FieldError("conversations", "missing required field")
    if not isinstance(conv, list) or not all(isinstance(c, str) for c in conv):
        raise FieldError("conversations", "expected a list of strings")
    msgs = [("user" if i % 2 == 0 else "assistant", c) for i, c in enumerate(conv)]
    yield from _dialogue(msgs, "conversations", source=_opt(rec, "source"))


def oasst_tree(rec: dict) -> Iterator[Turn]:
    """OASST nested trees: {prompt: {text, role, replies: [...]}} — one Turn per assistant node."""
    root = rec.get("prompt")
    if not isinstance(root, dict):
        raise FieldError("prompt", "missing required field")
    stack: list[tuple[dict, list[tuple[str, str]], str]] = [(root, [], "prompt")]
    while stack:
        node, path, where = stack.pop()
        role = _ROLE.get(str(node.get("role", "")).lower())
        if role is None:
            raise FieldError(f"{where}.role", f"unknown role {node.get('role')!r}")
        text = _str(node, "text", where=f"{where}.text")
        chain = path + [(role, text)]
        if role == "assistant":
            t = list(_dialogue(chain, where))[-1]
            t.source = _opt(node, "lang")  # as for flat OASST messages
            yield t
        replies = node.get("replies") or []
        if not isinstance(replies, list):
            raise FieldError(f"{where}.replies", f"expected a list, got {type(replies).__name__}")
        for i, child in reversed(list(enumerate(replies))):  # popped in document order
            if not isinstance(child, dict):
                raise FieldError(f"{where}.replies[{i}]", f"expected an object, got {type(child).__name__}")
            stack.append((child, chain, f"{where}.replies[{i}]"))


def detect(rec: Any) -> str:
    """Guess the format from the fields of the first record."""
    if not isinstance(rec, dict):
        raise FieldError(None, f"expected an object per record, got {type(rec).__name__}")
    keys = set(rec)
    conv = rec.get("conversations")
    if isinstance(rec.get("messages"), list):
        return "messages"
    if isinstance(conv, list):
        if conv and isinstance(conv[0], str):
            return "lima"
        return "sharegpt"
    if {"message_id", "text", "role"} <= keys or isinstance(rec.get("prompt"), dict):
        return "oasst"
    if "instruction" in keys and "context" in keys and "response" in keys:
        return "dolly"
    if "instruction" in keys and ({"output", "response"} & keys):
        return "alpaca"
    from .eval_formats import detect_eval  # NQ-open answer lists, SimpleQA, HF MMLU choices

    if (ev := detect_eval(rec)) is not None:
        return ev
    low = {k.lower().replace(" ", "_") for k in keys}
    if "question" in low and ({"answer", "best_answer", "correct_answer"} & low):
        return "qa"
    if {"turns", "prompt", "text", "instruction"} & keys:
        return "prompts"
    raise FieldError(None, f"cannot detect the format from fields {sorted(keys)}; pass --format")


NORMALIZERS: dict[str, Callable[[dict], Iterator[Turn]]] = {
    "alpaca": alpaca, "dolly": dolly, "sharegpt": sharegpt, "messages": messages,
    "lima": lima, "qa": qa, "prompts": prompts,
}


def _eval(rec: dict) -> Iterator[Turn]:
    """Eval-set shapes the formats above reject (itaudit/ingest/eval_formats.py)."""
    from .eval_formats import eval_qa

    return eval_qa(rec)


NORMALIZERS["eval"] = _eval


def oasst_messages(records: Iterable[Any], on_error: Callable[[Any, FieldError], None] | None = None
                   ) -> Iterator[tuple[Any, Turn]]:
    """OASST flat message rows {message_id, parent_id, text, role, ...}: one Turn per assistant
    message, with its chain of ancestors as context. Buffers the messages (parents may come later).

    A bad message goes to `on_error(record, err)` (which may raise) and is left out, as is every
    assistant message whose chain runs through it; without `on_error` the first one raises
    `LocatedError`."""
    def bad(r: Any, err: FieldError) -> None:
        if on_error is None:
            raise LocatedError(r, err)
        on_error(r, err)

    by_id: dict[str, tuple[Any, dict]] = {}
    order: list[str] = []
    for r in records:
        rec = r.data
        if not isinstance(rec, dict):
            bad(r, FieldError(None, f"expected an object, got {type(rec).__name__}"))
            continue
        try:
            mid = _str(rec, "message_id")
            _str(rec, "text")
            role = _str(rec, "role")
            if rec.get("parent_id") is not None:
                _str(rec, "parent_id")
        except FieldError as e:
            bad(r, e)
            continue
        if _ROLE.get(role.lower()) not in ("user", "assistant"):
            bad(r, FieldError("role", f"unknown role {role!r}"))
            continue
        if rec.get("deleted") is True:
            continue
        by_id[mid] = (r, rec)
        order.append(mid)
    for mid in order:
        r, rec = by_id[mid]
        if _ROLE[rec["role"].lower()] != "assistant":
            continue
        chain: list[tuple[str, str]] = []
        cur: str | None = mid
        seen = set()
        err = None
        while cur is not None:
            if cur in seen:
                err = FieldError("parent_id", "cycle in the message tree")
                break
            seen.add(cur)
            if cur not in by_id:
                err = FieldError("parent_id", f"parent message {cur!r} not found (or invalid or deleted)")
                break
            cr, crec = by_id[cur]
            chain.append((_ROLE[crec["role"].lower()], crec["text"]))
            cur = crec.get("parent_id")
        if err is None:
            chain.reverse()
            try:
                t = list(_dialogue(chain, "text"))[-1]
            except FieldError as e:
                err = e
        if err is not None:
            bad(r, err)
            continue
        t.source = _opt(rec, "lang")
        yield r, t


class LocatedError(Exception):
    def __init__(self, record: Any, err: FieldError):
        self.record, self.err = record, err
