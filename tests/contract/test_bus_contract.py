"""The bus contract, run against every backend: the embedded SQLite log and Kafka (tansu)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from conftest import wait_for
from eventops.events.bus import Bus, dlq_topic, open_bus
from eventops.events.envelope import Event
from eventops.events.subscription import RetryPolicy, Subscription

BusFactory = Callable[[], Bus]


@pytest.fixture(params=["sqlite", pytest.param("kafka", marks=pytest.mark.kafka)])
def new_bus(request: pytest.FixtureRequest, tmp_path) -> Iterator[BusFactory]:
    """Opens connections to one fresh log (a new file, or a unique topic prefix on the broker)."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/events.db?session_timeout=3s&partitions=4"
    else:
        broker = request.getfixturevalue("kafka_broker")
        url = f"{broker.url}?partitions=4&session_timeout_ms=6000&fetch_wait_max_ms=10"
    opened: list[Bus] = []

    def factory() -> Bus:
        bus = open_bus(url, prefix=prefix)
        opened.append(bus)
        return bus

    yield factory
    for bus in opened:
        bus.close()


def events(n: int, *, type_: str = "dataset.batch.ingested", subjects: int = 5) -> list[Event]:
    return [Event(type=type_, subject=f"s{i % subjects}", data={"seq": i}) for i in range(n)]


class Collector:
    """A handler that records what it saw, and lets a test wait for a count."""

    def __init__(self, fail_times: int = 0, always_fail: bool = False) -> None:
        self.seen: list[Event] = []
        self.calls: list[float] = []
        self.fail_times = fail_times
        self.always_fail = always_fail
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.calls.append(time.monotonic())
            if self.always_fail or (self.fail_times and len(self.calls) <= self.fail_times):
                raise RuntimeError(f"handler failed on {event.data}")
            self.seen.append(event)

    def ids(self) -> set[str]:
        with self.lock:
            return {e.id for e in self.seen}


def run_until(sub: Subscription, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    sub.start()
    try:
        wait_for(condition, timeout)
    finally:
        sub.stop()


def test_every_published_event_is_delivered(new_bus: BusFactory) -> None:
    bus = new_bus()
    sent = events(60)
    assert bus.publish(sent) == 60
    got = Collector()
    run_until(Subscription(bus, "g", got, start="earliest"), lambda: len(got.ids()) == 60)
    assert got.ids() == {e.id for e in sent}
    assert {e.data["seq"] for e in got.seen} == set(range(60))


def test_order_is_kept_per_subject(new_bus: BusFactory) -> None:
    bus = new_bus()
    for i in range(0, 90, 9):  # several publish calls, interleaved subjects
        bus.publish(events(90)[i : i + 9])
    got = Collector()
    run_until(Subscription(bus, "g", got, start="earliest"), lambda: len(got.seen) >= 90)
    per_subject: dict[str, list[int]] = defaultdict(list)
    for event in got.seen:
        per_subject[event.subject or ""].append(event.data["seq"])
    assert len(per_subject) == 5
    for seqs in per_subject.values():
        assert seqs == sorted(seqs)


def test_members_of_one_group_split_the_partitions(new_bus: BusFactory) -> None:
    bus = new_bus()
    bus.publish(events(1, subjects=1))  # creates the topic and its partitions
    first, second = Collector(), Collector()
    sub1 = Subscription(new_bus(), "workers", first, start="earliest").start()
    sub2 = Subscription(new_bus(), "workers", second, start="earliest").start()
    try:
        wait_for(
            lambda: (
                sub1.assignment and sub2.assignment and len(sub1.assignment | sub2.assignment) == 4
            )
        )
        assert not sub1.assignment & sub2.assignment
        sent = events(200, subjects=40)
        bus.publish(sent)
        wait_for(lambda: len(first.ids() | second.ids()) == 201)
    finally:
        sub1.stop()
        sub2.stop()
    assert first.seen and second.seen
    assert {e.id for e in sent} <= first.ids() | second.ids()


def test_each_group_sees_every_event(new_bus: BusFactory) -> None:
    bus = new_bus()
    sent = events(40)
    bus.publish(sent)
    a, b = Collector(), Collector()
    sub_a = Subscription(new_bus(), "group-a", a, start="earliest").start()
    sub_b = Subscription(new_bus(), "group-b", b, start="earliest").start()
    try:
        wait_for(lambda: len(a.ids()) == 40 and len(b.ids()) == 40)
    finally:
        sub_a.stop()
        sub_b.stop()
    assert a.ids() == b.ids() == {e.id for e in sent}


def test_committed_offsets_survive_a_restart(new_bus: BusFactory) -> None:
    bus = new_bus()
    sent = events(50)
    bus.publish(sent)
    first = Collector()
    Subscription(new_bus(), "g", first, start="earliest").run(max_events=20, timeout=60)
    assert len(first.seen) == 20
    second = Collector()
    restarted = Subscription(new_bus(), "g", second, start="earliest")
    run_until(restarted, lambda: len(second.ids()) >= 30)
    assert first.ids() | second.ids() == {e.id for e in sent}
    assert not first.ids() & second.ids(), "committed events were delivered again"


def test_a_failing_handler_is_retried_with_exponential_backoff(new_bus: BusFactory) -> None:
    bus = new_bus()
    bus.publish(events(1))
    handler = Collector(fail_times=3)
    policy = RetryPolicy(max_attempts=5, initial_backoff=0.05, multiplier=2.0)
    sub = Subscription(bus, "g", handler, start="earliest", retry=policy)
    run_until(sub, lambda: len(handler.seen) == 1)
    gaps = [b - a for a, b in zip(handler.calls, handler.calls[1:], strict=False)]
    assert len(handler.calls) == 4
    for attempt, gap in enumerate(gaps, start=1):
        assert gap >= policy.delay(attempt) * 0.95
    assert sub.stats.retried == 3
    assert sub.stats.dead_lettered == 0


def test_an_event_that_keeps_failing_goes_to_the_dead_letter_topic(new_bus: BusFactory) -> None:
    bus = new_bus()
    poison = Event(
        type="model.version.registered", subject="m", data={"model": "m", "version": "1"}
    )
    good = Event(type="model.version.registered", subject="m", data={"model": "m", "version": "2"})
    bus.publish([poison, good])
    seen: list[Event] = []

    def handler(event: Event) -> None:
        if event.id == poison.id:
            raise ValueError("cannot load version 1")
        seen.append(event)

    sub = Subscription(bus, "g", handler, start="earliest", retry=RetryPolicy(3, 0.01))
    run_until(sub, lambda: len(seen) == 1)
    assert seen[0].id == good.id, "the next event must be handled after the poison one"
    reader = new_bus().consumer(None, [dlq_topic(bus.prefix)], start="earliest")
    dead: list = []
    wait_for(lambda: dead.extend(reader.poll(0.5)) or dead)
    reader.close()
    assert len(dead) == 1
    entry = dead[0].event
    assert entry.id == poison.id and entry.data == poison.data
    assert entry.extensions["dlqerror"] == "ValueError: cannot load version 1"
    assert int(entry.extensions["dlqattempts"]) == 3
    assert entry.extensions["dlqgroup"] == "g"


def test_replay_from_the_beginning_and_from_a_time(new_bus: BusFactory) -> None:
    bus = new_bus()
    early = events(10)
    bus.publish(early)
    cut = datetime.now(UTC)
    # Kafka timestamps have millisecond precision: let the clock move clearly past the cut.
    wait_for(lambda: datetime.now(UTC) > cut + timedelta(milliseconds=5))
    late = events(5, subjects=2)
    bus.publish(late)
    got = Collector()
    run_until(Subscription(new_bus(), "g", got, start="earliest"), lambda: len(got.ids()) == 15)

    moved = new_bus().seek("g", None, to="earliest")
    assert moved
    again = Collector()
    run_until(Subscription(new_bus(), "g", again, start="earliest"), lambda: len(again.ids()) == 15)

    new_bus().seek("g", None, time=cut)
    since = Collector()
    sub = Subscription(new_bus(), "g", since, start="earliest")
    run_until(sub, lambda: len(since.ids()) >= 5)
    assert since.ids() == {e.id for e in late}


def test_replay_from_an_offset(new_bus: BusFactory) -> None:
    bus = new_bus()
    bus.publish(events(10, subjects=1))
    got = Collector()
    run_until(Subscription(new_bus(), "g", got, start="earliest"), lambda: len(got.seen) == 10)
    moved = new_bus().seek("g", None, to="latest")
    end = max(moved.values())
    new_bus().seek("g", None, offset=end - 3)
    again = Collector()
    run_until(Subscription(new_bus(), "g", again, start="earliest"), lambda: len(again.seen) >= 3)
    assert [e.data["seq"] for e in again.seen] == [7, 8, 9]


def test_a_type_filter_skips_other_events_but_commits_them(new_bus: BusFactory) -> None:
    bus = new_bus()
    bus.publish(events(5) + events(5, type_="dataset.schema.changed"))
    got = Collector()
    sub = Subscription(bus, "g", got, types=["dataset.batch.*"], start="earliest")
    run_until(sub, lambda: len(got.seen) == 5 and sub.stats.skipped == 5)
    assert {e.type for e in got.seen} == {"dataset.batch.ingested"}
