"""Reports: a self-contained HTML file per dataset and a short terminal summary.

A check's `Step.render_html(view)` can build its section with `render_template` (the report's
Jinja2 templates, autoescaped) from the `CheckView` it is given.
"""

from .html import render_report, render_template, write_report
from .summary import print_summary
from .view import CheckView

__all__ = ["CheckView", "print_summary", "render_report", "render_template", "write_report"]
