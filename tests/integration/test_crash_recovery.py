"""Processes killed with SIGKILL: the embedded log and the CLI tail lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from conftest import wait_for
from eventops.events.bus import open_bus
from eventops.events.envelope import Event
from eventops.events.subscription import Subscription

EVENTOPS = [sys.executable, "-m", "eventops"]


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTOPS_")}
    env["EVENTOPS_HOME"] = str(tmp_path / "home")
    # The killed member's partitions are free once its session expires.
    env["EVENTOPS_BUS_SESSION_TIMEOUT"] = "2s"
    return env


def read_lines(proc: subprocess.Popen[str], count: int, timeout: float = 30.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while len(lines) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"read only {len(lines)} of {count} lines from {proc.args}")
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"process ended early: {proc.args}")
        lines.append(line)
    return lines


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("kafka", marks=pytest.mark.kafka)])
def test_a_tail_killed_with_sigkill_continues_with_no_gap(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url, idle = f"sqlite:///{tmp_path}/events.db", "6"
    else:  # the dead member's partitions come back after session.timeout.ms, then a rejoin
        broker = request.getfixturevalue("kafka_broker")
        url = f"{broker.url}?session_timeout_ms=6000&fetch_wait_max_ms=10&prefix=t{uuid.uuid4().hex[:8]}"
        idle = "20"
    bus = open_bus(url)
    bus.publish([Event(type="shop.order.placed", subject="one-key", data=i) for i in range(2000)])
    cmd = [*EVENTOPS, "events", "tail", "--bus", url, "--group", "g", "--from-beginning", "--json"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=cli_env(tmp_path))
    try:
        early = read_lines(first, 700)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    # Everything the killed tail wrote before dying counts as printed, read or not.
    assert first.stdout is not None
    printed = early + first.stdout.read().splitlines()
    second = subprocess.run(
        [*cmd, "--timeout", idle],
        capture_output=True,
        text=True,
        env=cli_env(tmp_path),
        timeout=120,
    )
    assert second.returncode == 0, second.stderr
    before = [json.loads(line)["data"] for line in printed]
    after = [json.loads(line)["data"] for line in second.stdout.splitlines()]
    assert before == list(range(len(before)))
    assert after, "the restarted tail printed nothing"
    assert len(before) < 2000, "the first tail was not stopped mid-stream"
    assert after[0] <= before[-1] + 1, f"gap: stopped at {before[-1]}, restarted at {after[0]}"
    assert after == list(range(after[0], 2000))


PUBLISHER = textwrap.dedent(
    """
    import sys
    from eventops.events.bus import open_bus
    from eventops.events.envelope import Event
    bus = open_bus(sys.argv[1])
    i = 0
    while True:
        bus.publish([Event(type="shop.order.placed", subject=str(i % 7), data=i + k) for k in range(50)])
        i += 50
        print(i, flush=True)
    """
)


def test_the_sqlite_log_survives_a_publisher_killed_mid_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, url], stdout=subprocess.PIPE, text=True
    )
    try:
        confirmed = int(read_lines(proc, 40)[-1])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    bus = open_bus(url)
    reader = bus.consumer(None, None, start="earliest")
    seen: list[int] = []
    while batch := reader.poll(0.5, 5000):
        seen.extend(r.event.data for r in batch if r.event is not None)
    assert len(seen) >= confirmed, "a confirmed publish was lost"
    assert len(seen) % 50 == 0, "a half-written publish batch is visible"
    assert sorted(seen) == list(range(len(seen)))
    assert bus.publish([Event(type="shop.order.placed", data="after")]) == 1


CONSUMER = textwrap.dedent(
    """
    import sys
    from eventops.events.bus import open_bus
    from eventops.events.subscription import Subscription
    bus = open_bus(sys.argv[1])
    def handle(event):
        print(event.data, flush=True)
    sub = Subscription(bus, "workers", handle, start="earliest", max_records=10)
    sub.run()
    """
)


def test_a_killed_group_member_hands_its_partitions_to_the_survivor(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db?session_timeout=2s"
    bus = open_bus(url)
    bus.publish([Event(type="shop.order.placed", subject=f"k{i % 8}", data=i) for i in range(400)])
    victim = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, url], stdout=subprocess.PIPE, text=True
    )
    try:
        handled_by_victim = {int(line) for line in read_lines(victim, 20)}
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    seen: set[int] = set()
    survivor = Subscription(
        open_bus(url), "workers", lambda e: seen.add(e.data), start="earliest"
    ).start()
    try:
        wait_for(lambda: len(seen | handled_by_victim) == 400, timeout=60)
    finally:
        survivor.stop()
    assert seen | handled_by_victim == set(range(400))
