"""Nothing is lost and nothing is applied twice when processes die or relays race.

Run once on SQLite and once on PostgreSQL. The crashes are real: a child process commits or
publishes and then sends itself SIGKILL, so no cleanup code of ours runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from eventops.events.bus import Bus, open_bus
from eventops.events.envelope import Event
from eventops.events.subscription import Subscription
from eventops.store import OutboxRelay, Store, idempotent
from store_db import (
    DATABASES,
    BlockingBus,
    database_for,
    effects,
    make_events,
    migrated_store,
    queue,
    read_events,
    widgets,
)

SRC = Path(__file__).resolve().parents[2] / "src"

CRASH_AFTER_COMMIT = """
import os, signal, sys
from sqlalchemy import text
from eventops.events.envelope import Event
from eventops.store import Store, add_event

store = Store(sys.argv[1])
with store.session() as session:
    session.execute(text("INSERT INTO widgets (name) VALUES ('crashed')"))
    add_event(session, Event(id=sys.argv[2], type="widget.item.created", subject="crashed"))
os.kill(os.getpid(), signal.SIGKILL)
"""

CRASH_AFTER_PUBLISH = """
import os, signal, sys
from eventops.events.bus import open_bus
from eventops.store import OutboxRelay, Store

class CrashAfterPublish:
    def __init__(self, inner):
        self.inner, self.url, self.prefix = inner, inner.url, inner.prefix
    def publish(self, events, *, topic=None):
        self.inner.publish(events, topic=topic)
        os.kill(os.getpid(), signal.SIGKILL)

OutboxRelay(Store(sys.argv[1]), CrashAfterPublish(open_bus(sys.argv[2]))).relay_once()
"""


@pytest.fixture(params=DATABASES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_for(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with migrated_store(store_url) as store:
        yield store


@pytest.fixture
def bus_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/events.db"


@pytest.fixture
def bus(bus_url: str) -> Iterator[Bus]:
    bus = open_bus(bus_url)
    yield bus
    bus.close()


def run_killed(script: str, *args: str) -> None:
    """Run `script` in a child process and check that it died by SIGKILL, as it should."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_an_event_committed_just_before_a_crash_is_relayed(
    store: Store, store_url: str, bus: Bus
) -> None:
    run_killed(CRASH_AFTER_COMMIT, store_url, "crash-event-1")
    with store.session() as session:
        assert list(session.scalars(select(widgets.c.name))) == ["crashed"]
    assert OutboxRelay(store, bus).relay_once() == 1
    [event] = read_events(bus, 1)
    assert event.id == "crash-event-1"
    assert event.subject == "crashed"


def test_a_crash_between_publish_and_mark_republishes_and_consumers_apply_once(
    store: Store, store_url: str, bus: Bus, bus_url: str
) -> None:
    events = make_events(5)
    ids = [event.id for event in events]
    queue(store, events)
    run_killed(CRASH_AFTER_PUBLISH, store_url, bus_url)
    relay = OutboxRelay(store, bus)
    assert relay.pending_count() == 5  # the mark never committed
    assert [event.id for event in read_events(bus, 5)] == ids
    assert relay.relay_once() == 5
    assert [event.id for event in read_events(bus, 10)] == ids + ids  # at least once

    applied: list[str] = []

    def apply(event: Event, session: Session) -> None:
        session.execute(insert(effects).values(consumer="projector", event_id=event.id))
        applied.append(event.id)

    subscription = Subscription(
        bus, "projector", idempotent(store, "projector", apply), start="earliest"
    )
    stats = subscription.run(max_events=10, timeout=30)
    assert stats.handled == 10
    assert Counter(applied) == Counter(ids)
    with store.session() as session:
        assert Counter(session.scalars(select(effects.c.event_id))) == Counter(ids)


def test_concurrent_relays_publish_every_event_once_in_order(
    store: Store, bus: Bus, bus_url: str
) -> None:
    events = make_events(600)
    queue(store, events)
    relays = [OutboxRelay(store, open_bus(bus_url), batch_size=25) for _ in range(4)]
    start = threading.Barrier(len(relays))
    published = [0] * len(relays)
    errors: list[BaseException] = []

    def drain(index: int) -> None:
        relay = relays[index]
        try:
            start.wait(10)
            while True:
                sent = relay.relay_once()
                published[index] += sent
                if sent == 0 and relay.pending_count() == 0:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(relays))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for relay in relays:
        relay.bus.close()
    assert not errors
    assert sum(published) == 600
    assert [event.id for event in read_events(bus, 600)] == [event.id for event in events]


def test_a_relay_waits_for_the_relay_holding_its_batch(store: Store, bus: Bus) -> None:
    events = make_events(5)
    queue(store, events)
    blocking = BlockingBus(bus)
    first = OutboxRelay(store, blocking)  # type: ignore[arg-type]
    second = OutboxRelay(store, bus)
    results: dict[str, int] = {}
    holder = threading.Thread(target=lambda: results.update(first=first.relay_once()))
    holder.start()
    try:
        assert blocking.entered.wait(10)
        waiter = threading.Thread(target=lambda: results.update(second=second.relay_once()))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive(), "the second relay did not wait for the first one's batch"
    finally:
        blocking.release.set()
    holder.join(30)
    waiter.join(30)
    assert results == {"first": 5, "second": 0}
    assert read_events(bus, 5) == events
