"""Ingest IT datasets (Alpaca, Dolly, ShareGPT, messages, LIMA, OASST, QA and prompt sets)."""

from .formats import FORMATS
from .pipeline import IngestReport, ingest

__all__ = ["FORMATS", "IngestReport", "ingest"]
