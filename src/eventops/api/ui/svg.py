"""Charts and graphs drawn on the server as inline SVG.

Why SVG from Python and not a charting library in the browser: the UI ships no JavaScript
framework and no CDN, and must stay readable to whoever maintains it. A step graph and a line
over time are a few dozen lines of geometry; the page then works without JavaScript and prints.
Every text that reaches the markup goes through `escape`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

STATUS_CLASS = {
    "succeeded": "ok", "cached": "ok", "promoted": "ok", "ok": "ok",
    "failed": "bad", "degraded": "bad", "drifted": "bad", "firing": "bad",
    "running": "busy", "requested": "busy", "retrying": "busy", "pending": "busy",
}  # fmt: skip


def _markup(parts: Sequence[str]) -> Markup:
    """Trusted markup: built here from numbers and constants, every text through `escape`."""
    return Markup("".join(parts))  # noqa: S704


def status_class(status: str | None) -> str:
    return STATUS_CLASS.get(str(status or "").lower(), "idle")


def layers(steps: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each step's depth: 0 for a step with no upstream, else one more than its deepest one.
    Upstreams that are not steps (parameters) are ignored; steps come in topological order."""
    depth: dict[str, int] = {}
    for step in steps:
        ups = [depth[u] for u in step.get("upstreams", []) if u in depth]
        depth[str(step["name"])] = 1 + max(ups) if ups else 0
    return depth


def step_graph(
    steps: Sequence[Mapping[str, Any]],
    statuses: Mapping[str, str] | None = None,
    *,
    box_w: int = 150,
    box_h: int = 34,
    gap_x: int = 48,
    gap_y: int = 16,
) -> Markup:
    """A left-to-right graph of a pipeline's steps, coloured by each step's status."""
    if not steps:
        return Markup("")
    statuses = statuses or {}
    depth = layers(steps)
    rows: dict[int, int] = {}
    where: dict[str, tuple[int, int]] = {}
    for step in steps:
        name = str(step["name"])
        col = depth[name]
        row = rows.get(col, 0)
        rows[col] = row + 1
        where[name] = (col * (box_w + gap_x) + 4, row * (box_h + gap_y) + 4)
    width = (max(depth.values()) + 1) * (box_w + gap_x) - gap_x + 8
    height = max(rows.values()) * (box_h + gap_y) - gap_y + 8
    parts = [
        f'<svg class="graph" role="img" aria-label="step graph" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
    ]
    for step in steps:
        x2, y2 = where[str(step["name"])]
        for up in step.get("upstreams", []):
            if up not in where:
                continue
            x1, y1 = where[up]
            parts.append(
                f'<path class="edge" d="M{x1 + box_w},{y1 + box_h / 2} '
                f"C{x1 + box_w + gap_x / 2},{y1 + box_h / 2} {x2 - gap_x / 2},{y2 + box_h / 2} "
                f'{x2},{y2 + box_h / 2}"/>'
            )
    for step in steps:
        name = str(step["name"])
        x, y = where[name]
        status = statuses.get(name)
        label = name if len(name) <= 20 else name[:19] + "…"
        title = f"{name}: {status}" if status else name
        parts.append(
            f'<g class="node {status_class(status)}" data-step="{escape(name)}">'
            f"<title>{escape(title)}</title>"
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6"/>'
            f'<text x="{x + box_w / 2}" y="{y + box_h / 2 + 4}">{escape(label)}</text></g>'
        )
    parts.append("</svg>")
    return _markup(parts)


@dataclass(frozen=True)
class Point:
    label: str  # shown on hover: a time
    value: float
    flagged: bool = False  # drawn red: drift detected, performance degraded


def line_chart(
    points: Sequence[Point],
    *,
    width: int = 640,
    height: int = 180,
    threshold: float | None = None,
    y_label: str = "",
) -> Markup:
    """A line over time (one point per check), flagged points in red, an optional threshold."""
    finite = [p for p in points if math.isfinite(p.value)]
    if not finite:
        return Markup('<p class="muted">no values yet</p>')
    pad_l, pad_r, pad_t, pad_b = 44, 10, 10, 22
    values = [p.value for p in finite] + ([threshold] if threshold is not None else [])
    low, high = min(0.0, *values), max(values)
    if high == low:
        high = low + 1.0
    span_x = max(len(finite) - 1, 1)

    def x(i: int) -> float:
        return pad_l + (width - pad_l - pad_r) * i / span_x

    def y(v: float) -> float:
        return pad_t + (height - pad_t - pad_b) * (1 - (v - low) / (high - low))

    path = " ".join(
        f"{'M' if i == 0 else 'L'}{x(i):.1f},{y(p.value):.1f}" for i, p in enumerate(finite)
    )
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(y_label or "values")} over time" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<line class="axis" x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" '
        f'y2="{height - pad_b}"/>',
        f'<text class="tick" x="{pad_l - 4}" y="{y(high) + 4:.1f}" text-anchor="end">'
        f"{_fmt(high)}</text>",
        f'<text class="tick" x="{pad_l - 4}" y="{y(low) + 4:.1f}" text-anchor="end">'
        f"{_fmt(low)}</text>",
        f'<text class="tick" x="{pad_l}" y="{height - 6}">{escape(finite[0].label)}</text>',
        f'<text class="tick" x="{width - pad_r}" y="{height - 6}" text-anchor="end">'
        f"{escape(finite[-1].label)}</text>",
    ]
    if threshold is not None:
        parts.append(
            f'<line class="threshold" x1="{pad_l}" y1="{y(threshold):.1f}" '
            f'x2="{width - pad_r}" y2="{y(threshold):.1f}"><title>threshold '
            f"{_fmt(threshold)}</title></line>"
        )
    parts.append(f'<path class="line" d="{path}"/>')
    for i, p in enumerate(finite):
        cls = "dot flagged" if p.flagged else "dot"
        parts.append(
            f'<circle class="{cls}" cx="{x(i):.1f}" cy="{y(p.value):.1f}" r="3.5">'
            f"<title>{escape(p.label)}: {_fmt(p.value)}</title></circle>"
        )
    parts.append("</svg>")
    return _markup(parts)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def split_bar(traffic: Mapping[str, float], *, width: int = 160) -> Markup:
    """Traffic split of a deployment as one stacked bar (primary, challenger)."""
    total = sum(traffic.values()) or 1.0
    parts = [f'<svg class="split" width="{width}" height="14" viewBox="0 0 {width} 14">']
    offset = 0.0
    for role, share in traffic.items():
        w = width * share / total
        parts.append(
            f'<rect class="{escape(role)}" x="{offset:.1f}" y="0" width="{w:.1f}" height="14">'
            f"<title>{escape(role)} {share:g}%</title></rect>"
        )
        offset += w
    parts.append("</svg>")
    return _markup(parts)
