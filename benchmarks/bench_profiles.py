"""The same workload on the embedded profile and on the production profile, in one run.

Embedded: SQLite bus and store, a local folder lake, MLflow on SQLite, local step processes.
Production: Kafka protocol (tansu), PostgreSQL, S3 (moto's server), an MLflow tracking server on
PostgreSQL + S3, Ray — started on this machine by `tests/production_stack.py`.

Two measures, each per profile:
- events/s end to end: `--events` 1 KB events published in batches of 1,000 through the
  configured bus and handled by a consumer group (`Subscription`), from the first publish until
  the handler has seen the last one;
- loop latency: `eventops apply`, a worker and a serving replica running as processes, then
  `eventops ingest files churn customers.csv`: seconds until the replica answers with version 1
  (ingest -> trigger -> training run -> register -> gate -> champion -> hot swap).

Usage: python benchmarks/bench_profiles.py [--events 20000] [--write-readme]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from eventops.cli.demo_data import free_port  # noqa: E402
from eventops.events.bus import open_bus  # noqa: E402
from eventops.events.envelope import Event  # noqa: E402
from eventops.events.subscription import Subscription  # noqa: E402
from production_stack import Stack, production_stack, served_version  # noqa: E402
from readme_section import machine_stamp, replace_section  # noqa: E402

PROJECT = str(ROOT / "examples" / "churn" / "project.py")
DATA = str(ROOT / "examples" / "churn" / "data" / "customers.csv")


@contextmanager
def embedded_stack(folder: Path) -> Iterator[Stack]:
    """The embedded defaults, driven through the same `Stack` interface."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTOPS_")}
    env.update({"EVENTOPS_HOME": str(folder / "home"), "COLUMNS": "200"})
    stack = Stack(None, None, f"sqlite:///{folder}/home/eventops.db", "", folder, env)  # type: ignore[arg-type]
    try:
        yield stack
    finally:
        for proc in reversed(stack.procs):
            proc.stop(grace=20)


def bus_url(stack: Stack) -> str:
    return stack.env.get("EVENTOPS_BUS_URL") or f"sqlite:///{stack.folder}/home/events.db"


def events_per_second(stack: Stack, count: int) -> float:
    """Publish `count` 1 KB events in batches of 1,000; time until a group handled them all."""
    (stack.folder / "home").mkdir(parents=True, exist_ok=True)
    url = bus_url(stack)
    publisher = open_bus(url)
    seen = threading.Event()
    handled = 0

    def handle(event: Event) -> None:
        nonlocal handled
        handled += 1
        if handled >= count:
            seen.set()

    subscription = Subscription(
        open_bus(url), "bench-profiles", handle, types=["bench.*"], start="earliest"
    )
    worker = threading.Thread(target=subscription.run, daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while not subscription.assignment and time.monotonic() < deadline:
        time.sleep(0.05)  # the group's first assignment, before the clock starts
    payload = "x" * 1000
    started = time.perf_counter()
    for first in range(0, count, 1000):
        batch = [
            Event(type="bench.event.sent", subject=f"k{i % 64}", data={"i": i, "pad": payload})
            for i in range(first, min(count, first + 1000))
        ]
        publisher.publish(batch)
    if not seen.wait(300):
        raise RuntimeError(f"only {handled} of {count} events handled in 300 s")
    elapsed = time.perf_counter() - started
    subscription.stop(30)
    publisher.close()
    return count / elapsed


def loop_seconds(stack: Stack) -> float:
    applied = stack.eventops("apply", "--project", PROJECT)
    if applied.returncode != 0:
        raise RuntimeError(applied.stdout + applied.stderr)
    worker = stack.spawn("bench-worker", ["worker", "--project", PROJECT, "--workers", "1"])
    port = free_port()
    replica = stack.spawn(
        "bench-serve",
        ["serve", "--deployment", "churn-api", "--project", PROJECT, "--port", str(port)],
    )
    deadline = time.monotonic() + 180
    while (
        "worker for project churn" not in worker.text() or "Uvicorn running" not in replica.text()
    ):
        if time.monotonic() > deadline or not worker.alive or not replica.alive:
            raise RuntimeError(stack.tails())
        time.sleep(0.1)
    started = time.perf_counter()
    ingest = stack.eventops("ingest", "files", "churn", DATA)
    if ingest.returncode != 0:
        raise RuntimeError(ingest.stdout + ingest.stderr)
    while served_version(port) != "1":
        if time.perf_counter() - started > 300:
            raise RuntimeError(f"no version served within 300 s\n{stack.tails()}")
        time.sleep(0.1)
    return time.perf_counter() - started


def measure(events: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for name, start in (("embedded", embedded_stack), ("production", production_stack)):
        with (
            tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder,
            start(Path(folder)) as stack,
        ):
            print(f"{name}: events ...", flush=True)
            eps = events_per_second(stack, events)
            print(f"  {eps:,.0f} events/s; loop ...", flush=True)
            results[name] = {"events_per_s": eps, "loop_s": loop_seconds(stack)}
            print(f"  loop {results[name]['loop_s']:.1f} s", flush=True)
    return results


def table(results: dict[str, dict[str, float]], events: int) -> str:
    emb, prod = results["embedded"], results["production"]
    lines = [
        machine_stamp(),
        "",
        f"Same workload on both profiles: {events:,} events of 1 KB through the bus to a consumer "
        "group; the churn loop from ingest to the served version 1 (one worker, one replica).",
        "",
        "| measure | embedded (SQLite, folder, local) | production (Kafka/tansu, PostgreSQL, S3/moto, MLflow server, Ray) | production / embedded |",
        "|---|---:|---:|---:|",
        f"| events/s, publish to handled | {emb['events_per_s']:,.0f} | {prod['events_per_s']:,.0f} | "
        f"{prod['events_per_s'] / emb['events_per_s']:.2f} |",
        f"| loop: ingest to served version (s) | {emb['loop_s']:.1f} | {prod['loop_s']:.1f} | "
        f"{prod['loop_s'] / emb['loop_s']:.2f} |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    results = measure(args.events)
    body = table(results, args.events)
    print(body)
    if args.write_readme:
        replace_section("profiles", "Embedded and production profiles (`bench_profiles.py`)", body)


if __name__ == "__main__":
    main()
