from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from eventops.errors import BackendUnavailable
from eventops.events.bus import Record, dlq_topic, topics_for_patterns, type_matches
from eventops.events.envelope import Event
from eventops.events.sqlite import SQLiteBus
from eventops.events.subscription import (
    RetryPolicy,
    Subscription,
    dead_letter_event,
    strip_dead_letter,
)


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff=0.5, multiplier=2, max_backoff=3)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"multiplier": 0.5}, {"initial_backoff": -1}]
)
def test_nonsense_policies_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_type_patterns_pick_topics_and_match_types() -> None:
    assert topics_for_patterns(["dataset.*", "dataset.batch.ingested", "model.version.*"]) == [
        "eventops.dataset",
        "eventops.model",
    ]
    assert topics_for_patterns(["*.failed"]) is None
    assert topics_for_patterns(None) is None
    assert type_matches("pipeline.run.failed", ["*.failed"])
    assert not type_matches("pipeline.run.started", ["*.failed", "model.*"])


def test_a_dead_letter_copy_keeps_the_event_and_strips_back_to_it() -> None:
    event = Event(type="a.b", subject="s", data={"x": 1}, extensions={"tenant": "t"})
    record = Record("eventops.a", 2, 41, datetime.now(UTC), event)
    dead = dead_letter_event(record, group="g", error="E" * 5000, attempts=4)
    assert dead.id == event.id and dead.data == event.data
    assert dead.extensions["dlqoffset"] == 41 and dead.extensions["dlqattempts"] == 4
    assert len(str(dead.extensions["dlqerror"])) == 2000
    assert strip_dead_letter(dead) == event


def test_an_unavailable_backend_is_waited_for_not_dead_lettered(tmp_path: Path) -> None:
    """Ten failures "the store is down" (twice the attempts before dead-lettering), then the
    store is back: the event is handled once and nothing goes to the dead-letter topic."""
    bus = SQLiteBus(f"sqlite:///{tmp_path}/e.db")
    bus.publish([Event(type="shop.order.placed", subject="o-1", data=1)])
    calls: list[int] = []

    def handler(event: Event) -> None:
        calls.append(event.data)
        if len(calls) <= 10:
            raise BackendUnavailable("the metadata store is unavailable", field="store.url")

    retry = RetryPolicy(max_attempts=5, initial_backoff=0.001, max_backoff=0.002)
    subscription = Subscription(bus, "g", handler, start="earliest", retry=retry)
    subscription.run(max_events=1, timeout=30)
    assert calls == [1] * 11
    assert subscription.stats.handled == 1 and subscription.stats.dead_lettered == 0
    reader = bus.consumer(None, [dlq_topic(bus.prefix)], start="earliest")
    assert reader.poll(0.2) == []
    reader.close()
    bus.close()
