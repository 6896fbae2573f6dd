"""Small server-rendered SVG charts for the rules dashboard.

Why our own ~150 lines instead of a chart library: the console must work offline, with
no JavaScript and a strict Content-Security-Policy, and these two charts (stacked bars
per day, rates over time as lines, horizontal bars per rule) need nothing a library would
add. Colours are SVG
presentation attributes (not ``style``), which the CSP allows; every piece of text goes
through ``escape``. Native ``<title>`` elements give hover tooltips without script.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta

from markupsafe import Markup, escape

from cds.store.console import Period, RuleStat

SEVERITY_COLOURS = (("info", "#5b8fb9"), ("warning", "#e0a030"), ("critical", "#c8372d"))
_FONT = 'font-family="system-ui, sans-serif" font-size="11" fill="#44505c"'


def _nice_max(value: int) -> int:
    """A round axis maximum at or above ``value`` (1, 2, 5 x 10^n)."""
    if value <= 5:
        return 5
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return int(step * exp)
    return int(10 * exp)


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {_FONT} {extra}>'
        f"{escape(text)}</text>"
    )


def daily_severity_svg(daily: Sequence[tuple[str, str, int]], start: date, end: date) -> Markup:
    """Cards per day (per week over long periods), stacked by severity."""
    span = max(1, (end - start).days + 1)
    step = 1 if span <= 92 else 7
    buckets: list[date] = [start + timedelta(days=i) for i in range(0, span, step)]
    counts: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for day_text, indicator, n in daily:
        try:
            d = date.fromisoformat(day_text[:10])
        except ValueError:
            continue
        if start <= d <= end:
            counts[buckets[(d - start).days // step]][indicator] += n
    width, height, left, right, top, bottom = 1000, 280, 48, 12, 28, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_max(max((sum(counts[b].values()) for b in buckets), default=0))
    bar_w = plot_w / len(buckets)
    unit = "week" if step == 7 else "day"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="daily-title" class="chart">',
        f'<title id="daily-title">Cards per {unit} by severity, {start} to {end}</title>',
    ]
    for i in range(5):
        value = top_value * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#e3e7eb" stroke-width="1"/>'
        )
        parts.append(_text(left - 6, y + 4, f"{value:,.0f}", "end"))
    label_every = max(1, math.ceil(len(buckets) / 10))
    for i, b in enumerate(buckets):
        x = left + i * bar_w
        y = top + plot_h
        label = f"{b.isoformat()}" + (" (week)" if step == 7 else "")
        tip = escape(
            label
            + ": "
            + ", ".join(
                f"{counts[b].get(name, 0)} {name}" for name, _ in reversed(SEVERITY_COLOURS)
            )
        )
        for name, colour in SEVERITY_COLOURS:
            n = counts[b].get(name, 0)
            if not n:
                continue
            h = plot_h * n / top_value
            y -= h
            parts.append(
                f'<rect x="{x + bar_w * 0.1:.1f}" y="{y:.1f}" '
                f'width="{max(bar_w * 0.8, 1):.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{tip}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(_text(x + bar_w / 2, top + plot_h + 16, b.strftime("%m-%d"), "middle"))
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" '
        f'y2="{top + plot_h}" stroke="#9aa5b1" stroke-width="1"/>'
    )
    lx = width - right - 250
    for j, (name, colour) in enumerate(reversed(SEVERITY_COLOURS)):
        parts.append(f'<rect x="{lx + j * 84}" y="6" width="12" height="12" fill="{colour}"/>')
        parts.append(_text(lx + j * 84 + 17, 16, name))
    parts.append(_text(left, 16, f"cards per {unit}", extra='font-weight="600"'))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above went through escape()


def override_rate_svg(
    rules: Sequence[RuleStat], threshold: float, min_cards: int, limit: int = 25
) -> Markup:
    """Override rate per rule (override events among all feedback events), the threshold
    as a dashed line."""
    shown = sorted((r for r in rules if r.events), key=lambda r: (-(r.override_rate or 0), r.key))[
        :limit
    ]
    row_h, left, right, top = 22, 300, 120, 30
    width = 1000
    plot_w = width - left - right
    height = top + row_h * max(1, len(shown)) + 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="rate-title" class="chart">',
        '<title id="rate-title">Override rate per rule</title>',
    ]
    for pct in (0, 25, 50, 75, 100):
        x = left + plot_w * pct / 100
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" y2="{height - 20}" '
            f'stroke="#e3e7eb" stroke-width="1"/>'
        )
        parts.append(_text(x, height - 6, f"{pct}%", "middle"))
    if not shown:
        parts.append(_text(left, top + 14, "No feedback in this period."))
    for i, r in enumerate(shown):
        y = top + i * row_h
        rate = r.override_rate or 0.0
        flagged = rate > threshold and r.events >= min_cards
        colour = "#c8372d" if flagged else ("#b8c2cc" if r.events < min_cards else "#3b8a7e")
        label = r.key if len(r.key) <= 44 else r.key[:43] + "…"
        parts.append(_text(left - 8, y + 14, label, "end"))
        parts.append(
            f'<rect x="{left}" y="{y + 3}" width="{max(plot_w * rate, 1):.1f}" '
            f'height="{row_h - 8}" fill="{colour}"><title>'
            f"{escape(f'{r.key}: {rate:.0%} of {r.events} answers from prescribers')}"
            "</title></rect>"
        )
        parts.append(
            _text(
                left + plot_w + 8,
                y + 14,
                f"{rate:.0%} of {r.events:,}" + (" ⚑" if flagged else ""),
            )
        )
    tx = left + plot_w * threshold
    parts.append(
        f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top - 8}" y2="{height - 20}" '
        f'stroke="#1f2933" stroke-width="1.5" stroke-dasharray="4 3"/>'
    )
    parts.append(_text(tx, top - 12, f"threshold {threshold:.0%}", "middle", 'font-weight="600"'))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above went through escape()


RATE_SERIES = (
    ("acceptance", "acceptance rate", "#2f7d5b", "none"),
    ("override", "override rate", "#c8372d", "none"),
    ("repeat", "repeat firings", "#6b5fb5", "5 3"),
)


def rates_svg(days: Sequence[Period], start: date, end: date) -> Markup:
    """Acceptance and override rates (of the prescribers' answers) and the share of
    repeat firings, per day (per week over long periods), as lines from 0 to 100%."""
    span = max(1, (end - start).days + 1)
    step = 1 if span <= 92 else 7
    buckets: list[date] = [start + timedelta(days=i) for i in range(0, span, step)]
    sums: dict[date, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # issued, acc, over, rep
    for p in days:
        if start <= p.day <= end:
            b = buckets[(p.day - start).days // step]
            for i, n in enumerate((p.issued, p.accepted, p.overridden, p.repeats)):
                sums[b][i] += n
    width, height, left, right, top, bottom = 1000, 250, 48, 12, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    unit = "week" if step == 7 else "day"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="rates-title" class="chart">',
        f'<title id="rates-title">Acceptance, override and repeat rates per {unit}, '
        f"{start} to {end}</title>",
    ]
    for pct in (0, 25, 50, 75, 100):
        y = top + plot_h - plot_h * pct / 100
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#e3e7eb" stroke-width="1"/>'
        )
        parts.append(_text(left - 6, y + 4, f"{pct}%", "end"))
    slot = plot_w / len(buckets)

    def rate(b: date, name: str) -> float | None:
        issued, acc, over, rep = sums[b]
        if name == "repeat":
            return rep / issued if issued else None
        answers = acc + over
        if not answers:
            return None
        return (acc if name == "acceptance" else over) / answers

    for name, label, colour, dash in RATE_SERIES:
        points = []
        for i, b in enumerate(buckets):
            value = rate(b, name)
            if value is None:
                continue
            x = left + slot * (i + 0.5)
            y = top + plot_h - plot_h * value
            points.append(f"{x:.1f},{y:.1f}")
            tip = escape(f"{b.isoformat()}: {label} {value:.0%}")
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{tip}</title>'
                "</circle>"
            )
        if len(points) > 1:
            parts.append(
                f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" '
                f'stroke-width="2" stroke-dasharray="{dash}"/>'
            )
    label_every = max(1, math.ceil(len(buckets) / 10))
    for i, b in enumerate(buckets):
        if i % label_every == 0:
            x = left + slot * (i + 0.5)
            parts.append(_text(x, top + plot_h + 16, b.strftime("%m-%d"), "middle"))
    lx = width - right - 420
    for j, (_, label, colour, _dash) in enumerate(RATE_SERIES):
        parts.append(f'<rect x="{lx + j * 140}" y="8" width="12" height="12" fill="{colour}"/>')
        parts.append(_text(lx + j * 140 + 17, 18, label))
    if not any(sums.values()):
        parts.append(_text(left + 8, top + 16, "No cards in this period."))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above went through escape()
