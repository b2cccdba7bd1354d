"""Charts drawn on the server as SVG coordinates: no chart library, no build step, and the
picture is there before any script runs."""

import math

CHART_WIDTH = 560
CHART_HEIGHT = 180
# Room for the axis labels: left, right, top, bottom.
PADDING = (44, 12, 10, 24)


def _nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 10) for i in range(count + 2) if first + i * step <= high + 1e-12]


def line_chart(values: list[float], *, width: int = CHART_WIDTH, height: int = CHART_HEIGHT) -> dict | None:
    """A line chart of `values` against their 1-based step: the polyline's points in the SVG's
    own coordinates, with y ticks at round numbers and x ticks at the first and last step."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return None
    left, right, top, bottom = PADDING
    plot_w, plot_h = width - left - right, height - top - bottom
    low, high = min(0.0, min(values)), max(values)
    high = high if high > low else low + 1.0
    steps = len(values)

    def x(step: int) -> float:
        return round(left + (plot_w * (step - 1) / (steps - 1) if steps > 1 else plot_w / 2), 1)

    def y(value: float) -> float:
        return round(top + plot_h * (1 - (value - low) / (high - low)), 1)

    return {
        "width": width,
        "height": height,
        "plot": {"left": left, "right": width - right, "top": top, "bottom": height - bottom},
        "points": " ".join(f"{x(i)},{y(v)}" for i, v in enumerate(values, start=1)),
        "last": {"x": x(steps), "y": y(values[-1]), "value": values[-1]},
        "y_ticks": [{"y": y(t), "label": f"{t:g}"} for t in _nice_ticks(low, high)],
        "x_ticks": [{"x": x(s), "label": str(s)} for s in sorted({1, steps})],
        "first": values[0],
        "steps": steps,
    }
