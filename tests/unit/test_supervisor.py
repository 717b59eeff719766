"""The supervisor behind `eventops up`, with real child processes: output is prefixed, a child
that dies is restarted after a backoff, one that keeps dying makes it give up, SIGTERM reaches
every child and one that ignores it is killed after the grace period."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_for
from eventops.cli.supervisor import Child, GaveUp, Supervisor

PY = sys.executable


class Lines:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str]] = []

    def __call__(self, name: str, line: str) -> None:
        with self.lock:
            self.seen.append((name, line))

    def of(self, name: str) -> list[str]:
        with self.lock:
            return [line for n, line in self.seen if n == name]


def test_output_is_prefixed_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    marker = tmp_path / "stopped"
    script = (
        "import signal, sys, time, pathlib\n"
        "def bye(*_):\n"
        f"    pathlib.Path({str(marker)!r}).write_text('clean'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(0.05)\n"
    )
    lines = Lines()
    supervisor = Supervisor([Child("svc", [PY, "-c", script])], lines, grace=10)
    supervisor.start()
    wait_for(lambda: "ready" in lines.of("svc"), timeout=20)
    codes = supervisor.stop()
    assert codes == {"svc": 0}
    assert marker.read_text() == "clean"


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(0.05)\n"
    )
    lines = Lines()
    supervisor = Supervisor([Child("stubborn", [PY, "-c", script])], lines, grace=0.5)
    supervisor.start()
    wait_for(lambda: "ready" in lines.of("stubborn"), timeout=20)
    assert supervisor.stop() == {"stubborn": -9}
    assert any("killing it" in line for line in lines.of("up"))


def test_a_dead_child_is_restarted_with_backoff_then_given_up(tmp_path: Path) -> None:
    counter = tmp_path / "starts"
    script = (
        "import pathlib\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "p.write_text(str(int(p.read_text() or 0) + 1) if p.exists() else '1')\n"
        "raise SystemExit(3)\n"
    )
    lines = Lines()
    child = Child("flaky", [PY, "-c", script])
    supervisor = Supervisor([child], lines, max_restarts=2, restart_window=1000)
    supervisor.start()
    assert child.process is not None
    child.process.wait(20)
    now = time.monotonic()
    supervisor.check(now)  # schedules a restart in 1 s
    assert child.next_start == pytest.approx(now + 1.0)
    supervisor.check(now + 0.5)
    assert not child.alive and counter.read_text() == "1"  # not before its backoff
    supervisor.check(now + 1.0)  # restarted
    child.process.wait(20)
    supervisor.check(now + 1.1)
    assert child.next_start == pytest.approx(now + 1.1 + 2.0)  # doubled
    supervisor.check(now + 3.2)
    child.process.wait(20)
    with pytest.raises(GaveUp, match="flaky exited 3 times"):
        supervisor.check(now + 3.3)
    assert counter.read_text() == "3"
    assert any("exited with code 3" in line for line in lines.of("up"))
    supervisor.stop()


def test_run_returns_on_timeout_or_stop() -> None:
    supervisor = Supervisor([Child("sleeper", [PY, "-c", "import time; time.sleep(60)"])], Lines())
    supervisor.start()
    try:
        assert supervisor.run(timeout=0.3, interval=0.05) is False
        threading.Timer(0.2, supervisor.stop_event.set).start()
        assert supervisor.run(timeout=30, interval=0.05) is True
    finally:
        assert supervisor.stop() == {"sleeper": -15}
