"""`eventops demo`: the loop so far, end to end on embedded defaults, narrated.

Data enters through every ingestion path (files, HTTP, a stream on the bus) and becomes batches
in the lake; their events trigger the example project's training pipeline and drive consumer
groups: a transform derives a feature dataset, an
idempotent "trainer" counts what it would train on (its effects survive a full replay
unchanged), and a "notifier" whose webhook is down retries with backoff and parks the events it
cannot deliver in the dead-letter topic with the error. Nothing is lost, nothing applied twice.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from eventops.apply import apply
from eventops.cli.demo_data import run_data_plane, show_catalog
from eventops.cli.demo_loop import wait
from eventops.cli.demo_serving import run_serving
from eventops.cli.demo_training import demo_tracker, run_training
from eventops.cli.output import handle_errors
from eventops.events.bus import dlq_topic, open_bus
from eventops.events.envelope import Event
from eventops.events.subscription import RetryPolicy, Subscription
from eventops.lake import Lake, LakeStorage
from eventops.project import load_project
from eventops.store import BatchRow, OutboxRelay, RejectionRow, Store, idempotent

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


def _count(store: Store, column: object) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count(column))) or 0)  # type: ignore[arg-type]


@handle_errors
def demo(
    home: Path = typer.Option(
        Path(".eventops/demo"), help="Folder for the demo's store, bus and lake."
    ),
    data: Path = typer.Option(Path("examples/churn/data"), help="The example data to ingest."),
    events: int = typer.Option(1000, min=10, help="How many records to stream through the bus."),
    train: bool = typer.Option(True, "--train/--no-train", help="Let the example project train."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Promote and serve the model."),
    timeline_json: Path = typer.Option(
        None, "--timeline-json", help="Write the closed loop's timeline (stage, seconds) here."
    ),
) -> None:
    """Run the loop so far on embedded defaults and print what happens."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    console.rule("[bold]EventOps demo: data in, events out")
    store = Store(f"sqlite:///{home}/eventops.db")
    store.upgrade()
    bus_url = f"sqlite:///{home}/events.db"
    bus = open_bus(bus_url)
    lake = Lake(store, LakeStorage(str(home / "lake")))
    relay = OutboxRelay(store, bus)
    console.print(
        f"store {store.safe_url} (revision {store.current_revision()}), bus {bus_url}, lake {home / 'lake'}\n"
    )

    tally = Tally()

    def count_rows(event: Event, session: Session) -> None:
        tally.add("trainer.effects")
        tally.add("trainer.rows", int(event.data["rows"]))

    once = idempotent(store, "demo-trainer", count_rows)

    def trainer(event: Event) -> None:
        tally.add("trainer.deliveries")
        once(event)

    def notifier(event: Event) -> None:
        tally.add("notifier.attempts")
        raise ConnectionError(
            "webhook http://127.0.0.1:9/hooks/data-quality refused the connection"
        )

    subs = [
        Subscription(open_bus(bus_url), "trainer", trainer, types=["dataset.batch.ingested"], start="earliest"),
        Subscription(open_bus(bus_url), "notifier", notifier, types=["dataset.batch.rejected"],
                     retry=RetryPolicy(max_attempts=3, initial_backoff=0.05), start="earliest"),
    ]  # fmt: skip
    for sub in subs:
        sub.start()

    runner = run_data_plane(console, lake, bus, relay, data, events)
    wait(lambda: relay.relay_once() == 0 and relay.pending_count() == 0, "the outbox to drain")
    churn_batches = len(lake.batches("churn"))
    wait(
        lambda: len(lake.batches("churn_features")) == churn_batches,
        "the transform of every churn batch",
    )
    runner.stop()
    relay.relay_once()
    ingested = _count(store, BatchRow.id)
    rejected = _count(store, RejectionRow.id)

    console.print("\n[bold]4. events drive consumers[/bold]")
    wait(lambda: tally["trainer.deliveries"] >= ingested, "the trainer group")
    wait(lambda: subs[1].stats.dead_lettered >= rejected, "the notifier group")
    console.print(f"  transform churn_features: {churn_batches} batches derived, lineage recorded")
    console.print(
        f"  group [cyan]trainer[/cyan]: {tally['trainer.deliveries']} batch events, {tally['trainer.rows']:,} rows to train on"
    )
    console.print(f"  group [cyan]notifier[/cyan]: {tally['notifier.attempts']} attempts on {rejected} rejection(s), "
                  f"{subs[1].stats.dead_lettered} dead-lettered (webhook down)")  # fmt: skip

    console.print("\n[bold]5. replay[/bold]")
    subs[0].stop()
    rows_before, effects_before = tally["trainer.rows"], tally["trainer.effects"]
    bus.seek("trainer", ["eventops.dataset"], to="earliest")
    replayed = Subscription(
        open_bus(bus_url), "trainer", trainer, types=["dataset.batch.ingested"]
    ).start()
    wait(lambda: tally["trainer.deliveries"] >= 2 * ingested, "the replay")
    replayed.stop()
    subs[1].stop()
    console.print(f"  trainer rewound: {tally['trainer.deliveries'] - ingested} events delivered again, "
                  f"{tally['trainer.effects'] - effects_before} effects repeated, rows still {tally['trainer.rows']:,}")  # fmt: skip

    trained = served = True
    if train:
        console.print("\n[bold]6. training, started by the events[/bold]")
        project = load_project(data.parent / "project.py")
        applied = apply(project, lake, actor="demo")
        console.print(
            f"  eventops apply: project {project.name} recorded "
            f"({', '.join(f'{n} to {k}' for k, n in applied.counts().items() if n) or 'unchanged'})"
        )
        trained = run_training(console, lake, bus_url, home, project)
        if trained and serve:
            console.print("\n[bold]7. promotion and serving, driven by the events[/bold]")
            tracker = demo_tracker(lake, home)
            served = run_serving(console, lake, bus_url, home, project, tracker, timeline_json)
        wait(lambda: relay.relay_once() == 0 and relay.pending_count() == 0, "the run's events")

    console.print()
    show_catalog(console, lake)
    reader = bus.consumer(None, [dlq_topic(bus.prefix)], start="earliest")
    dead = reader.poll(2.0)
    reader.close()
    table = Table(title="dead-letter topic")
    for column in ("event", "subject", "group", "attempts", "error"):
        table.add_column(column, overflow="fold")
    for record in dead:
        if record.event is not None:
            ext = record.event.extensions
            table.add_row(record.event.type, record.event.subject or "", str(ext["dlqgroup"]),
                          str(ext["dlqattempts"]), str(ext["dlqerror"]))  # fmt: skip
    console.print(table)

    ok = (
        tally["trainer.effects"] == ingested
        and tally["trainer.rows"] == rows_before
        and len(dead) == rejected
        and relay.pending_count() == 0
        and trained
        and served
    )
    store.close()
    bus.close()
    console.rule(
        "[green]demo finished: nothing lost, nothing applied twice" if ok else "[red]demo failed"
    )
    console.print(f"Look around: eventops events tail --bus {bus_url} --from-beginning --max 5")
    console.print(f"             EVENTOPS_HOME={home} eventops datasets show churn")
    if train and serve:
        console.print(f"             EVENTOPS_HOME={home} eventops models show churn")
    console.print(
        f"             EVENTOPS_HOME={home} eventops api serve   "
        "(the web UI at http://127.0.0.1:8000/ui/; it prints a sign-in token once)"
    )
    if not ok:
        raise typer.Exit(1)
