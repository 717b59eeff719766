"""A drift report as one self-contained HTML page.

Inline CSS and inline SVG bars, no script, no font or CDN: the file opens the same from a CI
artifact, an e-mail attachment or an air-gapped laptop. Every value from the data (column
names, categories in messages) is escaped.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eventops.monitoring.report import ColumnDrift, DriftReport

BAR_WIDTH = 120
STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #1f2328; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; }
h2 { font-size: 1.1rem; margin-top: 2rem; }
.verdict { display: inline-block; padding: .2rem .6rem; border-radius: 4px; font-weight: 600; }
.verdict.drift, .yes { background: #ffebe9; color: #a40e26; }
.verdict.ok, .no { background: #dafbe1; color: #116329; }
table { border-collapse: collapse; margin-top: .8rem; }
th, td { border-bottom: 1px solid #d0d7de; padding: .3rem .6rem; text-align: left; vertical-align: middle; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.yes, td.no { font-weight: 600; text-align: center; }
.muted { color: #656d76; }
svg rect.track { fill: #eaeef2; }
svg rect.bar { fill: #2da44e; }
svg rect.bar.drifted { fill: #cf222e; }
svg line { stroke: #1f2328; stroke-width: 1.5; }
"""


def render(report: DriftReport, title: str) -> str:
    verdict = (
        f'<span class="verdict drift">drift: {len(report.drifted_columns)} of '
        f"{len(report.columns)} columns ({report.share_drifted:.0%})</span>"
        if report.dataset_drifted
        else f'<span class="verdict ok">no drift in {len(report.columns)} columns</span>'
    )
    correction = (
        f"Bonferroni over {report.tests} tests (alpha {report.alpha:g}, "
        f"{report.alpha / max(report.tests, 1):.3g} each)"
        if report.correction == "bonferroni"
        else f"no correction (alpha {report.alpha:g} per test)"
    )
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{verdict}</p>",
        f'<p class="muted">{report.reference_rows:,} reference rows, {report.current_rows:,} '
        f"current rows; {correction}; computed in {report.elapsed_seconds:.2f} s.</p>",
        "<h2>Columns</h2>",
        _table(report.columns),
    ]
    if report.prediction is not None:
        parts += ["<h2>Prediction</h2>", _table([report.prediction])]
    if report.quality:
        rows = "".join(
            f"<tr><td>{html.escape(f.column)}</td><td>{html.escape(f.check)}</td>"
            f"<td>{html.escape(f.message)}</td></tr>"
            for f in report.quality
        )
        parts += [
            "<h2>Data quality</h2>",
            f"<table><thead><tr><th>column</th><th>check</th><th>finding</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>",
        ]
    if report.skipped:
        items = "".join(
            f"<li>{html.escape(name)}: {html.escape(why)}</li>"
            for name, why in report.skipped.items()
        )
        parts += ["<h2>Not compared</h2>", f"<ul>{items}</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(columns: list[ColumnDrift]) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "column",
            "kind",
            "method",
            "statistic",
            "p-value",
            "level",
            "effect",
            "",
            "threshold",
            "drifted",
            "why",
        )
    )
    rows = []
    for c in columns:
        rows.append(
            "<tr>"
            f"<td>{html.escape(c.name)}</td><td>{c.kind}</td><td>{c.method}</td>"
            f'<td class="num">{_number(c.statistic)}</td><td class="num">{_number(c.p_value)}</td>'
            f'<td class="num">{_number(c.alpha)}</td>'
            f'<td class="num">{_number(c.effect)} <span class="muted">{c.effect_name}</span></td>'
            f"<td>{_bar(c)}</td>"
            f'<td class="num">{c.threshold:g}</td>'
            f'<td class="{"yes" if c.drifted else "no"}">{"yes" if c.drifted else "no"}</td>'
            f'<td class="muted">{html.escape(c.reason)}</td>'
            "</tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _bar(column: ColumnDrift) -> str:
    """The effect on a scale where the threshold sits in the middle of the track."""
    if column.effect is None:
        return ""
    scale = 2 * column.threshold if column.threshold > 0 else max(column.effect, 1e-12)
    width = min(column.effect / scale, 1.0) * BAR_WIDTH
    marker = BAR_WIDTH / 2
    drifted = " drifted" if column.drifted else ""
    return (
        f'<svg width="{BAR_WIDTH}" height="12" role="img" '
        f'aria-label="{column.effect_name} {column.effect:.3g}">'
        f'<rect class="track" width="{BAR_WIDTH}" height="12"/>'
        f'<rect class="bar{drifted}" width="{width:.1f}" height="12"/>'
        f'<line x1="{marker}" x2="{marker}" y1="0" y2="12"/></svg>'
    )


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"
