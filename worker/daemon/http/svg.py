"""Charts as inline SVG, drawn on the server: no chart library, no script, no network.

Each function returns one ``<svg>`` element that scales to its container (``viewBox``, width
from the stylesheet), so the same markup fits a phone and a desktop. Every text that came from
outside (a model or key name) is escaped; every bar segment has a ``<title>`` tooltip with the
exact figure.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from decimal import ROUND_CEILING, Decimal

from worker.core import render

# Tableau 10's first eight: distinguishable, and readable for the common colour blindnesses.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7")
OTHER_COLOUR = "#9d9d9d"
_STEPS = (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10))


def esc(text: object) -> str:
    """Text (or an attribute value) safe inside HTML or SVG."""
    return html.escape(str(text), quote=True)


def colour(index: int, name: str, other: str = "other") -> str:
    """The colour of the ``index``-th series (grey for ``other``)."""
    return OTHER_COLOUR if name == other else PALETTE[index % len(PALETTE)]


def nice_scale(largest: Decimal, ticks: int = 4) -> tuple[Decimal, Decimal]:
    """(top, step): a round step so that ``ticks`` steps reach at least ``largest``."""
    if largest <= 0:
        return Decimal(1), Decimal("0.25")
    raw = largest / ticks
    magnitude = Decimal(10) ** raw.adjusted()
    step = next(m * magnitude for m in _STEPS if m * magnitude >= raw)
    top = (largest / step).to_integral_value(rounding=ROUND_CEILING) * step
    return top, step


def _money_tick(value: Decimal, step: Decimal) -> str:
    if step >= 1:
        return f"${value.quantize(Decimal(1)):,}"
    return render.dollars(value)


def _y_axis(top: Decimal, step: Decimal, x0: float, x1: float, y0: float, h: float) -> list[str]:
    parts = []
    value = Decimal(0)
    while value <= top:
        y = y0 - float(value / top) * h
        parts.append(f'<line class="grid" x1="{x0:.1f}" y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{x0 - 6:.1f}" y="{y:.1f}" text-anchor="end" '
            'dominant-baseline="middle">'
            f"{esc(_money_tick(value, step))}</text>"
        )
        value += step
    return parts


def stacked_bars(
    days: Sequence[dt.date],
    series: Sequence[tuple[str, Sequence[Decimal]]],
    totals: Sequence[Decimal],
    *,
    chart_id: str = "daily-chart",
    width: int = 720,
    height: int = 260,
) -> str:
    """One bar per day, stacked by series (in order, the first at the bottom)."""
    left, right, top_pad, bottom = 66.0, 8.0, 12.0, 28.0
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    y0 = top_pad + plot_h
    top, step = nice_scale(max(totals, default=Decimal(0)))
    slot = plot_w / max(len(days), 1)
    bar_w = slot * 0.74
    parts = [
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="spend per day, stacked by model">',
        *_y_axis(top, step, left, width - right, y0, plot_h),
    ]
    for i, day in enumerate(days):
        x = left + i * slot + (slot - bar_w) / 2
        y = y0
        for index, (name, values) in enumerate(series):
            value = values[i]
            if value <= 0:
                continue
            h = max(float(value / top) * plot_h, 0.5)  # any spend shows as a sliver
            y -= h
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{colour(index, name)}">'
                f"<title>{esc(day.isoformat())} · {esc(name)}: {esc(render.dollars(value))}"
                "</title></rect>"
            )
        last = i == len(days) - 1
        if i % 5 == 0 or last:
            # The last label ends at its bar's right edge, so it is never cut off.
            anchor, at = ("end", x + bar_w) if last else ("middle", x + bar_w / 2)
            parts.append(
                f'<text class="tick" x="{at:.1f}" y="{height - 6}" '
                f'text-anchor="{anchor}">{day.strftime("%m-%d")}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def cumulative_lines(
    lines: Sequence[tuple[str, str, Sequence[Decimal]]],
    *,
    chart_id: str = "month-chart",
    width: int = 720,
    height: int = 200,
) -> str:
    """Cumulative cost by day of month, one polyline per (css class, label, values)."""
    left, right, top_pad, bottom = 66.0, 8.0, 12.0, 28.0
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    y0 = top_pad + plot_h
    largest = max((v[-1] for _, _, v in lines if v), default=Decimal(0))
    top, step = nice_scale(largest)
    dx = plot_w / 30  # days 1…31

    parts = [
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="cumulative spend, this month against the previous one">',
        *_y_axis(top, step, left, width - right, y0, plot_h),
    ]
    for day in (1, 8, 15, 22, 29):
        parts.append(
            f'<text class="tick" x="{left + (day - 1) * dx:.1f}" y="{height - 6}" '
            f'text-anchor="middle">{day}</text>'
        )
    for css, label, values in lines:
        if not values:
            continue
        points = " ".join(
            f"{left + i * dx:.1f},{y0 - float(v / top) * plot_h:.1f}" for i, v in enumerate(values)
        )
        parts.append(
            f'<polyline class="line {esc(css)}" points="{points}"><title>{esc(label)}: '
            f"{esc(render.dollars(values[-1]))} after {len(values)} days</title></polyline>"
        )
    parts.append("</svg>")
    return "".join(parts)


def swatch(fill: str) -> str:
    """A small colour square for a legend."""
    return (
        f'<svg class="swatch" viewBox="0 0 10 10"><rect width="10" height="10" fill="{fill}"/>'
        "</svg>"
    )


def share_bar(part: Decimal, whole: Decimal) -> str:
    """A thin horizontal bar: ``part`` as a share of ``whole``."""
    share = float(part / whole * 100) if whole > 0 else 0.0
    return (
        '<svg class="share" viewBox="0 0 100 6" preserveAspectRatio="none">'
        f'<rect width="{max(share, 0.5 if part > 0 else 0):.1f}" height="6"/></svg>'
    )
