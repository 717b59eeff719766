"""`eventops ingest kinesis`: a Kinesis data stream into the lake, in micro-batches."""

from __future__ import annotations

import time

import typer
from rich.console import Console

from eventops.cli.output import counts_table, handle_errors
from eventops.config import load_settings
from eventops.events.bus import open_configured_bus
from eventops.ingest.kinesis import KinesisIngestor, KinesisStats, parse_kinesis_url
from eventops.lake import Lake
from eventops.store import OutboxRelay


@handle_errors
def kinesis(
    dataset: str = typer.Argument(..., help="Dataset the records go to."),
    url: str = typer.Argument(..., help="kinesis://STREAM?region=REGION[&start=latest]"),
    max_rows: int = typer.Option(10_000, "--max-rows", min=1, help="Rows per batch at most."),
    max_seconds: float = typer.Option(
        5.0, "--max-seconds", min=0.001, help="Seconds a record waits for its batch at most."
    ),
    start: str = typer.Option(
        None, "--start", help="Where shards with no checkpoint begin: trim_horizon or latest."
    ),
    timeout: float = typer.Option(None, "--timeout", help="Stop after SECONDS (default: run on)."),
    idle: float = typer.Option(None, "--idle", help="Stop after SECONDS with no new record."),
) -> None:
    """Read every shard of a Kinesis stream and commit its records to DATASET.

    Each record's data is one JSON object or an array of objects; anything else goes to
    quarantine with its shard and sequence number. Shard positions are checkpointed in the store
    with each batch, so a restart resumes where the last batch ended and writes no row twice.
    Ctrl-C commits what is buffered and stops.
    """
    parsed = parse_kinesis_url(url)
    if start is not None:
        parse_kinesis_url(f"kinesis://{parsed.name}?start={start}")  # same rule, same message
    settings = load_settings()
    lake = Lake.from_settings(settings)
    bus = open_configured_bus(settings)
    ingestor = KinesisIngestor(
        lake, dataset, url, region=parsed.region or settings.aws.region,
        start=start,  # type: ignore[arg-type]
        max_rows=max_rows, max_seconds=max_seconds, relay=OutboxRelay(lake.store, bus),
    )  # fmt: skip
    console = Console(highlight=False)
    started = time.monotonic()
    ingestor.start_thread(timeout=timeout, idle_timeout=idle)
    try:
        with console.status(f"reading {parsed.name} into {dataset}") as status:
            while ingestor.running:
                status.update(_progress(parsed.name, dataset, ingestor.stats))
                time.sleep(0.25)
    except KeyboardInterrupt:
        console.print("stopping: committing what is buffered")
    finally:
        ingestor.stop()
        bus.close()
    if ingestor.error is not None:
        raise ingestor.error
    _summary(console, parsed.name, dataset, ingestor.stats, time.monotonic() - started)


def _progress(stream: str, dataset: str, stats: KinesisStats) -> str:
    return (
        f"{stream} -> {dataset}: {stats.rows:,} rows in {stats.batches:,} batches from "
        f"{stats.shards} shard(s), {stats.quarantined:,} quarantined, "
        f"{stats.retries.throttled:,} throttled"
    )


def _summary(
    console: Console, stream: str, dataset: str, stats: KinesisStats, seconds: float
) -> None:
    rows = [
        ("records read", stats.records), ("batches committed", stats.batches),
        ("rows accepted", stats.rows), ("rows rejected (quarantine)", stats.rows_rejected),
        ("records quarantined", stats.quarantined), ("duplicate batches dropped", stats.duplicates),
        ("shards", stats.shards), ("shards read to their end", stats.shards_finished),
        ("throttled calls retried", stats.retries.throttled),
        ("other retries", stats.retries.transient),
    ]  # fmt: skip
    console.print(counts_table(f"kinesis {stream} into {dataset}", rows, seconds))
    if stats.last_rejection:
        console.print(f"[yellow]last rejection:[/yellow] {stats.last_rejection}")
