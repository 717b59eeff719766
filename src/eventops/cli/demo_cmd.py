"""`eventops demo`: the event backbone end to end on embedded defaults, narrated.

It shows what the rest of the platform relies on: state and events committed together through
the outbox, a relay to the bus, two consumer groups that each see every event, an idempotent
handler whose effects survive a full replay unchanged, and a poison event that is retried with
backoff and parked in the dead-letter topic with its error instead of being lost.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.orm import Session

from eventops.cli.output import handle_errors
from eventops.errors import EventOpsError
from eventops.events.bus import dlq_topic, open_bus
from eventops.events.catalog import validate_event
from eventops.events.envelope import Event
from eventops.events.subscription import RetryPolicy, Subscription
from eventops.store import OutboxRelay, Store, add_events, idempotent

console = Console(highlight=False)


class Tally:
    """Thread-safe counters the demo's handlers update."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, int] = {}

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            self.values[name] = self.values.get(name, 0) + amount

    def __getitem__(self, name: str) -> int:
        with self.lock:
            return self.values.get(name, 0)


def _wait(condition: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise EventOpsError(f"demo: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def _batch_events(count: int) -> list[Event]:
    datasets = ["churn", "fraud", "reviews", "clicks"]
    out = []
    for i in range(count):
        name = "corrupt" if i == count // 2 else datasets[i % len(datasets)]
        data = {
            "dataset": name,
            "batch_id": f"b{i:05d}",
            "rows": 100 + i % 50,
            "schema_version": 1,
            "uri": f"file://.eventops/lake/datasets/{name}/v1/b{i:05d}.parquet",
        }
        event = Event(
            type="dataset.batch.ingested", source="/eventops/demo", subject=name, data=data
        )
        out.append(validate_event(event))
    return out


@handle_errors
def demo(
    home: Path = typer.Option(Path(".eventops/demo"), help="Folder for the demo's store and bus."),
    events: int = typer.Option(1000, min=10, help="How many events to publish."),
) -> None:
    """Run the event backbone end to end on embedded defaults and print what happens."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    console.rule("[bold]EventOps demo: the event backbone")
    store = Store(f"sqlite:///{home}/eventops.db")
    store.upgrade()
    bus_url = f"sqlite:///{home}/events.db"
    bus = open_bus(bus_url)
    console.print(f"store  {store.safe_url} migrated to revision {store.current_revision()}")
    console.print(f"bus    {bus_url} (embedded log, WAL)\n")

    tally = Tally()

    def count_rows(event: Event, session: Session) -> None:
        tally.add("trainer.effects")
        tally.add("trainer.rows", int(event.data["rows"]))

    once = idempotent(store, "demo-trainer", count_rows)

    def trainer(event: Event) -> None:
        tally.add("trainer.deliveries")
        once(event)

    def monitor(event: Event) -> None:
        if event.data["dataset"] == "corrupt":
            tally.add("monitor.failures")
            raise ValueError(f"batch {event.data['batch_id']}: statistics unreadable")
        tally.add("monitor.handled")

    retry = RetryPolicy(max_attempts=3, initial_backoff=0.05)
    subs = [
        Subscription(
            open_bus(bus_url), "trainer", trainer, types=["dataset.batch.*"], start="earliest"
        ),
        Subscription(
            open_bus(bus_url),
            "monitor",
            monitor,
            types=["dataset.*"],
            retry=retry,
            start="earliest",
        ),
    ]
    for sub in subs:
        sub.start()

    # 1. State change + events in one transaction each, then the relay publishes them.
    batch = _batch_events(events)
    started = time.perf_counter()
    relay = OutboxRelay(store, bus)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("outbox: commit events", total=len(batch))
        for i in range(0, len(batch), 100):
            with store.session() as session:
                add_events(session, batch[i : i + 100])
            progress.advance(task, len(batch[i : i + 100]))
        relayed = 0
        relay_task = progress.add_task("relay:  publish to bus", total=len(batch))
        while relayed < len(batch):
            n = relay.relay_once()
            relayed += n
            progress.advance(relay_task, n)
    elapsed = time.perf_counter() - started
    console.print(
        f"committed and relayed {len(batch)} events in {elapsed:.2f}s; outbox pending: {relay.pending_count()}"
    )

    # 2. Both groups see every event; the poison one ends in the DLQ after 3 attempts.
    _wait(lambda: tally["trainer.deliveries"] >= events, "the trainer group")
    _wait(
        lambda: tally["monitor.handled"] == events - 1 and subs[1].stats.dead_lettered == 1,
        "the monitor group",
    )
    console.print(
        f"group [cyan]trainer[/cyan]: {tally['trainer.deliveries']} delivered, "
        f"{tally['trainer.effects']} effects, {tally['trainer.rows']:,} rows counted"
    )
    console.print(
        f"group [cyan]monitor[/cyan]: {tally['monitor.handled']} handled, {tally['monitor.failures']} failed "
        f"attempts on one poison event, {subs[1].stats.dead_lettered} dead-lettered"
    )

    # 3. Replay the trainer from the beginning: every event is delivered again, no effect repeats.
    subs[0].stop()
    moved = bus.seek("trainer", ["eventops.dataset"], to="earliest")
    console.print(f"\nreplay: group trainer rewound to the start of {len(moved)} partitions")
    rows_before = tally["trainer.rows"]
    replayed = Subscription(
        open_bus(bus_url), "trainer", trainer, types=["dataset.batch.*"]
    ).start()
    _wait(lambda: tally["trainer.deliveries"] >= 2 * events, "the replay")
    replayed.stop()
    subs[1].stop()
    console.print(
        f"replay: {tally['trainer.deliveries'] - events} events delivered again, "
        f"{tally['trainer.effects'] - events} effects repeated (processed-event table), "
        f"rows still {tally['trainer.rows']:,} (was {rows_before:,})"
    )

    # 4. The dead-letter topic keeps the event and its error.
    reader = bus.consumer(None, [dlq_topic(bus.prefix)], start="earliest")
    dead = reader.poll(2.0)
    reader.close()
    table = Table(title="dead-letter topic")
    for column in ("event id", "subject", "group", "attempts", "error"):
        table.add_column(column)
    for record in dead:
        if record.event is not None:
            ext = record.event.extensions
            table.add_row(
                record.event.id[:12], record.event.subject or "", str(ext["dlqgroup"]),
                str(ext["dlqattempts"]), str(ext["dlqerror"]),
            )  # fmt: skip
    console.print(table)

    ok = (
        tally["trainer.effects"] == events
        and tally["monitor.handled"] == events - 1
        and len(dead) == 1
        and relay.pending_count() == 0
    )
    store.close()
    bus.close()
    console.rule(
        "[green]demo finished: nothing lost, nothing applied twice" if ok else "[red]demo failed"
    )
    console.print(f"Look around: eventops events tail --bus {bus_url} --from-beginning --max 5")
    console.print(f"             eventops events dlq list --bus {bus_url}")
    if not ok:
        raise typer.Exit(1)
