"""What is specific to the embedded SQLite log (the shared behaviour is in tests/contract)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from eventops.errors import ConfigError, ValidationError
from eventops.events.bus import dlq_topic, open_bus
from eventops.events.envelope import Event
from eventops.events.sqlite import SQLiteBus
from eventops.events.subscription import Subscription
from eventops.quantities import parse_duration, parse_size


def count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM log").fetchone()[0])


def test_retention_by_age_deletes_old_events(tmp_path: Path) -> None:
    bus = SQLiteBus(f"sqlite:///{tmp_path}/e.db", retention_age="1h")
    bus.publish([Event(type="a.b", data=i) for i in range(10)])
    with sqlite3.connect(tmp_path / "e.db") as conn:
        conn.execute("UPDATE log SET appended = appended - 7200 WHERE offset <= 4")
    assert bus.enforce_retention() == 4
    assert count(tmp_path / "e.db") == 6


def test_retention_by_size_drops_the_oldest_events(tmp_path: Path) -> None:
    bus = SQLiteBus(f"sqlite:///{tmp_path}/e.db", retention_bytes="200KB")
    bus.publish([Event(type="a.b", data="x" * 1000) for _ in range(1000)])
    assert bus.enforce_retention() > 0
    assert bus._used_bytes() <= 200_000
    with sqlite3.connect(tmp_path / "e.db") as conn:
        oldest = conn.execute("SELECT min(offset) FROM log").fetchone()[0]
    assert oldest > 1  # the oldest went first
    assert count(tmp_path / "e.db") > 0


def test_url_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        open_bus(f"sqlite:///{tmp_path}/e.db?partitons=3")
    assert info.value.field == "bus.url" and "partitons" in str(info.value)
    with pytest.raises(ConfigError) as info:
        open_bus(f"sqlite:///{tmp_path}/e.db?synchronous=SOMETIMES")
    assert info.value.field == "bus.synchronous"
    with pytest.raises(ConfigError):
        open_bus("sqlite://host/e.db")
    with pytest.raises(ConfigError) as info:
        open_bus("redis://localhost")
    assert info.value.rule == "scheme"


def test_url_options_are_applied(tmp_path: Path) -> None:
    bus = SQLiteBus(
        f"sqlite:///{tmp_path}/e.db?partitions=7&session_timeout=5s&synchronous=full&prefix=acme"
    )
    assert (bus.partitions, bus.session_timeout, bus.synchronous, bus.prefix) == (
        7,
        5.0,
        "FULL",
        "acme",
    )
    bus.publish([Event(type="a.b")])
    assert bus.topics() == ["acme.a"]


def test_a_topic_keeps_the_partition_count_it_was_created_with(tmp_path: Path) -> None:
    SQLiteBus(f"sqlite:///{tmp_path}/e.db?partitions=2").publish([Event(type="a.b")])
    later = SQLiteBus(f"sqlite:///{tmp_path}/e.db?partitions=9")
    consumer = later.consumer(None, ["eventops.a"], start="earliest")
    assert consumer.assignment() == {("eventops.a", 0), ("eventops.a", 1)}
    consumer.close()


def test_only_events_can_be_published(tmp_path: Path) -> None:
    bus = SQLiteBus(f"sqlite:///{tmp_path}/e.db")
    with pytest.raises(ValidationError):
        bus.publish([{"type": "a.b"}])  # type: ignore[list-item]


def test_an_undecodable_row_goes_to_the_dead_letter_topic(tmp_path: Path) -> None:
    bus = SQLiteBus(f"sqlite:///{tmp_path}/e.db")
    bus.publish([Event(type="a.b", data=1)])
    with sqlite3.connect(tmp_path / "e.db") as conn:
        conn.execute(
            "INSERT INTO log (topic, partition, event, appended) VALUES ('eventops.a', 0, 'garbage', ?)",
            (time.time(),),
        )
    bus.publish([Event(type="a.b", data=2)])
    seen: list[int] = []
    sub = Subscription(bus, "g", lambda e: seen.append(e.data), start="earliest")
    sub.run(max_events=2, timeout=10)
    assert sorted(seen) == [1, 2]
    assert sub.stats.dead_lettered == 1
    dead = bus.consumer(None, [dlq_topic()], start="earliest").poll(1.0)
    assert dead[0].event is not None
    assert dead[0].event.type == "bus.record.undecodable"
    assert "json" in str(dead[0].event.extensions["dlqerror"]).lower()


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("10m", 600), ("7d", 604800), (3, 3.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, field="x") == seconds


@pytest.mark.parametrize(
    ("text", "size"), [("512MB", 512_000_000), ("2GiB", 2 * 1024**3), ("100", 100)]
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text, field="x") == size


def test_bad_quantities_name_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration("soon", field="bus.retention_age")
    assert info.value.field == "bus.retention_age"
    with pytest.raises(ConfigError):
        parse_size("lots", field="bus.retention_bytes")


@pytest.mark.parametrize("group", [None, "tail-group"])
def test_latest_reads_a_topic_created_after_it_started(tmp_path: Path, group: str | None) -> None:
    """The events of a topic that appears after a "latest" consumer started are all new: none
    may be skipped while the consumer has not yet heard of the topic."""
    bus = SQLiteBus(f"sqlite:///{tmp_path}/e.db")
    bus.publish([Event(type="old.thing.happened", data=0)])
    consumer = bus.consumer(group, None, start="latest")
    try:
        bus.publish([Event(type="old.thing.happened", data=1)])
        bus.publish([Event(type="brandnew.thing.happened", data=2)])  # creates the topic
        seen: list[int] = []
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            seen += [r.event.data for r in consumer.poll(0.2) if r.event is not None]
        assert sorted(seen) == [1, 2]
    finally:
        consumer.close()
    bus.close()
