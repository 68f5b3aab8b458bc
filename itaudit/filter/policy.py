"""Filter policies: ordered rules over the audit tables that drop instances, with a reason each.

A policy is JSON or TOML:

    {"name": "before-tuning",
     "multi_turn": "whole",                     # or "any" (see itaudit.filter.select)
     "rules": [
       {"name": "contaminated", "drop_flagged": "contamination"},
       {"name": "near-duplicates", "dedupe": "near_duplicates"},
       {"name": "high-risk", "max_score": {"risk": 0.7}},
       {"name": "short", "drop_where": "length(response) < 5"},
       {"name": "english-ish", "keep_where": "response NOT LIKE '%\\ufffd%'"}]}

A rule with `"optional": true` is skipped (and listed under `skipped_rules` in the manifest)
when a check it names has no results on the dataset. `--policy default` is the built-in policy
`DEFAULT_POLICY`: contaminated out, exact and near duplicates keep one, risk above 0.7 out,
each optional.

Rule kinds (exactly one per rule):
- `drop_where`: SQL predicate over the audit view; matching rows are dropped.
- `keep_where`: SQL predicate; rows NOT matching are dropped.
- `drop_flagged`: a check name (or list); rows that check flagged are dropped.
- `max_score`: {check: t}; rows whose check score is above t are dropped.
- `dedupe`: a clustering check name; in each cluster one row is kept (lowest risk score, then
  lowest idx) among the rows still kept at that point.

The audit view has every column of `instances` (except raw) plus, for each check with results
on the dataset, `<check>_flag` (FALSE when the check did not score the row), `<check>_score`
and `<check>_cluster` (NULL when not scored). Rules apply in order; a dropped row's reason is
the first rule that dropped it. A `max_score` rule on `risk` that follows `dedupe` rules
compares risk without the contributions of the deduped checks, so the copy a dedupe kept is not
dropped for the duplication it resolved.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

KINDS = ("drop_where", "keep_where", "drop_flagged", "max_score", "dedupe")
MULTI_TURN = ("whole", "any")


DEFAULT_POLICY: dict[str, Any] = {
    "name": "default",
    "multi_turn": "whole",
    "rules": [
        {"name": "contaminated", "drop_flagged": "contamination", "optional": True},
        {"name": "exact duplicate", "dedupe": "exact_duplicates", "optional": True},
        {"name": "near duplicate", "dedupe": "near_duplicates", "optional": True},
        {"name": "risk > 0.7", "max_score": {"risk": 0.7}, "optional": True},
    ],
}
BUILTIN = {"default": DEFAULT_POLICY}


@dataclass
class Rule:
    name: str
    kind: str
    arg: Any
    optional: bool = False

    def as_dict(self) -> dict[str, Any]:
        d = {"name": self.name, self.kind: self.arg}
        if self.optional:
            d["optional"] = True
        return d

    def checks(self) -> list[str]:
        """The checks this rule needs (predicates: none known)."""
        if self.kind == "drop_flagged":
            return list(self.arg)
        if self.kind == "dedupe":
            return [self.arg]
        if self.kind == "max_score":
            return list(self.arg)
        return []


@dataclass
class Policy:
    name: str = "ad-hoc"
    rules: list[Rule] = field(default_factory=list)
    multi_turn: str = "whole"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "multi_turn": self.multi_turn, "rules": [r.as_dict() for r in self.rules]}


def column_name(check: str) -> str:
    """`near-duplicates` -> `near_duplicates`: the prefix of a check's columns in the audit view."""
    return re.sub(r"[^a-z0-9_]", "_", check.lower())


def parse_policy(data: Any, where: str = "policy") -> Policy:
    if not isinstance(data, dict):
        raise InputError(where, None, None, "a policy is an object with a 'rules' list")
    rules_in = data.get("rules", [])
    if not isinstance(rules_in, list):
        raise InputError(where, None, "rules", "expected a list of rules")
    mt = data.get("multi_turn", "whole")
    if mt not in MULTI_TURN:
        raise InputError(where, None, "multi_turn", f"expected one of {', '.join(MULTI_TURN)}, got {mt!r}")
    rules = []
    for i, r in enumerate(rules_in):
        loc = f"rules[{i}]"
        if not isinstance(r, dict):
            raise InputError(where, loc, None, "a rule is an object")
        kinds = [k for k in KINDS if k in r]
        unknown = set(r) - set(KINDS) - {"name", "optional"}
        if unknown:
            raise InputError(where, loc, sorted(unknown)[0], f"unknown rule key; use one of {', '.join(KINDS)}")
        if len(kinds) != 1:
            raise InputError(where, loc, None, f"a rule needs exactly one of {', '.join(KINDS)}")
        kind, arg = kinds[0], r[kinds[0]]
        if kind in ("drop_where", "keep_where"):
            if not isinstance(arg, str) or not arg.strip():
                raise InputError(where, loc, kind, "expected a SQL predicate string")
            if ";" in arg:
                raise InputError(where, loc, kind, "a predicate may not contain ';'")
        elif kind in ("drop_flagged", "dedupe"):
            if isinstance(arg, str):
                arg = [arg] if kind == "drop_flagged" else arg
            if kind == "dedupe" and not isinstance(arg, str):
                raise InputError(where, loc, kind, "expected a check name")
            if kind == "drop_flagged" and not (isinstance(arg, list) and all(isinstance(a, str) for a in arg)):
                raise InputError(where, loc, kind, "expected a check name or a list of names")
        elif kind == "max_score":
            if not isinstance(arg, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in arg.values()
            ):
                raise InputError(where, loc, kind, "expected {check: threshold}")
        name = r.get("name") or f"{kind}:{arg if isinstance(arg, str) else json.dumps(arg)}"
        rules.append(Rule(str(name), kind, arg, bool(r.get("optional", False))))
    return Policy(name=str(data.get("name", Path(where).stem if where != "policy" else "policy")),
                  rules=rules, multi_turn=mt)


def load_policy(path: str | Path) -> Policy:
    """Read a .json or .toml policy file, or a built-in policy by name (`default`)."""
    p = Path(path)
    if not p.is_file() and str(path) in BUILTIN:
        return parse_policy(BUILTIN[str(path)], str(path))
    if not p.is_file():
        raise InputError(str(p), None, None, "policy file does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as e:  # json.JSONDecodeError / tomllib.TOMLDecodeError
        raise InputError(str(p), None, None, f"cannot parse policy: {e}") from None
    return parse_policy(data, str(p))
