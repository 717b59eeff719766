"""`eventops events`: publish, tail, replay and the dead-letter topic, on any bus URL."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eventops.cli.output import handle_errors
from eventops.config import load_settings
from eventops.errors import ValidationError
from eventops.events.bus import (
    Bus,
    Record,
    StartAt,
    dlq_topic,
    open_configured_bus,
    topic_for,
    topics_for_patterns,
    type_matches,
)
from eventops.events.catalog import CATALOG, PREFIX_SCHEMAS, validate_event
from eventops.events.envelope import DEFAULT_SOURCE, Event, build_event, new_event_id
from eventops.events.subscription import strip_dead_letter

app = typer.Typer(help="Publish, tail and replay events; inspect and retry the dead-letter topic.")
dlq_app = typer.Typer(help="The dead-letter topic: events whose handler kept failing.")
app.add_typer(dlq_app, name="dlq")

BUS_HELP = "Bus URL (sqlite:///path.db, kafka://host:port). Default: the configured bus."
CLI_SOURCE = "/eventops/cli"


def _bus(url: str | None) -> Bus:
    return open_configured_bus(load_settings(), url)


def _parse_line(line: str, number: int) -> Event:
    """A bulk-publish line: a CloudEvents JSON object; id, source, specversion, time may be left out."""
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"line {number}: not valid JSON ({exc.msg})", field="event", rule="json"
        ) from None
    if not isinstance(raw, dict):
        raise ValidationError(f"line {number}: must be a JSON object", field="event", rule="type")
    raw.setdefault("specversion", "1.0")
    raw.setdefault("id", new_event_id())
    raw.setdefault("source", CLI_SOURCE)
    try:
        return validate_event(Event.from_dict(raw))
    except ValidationError as exc:
        raise ValidationError(
            f"line {number}: {exc.message}", field=exc.field, rule=exc.rule
        ) from None


def _read_lines(path: str) -> Iterator[str]:
    stream = sys.stdin if path == "-" else Path(path).open(encoding="utf-8")  # noqa: SIM115
    with stream:
        yield from stream


@app.command("publish")
@handle_errors
def publish(
    type_: str = typer.Option(
        None, "--type", "-t", help="Event type, e.g. dataset.batch.ingested."
    ),
    subject: str = typer.Option(None, "--subject", "-s", help="Subject (the ordering key)."),
    data: str = typer.Option("null", "--data", "-d", help="Event data as JSON."),
    source: str = typer.Option(DEFAULT_SOURCE, "--source", help="CloudEvents source."),
    correlation_id: str = typer.Option(None, "--correlation-id", help="correlationid extension."),
    file: str = typer.Option(
        None, "--file", "-f", help="Newline-delimited JSON events ('-': stdin)."
    ),
    bus_url: str = typer.Option(None, "--bus", help=BUS_HELP),
    batch_size: int = typer.Option(1000, help="Events per publish call with --file."),
) -> None:
    """Publish one event, or many from a file. Every event is validated before any is sent."""
    if (file is None) == (type_ is None):
        raise ValidationError(
            "give either --type (one event) or --file (many)", field="--type", rule="one-of"
        )
    if file is None:
        try:
            payload = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"not valid JSON ({exc.msg})", field="--data", rule="json"
            ) from None
        attrs: dict[str, Any] = {
            "type": type_,
            "subject": subject,
            "data": payload,
            "source": source,
        }
        if correlation_id:
            attrs["correlationid"] = correlation_id
        event = validate_event(build_event(attrs))
        bus = _bus(bus_url)
        bus.publish([event])
        bus.close()
        typer.echo(f"published {event.id} ({event.type}) to {topic_for(event.type, bus.prefix)}")
        return
    events: list[Event] = []
    errors: list[str] = []
    for number, line in enumerate(_read_lines(file), start=1):
        if not line.strip():
            continue
        try:
            events.append(_parse_line(line, number))
        except ValidationError as exc:
            errors.append(str(exc))
    if errors:
        for message in errors[:20]:
            typer.echo(f"error: {message}", err=True)
        raise ValidationError(
            f"{len(errors)} invalid line(s); nothing was published",
            field="--file",
            rule="valid-events",
        )
    bus = _bus(bus_url)
    started = time.perf_counter()
    with Progress(
        TextColumn("publish"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("publish", total=len(events))
        for i in range(0, len(events), batch_size):
            progress.advance(task, bus.publish(events[i : i + batch_size]))
    bus.close()
    elapsed = time.perf_counter() - started
    typer.echo(f"published {len(events)} events in {elapsed:.2f}s")


def _print_record(console: Console, record: Record, as_json: bool) -> None:
    event = record.event
    if as_json:
        line = event.to_json() if event else json.dumps({"error": record.error})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        return
    if event is None:
        console.print(
            f"[red]undecodable[/red] {record.topic}[{record.partition}]@{record.offset}: {record.error}"
        )
        return
    when = event.time.strftime("%H:%M:%S.%f")[:-3]
    data = json.dumps(event.data, default=str)
    if len(data) > 200:
        data = data[:197] + "..."
    console.print(
        f"[dim]{when}[/dim] [bold cyan]{event.type}[/bold cyan] "
        f"[magenta]{event.subject or '-'}[/magenta] {data} [dim]{event.id}[/dim]",
        soft_wrap=True,
        highlight=False,
    )
    sys.stdout.flush()


@app.command("tail")
@handle_errors
def tail(
    group: str = typer.Option(
        None, "--group", "-g", help="Consumer group: commit offsets as it goes."
    ),
    types: list[str] = typer.Option(
        None, "--type", "-t", help="Type pattern, e.g. 'dataset.*' (repeatable)."
    ),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="Start at the oldest event."
    ),
    max_events: int = typer.Option(None, "--max", "-n", help="Stop after N events."),
    timeout: float = typer.Option(None, "--timeout", help="Stop after SECONDS with no new event."),
    as_json: bool = typer.Option(False, "--json", help="One CloudEvents JSON object per line."),
    bus_url: str = typer.Option(None, "--bus", help=BUS_HELP),
) -> None:
    """Print events as they arrive.

    With --group, offsets are committed after each printed batch, so a tail killed (even with
    SIGKILL) and started again with the same group continues where it stopped: no gap, and at
    most the last uncommitted batch printed twice.
    """
    bus = _bus(bus_url)
    console = Console(highlight=False)
    topics = topics_for_patterns(types, bus.prefix)
    consumer = bus.consumer(group, topics, start="earliest" if from_beginning else "latest")
    shown = 0
    last_seen = time.monotonic()
    try:
        while max_events is None or shown < max_events:
            if timeout is not None and time.monotonic() - last_seen >= timeout:
                break
            limit = 500 if max_events is None else max_events - shown
            records = consumer.poll(0.2, limit)
            if not records:
                continue
            last_seen = time.monotonic()
            for record in records:
                if record.event is None or type_matches(record.event.type, types):
                    _print_record(console, record, as_json)
                    shown += 1
            consumer.commit(records)
    finally:
        consumer.close()
        bus.close()


@app.command("replay")
@handle_errors
def replay(
    group: str = typer.Option(..., "--group", "-g", help="Consumer group to rewind or advance."),
    types: list[str] = typer.Option(
        None, "--type", "-t", help="Only the topics of these type patterns."
    ),
    offset: int = typer.Option(
        None, "--offset", help="Continue from this offset (every partition)."
    ),
    since: datetime = typer.Option(
        None, "--since", help="Continue from the first event at/after this time."
    ),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="Replay everything retained."
    ),
    to_end: bool = typer.Option(False, "--to-end", help="Skip everything not yet handled."),
    bus_url: str = typer.Option(None, "--bus", help=BUS_HELP),
) -> None:
    """Move a consumer group's committed offsets; its handlers then see those events again.

    Stop the group's workers first; they pick up from the new offsets when they start.
    """
    chosen = [offset is not None, since is not None, from_beginning, to_end]
    if sum(chosen) != 1:
        raise ValidationError(
            "give exactly one of --offset, --since, --from-beginning, --to-end",
            field="--offset",
            rule="one-of",
        )
    if since is not None and since.tzinfo is None:
        since = since.astimezone()
    bus = _bus(bus_url)
    topics = topics_for_patterns(types, bus.prefix)
    to: StartAt | None = "earliest" if from_beginning else "latest" if to_end else None
    moved = bus.seek(group, topics, offset=offset, time=since, to=to)
    bus.close()
    table = Table(title=f"group {group}: next offsets")
    for column in ("topic", "partition", "next offset"):
        table.add_column(column)
    for (topic, partition), nxt in sorted(moved.items()):
        table.add_row(topic, str(partition), str(nxt))
    Console().print(table)


def _dlq_records(bus: Bus, group: str | None, idle: float) -> Iterator[Record]:
    consumer = bus.consumer(group, [dlq_topic(bus.prefix)], start="earliest")
    try:
        last = time.monotonic()
        while time.monotonic() - last < idle:
            records = consumer.poll(0.2)
            if records:
                last = time.monotonic()
                yield from records
                consumer.commit(records)
    finally:
        consumer.close()


@dlq_app.command("list")
@handle_errors
def dlq_list(
    group: str = typer.Option(
        None, "--group", "-g", help="Only events dead-lettered by this group."
    ),
    as_json: bool = typer.Option(False, "--json", help="One CloudEvents JSON object per line."),
    wait: float = typer.Option(2.0, help="Seconds without a new entry that end the listing."),
    bus_url: str = typer.Option(None, "--bus", help=BUS_HELP),
) -> None:
    """List dead-lettered events with the group, attempts and error of each."""
    bus = _bus(bus_url)
    table = Table(title=f"dead-letter topic {dlq_topic(bus.prefix)}")
    for column in ("offset", "event id", "type", "group", "attempts", "error"):
        table.add_column(column, overflow="fold")
    count = 0
    for record in _dlq_records(bus, None, wait):
        event = record.event
        if event is None or (group and event.extensions.get("dlqgroup") != group):
            continue
        count += 1
        if as_json:
            typer.echo(event.to_json())
            continue
        ext = event.extensions
        table.add_row(
            str(record.offset), event.id, event.type, str(ext.get("dlqgroup", "")),
            str(ext.get("dlqattempts", "")), str(ext.get("dlqerror", "")),
        )  # fmt: skip
    bus.close()
    if not as_json:
        Console().print(table)
        typer.echo(f"{count} dead-lettered event(s)")


@dlq_app.command("retry")
@handle_errors
def dlq_retry(
    group: str = typer.Option(
        None, "--group", "-g", help="Only events dead-lettered by this group."
    ),
    wait: float = typer.Option(2.0, help="Seconds without a new entry that end the retry."),
    bus_url: str = typer.Option(None, "--bus", help=BUS_HELP),
) -> None:
    """Publish dead-lettered events again to their original topic.

    Each filter (all, or one --group) keeps its own cursor on the dead-letter topic, so an entry
    is retried once per filter. The republished event keeps its id: consumers that already handled
    it skip it through the processed-event table.
    """
    bus = _bus(bus_url)
    cursor = "eventops-dlq-retry" + (f".{group}" if group else "")
    retried = 0
    for record in _dlq_records(bus, cursor, wait):
        event = record.event
        if event is None or (group and event.extensions.get("dlqgroup") != group):
            continue
        original = strip_dead_letter(event)
        bus.publish([original])
        retried += 1
        typer.echo(f"retried {original.id} ({original.type})")
    bus.close()
    typer.echo(f"{retried} event(s) published again")


@app.command("types")
def types_() -> None:
    """List the catalogued event types and the fields their data must have."""
    table = Table(title="event catalog")
    table.add_column("type")
    table.add_column("required data fields")
    entries = [*CATALOG.items(), *((p + "*", s) for p, s in PREFIX_SCHEMAS.items())]
    for name, schema in entries:
        required = [n for n, f in schema.model_fields.items() if f.is_required()]
        table.add_row(name, ", ".join(required))
    Console().print(table)


# The bridge to AWS lives in its own module; it shares this group.
from eventops.cli import forward_cmd  # noqa: E402

app.command("forward")(forward_cmd.forward)
