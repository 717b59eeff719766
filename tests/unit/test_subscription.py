from __future__ import annotations

from datetime import UTC, datetime

import pytest

from eventops.events.bus import Record, topics_for_patterns, type_matches
from eventops.events.envelope import Event
from eventops.events.subscription import RetryPolicy, dead_letter_event, strip_dead_letter


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
