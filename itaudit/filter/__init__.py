"""Filter a dataset by rules over its audit results and export what is kept, with a manifest."""

from .policy import (
    BUILTIN,
    DEFAULT_POLICY,
    KINDS,
    Policy,
    Rule,
    column_name,
    load_policy,
    parse_policy,
)
from .select import EXPORT_FORMATS, FilterResult, apply_policy, audit_view_sql, filter_dataset

__all__ = [
    "BUILTIN", "DEFAULT_POLICY", "EXPORT_FORMATS", "KINDS", "FilterResult", "Policy", "Rule", "apply_policy", "audit_view_sql",
    "column_name", "filter_dataset", "load_policy", "parse_policy",
]
