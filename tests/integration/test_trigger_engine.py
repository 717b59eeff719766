"""The trigger engine on a real SQLite bus and a real store (SQLite and PostgreSQL).

Events go through the bus and the engine's subscription; run requests come back from the bus
after the outbox relay. Time is an injected clock, so cooldowns of minutes take no time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from eventops.events.bus import Bus, open_bus
from eventops.events.envelope import Event
from eventops.pipelines.triggers import (
    REQUESTED,
    Rule,
    TriggerEngine,
    manual,
    on,
    on_new_data,
    schedule,
)
from eventops.store import OutboxRelay, Store, TriggerStateRow
from store_db import DATABASES, database_for

T0 = datetime(2026, 3, 2, 10, 2, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(params=DATABASES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with database_for(request.param, tmp_path) as url:
        store = Store(url)
        store.upgrade()
        yield store
        store.close()


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    bus = open_bus(f"sqlite:///{tmp_path}/e.db")
    yield bus
    bus.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def engine_for(
    store: Store, bus: Bus, rules: dict[str, list[Rule]], clock: Clock, **kw: Any
) -> TriggerEngine:
    relay = OutboxRelay(store, bus)
    return TriggerEngine(store, bus, rules, relay=relay, clock=clock, start="earliest", **kw)


def batch(dataset: str = "churn", rows: int = 2000, **kw: Any) -> Event:
    data = {"dataset": dataset, "batch_id": "b", "rows": rows, "schema_version": 1, "uri": "u"}
    return Event(type="dataset.batch.ingested", subject=dataset, data=data, **kw)


def deliver(engine: TriggerEngine, count: int) -> None:
    """Run the engine's subscription until it has handled `count` events from the bus."""
    stats = engine.new_subscription().run(max_events=count, timeout=15)
    assert stats.handled == count


def requests_on(bus: Bus) -> list[Event]:
    consumer = bus.consumer(None, ["eventops.pipeline"], start="earliest")
    try:
        found: list[Event] = []
        while records := consumer.poll(0.05):
            found += [r.event for r in records if r.event and r.event.type == REQUESTED]
        return found
    finally:
        consumer.close()


def state_of(store: Store, pipeline: str, rule: Rule) -> TriggerStateRow | None:
    with store.session() as session:
        return session.get(TriggerStateRow, (pipeline, rule.name))


# ---------------------------------------------------------------------- thresholds and filters
def test_new_rows_accumulate_until_the_threshold_then_one_request(
    store: Store, bus: Bus, clock: Clock
) -> None:
    rule = on_new_data("churn", min_new_rows=5000, params={"epochs": 2})
    engine = engine_for(store, bus, {"train": [rule]}, clock)
    sent = [batch(rows=2000, correlationid="loop-7") for _ in range(3)]
    bus.publish(sent[:2])
    deliver(engine, 2)
    assert requests_on(bus) == []
    state = state_of(store, "train", rule)
    assert state is not None
    assert (state.pending_rows, state.pending_events) == (4000, [e.id for e in sent[:2]])

    bus.publish(sent[2:])
    deliver(engine, 1)
    [request] = requests_on(bus)
    assert request.type == "pipeline.run.requested"
    assert request.subject == "train"
    assert request.causationid == sent[2].id
    assert request.correlationid == "loop-7"
    assert request.data == {
        "pipeline": "train",
        "params": {"epochs": 2},
        "trigger": {"rule": rule.name, "kind": "event", "events": [e.id for e in sent], "rows": 6000},
    }  # fmt: skip
    state = state_of(store, "train", rule)
    assert state is not None
    assert (state.pending_rows, state.pending_events) == (0, [])
    assert (state.last_fired_at, state.last_run_id) == (T0, request.id)


def test_filters_ignore_other_datasets_and_types(store: Store, bus: Bus, clock: Clock) -> None:
    rules: dict[str, list[Rule]] = {
        "train-churn": [on_new_data("churn")],
        "train-fraud": [on_new_data("fraud", min_new_rows=10_000)],
        "by-hand": [manual()],
    }
    engine = engine_for(store, bus, rules, clock)
    first = batch("churn")
    bus.publish([batch("other"), first, batch("fraud"), Event(type="dataset.batch.rejected", data={"dataset": "churn", "rows_rejected": 1, "reason": "x"})])  # fmt: skip
    deliver(engine, 3)  # the rejected batch is not one of the engine's types
    [request] = requests_on(bus)
    assert (request.data["pipeline"], request.causationid) == ("train-churn", first.id)
    assert request.correlationid == first.id  # the batch started the loop
    assert state_of(store, "train-fraud", rules["train-fraud"][0]).pending_rows == 2000  # type: ignore[union-attr]
    assert engine.tick(T0 + timedelta(days=1)) == []  # manual rules never fire


def test_a_redelivered_event_is_not_counted_twice(store: Store, bus: Bus, clock: Clock) -> None:
    rule = on_new_data("churn", min_new_rows=5000)
    engine = engine_for(store, bus, {"train": [rule]}, clock)
    bus.publish([batch(), batch()])
    deliver(engine, 2)
    bus.seek(engine.group, to="earliest")
    deliver(engine, 2)  # the same two events again
    assert state_of(store, "train", rule).pending_rows == 4000  # type: ignore[union-attr]
    assert requests_on(bus) == []
    bus.publish([batch()])
    deliver(engine, 1)
    [request] = requests_on(bus)
    assert request.data["trigger"]["rows"] == 6000
    assert len(request.data["trigger"]["events"]) == 3


def test_params_computed_from_the_event(store: Store, bus: Bus, clock: Clock) -> None:
    rule = on("dataset.batch.ingested", params=lambda e: {"dataset": e.data["dataset"] if e else None})  # fmt: skip
    engine = engine_for(store, bus, {"train": [rule]}, clock)
    bus.publish([batch("fraud")])
    deliver(engine, 1)
    assert [r.data["params"] for r in requests_on(bus)] == [{"dataset": "fraud"}]


# ---------------------------------------------------------------------- cooldown
def test_a_burst_within_the_cooldown_makes_one_request_and_tick_sends_the_rest_once(
    store: Store, bus: Bus, clock: Clock
) -> None:
    rule = on_new_data("churn", cooldown="10m")
    engine = engine_for(store, bus, {"train": [rule]}, clock)
    burst = [batch(rows=10) for _ in range(20)]
    bus.publish(burst)
    deliver(engine, 20)
    [first] = requests_on(bus)
    assert first.data["trigger"]["events"] == [burst[0].id]

    assert engine.tick(T0 + timedelta(minutes=9, seconds=59)) == []
    other = engine_for(store, bus, {"train": [rule]}, clock)  # a second engine ticking too
    fired = engine.tick(T0 + timedelta(minutes=10)) + other.tick(T0 + timedelta(minutes=10))
    assert len(fired) == 1
    assert engine.tick(T0 + timedelta(minutes=30)) == []
    [_, deferred] = requests_on(bus)
    trigger = deferred.data["trigger"]
    assert trigger["events"] == [e.id for e in burst[1:]]
    assert (trigger["rows"], trigger["deferred"]) == (190, True)
    assert deferred.causationid == burst[-1].id


def test_after_the_cooldown_the_next_event_fires_with_everything_pending(
    store: Store, bus: Bus, clock: Clock
) -> None:
    rule = on_new_data("churn", min_new_rows=100, cooldown="10m")
    engine = engine_for(store, bus, {"train": [rule]}, clock)
    bus.publish([batch(rows=100), batch(rows=50)])
    deliver(engine, 2)
    clock.advance(minutes=11)
    assert engine.tick() == []  # 50 pending rows: below the threshold
    last = batch(rows=60)
    bus.publish([last])
    deliver(engine, 1)
    requests = requests_on(bus)
    assert len(requests) == 2
    assert requests[1].causationid == last.id
    assert requests[1].data["trigger"]["rows"] == 110


# ---------------------------------------------------------------------- schedules
def test_a_schedule_fires_once_per_due_time_with_two_engines_ticking(
    store: Store, bus: Bus, clock: Clock
) -> None:
    rules: dict[str, list[Rule]] = {"nightly": [schedule("*/5 * * * *", params={"full": True})]}
    engines = [engine_for(store, bus, rules, clock), engine_for(store, bus, rules, clock)]
    fired: list[Event] = []
    lock = threading.Lock()

    def tick_all(now: datetime) -> None:
        def one(engine: TriggerEngine) -> None:
            got = engine.tick(now)
            with lock:
                fired.extend(got)

        threads = [threading.Thread(target=one, args=(e,)) for e in engines for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    tick_all(T0)  # first sight: armed from 10:00, nothing fires
    assert fired == []
    for minute in (3, 4, 5, 7, 9, 10, 10, 11, 25):
        tick_all(T0.replace(minute=minute))
    dues = [r.data["trigger"]["due"] for r in fired]
    assert dues == ["2026-03-02T10:05:00+00:00", "2026-03-02T10:10:00+00:00", "2026-03-02T10:25:00+00:00"]  # fmt: skip
    on_bus = requests_on(bus)
    assert sorted(r.id for r in on_bus) == sorted(r.id for r in fired)
    assert all(r.data["params"] == {"full": True} for r in on_bus)
    assert all(r.data["trigger"]["kind"] == "schedule" for r in on_bus)


# ---------------------------------------------------------------------- running
def test_start_consumes_and_ticks_until_stopped(store: Store, bus: Bus) -> None:
    rules: dict[str, list[Rule]] = {"train": [on_new_data("churn")], "tick": [schedule("* * * * *")]}  # fmt: skip
    clock = Clock()
    engine = engine_for(store, bus, rules, clock, tick_interval=0.05).start()
    try:
        first = batch()
        bus.publish([first])
        wait_for(lambda: len(requests_on(bus)) == 1, timeout=15)
        clock.advance(minutes=1)  # the ticking loop sees the next minute
        wait_for(lambda: len(requests_on(bus)) == 2, timeout=15)
    finally:
        engine.stop()
    kinds = sorted(r.data["trigger"]["kind"] for r in requests_on(bus))
    assert kinds == ["event", "schedule"]
