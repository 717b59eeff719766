"""`eventops ingest serve` and `eventops ingest stream`: the long-running ingestion paths.

`serve` runs the HTTP ingestion API under uvicorn; `stream` turns bus events into lake batches.
Both use the configured lake and store (eventops.toml + EVENTOPS_*) and publish the lake's
events through the outbox to the configured bus. The API token comes from `EVENTOPS_TOKEN`
only, never from a flag (flags end up in shell history and process listings).
"""

from __future__ import annotations

import os
import time

import typer
from rich.console import Console

from eventops.cli.output import counts_table, handle_errors
from eventops.config import load_settings
from eventops.errors import ConfigError
from eventops.events.bus import open_configured_bus
from eventops.ingest.http import DEFAULT_MAX_BODY, create_ingest_app
from eventops.ingest.stream import StreamIngestor, StreamStats
from eventops.lake import Lake
from eventops.quantities import parse_size
from eventops.serving.server import is_loopback  # one rule for every server we start
from eventops.store import OutboxRelay

app = typer.Typer(help="Long-running ingestion: an HTTP endpoint (serve) or a bus topic (stream).")

BUS_HELP = "Bus URL (sqlite:///path.db, kafka://host:port). Default: the configured bus."
TOKEN_VARIABLE = "EVENTOPS_TOKEN"  # noqa: S105 - the name of the variable, not a secret


@app.command("serve")
@handle_errors
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to bind."),
    max_body: str = typer.Option(
        f"{DEFAULT_MAX_BODY // 1024 // 1024}MiB", "--max-body", help="Largest request body."
    ),
) -> None:
    """Serve POST /datasets/{name}/records (JSON array or NDJSON) into the lake.

    Set EVENTOPS_TOKEN to require `Authorization: Bearer <token>`; binding anything but a
    loopback address without a token is refused.
    """
    import uvicorn

    token = os.environ.get(TOKEN_VARIABLE) or None
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without a token; set {TOKEN_VARIABLE} "
            "or bind a loopback address",
            field="--host",
            rule="token-required",
        )
    limit = parse_size(max_body, field="--max-body")
    settings = load_settings()
    lake = Lake.from_settings(settings)
    relay = OutboxRelay(lake.store, open_configured_bus(settings))
    ingest = create_ingest_app(lake, relay=relay, token=token, max_body_bytes=limit)
    auth = "bearer token required" if token else "no token (loopback only)"
    Console(stderr=True, highlight=False).print(
        f"ingest API on http://{host}:{port}/datasets/{{name}}/records ({auth})"
    )
    uvicorn.run(ingest, host=host, port=port, log_level=settings.log_level.lower())


@app.command("stream")
@handle_errors
def stream(
    dataset: str = typer.Argument(..., help="Dataset the records go to."),
    types: list[str] = typer.Option(
        ..., "--type", "-t", help="Event type pattern whose data are records (repeatable)."
    ),
    group: str = typer.Option(
        None, "--group", "-g", help="Consumer group (default: ingest-DATASET)."
    ),
    max_rows: int = typer.Option(10_000, "--max-rows", min=1, help="Rows per batch at most."),
    max_seconds: float = typer.Option(
        5.0, "--max-seconds", min=0.001, help="Seconds a record waits for its batch at most."
    ),
    timeout: float = typer.Option(None, "--timeout", help="Stop after SECONDS (default: run on)."),
    idle: float = typer.Option(None, "--idle", help="Stop after SECONDS with no new event."),
    bus_url: str = typer.Option(None, "--bus", help=BUS_HELP),
) -> None:
    """Consume events and commit their records to DATASET in micro-batches.

    Each matching event's data is one record (a JSON object) or several (an array of objects);
    other data goes to the dead-letter topic. Rows are written exactly once, even if this
    process is killed: offsets are committed after the batch, and re-delivered records that the
    lake's checkpoint already covers are dropped. Ctrl-C commits what is buffered and stops.
    """
    settings = load_settings()
    lake = Lake.from_settings(settings)
    bus = open_configured_bus(settings, bus_url)
    # The lake's own events go to the platform's bus, which --bus may not be.
    events_bus = bus if bus_url is None else open_configured_bus(settings)
    relay = OutboxRelay(lake.store, events_bus)
    group = group or f"ingest-{dataset}"
    ingestor = StreamIngestor(
        bus, lake, dataset, group=group, types=types, max_rows=max_rows,
        max_seconds=max_seconds, relay=relay,
    )  # fmt: skip
    console = Console(highlight=False)
    started = time.monotonic()
    ingestor.start(timeout=timeout, idle_timeout=idle)
    try:
        with console.status(f"ingesting {', '.join(types)} into {dataset}") as status:
            while ingestor.running:
                status.update(_progress(dataset, ingestor.stats))
                time.sleep(0.25)
    except KeyboardInterrupt:
        console.print("stopping: committing what is buffered")
    finally:
        ingestor.stop()
        bus.close()
        if events_bus is not bus:
            events_bus.close()
    if ingestor.error is not None:
        raise ingestor.error
    _summary(console, dataset, group, ingestor.stats, time.monotonic() - started)


def _progress(dataset: str, stats: StreamStats) -> str:
    return (
        f"ingesting into {dataset}: {stats.rows:,} rows in {stats.batches:,} batches, "
        f"{stats.dead_lettered:,} dead-lettered"
    )


def _summary(
    console: Console, dataset: str, group: str, stats: StreamStats, seconds: float
) -> None:
    rows = [
        ("batches committed", stats.batches), ("rows accepted", stats.rows),
        ("rows rejected (quarantine)", stats.rows_rejected), ("events with records", stats.events),
        ("events of other types", stats.skipped), ("events dead-lettered", stats.dead_lettered),
        ("re-deliveries dropped", stats.redelivered),
    ]  # fmt: skip
    console.print(counts_table(f"stream ingestion into {dataset} (group {group})", rows, seconds))
    if stats.last_rejection:
        console.print(f"[yellow]last rejection:[/yellow] {stats.last_rejection}")
