"""Tiny inline-SVG charts (histogram, horizontal bars, stacked bar) - no JS, no external assets."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

PALETTE = ("#3b6ea8", "#d9822b", "#5a9e55", "#b8473d", "#7d5ba6", "#8c6d46", "#c45c9a", "#6b6b6b")


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 10000:
        return f"{v / 1000:.0f}k"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2g}"


def histogram(values: Sequence[float] | np.ndarray, *, bins: int = 30, title: str = "", xlabel: str = "",
              width: int = 560, height: int = 200, log_x: bool = False, color: str = PALETTE[0],
              marker: float | None = None, marker_label: str = "") -> str:
    """Counts of `values` in equal-width bins (of log10 values with `log_x`)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if log_x:
        x = np.log10(np.maximum(x, 1))
    if not len(x):
        return ""
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        hi = lo + 1
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
    ml, mr, mt, mb = 44, 24, 24, 34
    pw, ph = width - ml - mr, height - mt - mb
    cmax = max(1, int(counts.max()))
    bw = pw / bins
    parts = [_open(width, height, title)]
    for i, c in enumerate(counts):
        if c:
            h = ph * c / cmax
            lab = f"{_edge(edges[i], log_x)}–{_edge(edges[i + 1], log_x)}: {int(c)}"
            parts.append(f'<rect x="{ml + i * bw + 0.5:.1f}" y="{mt + ph - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                         f'height="{h:.1f}" fill="{color}"><title>{escape(lab)}</title></rect>')
    parts.append(_axes(ml, mt, pw, ph))
    for t in np.linspace(lo, hi, 5):
        px = ml + pw * (t - lo) / (hi - lo)
        parts.append(f'<text x="{px:.1f}" y="{mt + ph + 14}" class="tick" text-anchor="middle">{escape(_edge(t, log_x))}</text>')
    for t in (0, cmax // 2, cmax):
        py = mt + ph - ph * t / cmax
        parts.append(f'<text x="{ml - 4}" y="{py + 4:.1f}" class="tick" text-anchor="end">{t}</text>')
    if marker is not None:
        mv = np.log10(max(marker, 1)) if log_x else marker
        if lo <= mv <= hi:
            px = ml + pw * (mv - lo) / (hi - lo)
            parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{mt}" y2="{mt + ph}" stroke="#b8473d" stroke-dasharray="4 3"/>'
                         f'<text x="{px + 3:.1f}" y="{mt + 10}" class="tick" fill="#b8473d">{escape(marker_label)}</text>')
    if xlabel:
        parts.append(f'<text x="{ml + pw / 2:.1f}" y="{height - 4}" class="label" text-anchor="middle">{escape(xlabel)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _edge(v: float, log_x: bool) -> str:
    return _fmt(10 ** v) if log_x else _fmt(v)


def bars(labels: Sequence[str], values: Sequence[float], *, title: str = "", width: int = 560,
         color: str = PALETTE[0], value_fmt=None, label_width: int = 230, row: int = 18) -> str:
    """Horizontal bar chart, one row per label (labels truncated to fit)."""
    if not labels:
        return ""
    value_fmt = value_fmt or _fmt
    mt = 24
    height = mt + row * len(labels) + 8
    pw = width - label_width - 60
    vmax = max(max(values), 1e-12)
    parts = [_open(width, height, title)]
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        y = mt + i * row
        short = lab if len(lab) <= 38 else lab[:37] + "…"
        w = pw * v / vmax
        parts.append(f'<text x="{label_width - 6}" y="{y + row * 0.7:.1f}" class="tick" text-anchor="end">'
                     f'{escape(short)}<title>{escape(lab)}</title></text>'
                     f'<rect x="{label_width}" y="{y + 2}" width="{max(w, 1):.1f}" height="{row - 5}" fill="{color}">'
                     f'<title>{escape(lab)}: {escape(value_fmt(v))}</title></rect>'
                     f'<text x="{label_width + w + 4:.1f}" y="{y + row * 0.7:.1f}" class="tick">{escape(value_fmt(v))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def stacked(labels: Sequence[str], values: Sequence[float], *, title: str = "", width: int = 560,
            colors: Sequence[str] = PALETTE) -> str:
    """One horizontal bar split into shares, with a legend."""
    total = float(sum(values))
    if total <= 0:
        return ""
    height = 70
    pw = width - 20
    parts = [_open(width, height, title)]
    x = 10.0
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        w = pw * v / total
        parts.append(f'<rect x="{x:.1f}" y="24" width="{w:.1f}" height="18" fill="{colors[i % len(colors)]}">'
                     f'<title>{escape(lab)}: {v:,.0f} ({v / total:.1%})</title></rect>')
        x += w
    lx = 10.0
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        txt = f"{lab} {v / total:.1%}"
        parts.append(f'<rect x="{lx:.1f}" y="52" width="10" height="10" fill="{colors[i % len(colors)]}"/>'
                     f'<text x="{lx + 13:.1f}" y="61" class="tick">{escape(txt)}</text>')
        lx += 20 + 6.5 * len(txt)
    parts.append("</svg>")
    return "".join(parts)


def _open(width: int, height: int, title: str) -> str:
    t = f'<text x="4" y="15" class="title">{escape(title)}</text>' if title else ""
    return (f'<svg class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">{t}')


def _axes(ml: float, mt: float, pw: float, ph: float) -> str:
    return (f'<line x1="{ml}" x2="{ml + pw}" y1="{mt + ph}" y2="{mt + ph}" class="axis"/>'
            f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{mt + ph}" class="axis"/>')
