"""Stream ingestion on a real SQLite bus and lake: micro-batches, the DLQ, and a SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from eventops.errors import NotFound
from eventops.events.bus import Bus, dlq_topic, open_bus
from eventops.events.envelope import Event
from eventops.ingest.stream import StreamIngestor
from eventops.lake import Lake, LakeStorage
from eventops.store import OutboxRelay, Store

ORDER = "shop.order.placed"


@pytest.fixture
def urls(tmp_path: Path) -> dict[str, str]:
    return {
        # A short session: the member killed below gives its partitions up within a second.
        "bus": f"sqlite:///{tmp_path}/e.db?session_timeout=1s",
        "store": f"sqlite:///{tmp_path}/s.db",
        "lake": str(tmp_path / "lake"),
    }


@pytest.fixture
def lake(urls: dict[str, str]) -> Iterator[Lake]:
    store = Store(urls["store"])
    store.upgrade()
    yield Lake(store, LakeStorage(urls["lake"]))
    store.close()


@pytest.fixture
def bus(urls: dict[str, str]) -> Iterator[Bus]:
    opened = open_bus(urls["bus"])
    yield opened
    opened.close()


def orders(start: int, stop: int, type_: str = ORDER) -> list[Event]:
    return [
        Event(type=type_, subject=f"c{i % 7}", data={"seq": i, "amount": i * 1.5})
        for i in range(start, stop)
    ]


def batch_sizes(lake: Lake, name: str) -> list[int]:
    try:
        return [b.rows for b in lake.batches(name)]
    except NotFound:  # created by the first batch
        return []


def seqs(lake: Lake, name: str) -> list[int]:
    return sorted(lake.read(name).column("seq").to_pylist())


def read_topic(bus: Bus, topic: str) -> list[Event]:
    reader = bus.consumer(None, [topic], start="earliest")
    found: list[Event] = []
    try:
        while batch := reader.poll(0.2, 1000):
            found.extend(r.event for r in batch if r.event is not None)
    finally:
        reader.close()
    return found


def test_records_are_batched_by_size(bus: Bus, lake: Lake) -> None:
    bus.publish(orders(0, 250))
    ingestor = StreamIngestor(
        bus, lake, "orders", group="firehose", types=["shop.order.*"], max_rows=100, max_seconds=60
    )
    stats = ingestor.run(max_batches=2, timeout=30)
    assert batch_sizes(lake, "orders") == [100, 100]
    assert (stats.batches, stats.rows) == (2, 200)
    # A new member of the group continues after the committed offsets; stopping flushes the rest.
    again = StreamIngestor(
        bus, lake, "orders", group="firehose", types=["shop.order.*"], max_rows=100, max_seconds=60
    )
    again.run(idle_timeout=0.5, timeout=30)
    assert batch_sizes(lake, "orders") == [100, 100, 50]
    assert seqs(lake, "orders") == list(range(250))
    assert again.stats.redelivered == 0


def test_records_are_batched_by_time(bus: Bus, lake: Lake) -> None:
    relay = OutboxRelay(lake.store, bus)
    ingestor = StreamIngestor(
        bus, lake, "orders", group="firehose", types=[ORDER], max_rows=10_000, max_seconds=0.3,
        relay=relay,
    )  # fmt: skip
    ingestor.start()
    try:
        bus.publish(orders(0, 7))
        wait_for(lambda: batch_sizes(lake, "orders") == [7], timeout=10)
        assert ingestor.running, "the batch was written by the clock, not by stopping"
        bus.publish(orders(7, 10))
        wait_for(lambda: batch_sizes(lake, "orders") == [7, 3], timeout=10)
    finally:
        ingestor.stop()
    assert ingestor.error is None
    assert seqs(lake, "orders") == list(range(10))
    announced = read_topic(bus, f"{bus.prefix}.dataset")
    assert [e.data["rows"] for e in announced if e.type == "dataset.batch.ingested"] == [7, 3]


def test_several_records_per_event_and_bad_data_to_the_dlq(bus: Bus, lake: Lake) -> None:
    bus.publish(
        [
            Event(type=ORDER, subject="a", data=[{"seq": 0}, {"seq": 1}]),
            Event(type=ORDER, subject="a", data={"seq": 2}),
            Event(type="shop.order.cancelled", subject="a", data={"seq": 99}),  # not ours
            Event(type=ORDER, subject="a", data="not a record"),
            Event(type=ORDER, subject="a", data=[{"seq": 3}, 7]),
            Event(type=ORDER, subject="a", data={}),
            Event(type=ORDER, subject="a", data=[{"seq": 4, "note": "x"}]),
        ]
    )
    ingestor = StreamIngestor(bus, lake, "orders", group="firehose", types=[ORDER])
    stats = ingestor.run(idle_timeout=0.5, timeout=30)
    assert seqs(lake, "orders") == [0, 1, 2, 4]
    assert (stats.skipped, stats.dead_lettered, stats.events) == (1, 3, 3)
    dead = read_topic(bus, dlq_topic(bus.prefix))
    errors = [str(e.extensions["dlqerror"]) for e in dead]
    assert len(errors) == 3
    assert (
        "data must be a JSON object (one record) or an array of objects, got a string" in errors[0]
    )
    assert "data[1] must be a JSON object, got a number" in errors[1]
    assert "empty object" in errors[2]
    assert {e.extensions["dlqgroup"] for e in dead} == {"firehose"}
    assert dead[0].data == "not a record"  # the original event, kept whole
    # Everything was committed: the group has nothing left to read.
    rerun = StreamIngestor(bus, lake, "orders", group="firehose", types=[ORDER])
    assert rerun.run(idle_timeout=0.3, timeout=30).dead_lettered == 0


KILLED_AFTER_THE_LAKE_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    from eventops.events.bus import open_bus
    from eventops.ingest.stream import StreamIngestor
    from eventops.lake import Lake, LakeStorage
    from eventops.store import Store

    bus_url, store_url, lake_url = sys.argv[1:]
    bus = open_bus(bus_url)
    open_consumer = bus.consumer

    def consumer(*args, **kwargs):
        real = open_consumer(*args, **kwargs)

        def die(records):  # called only after the lake commit: crash before the bus commit
            print(f"lake committed, dying before committing {len(records)} offsets", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        real.commit = die
        return real

    bus.consumer = consumer
    lake = Lake(Store(store_url), LakeStorage(lake_url))
    StreamIngestor(
        bus, lake, "orders", group="firehose", types=["shop.order.*"], max_rows=100, max_seconds=60
    ).run(timeout=60)
    """
)


def test_a_crash_between_the_lake_and_bus_commits_writes_no_row_twice(
    urls: dict[str, str], bus: Bus, lake: Lake
) -> None:
    bus.publish(orders(0, 250))
    crashed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_THE_LAKE_COMMIT, urls["bus"], urls["store"], urls["lake"]],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert "dying before committing 100 offsets" in crashed.stdout
    assert batch_sizes(lake, "orders") == [100]  # in the lake, but the bus never heard of it
    assert lake.checkpoint("stream:firehose:orders")

    survivor = StreamIngestor(
        bus, lake, "orders", group="firehose", types=["shop.order.*"], max_rows=100, max_seconds=0.2
    ).start()
    try:
        wait_for(lambda: sum(batch_sizes(lake, "orders")) >= 250, timeout=20)
    finally:
        survivor.stop()
    assert survivor.error is None
    assert seqs(lake, "orders") == list(range(250)), "a row is missing or written twice"
    assert survivor.stats.redelivered == 100  # the killed batch came back and was dropped
    assert survivor.stats.rows == 150


def test_bad_arguments_are_refused(bus: Bus, lake: Lake) -> None:
    from eventops.errors import ValidationError

    kwargs: dict[str, Any] = {"group": "g", "types": [ORDER]}
    with pytest.raises(ValidationError, match="dataset"):
        StreamIngestor(bus, lake, "Bad Name", **kwargs)
    with pytest.raises(ValidationError, match="type pattern"):
        StreamIngestor(bus, lake, "orders", group="g", types=[])
    with pytest.raises(ValidationError, match="positive"):
        StreamIngestor(bus, lake, "orders", max_rows=0, **kwargs)


@pytest.mark.kafka
def test_the_crash_case_holds_on_kafka_too(tmp_path: Path, kafka_broker: Any) -> None:
    """The same kill between the lake commit and the bus commit, with Kafka as the bus."""
    prefix = f"s{uuid.uuid4().hex[:8]}"
    bus_url = f"{kafka_broker.url}?partitions=2&session_timeout_ms=6000&fetch_wait_max_ms=10&prefix={prefix}"
    store_url, lake_url = f"sqlite:///{tmp_path}/s.db", str(tmp_path / "lake")
    store = Store(store_url)
    store.upgrade()
    lake = Lake(store, LakeStorage(lake_url))
    bus = open_bus(bus_url)
    try:
        bus.publish(orders(0, 250))
        crashed = subprocess.run(
            [sys.executable, "-c", KILLED_AFTER_THE_LAKE_COMMIT, bus_url, store_url, lake_url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        assert batch_sizes(lake, "orders") == [100]
        survivor = StreamIngestor(
            bus,
            lake,
            "orders",
            group="firehose",
            types=["shop.order.*"],
            max_rows=100,
            max_seconds=0.2,
        ).start()
        try:
            wait_for(lambda: sum(batch_sizes(lake, "orders")) >= 250, timeout=60)
        finally:
            survivor.stop()
        assert survivor.error is None
        assert seqs(lake, "orders") == list(range(250)), "a row is missing or written twice"
    finally:
        bus.close()
        store.close()
