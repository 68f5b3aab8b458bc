"""Errors that name exactly where bad input is."""

from __future__ import annotations


class ItauditError(Exception):
    """Base class: the CLI prints these without a traceback and exits non-zero."""


class InputError(ItauditError):
    """Bad input data, located by file, line/row and field."""

    def __init__(self, file: str, location: str | None, field: str | None, reason: str, *, skippable: bool = False):
        self.file, self.location, self.field, self.reason = str(file), location, field, reason
        self.skippable = skippable   # one bad record: ingest --skip-invalid would record it and go on
        where = self.file + (f", {location}" if location else "")
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}: {what}{reason}")
