"""Server-rendered SVG charts for /admin/insights: no script, no chart library, nothing inline the CSP refuses
(colours are SVG presentation attributes, not style attributes)."""

from __future__ import annotations

from html import escape

from markupsafe import Markup

PALETTE = ("#3b6fd8", "#d8743b", "#3bb07a", "#a64fc9", "#c9b03b", "#4fb7c9", "#c94f6d", "#7a7a7a")
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 260, 56, 64, 16


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10 if value >= 1 else 1.0
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def _fmt(value: float) -> str:
    return f"{value:g}" if value >= 0.01 or value == 0 else f"{value:.2g}"


def _open_svg(chart_id: str, title: str, height: int) -> list[str]:
    """The chart's <svg> element and its accessible title (the parts list the chart appends to)."""
    return [f'<svg class="chart" id="{escape(chart_id)}" role="img" aria-labelledby="{escape(chart_id)}-title" '
            f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
            f'<title id="{escape(chart_id)}-title">{escape(title)}</title>']


def _empty(parts: list[str], height: int) -> Markup:
    """A chart with nothing released says so."""
    parts.append(f'<text x="{WIDTH / 2}" y="{height / 2}" text-anchor="middle" fill="#666">No group large '
                 f'enough to show yet</text></svg>')
    return Markup("".join(parts))


def bar_chart(chart_id: str, title: str, groups: list[tuple[str, list[float]]], series: list[str],
              unit: str = "", stacked: bool = False) -> Markup:
    """Bars per group (one per series, or stacked), a y axis with four ticks, a legend when there are several
    series; an empty chart says so. Every label is escaped."""
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - TOP - BOTTOM
    parts = _open_svg(chart_id, title, HEIGHT)
    if not groups:
        return _empty(parts, HEIGHT)
    totals = [sum(values) if stacked else max(values, default=0) for _, values in groups]
    top = _nice_max(max(totals))
    for i in range(5):  # axis ticks
        value = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#444">'
                     f'{escape(_fmt(value))}{escape(unit)}</text>')
    slot = plot_w / len(groups)
    bars = 1 if stacked else max(1, len(series))
    bar_w = max(1.0, slot * 0.8 / bars)
    for g, (label, values) in enumerate(groups):
        x0 = LEFT + g * slot + slot * 0.1
        base = TOP + plot_h
        for s, value in enumerate(values):
            h = plot_h * value / top if top else 0
            x = x0 if stacked else x0 + s * bar_w
            y = base - h
            name = series[s] if s < len(series) else ""
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                         f'fill="{PALETTE[s % len(PALETTE)]}"><title>{escape(label)} {escape(name)}: '
                         f'{escape(_fmt(value))}{escape(unit)}</title></rect>')
            if stacked:
                base = y
        if len(groups) <= 16 or g % max(1, len(groups) // 16) == 0:
            parts.append(f'<text x="{x0 + slot * 0.4:.1f}" y="{TOP + plot_h + 14}" text-anchor="end" font-size="11" '
                         f'fill="#444" transform="rotate(-35 {x0 + slot * 0.4:.1f} {TOP + plot_h + 14})">'
                         f'{escape(label[:24])}</text>')
    if len(series) > 1:
        for s, name in enumerate(series):
            x = LEFT + s * 130
            parts.append(f'<rect x="{x}" y="{HEIGHT - 14}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>'
                         f'<text x="{x + 14}" y="{HEIGHT - 5}" font-size="11" fill="#444">{escape(name[:18])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def hbar_chart(chart_id: str, title: str, items: list[tuple[str, float]], unit: str = "") -> Markup:
    """Horizontal bars, one per item, labelled on the left: for categories with long names (topics, reasons)."""
    label_w, row_h, top_pad = 300, 26, 8
    height = max(60, top_pad * 2 + row_h * len(items) + 18)
    parts = _open_svg(chart_id, title, height)
    if not items:
        return _empty(parts, height)
    top = _nice_max(max(value for _, value in items))
    plot_w = WIDTH - label_w - 70
    for i, (label, value) in enumerate(items):
        y = top_pad + i * row_h
        w = plot_w * value / top if top else 0
        parts.append(f'<text x="{label_w - 8}" y="{y + row_h * 0.65:.1f}" text-anchor="end" font-size="12" '
                     f'fill="#333">{escape(label if len(label) <= 40 else label[:39] + "…")}</text>'
                     f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                     f'fill="{PALETTE[0]}"><title>{escape(label)}: {escape(_fmt(value))}{escape(unit)}</title></rect>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + row_h * 0.65:.1f}" font-size="12" fill="#333">'
                     f'{escape(_fmt(value))}{escape(unit)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
