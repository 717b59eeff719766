"""`eventops drift`: has the current data moved away from its reference, column by column?

Each side is a file (Parquet, CSV, JSON lines), a folder of Parquet or a lake dataset (see
`eventops.monitoring.sources`). Both are profiled once; the drift tests and the data-quality
checks then run on the profiles. A Rich table and a verdict line for people, `--json` for
scripts, `--html FILE` for a page to keep or attach.

The exit code is 0 whatever the verdict, so a scheduled check never looks like a crash;
`--fail-on-drift` makes drift exit 1 for CI gates. Bad input keeps the usual codes: 2 for an
invalid option or an unreadable file, 3 for a path or dataset that does not exist.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from eventops.cli.output import err_console, handle_errors
from eventops.errors import ValidationError

if TYPE_CHECKING:  # imported when the command runs: scipy adds ~0.5 s to every `eventops` start
    from eventops.monitoring.drift import ColumnDrift, DriftReport

OPTIONS = {
    "columns": "--columns",
    "prediction_column": "--prediction",
    "categorical": "--categorical",
    "alpha": "--alpha",
    "correction": "--correction",
    "reference": "--reference",
    "current": "--current",
}
EFFECT_LABELS = {"wasserstein": "W/sd", "jensen_shannon": "JS", "psi": "PSI"}


def _names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


@handle_errors
def drift(
    reference: str = typer.Option(
        ..., "--reference", "-r", metavar="PATH|DATASET", help="The reference (training) data."
    ),
    current: str = typer.Option(
        ..., "--current", "-c", metavar="PATH|DATASET", help="The data to check."
    ),
    columns: str | None = typer.Option(
        None, "--columns", help="Comma-separated columns to compare (default: every column)."
    ),
    categorical: str | None = typer.Option(
        None, "--categorical", help="Comma-separated numeric columns that hold category codes."
    ),
    prediction: str | None = typer.Option(
        None, "--prediction", help="The model's output column, tested apart (prediction drift)."
    ),
    alpha: float = typer.Option(0.05, "--alpha", help="Family-wise significance level."),
    correction: str = typer.Option(
        "bonferroni", "--correction", help="Multiple-testing correction: bonferroni or none."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    html: Path | None = typer.Option(
        None, "--html", metavar="FILE", help="Also write a self-contained HTML report."
    ),
    fail_on_drift: bool = typer.Option(
        False, "--fail-on-drift", help="Exit 1 when any column or the prediction drifted."
    ),
) -> None:
    """Compare current data with its reference: KS / chi-square per column, effect sizes,
    Bonferroni correction, and data-quality checks."""
    from eventops.monitoring import DataProfile, check_quality, drift_report
    from eventops.monitoring.sources import resolve

    started = time.perf_counter()
    names, prediction_names = _names(columns), [prediction] if prediction else []
    ref_source = resolve(reference, field="--reference")
    cur_source = resolve(current, field="--current")
    try:
        with err_console.status("profiling the reference and the current data"):
            codes = _names(categorical)
            ref = DataProfile.of(
                ref_source,
                columns=[*names, *prediction_names] if names else None,
                categorical=set(codes),
                field="--reference",
            )
            cur = DataProfile.of(
                cur_source, columns=list(ref.columns), kinds=ref.kinds(), field="--current"
            )
        report = drift_report(
            ref,
            cur,
            columns=names or None,
            categorical=codes,
            prediction_column=prediction,
            alpha=alpha,
            correction=correction,
        )
    except ValidationError as exc:
        field = OPTIONS.get(exc.field or "", exc.field)
        raise ValidationError(exc.message, field=field, rule=exc.rule) from None
    report.quality = check_quality(ref, cur)
    report.elapsed_seconds = time.perf_counter() - started
    if as_json:
        sys.stdout.write(report.to_json() + "\n")
        sys.stdout.flush()
    else:
        print_report(report, Console(highlight=False))
    if html is not None:
        try:
            html.write_text(report.to_html(f"Drift: {current} against {reference}"))
        except OSError as exc:
            raise ValidationError(
                f"cannot write {html}: {exc.strerror}", field="--html", rule="writable"
            ) from None
        err_console.print(Text(f"HTML report written to {html}"))
    if fail_on_drift and report.drift_detected:
        raise typer.Exit(1)


def print_report(report: DriftReport, console: Console) -> None:
    table = Table()
    table.add_column("column")
    table.add_column("method")
    for title in ("statistic", "p-value", "effect"):
        table.add_column(title, justify="right")
    table.add_column("drifted", justify="center")
    rows = [*report.columns, *([report.prediction] if report.prediction else [])]
    for column in rows:
        table.add_row(*_cells(column, column is report.prediction))
    console.print(table)
    if report.skipped:
        skipped = "; ".join(f"{name} ({why})" for name, why in report.skipped.items())
        console.print(Text(f"not compared: {skipped}", style="dim"))
    if report.quality:
        quality = Table(title="data quality", title_justify="left")
        for title in ("column", "check", "finding"):
            quality.add_column(title)
        for finding in report.quality:
            quality.add_row(Text(finding.column), finding.check, Text(finding.message))
        console.print(quality)
    console.print(verdict(report))


def _cells(column: ColumnDrift, is_prediction: bool) -> list[Text | str]:
    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.4g}"

    effect = (
        ""
        if column.effect is None
        else f"{column.effect:.3f} {EFFECT_LABELS.get(column.effect_name, column.effect_name)}"
    )
    if column.p_value is None and column.effect is None:
        drifted = Text("not tested", style="dim")
    else:
        drifted = Text("yes", style="bold red") if column.drifted else Text("no", style="green")
    name = Text(column.name + (" (prediction)" if is_prediction else ""))
    return [name, column.method, number(column.statistic), number(column.p_value), effect, drifted]


def verdict(report: DriftReport) -> Text:
    """One line: the verdict, then how it was reached."""
    drifted = report.drifted_columns
    if drifted:
        head = Text.assemble(
            ("Drift", "bold red"),
            f": {len(drifted)} of {len(report.columns)} columns ({report.share_drifted:.0%}): "
            f"{', '.join(drifted)}.",
        )
    else:
        head = Text.assemble(("No drift", "bold green"), f" in {len(report.columns)} columns.")
    if report.prediction is not None:
        state = "drifted" if report.prediction.drifted else "did not drift"
        head.append(f" The prediction {report.prediction.name!r} {state}.")
    level = (
        f"Bonferroni over {report.tests} tests at alpha {report.alpha:g} "
        f"({report.alpha / max(report.tests, 1):.3g} each)"
        if report.correction == "bonferroni"
        else f"no correction, alpha {report.alpha:g} per test"
    )
    head.append(
        f" {level}; {report.reference_rows:,} reference rows, {report.current_rows:,} current "
        f"rows; {report.elapsed_seconds:.2f} s.",
        style="dim",
    )
    return head
