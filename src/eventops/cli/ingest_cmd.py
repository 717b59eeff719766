"""`eventops ingest`: files into the lake (`eventops ingest DATASET FILE...`), plus the
long-running ingestion paths registered beside it (`serve`, `stream`)."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from eventops.cli.output import handle_errors
from eventops.config import load_settings
from eventops.events.bus import open_configured_bus
from eventops.ingest.files import DEFAULT_BATCH_ROWS, FileReport, ingest_file
from eventops.lake import IngestResult, Lake
from eventops.store import OutboxRelay


class FilesByDefault(TyperGroup):
    """`eventops ingest churn data.csv` means `eventops ingest files churn data.csv`: the common
    case reads naturally while `serve` and `stream` stay sub-commands."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[Any, Any, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["files", *args]
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=FilesByDefault,
    help="Ingest data: files (default), an HTTP endpoint (serve), a bus topic (stream) or a Kinesis stream (kinesis).",
    no_args_is_help=True,
)


@app.command("files")
@handle_errors
def files(
    dataset: str = typer.Argument(..., help="Dataset name (created on first ingest)."),
    paths: list[str] = typer.Argument(..., help="CSV, NDJSON or Parquet files; '-' reads stdin."),
    fmt: str = typer.Option(
        None, "--format", help="csv, ndjson or parquet (default: from the suffix)."
    ),
    batch_rows: int = typer.Option(DEFAULT_BATCH_ROWS, min=1, help="Rows per committed batch."),
) -> None:
    """Validate files and commit them to the lake; bad rows go to quarantine."""
    settings = load_settings()
    lake = Lake.from_settings(settings)
    console = Console(highlight=False)
    reports: list[FileReport] = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task(f"ingest {dataset}", total=len(paths))

        def advance(result: IngestResult, rows: int) -> None:
            progress.update(
                task,
                description=f"ingest {dataset}: {result.rows_accepted:,} rows in batch {result.batch_id[:8]}",
            )

        for path in paths:
            progress.update(task, description=f"ingest {dataset}: reading {path}")
            reports.append(
                ingest_file(lake, dataset, path, fmt=fmt, batch_rows=batch_rows, on_batch=advance)
            )
            progress.advance(task)
    relayed = OutboxRelay(lake.store, open_configured_bus(settings)).relay_once()
    _summary(console, dataset, reports, relayed)


def _summary(console: Console, dataset: str, reports: list[FileReport], relayed: int) -> None:
    table = Table(title=f"ingested into {dataset}")
    for column in ("source", "format", "rows read", "accepted", "rejected", "where"):
        table.add_column(column, overflow="fold")
    for report in reports:
        where = []
        for result in report.results:
            if result.uri:
                where.append(result.uri)
            if result.quarantine_uri:
                where.append(f"quarantine: {result.quarantine_uri}")
            if result.reason and not result.quarantine_uri:
                where.append(result.reason)
        table.add_row(
            report.source, report.format, f"{report.rows_read:,}", f"{report.rows_accepted:,}",
            f"{report.rows_rejected:,}", "\n".join(where),
        )  # fmt: skip
    console.print(table)
    accepted = sum(r.rows_accepted for r in reports)
    rejected = sum(r.rows_rejected for r in reports)
    console.print(
        f"{accepted:,} rows accepted, {rejected:,} rejected; {relayed} event(s) published"
    )
    reasons = {res.reason for rep in reports for res in rep.results if res.reason}
    for reason in sorted(reasons):
        console.print(f"[yellow]rejected:[/yellow] {reason}")


# The long-running paths live in their own module; they share this group.
from eventops.cli import ingest_serve_cmd  # noqa: E402

app.command("serve")(ingest_serve_cmd.serve)
app.command("stream")(ingest_serve_cmd.stream)
from eventops.cli import ingest_kinesis_cmd  # noqa: E402

app.command("kinesis")(ingest_kinesis_cmd.kinesis)
