"""Reports: a self-contained HTML file per dataset and a short terminal summary."""

from .html import render_report, write_report
from .summary import print_summary

__all__ = ["print_summary", "render_report", "write_report"]
