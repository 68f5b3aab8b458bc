"""Audit checks. Each check emits a `CheckResult`: per-row flag + 0-1 score + dataset summary."""

from .base import CheckResult, save_result

__all__ = ["CheckResult", "save_result"]
