"""The evaluation report as one self-contained HTML page: training and eval loss curves, and each
metric of the input and evaluated models side by side, drawn as inline SVG (no scripts, no fetches)."""

from __future__ import annotations

import html
from typing import Any

WIDTH, HEIGHT, PAD = 760, 260, 40
LABELS, BAR = 250, 360  # the metric chart's label column and longest bar
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def _scaled(
    points: list[tuple[float, float]], xs: tuple[float, float], ys: tuple[float, float]
) -> list[tuple[float, float]]:
    """Data points as SVG coordinates inside the chart's padding."""
    (x0, x1), (y0, y1) = xs, ys
    scale_x = (WIDTH - 2 * PAD) / ((x1 - x0) or 1)
    scale_y = (HEIGHT - 2 * PAD) / ((y1 - y0) or 1)
    return [(PAD + (x - x0) * scale_x, HEIGHT - PAD - (y - y0) * scale_y) for x, y in points]


def _series(colour: str, label: str, row: int, points: list[tuple[float, float]]) -> str:
    """One loss series: its line, a dot per logged value, and its name."""
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in points)
    return (
        f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>{dots}'
        f'<text x="{WIDTH - PAD - 90}" y="{PAD + 16 * row}" fill="{colour}">{html.escape(label)}</text>'
    )


def loss_chart(name: str, log: list[dict[str, Any]]) -> str:
    series = {
        key: [(float(e["step"]), float(e[key])) for e in log if key in e and "step" in e]
        for key in ("loss", "eval_loss")
    }
    series = {k: v for k, v in series.items() if v}
    if not series:
        return ""
    points = [p for s in series.values() for p in s]
    xs = (min(p[0] for p in points), max(p[0] for p in points))
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    margin = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
    ys = (low - margin, high + margin)
    lines = "".join(
        _series(COLOURS[i], k, i, _scaled(points_of_k, xs, ys))
        for i, (k, points_of_k) in enumerate(series.items())
    )
    return (
        f"<h2>Training: {html.escape(name)}</h2>"
        f'<svg class="chart loss" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="loss curve">'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fafafa"/>'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#333"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#333"/>'
        f'<text x="{PAD}" y="{HEIGHT - 10}">step {xs[0]:g}</text>'
        f'<text x="{WIDTH - PAD - 60}" y="{HEIGHT - 10}">step {xs[1]:g}</text>'
        f'<text x="4" y="{PAD}">{high:.3g}</text><text x="4" y="{HEIGHT - PAD}">{low:.3g}</text>{lines}</svg>'
    )


def metric_chart(report: dict[str, Any]) -> str:
    """One group of bars per metric: each evaluated model's value, scaled to the largest in the group."""
    by_key: dict[str, dict[str, float]] = {}
    for role, by_evaluator in report.get("models", {}).items():
        for values in by_evaluator.values():
            for v in values:
                by_key.setdefault(f"{v['metric']}-{v['sub_type']}", {})[role] = float(v["value"])
    if not by_key:
        return ""
    roles = sorted({r for group in by_key.values() for r in group}, key=lambda r: (r != "input", r))
    row = 28
    height = PAD + row * len(by_key) * len(roles) + PAD
    bars = []
    y = PAD
    for key, group in by_key.items():
        top = max(abs(v) for v in group.values()) or 1.0
        bars.append(f'<text x="4" y="{y + 12}" font-weight="bold">{html.escape(key)}</text>')
        for i, role in enumerate(roles):
            if role in group:
                width = BAR * abs(group[role]) / top
                colour = COLOURS[i % len(COLOURS)]
                label = f"{html.escape(role)}: {group[role]:.4g}"
                bars.append(
                    f'<rect x="{LABELS}" y="{y}" width="{width:.1f}" height="{row - 8}" fill="{colour}"/>'
                    f'<text x="{LABELS + 5 + width:.1f}" y="{y + 14}">{label}</text>'
                )
            y += row
    return (
        f'<h2>Metrics</h2><svg class="chart metrics" width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="metric comparison"><rect width="{WIDTH}" height="{height}" fill="#fafafa"/>'
        + "".join(bars)
        + "</svg>"
    )


def goals_table(report: dict[str, Any]) -> str:
    rows = []
    for role, by_evaluator in report.get("models", {}).items():
        for values in by_evaluator.values():
            for v in values:
                if "goal" in v:
                    met = {True: "met", False: "NOT MET"}.get(v.get("met"), "")
                    rows.append(
                        f"<tr><td>{html.escape(role)}</td>"
                        f"<td>{html.escape(v['metric'])}-{html.escape(v['sub_type'])}</td>"
                        f"<td>{v['value']:.4g}</td><td>{html.escape(str(v['goal'].get('type')))} "
                        f"{v['goal'].get('value')}</td><td>{met}</td></tr>"
                    )
    if not rows:
        return ""
    return (
        "<h2>Goals</h2><table><tr><th>model</th><th>metric</th><th>value</th><th>goal</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
    )


def render_html(report: dict[str, Any]) -> str:
    curves = "".join(loss_chart(name, log) for name, log in (report.get("training") or {}).items())
    verdict = "every goal met" if report.get("goalsMet", True) else "a goal was missed"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>olivekube evaluation</title>"
        "<style>body{font-family:sans-serif;margin:24px}svg{display:block;margin:8px 0 24px}"
        "td,th{padding:4px 12px;text-align:left}</style></head><body>"
        f"<h1>Evaluation: {html.escape(str(report.get('evaluator') or ''))} ({verdict})</h1>"
        f"{curves}{metric_chart(report)}{goals_table(report)}</body></html>"
    )


FRONTIER, OTHER, BEST = COLOURS[2], "#999999", COLOURS[3]
"""The search chart's colours: frontier trials (joined by a line), the others, the ring round the best."""


def trials_chart(trials: list[dict[str, Any]], axes: tuple[str, str], frontier: set[int], best: int | None) -> str:
    """Each trial that has both metrics as a dot at (first, second), labelled with its number; the
    Pareto frontier's dots in their own colour, joined in the order of the first metric; the best ringed."""
    placed = [
        (int(t["number"]), float(t["metrics"][axes[0]]), float(t["metrics"][axes[1]]))
        for t in trials
        if all(a in t["metrics"] for a in axes)
    ]
    if not placed:
        return ""

    def span(values: list[float]) -> tuple[float, float]:
        low, high = min(values), max(values)
        margin = (high - low) * 0.08 or abs(high) * 0.08 or 1.0
        return low - margin, high + margin

    xs, ys = span([p[1] for p in placed]), span([p[2] for p in placed])
    at = dict(zip((p[0] for p in placed), _scaled([(p[1], p[2]) for p in placed], xs, ys), strict=True))
    line = " ".join(
        f"{at[n][0]:.1f},{at[n][1]:.1f}" for n, _, _ in sorted(placed, key=lambda p: p[1]) if n in frontier
    )
    marks = []
    for number, (x, y) in at.items():
        colour = FRONTIER if number in frontier else OTHER
        marks.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="{colour}"/>')
        marks.append(f'<text x="{x + 9:.1f}" y="{y - 9:.1f}">{number}</text>')
        if number == best:
            marks.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="12" fill="none" stroke="{BEST}" stroke-width="3"/>'
            )
    first, second = (html.escape(a) for a in axes)
    return (
        f"<h2>Trials: {first} against {second}</h2>"
        f'<svg class="chart trials" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="trials">'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fafafa"/>'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#333"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#333"/>'
        f'<text x="{PAD}" y="{HEIGHT - 10}">{first} {xs[0]:.4g}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 10}" text-anchor="end">{first} {xs[1]:.4g}</text>'
        f'<text x="4" y="{PAD - 8}">{second} {ys[1]:.4g}</text>'
        f'<text x="4" y="{HEIGHT - PAD + 14}">{ys[0]:.4g}</text>'
        f'<polyline fill="none" stroke="{FRONTIER}" stroke-width="2" points="{line}"/>{"".join(marks)}</svg>'
    )


def render_search_html(
    trials: list[dict[str, Any]], axes: tuple[str, str] | None, frontier: set[int], best: int | None, reason: str
) -> str:
    """A search's page: the trials chart on two metrics (when there are two) and a row per trial."""
    names = sorted({k for t in trials for k in t["metrics"]})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = "".join(
        f"<tr><td>{t['number']}</td><td>{html.escape(t['parameters'])}</td><td>{html.escape(t['state'])}</td>"
        + "".join(f"<td>{t['metrics'][n]:.4g}</td>" if n in t["metrics"] else "<td></td>" for n in names)
        + f"<td>{'yes' if t['number'] in frontier else ''}</td>"
        + f"<td>{'best' if t['number'] == best else ''}</td></tr>"
        for t in trials
    )
    chart = trials_chart(trials, axes, frontier, best) if axes else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>olivekube search</title>"
        "<style>body{font-family:sans-serif;margin:24px}svg{display:block;margin:8px 0 24px}"
        "td,th{padding:4px 12px;text-align:left}</style></head><body>"
        f"<h1>Search: {len(trials)} trials ({html.escape(reason)})</h1>{chart}"
        f"<table><tr><th>trial</th><th>parameters</th><th>state</th>{head}<th>frontier</th><th></th></tr>"
        f"{rows}</table></body></html>"
    )
