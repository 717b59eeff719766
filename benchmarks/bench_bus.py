"""Bus benchmarks: each backend against the raw library it stands on, measured in one run.

* SQLite backend vs raw `sqlite3` inserts in WAL mode (synchronous=NORMAL, 1,000 per transaction).
* Kafka backend vs raw confluent-kafka on the same tansu broker (started here).

Throughput: publish N events with ~1 KB of data. Latency: a paced producer at 1,000 events/s and
one consumer; publish-to-handler time per event, p50 and p99. Figures vary with the machine: read
the ratios. `--write-readme` rewrites the table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from eventops.events.bus import Bus, open_bus
from eventops.events.envelope import Event
from eventops.events.subscription import Subscription
from readme_section import machine_stamp, replace_section

HERE = Path(__file__).parent
PAYLOAD = "x" * 1000
BATCH = 1000


@dataclass
class Row:
    case: str
    ours: float
    baseline: float
    unit: str
    goal: str

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("nan")


def make_events(n: int) -> list[Event]:
    return [
        Event(type="dataset.batch.ingested", subject=f"s{i % 16}", data={"i": i, "p": PAYLOAD})
        for i in range(n)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------- throughput
def bus_publish_rate(bus: Bus, n: int) -> float:
    events = make_events(n)
    start = time.perf_counter()
    for i in range(0, n, BATCH):
        bus.publish(events[i : i + BATCH])
    return n / (time.perf_counter() - start)


def raw_sqlite_rate(path: Path, n: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, payload TEXT, ts REAL)")
    data = [{"i": i, "p": PAYLOAD} for i in range(n)]
    start = time.perf_counter()  # serialising is part of the work, as it is for the bus
    rows = [(json.dumps(d), time.time()) for d in data]
    for i in range(0, n, BATCH):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO log (payload, ts) VALUES (?, ?)", rows[i : i + BATCH])
        conn.execute("COMMIT")
    rate = n / (time.perf_counter() - start)
    conn.close()
    return rate


def _raw_topic(bootstrap: str, prefix: str) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"{prefix}-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # keep it alive until the result
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(30)
    return topic


def raw_kafka_rate(bootstrap: str, n: int, *, cloudevents: bool) -> float:
    """Raw confluent-kafka: plain JSON values, or the same CloudEvents binary-mode records built
    by hand (ce_* headers), which is what a team emitting CloudEvents without EventOps writes."""
    from confluent_kafka import Producer

    topic = _raw_topic(bootstrap, "raw")
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True, "acks": "all"}
    )
    data = [{"i": i, "p": PAYLOAD} for i in range(n)]
    start = time.perf_counter()  # serialising is part of the work, as it is for the bus
    for i, d in enumerate(data):
        value = json.dumps(d).encode()
        key = f"s{i % 16}".encode()
        headers = None
        if cloudevents:
            headers = [
                ("ce_specversion", b"1.0"), ("ce_id", uuid.uuid4().hex.encode()),
                ("ce_source", b"/bench"), ("ce_type", b"dataset.batch.ingested"),
                ("ce_time", datetime.now(UTC).isoformat().encode()), ("ce_subject", key),
                ("content-type", b"application/json"),
            ]  # fmt: skip
        while True:
            try:
                producer.produce(topic, value, key=key, headers=headers)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(60)
    return n / (time.perf_counter() - start)


# ---------------------------------------------------------------------- latency
def paced(publish_one: Callable[[int], None], n: int, rate: float) -> None:
    start = time.perf_counter()
    for i in range(n):
        target = start + i / rate
        while (delay := target - time.perf_counter()) > 0:
            time.sleep(min(delay, 0.0005))
        publish_one(i)


def bus_latency(open_new: Callable[[], Bus], n: int, rate: float) -> tuple[float, float]:
    latencies: list[float] = []
    done = threading.Event()

    def handler(event: Event) -> None:
        latencies.append(time.time() - event.data["sent"])
        if len(latencies) >= n:
            done.set()

    group = f"lat-{uuid.uuid4().hex[:6]}"
    consumer_bus, producer_bus = open_new(), open_new()
    producer_bus.publish([Event(type="bench.warmup.done", data={})])
    sub = Subscription(
        consumer_bus, group, handler, types=["bench.latency.*"], start="latest"
    ).start()
    warm = time.monotonic()
    while not sub.assignment and time.monotonic() - warm < 60:
        time.sleep(0.01)
    time.sleep(0.5)  # let the group settle before measuring (not part of any assertion)

    def one(i: int) -> None:
        producer_bus.publish(
            [
                Event(
                    type="bench.latency.sample",
                    subject=f"s{i % 16}",
                    data={"sent": time.time(), "p": PAYLOAD},
                )
            ]
        )

    paced(one, n, rate)
    done.wait(60)
    sub.stop()
    ms = [x * 1000 for x in latencies]
    return percentile(ms, 0.5), percentile(ms, 0.99)


def raw_sqlite_latency(path: Path, n: int, rate: float) -> tuple[float, float]:
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA synchronous=NORMAL")
    writer.execute("CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, payload TEXT, ts REAL)")
    latencies: list[float] = []

    def read() -> None:
        reader = sqlite3.connect(path, isolation_level=None)
        last = 0
        while len(latencies) < n:
            for row_id, ts in reader.execute("SELECT id, ts FROM log WHERE id > ?", (last,)):
                latencies.append((time.time() - ts) * 1000)
                last = row_id
            time.sleep(0.001)

    thread = threading.Thread(target=read)
    thread.start()
    paced(
        lambda i: writer.execute(
            "INSERT INTO log (payload, ts) VALUES (?, ?)", (PAYLOAD, time.time())
        ),
        n,
        rate,
    )
    thread.join(60)
    return percentile(latencies, 0.5), percentile(latencies, 0.99)


def raw_kafka_latency(bootstrap: str, n: int, rate: float) -> tuple[float, float]:
    from confluent_kafka import Consumer, Producer

    topic = _raw_topic(bootstrap, "rawlat")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "latest",
            "session.timeout.ms": 6000, "fetch.wait.max.ms": 10,
        }
    )  # fmt: skip
    assigned = threading.Event()
    consumer.subscribe([topic], on_assign=lambda c, p: assigned.set())
    deadline = time.monotonic() + 60
    while not assigned.is_set() and time.monotonic() < deadline:
        consumer.poll(0.1)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    latencies: list[float] = []
    stop = threading.Event()

    def read() -> None:  # the only thread that touches the consumer until it is joined
        while len(latencies) < n and not stop.is_set():
            msg = consumer.poll(0.1)  # returns as soon as one message is there
            if msg is not None and msg.error() is None:
                latencies.append((time.time() - json.loads(msg.value())["sent"]) * 1000)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()

    def one(i: int) -> None:
        value = json.dumps({"sent": time.time(), "p": PAYLOAD}).encode()
        producer.produce(topic, value, key=f"s{i % 16}".encode())
        producer.poll(0)

    paced(one, n, rate)
    producer.flush(30)
    thread.join(60)
    stop.set()
    thread.join(5)
    consumer.close()
    return percentile(latencies, 0.5), percentile(latencies, 0.99)


# ---------------------------------------------------------------------- main
def run(n: int, latency_n: int, kafka: bool) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        raw = raw_sqlite_rate(base / "raw.db", n)
        ours = bus_publish_rate(open_bus(f"sqlite:///{base}/bus.db"), n)
        rows.append(
            Row("SQLite: batched publish, 1 KB events", ours, raw, "events/s", ">= 20,000 events/s")
        )
        raw_p50, raw_p99 = raw_sqlite_latency(base / "rawlat.db", latency_n, 1000)
        url = f"sqlite:///{base}/lat.db"
        p50, p99 = bus_latency(lambda: open_bus(url), latency_n, 1000)
        rows.append(Row("SQLite: publish-to-handler p50 at 1,000 ev/s", p50, raw_p50, "ms", ""))
        rows.append(
            Row("SQLite: publish-to-handler p99 at 1,000 ev/s", p99, raw_p99, "ms", "p99 <= 50 ms")
        )
    if kafka:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from kafka_broker import start_tansu

        broker = start_tansu()
        try:
            raw_ce = raw_kafka_rate(broker.bootstrap, n, cloudevents=True)
            raw_json = raw_kafka_rate(broker.bootstrap, n, cloudevents=False)
            ours = bus_publish_rate(
                open_bus(f"{broker.url}?partitions=4", prefix=f"b{uuid.uuid4().hex[:6]}"), n
            )
            rows.append(
                Row(
                    "Kafka (tansu): publish vs raw CloudEvents records",
                    ours,
                    raw_ce,
                    "events/s",
                    ">= 70% of raw",
                )
            )
            rows.append(
                Row(
                    "Kafka (tansu): publish vs raw plain-JSON values",
                    ours,
                    raw_json,
                    "events/s",
                    "(no headers: a lower bound)",
                )
            )
            raw_p50, raw_p99 = raw_kafka_latency(broker.bootstrap, latency_n, 1000)
            url = f"{broker.url}?partitions=4&session_timeout_ms=6000&fetch_wait_max_ms=10"
            prefix = f"l{uuid.uuid4().hex[:6]}"
            p50, p99 = bus_latency(lambda: open_bus(url, prefix=prefix), latency_n, 1000)
            rows.append(
                Row("Kafka (tansu): publish-to-handler p50 at 1,000 ev/s", p50, raw_p50, "ms", "")
            )
            rows.append(
                Row("Kafka (tansu): publish-to-handler p99 at 1,000 ev/s", p99, raw_p99, "ms", "")
            )
        finally:
            broker.stop()
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| case | EventOps | baseline | ratio | unit | goal |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        fmt = "{:,.0f}" if r.unit == "events/s" else "{:.1f}"
        lines.append(
            f"| {r.case} | {fmt.format(r.ours)} | {fmt.format(r.baseline)} | {r.ratio:.2f} | {r.unit} | {r.goal} |"
        )
    return "\n".join(lines)


def write_readme(text: str) -> None:
    replace_section("bus", "Event bus", f"{machine_stamp()}\n\n{text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--latency-events", type=int, default=5_000)
    parser.add_argument("--no-kafka", action="store_true")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    rows = run(args.events, args.latency_events, not args.no_kafka)
    text = table(rows)
    print(text)
    if args.write_readme:
        write_readme(text)


if __name__ == "__main__":
    main()
