"""The metadata store's contract, run once on SQLite and once on PostgreSQL.

Crash safety and concurrent relays are in test_store_crash_safety.py (same two databases);
database-specific behaviour in tests/unit/test_store.py (URLs, SQLite settings) and
test_store_postgres.py (row locks, concurrent migrations).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, inspect, select, update
from sqlalchemy.orm import Session

from eventops.errors import PublishError, ValidationError
from eventops.events.bus import Bus, open_bus
from eventops.events.envelope import Event
from eventops.store import (
    Base,
    OutboxEntry,
    OutboxRelay,
    Store,
    add_event,
    already_processed,
    forget_processed,
    idempotent,
)
from eventops.store.migrations import VERSION_TABLE
from store_db import (
    DATABASES,
    STATE,
    StubBus,
    count_rows,
    database_for,
    effects,
    make_events,
    outbox_rows,
    queue,
    read_events,
    wait_until,
    widgets,
)


@pytest.fixture(params=DATABASES)
def fresh_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with database_for(request.param, tmp_path) as url:
        store = Store(url)
        yield store
        store.close()


@pytest.fixture
def store(fresh_store: Store) -> Store:
    fresh_store.upgrade()
    STATE.create_all(fresh_store.engine)
    return fresh_store


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    bus = open_bus(f"sqlite:///{tmp_path}/events.db")
    yield bus
    bus.close()


# ---------------------------------------------------------------------- migrations
def test_migrations_reach_head_and_match_the_models(fresh_store: Store) -> None:
    assert fresh_store.current_revision() is None
    fresh_store.upgrade()
    assert fresh_store.current_revision() == fresh_store.head_revision() == "0008"
    fresh_store.upgrade()  # a second start finds nothing to do
    assert fresh_store.current_revision() == "0008"
    with fresh_store.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "version_table": VERSION_TABLE,
            },
        )
        assert compare_metadata(context, Base.metadata) == []


def test_downgrade_to_base_removes_the_tables(fresh_store: Store) -> None:
    fresh_store.upgrade()
    config = fresh_store.alembic_config()
    with fresh_store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    tables = set(inspect(fresh_store.engine).get_table_names())
    assert not tables & {"outbox", "processed_events"}
    assert fresh_store.current_revision() is None


# ---------------------------------------------------------------------- transactional outbox
def test_a_state_change_and_its_event_commit_together(store: Store) -> None:
    event = Event(type="widget.item.created", subject="w1", data={"name": "w1"})
    with store.session() as session:
        session.execute(insert(widgets).values(name="w1"))
        add_event(session, event)
    with store.session() as session:
        assert list(session.scalars(select(widgets.c.name))) == ["w1"]
    [row] = outbox_rows(store)
    assert row.event_id == event.id
    assert row.type == "widget.item.created"
    assert row.subject == "w1"
    assert Event.from_json(row.payload) == event
    assert row.published_at is None
    assert row.attempts == 0
    assert row.created_at.tzinfo is not None
    assert row.created_at.utcoffset() == timedelta(0)


def test_a_rollback_writes_neither_the_state_nor_the_event(store: Store, bus: Bus) -> None:
    def change_then_fail() -> None:
        with store.session() as session:
            session.execute(insert(widgets).values(name="w1"))
            add_event(session, Event(type="widget.item.created", subject="w1"))
            session.flush()  # both rows reached the database before the failure
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        change_then_fail()
    assert count_rows(store, widgets) == 0
    assert OutboxRelay(store, bus).pending_count() == 0


def test_the_relay_publishes_in_id_order_and_marks_the_rows(store: Store, bus: Bus) -> None:
    events = make_events(10)
    queue(store, events)
    relay = OutboxRelay(store, bus, batch_size=3)
    assert relay.pending_count() == 10
    assert [relay.relay_once() for _ in range(5)] == [3, 3, 3, 1, 0]
    assert read_events(bus, 10) == events
    rows = outbox_rows(store)
    assert all(row.published_at is not None and row.attempts == 1 for row in rows)
    assert relay.pending_count() == 0
    assert relay.relay_once() == 0
    assert read_events(bus, 10) == events  # nothing published twice


def test_a_failing_bus_leaves_the_rows_pending_with_the_error(store: Store, bus: Bus) -> None:
    events = make_events(3)
    queue(store, events)
    down = OutboxRelay(store, StubBus())  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(PublishError, match="broker down"):
            down.relay_once()
    for row in outbox_rows(store):
        assert row.published_at is None
        assert row.attempts == 2
        assert row.last_error == "PublishError: broker down"
    assert down.pending_count() == 3
    assert OutboxRelay(store, bus).relay_once() == 3
    assert read_events(bus, 3) == events
    assert [row.attempts for row in outbox_rows(store)] == [3, 3, 3]


def test_an_undecodable_row_stops_the_relay_without_losing_order(store: Store, bus: Bus) -> None:
    events = make_events(3)
    queue(store, events)
    with store.session() as session:
        session.execute(
            update(OutboxEntry).where(OutboxEntry.event_id == events[1].id).values(payload="{oops")
        )
    with pytest.raises(ValidationError) as raised:
        OutboxRelay(store, bus).relay_once()
    assert raised.value.field == "outbox.payload"
    assert read_events(bus, 1) == events[:1]
    first, bad, behind = outbox_rows(store)
    assert first.published_at is not None
    assert bad.published_at is None and bad.attempts == 1
    assert bad.last_error is not None and "not valid JSON" in bad.last_error
    assert behind.published_at is None and behind.attempts == 0


def test_run_relays_until_stopped_and_outlives_bus_failures(store: Store, bus: Bus) -> None:
    flaky = StubBus(bus, failures=2)
    relay = OutboxRelay(store, flaky)  # type: ignore[arg-type]
    stop = threading.Event()
    first, later = make_events(3), make_events(2)
    queue(store, first)
    worker = threading.Thread(target=relay.run, args=(stop, 0.01), kwargs={"max_backoff": 0.05})
    worker.start()
    try:
        wait_until(lambda: relay.pending_count() == 0, what="the first events to be relayed")
        queue(store, later)
        wait_until(lambda: relay.pending_count() == 0, what="the later events to be relayed")
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()
    assert flaky.calls >= 4  # two refusals, then one publish per batch
    assert read_events(bus, 5) == first + later


def test_purge_published_keeps_pending_and_recent_rows(store: Store, bus: Bus) -> None:
    queue(store, make_events(3))
    relay = OutboxRelay(store, bus)
    assert relay.relay_once() == 3
    queue(store, make_events(2))
    assert relay.purge_published(timedelta(hours=1)) == 0
    assert relay.purge_published(timedelta(0)) == 3
    assert relay.pending_count() == 2
    assert count_rows(store, OutboxEntry.__table__) == 2


# ---------------------------------------------------------------------- idempotent handlers
def record_effect(calls: list[str]) -> Any:
    def apply(event: Event, session: Session) -> str:
        session.execute(insert(effects).values(consumer="c", event_id=event.id))
        calls.append(event.id)
        return "applied"

    return apply


def test_an_idempotent_handler_applies_a_redelivered_event_once(store: Store) -> None:
    event = Event(type="model.version.registered", subject="churn")
    calls: list[str] = []
    handler = idempotent(store, "registry", record_effect(calls))
    assert handler(event) == "applied"
    assert handler(event) is None
    assert calls == [event.id]
    assert count_rows(store, effects) == 1
    assert already_processed(store, "registry", event.id)
    assert not already_processed(store, "monitor", event.id)
    # Another consumer is another effect: it applies the same event once too.
    assert idempotent(store, "monitor", record_effect(calls))(event) == "applied"
    assert count_rows(store, effects) == 2


def test_a_failing_handler_leaves_the_event_unmarked_for_the_retry(store: Store) -> None:
    event = Event(type="monitor.drift.detected", subject="churn")
    attempts: list[str] = []

    def flaky(event: Event, session: Session) -> None:
        session.execute(insert(effects).values(consumer="c", event_id=event.id))
        attempts.append(event.id)
        if len(attempts) == 1:
            raise RuntimeError("transient")

    handler = idempotent(store, "alerts", flaky)
    with pytest.raises(RuntimeError, match="transient"):
        handler(event)
    assert not already_processed(store, "alerts", event.id)
    assert count_rows(store, effects) == 0  # the effect written before the failure rolled back
    handler(event)
    assert already_processed(store, "alerts", event.id)
    assert count_rows(store, effects) == 1
    handler(event)
    assert len(attempts) == 2


def test_forget_processed_drops_only_old_records_of_the_consumer(store: Store) -> None:
    event = Event(type="dataset.batch.ingested")
    for consumer in ("a", "b"):
        idempotent(store, consumer, record_effect([]))(event)
    assert forget_processed(store, timedelta(hours=1)) == 0
    assert forget_processed(store, timedelta(0), consumer="a") == 1
    assert not already_processed(store, "a", event.id)
    assert already_processed(store, "b", event.id)


def test_timestamps_come_back_in_utc(store: Store, bus: Bus) -> None:
    queue(store, make_events(1))
    OutboxRelay(store, bus).relay_once()
    [row] = outbox_rows(store)
    assert row.published_at is not None
    assert row.published_at.tzinfo is not None and row.published_at.utcoffset() == timedelta(0)
    assert row.created_at <= row.published_at
