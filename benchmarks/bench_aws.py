"""AWS integrations benchmark, against moto's server on loopback, each beside the plain boto3
loop a team would write by hand for the same work, in one run.

* Kinesis to the lake: N JSON records over 4 shards. EventOps: `KinesisIngestor` (GetRecords
  of up to 10,000 records per shard, micro-batches of `--batch-rows` rows, positions
  checkpointed with each batch). Baseline: for each shard, GetRecords pages of 1,000 (the
  boto3 examples' size), `json.loads` each record, and one `Lake.commit_batch` per page (the
  same lake, validation and catalog, without the exactly-once bookkeeping).
* The EventBridge bridge: N events on an embedded SQLite bus. EventOps: `Forwarder` with
  `EventBridgeSink` (PutEvents 10 entries per call, offsets committed after each batch).
  Baseline: the same consumer, one `put_events` call per event (what most hand-written bus
  glue does), committing after each poll.

moto answers from a thread of this process, so both sides pay its CPU: read the ratios, which
say what batching buys, not the absolute rates, which AWS sets (per shard, per account).
`--write-readme` replaces the section between the aws markers in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))

from eventops.events.aws import client  # noqa: E402
from eventops.events.bus import open_bus  # noqa: E402
from eventops.events.envelope import Event  # noqa: E402
from eventops.events.eventbridge import EventBridgeSink  # noqa: E402
from eventops.events.forward import Forwarder  # noqa: E402
from eventops.ingest import records_to_table  # noqa: E402
from eventops.ingest.kinesis import KinesisIngestor  # noqa: E402
from eventops.lake import Lake, LakeStorage  # noqa: E402
from eventops.store import Store  # noqa: E402
from moto_server import start_moto  # noqa: E402
from readme_section import machine_stamp, replace_section  # noqa: E402

SHARDS = 4


def open_lake(root: Path) -> Lake:
    store = Store(f"sqlite:///{root}/store.db")
    store.upgrade()
    return Lake(store, LakeStorage(str(root / "lake")))


def fill_stream(kinesis: Any, name: str, records: int) -> None:
    kinesis.create_stream(StreamName=name, ShardCount=SHARDS)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1})
    rng = random.Random(7)
    for start in range(0, records, 500):
        kinesis.put_records(
            StreamName=name,
            Records=[
                {
                    "Data": json.dumps(
                        {
                            "id": i,
                            "user": f"u{rng.randrange(5000)}",
                            "amount": round(rng.uniform(0, 500), 2),
                        }
                    ).encode(),
                    "PartitionKey": f"k{i}",
                }
                for i in range(start, min(records, start + 500))
            ],
        )


def until(done: Any, began: float, timeout: float = 600.0) -> float:
    """Seconds from `began` until `done()` holds (the clock stops at the last row, not at an
    idle timeout)."""
    while not done():
        if time.perf_counter() - began > timeout:
            raise TimeoutError("the benchmark did not finish")
        time.sleep(0.002)
    return time.perf_counter() - began


def kinesis_eventops(root: Path, name: str, batch_rows: int, expected: int) -> tuple[float, int]:
    lake = open_lake(root / "eventops")
    ingestor = KinesisIngestor(lake, "clicks", name, max_rows=batch_rows, max_seconds=60,
                               poll_interval=0.05)  # fmt: skip
    began = time.perf_counter()
    ingestor.start_thread(timeout=600)
    until(lambda: ingestor.stats.records >= expected, began)
    ingestor.stop()  # commits what is buffered: the clock stops with the last row in the lake
    return time.perf_counter() - began, ingestor.stats.rows


def kinesis_baseline(root: Path, name: str) -> tuple[float, int]:
    lake = open_lake(root / "baseline")
    kinesis = client("kinesis")
    rows = 0
    began = time.perf_counter()
    for shard in kinesis.list_shards(StreamName=name)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            records = [json.loads(r["Data"]) for r in page["Records"]]
            if records:
                lake.commit_batch("clicks", records_to_table(records), source="kinesis-loop")
                rows += len(records)
            if not page["Records"] and not page.get("MillisBehindLatest"):
                break
            iterator = page.get("NextShardIterator")
    return time.perf_counter() - began, rows


def bridge_events(n: int) -> list[Event]:
    return [
        Event(type="model.version.registered", subject=f"churn/{i}",
              data={"model": "churn", "version": str(i), "run_id": uuid.uuid4().hex})
        for i in range(n)
    ]  # fmt: skip


def bridge_eventops(root: Path, bus_name: str, n: int) -> tuple[float, int]:
    bus = open_bus(f"sqlite:///{root}/eventops-events.db")
    bus.publish(bridge_events(n))
    sink = EventBridgeSink(bus_name, types=["model.*"])
    forwarder = Forwarder(bus, sink, group="bench", poll_interval=0.05)
    began = time.perf_counter()
    forwarder.start(timeout=600)
    seconds = until(lambda: forwarder.stats.forwarded >= n, began)
    forwarder.stop()
    bus.close()
    return seconds, forwarder.stats.forwarded


def bridge_baseline(root: Path, bus_name: str, n: int) -> tuple[float, int]:
    bus = open_bus(f"sqlite:///{root}/baseline-events.db")
    bus.publish(bridge_events(n))
    events = client("events")
    consumer = bus.consumer("bench", None, start="earliest")
    sent = 0
    began = time.perf_counter()
    while sent < n and (records := consumer.poll(0.5, 500)):
        for record in records:
            assert record.event is not None
            events.put_events(Entries=[{
                "Source": "eventops", "DetailType": record.event.type,
                "Detail": record.event.to_json(), "EventBusName": bus_name,
            }])  # fmt: skip
            sent += 1
        consumer.commit(records)
    seconds = time.perf_counter() - began
    consumer.close()
    bus.close()
    return seconds, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="Kinesis records")
    parser.add_argument("--events", type=int, default=2_000, help="events for the bridge")
    parser.add_argument("--batch-rows", type=int, default=5_000)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()

    import os

    moto = start_moto()
    os.environ.update(moto.env())
    rows = []
    with tempfile.TemporaryDirectory(prefix="eventops-bench-aws-") as scratch:
        root = Path(scratch)
        stream = f"bench-{uuid.uuid4().hex[:6]}"
        fill_stream(moto.client("kinesis"), stream, args.records)
        base_s, base_rows = kinesis_baseline(root, stream)
        ours_s, ours_rows = kinesis_eventops(root, stream, args.batch_rows, args.records)
        assert base_rows == ours_rows == args.records, (base_rows, ours_rows)
        rows.append(("Kinesis -> lake (records/s)", "boto3 loop, a lake batch per GetRecords page",
                     base_rows / base_s, ours_rows / ours_s))  # fmt: skip
        bus_name = f"bench-{uuid.uuid4().hex[:6]}"
        moto.client("events").create_event_bus(Name=bus_name)
        base_s, base_n = bridge_baseline(root, bus_name, args.events)
        ours_s, ours_n = bridge_eventops(root, bus_name, args.events)
        assert base_n == ours_n == args.events, (base_n, ours_n)
        rows.append(("bus -> EventBridge (events/s)", "boto3 loop, one PutEvents per event",
                     base_n / base_s, ours_n / ours_s))  # fmt: skip
    moto.stop()

    lines = [
        "| path | baseline | baseline rate | EventOps rate | EventOps vs baseline |",
        "|---|---|---:|---:|---:|",
    ]
    for path, baseline, base_rate, ours_rate in rows:
        lines.append(
            f"| {path} | {baseline} | {base_rate:,.0f} | {ours_rate:,.0f} | "
            f"{ours_rate / base_rate:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    if args.write_readme:
        stamp = machine_stamp(f"moto in-process, {args.records:,} records over {SHARDS} shards, "
                              f"{args.events:,} events")  # fmt: skip
        replace_section("aws", "AWS integrations (Kinesis, EventBridge)", f"{table}\n\n{stamp}")


if __name__ == "__main__":
    main()
