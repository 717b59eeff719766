"""`eventops events forward`: the platform's events to EventBridge or Kinesis, in the foreground.

The worker's `forward` role does the same from the `[aws]` settings; this command is for a
one-off copy (a backfill with a new group and `--idle`) or for running the bridge on its own.
"""

from __future__ import annotations

import time

import typer
from rich.console import Console

from eventops.cli.output import counts_table, handle_errors
from eventops.config import load_settings
from eventops.errors import ConfigError
from eventops.events import aws
from eventops.events.bus import open_configured_bus
from eventops.events.forward import Forwarder, ForwardStats, Sink

TARGETS = "eventbridge://BUS?region=R or kinesis://STREAM?region=R"


def sink_for(url: str, types: list[str], *, region: str | None, source: str) -> Sink:
    """The sink a --to URL names."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "eventbridge":
        from eventops.events.eventbridge import EventBridgeSink

        target = aws.parse_aws_url(url, "eventbridge", field="--to", allowed=("source",))
        return EventBridgeSink(
            target.name, types=types, source=target.options.get("source", source),
            region=target.region or region,
        )  # fmt: skip
    if scheme == "kinesis":
        from eventops.events.kinesis_sink import KinesisSink

        target = aws.parse_aws_url(url, "kinesis", field="--to")
        return KinesisSink(target.name, types=types, region=target.region or region)
    raise ConfigError(
        f"{url!r} is not a forward target; use {TARGETS}", field="--to", rule="url-scheme"
    )


@handle_errors
def forward(
    to: str = typer.Option(..., "--to", help=TARGETS),
    types: list[str] = typer.Option(
        None, "--type", "-t", help="Event type pattern to forward (repeatable; default: all)."
    ),
    group: str = typer.Option(None, "--group", "-g", help="Consumer group (default: per target)."),
    timeout: float = typer.Option(None, "--timeout", help="Stop after SECONDS (default: run on)."),
    idle: float = typer.Option(None, "--idle", help="Stop after SECONDS with no new event."),
    bus_url: str = typer.Option(None, "--bus", help="Bus URL. Default: the configured bus."),
) -> None:
    """Put the bus's events on an EventBridge bus or a Kinesis stream.

    Offsets are committed only after AWS accepted the entries; entries AWS refuses for good go
    to the dead-letter topic with the error code. Ctrl-C stops after the batch in flight.
    """
    settings = load_settings()
    sink = sink_for(to, types or ["*"], region=settings.aws.region,
                    source=settings.aws.eventbridge_source)  # fmt: skip
    bus = open_configured_bus(settings, bus_url)
    forwarder = Forwarder(
        bus, sink, group=group or f"eventops-forward-{sink.name}".replace(":", "-")
    )
    console = Console(highlight=False)
    started = time.monotonic()
    forwarder.start(timeout=timeout, idle_timeout=idle)
    try:
        with console.status(f"forwarding to {sink.name}") as status:
            while forwarder.running:
                status.update(_progress(sink.name, forwarder.stats))
                time.sleep(0.25)
    except KeyboardInterrupt:
        console.print("stopping after the batch in flight")
    finally:
        forwarder.stop()
        bus.close()
    if forwarder.error is not None:
        raise forwarder.error
    retries = getattr(sink, "retries", aws.RetryStats())
    _summary(console, sink.name, forwarder.stats, retries, time.monotonic() - started)


def _progress(name: str, stats: ForwardStats) -> str:
    return f"to {name}: {stats.forwarded:,} forwarded, {stats.dead_lettered:,} dead-lettered"


def _summary(
    console: Console, name: str, stats: ForwardStats, retries: aws.RetryStats, seconds: float
) -> None:
    rows = [
        ("events forwarded", stats.forwarded), ("events dead-lettered", stats.dead_lettered),
        ("events of other types", stats.skipped), ("batches retried whole", stats.batch_failures),
        ("throttled calls or entries retried", retries.throttled),
        ("entries re-sent after a partial failure", retries.entries_retried),
    ]  # fmt: skip
    console.print(counts_table(f"forwarded to {name}", rows, seconds))
