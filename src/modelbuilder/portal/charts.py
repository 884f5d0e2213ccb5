"""Line charts as inline SVG, drawn here (no chart library, nothing fetched by the browser).

``trial_charts`` draws the accuracy and the loss per epoch of every trial of a run: one colour per trial,
validation solid, training dashed. Every text is escaped; the result is safe to embed in a page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from ..entities import Metric

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")

_WIDTH, _HEIGHT = 560, 250
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 16, 28, 40


@dataclass(frozen=True)
class ChartSeries:
    label: str
    points: Sequence[tuple[float, float]]
    color: str
    dashed: bool = False


def _nice_step(span: float, count: int) -> float:
    raw = span / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    step = _nice_step(high - low, count)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-6:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _fmt(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"


def line_chart(
    series: Sequence[ChartSeries],
    *,
    title: str,
    x_label: str = "epoch",
    y_range: tuple[float, float] | None = None,
    css_class: str = "chart",
) -> str:
    """An SVG line chart of ``series`` (an empty chart with a note when there are no points)."""
    points = [(x, y) for s in series for x, y in s.points if math.isfinite(x) and math.isfinite(y)]
    parts = [
        f'<svg class="{escape(css_class)}" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="{_LEFT}" y="18">{escape(title)}</text>',
    ]
    if not points:
        parts.append(
            f'<text class="chart-empty" x="{_WIDTH / 2}" y="{_HEIGHT / 2}" text-anchor="middle">'
            "No epochs reported yet</text></svg>"
        )
        return "".join(parts)
    x_low, x_high = min(x for x, _ in points), max(x for x, _ in points)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    if y_range is not None:
        y_low, y_high = y_range
    else:
        y_low, y_high = min(0.0, min(y for _, y in points)), max(y for _, y in points)
        y_high = y_high * 1.05 if y_high > 0 else 1.0
    if y_high <= y_low:
        y_high = y_low + 1.0
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def sy(y: float) -> float:
        return _TOP + plot_h - (min(max(y, y_low), y_high) - y_low) / (y_high - y_low) * plot_h

    for tick in _ticks(y_low, y_high):
        y = sy(tick)
        parts.append(f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(tick)}</text>'
        )
    x_ticks = [t for t in _ticks(x_low, x_high, 8) if float(t).is_integer()] or [x_low, x_high]
    for tick in x_ticks:
        x = sx(tick)
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{_TOP + plot_h + 16}" text-anchor="middle">'
            f"{_fmt(tick)}</text>"
        )
    parts.append(
        f'<rect class="frame" x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none"/>'
        f'<text class="axis-label" x="{_LEFT + plot_w / 2}" y="{_HEIGHT - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    for s in series:
        good = sorted((x, y) for x, y in s.points if math.isfinite(x) and math.isfinite(y))
        if not good:
            continue
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        parts.append(
            f'<polyline class="series" points="{coords}" fill="none" stroke="{escape(s.color)}" '
            f'stroke-width="2"{dash}><title>{escape(s.label)}</title></polyline>'
        )
        for x, y in good:
            parts.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{escape(s.color)}">'
                f"<title>{escape(s.label)}, {escape(x_label)} {_fmt(x)}: {y:.4g}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _points(history: Sequence[Metric]) -> list[tuple[float, float]]:
    return [(float(m.step), float(m.value)) for m in history]


def trial_charts(trials: Sequence[tuple[str, dict[str, list[Metric]]]]) -> dict[str, str]:
    """The accuracy and loss charts of a run's trials: ``{"accuracy": svg, "loss": svg}``.

    Args:
        trials: (trial name, its metric histories by key) in trial order.
    """
    accuracy: list[ChartSeries] = []
    loss: list[ChartSeries] = []
    for index, (name, histories) in enumerate(trials):
        color = PALETTE[index % len(PALETTE)]
        for key, target, dashed, kind in (
            ("val_accuracy", accuracy, False, "validation"),
            ("train_accuracy", accuracy, True, "training"),
            ("val_loss", loss, False, "validation"),
            ("train_loss", loss, True, "training"),
        ):
            if histories.get(key):
                target.append(ChartSeries(f"{name} ({kind})", _points(histories[key]), color, dashed))
    return {
        "accuracy": line_chart(accuracy, title="Accuracy per epoch", y_range=(0.0, 1.0)),
        "loss": line_chart(loss, title="Loss per epoch"),
    }
