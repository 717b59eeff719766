"""A small process supervisor for `eventops up`: start children, prefix their output, restart
the ones that die, stop them all cleanly.

Why processes and not threads: each part already is a complete command with its own signal
handling and clean shutdown (`eventops api serve`, `eventops worker`, `eventops serve`), the
serving runtime sets process-wide state (MLflow's registry URI, the interpreter's switch
interval), and user code (pipeline steps) must not share the API's process. `up` is then the
same set of processes a cluster runs, on one machine.

Why not supervisord or honcho: neither is a dependency we want on every laptop for ~200 lines,
and neither knows that a SIGTERM to a worker hands its in-flight run back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Say = Callable[[str, str], None]  # (child name, line)


@dataclass
class Child:
    """One supervised command; restarted with backoff when it exits while running."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] | None = None
    process: subprocess.Popen[str] | None = None
    restarts: list[float] = field(default_factory=list)
    next_start: float = 0.0
    _reader: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class GaveUp(Exception):
    """A child kept dying: more than `max_restarts` restarts within `restart_window` seconds."""


class Supervisor:
    """Runs `children` until `stop()` (or a child gives up), then stops them all.

    A child that exits on its own is restarted after a backoff (1 s, doubling, at most 30 s);
    one that exits more than `max_restarts` times within `restart_window` seconds makes the
    supervisor give up and stop everything, since something is wrong that a restart won't fix.
    Stopping sends SIGTERM to every child (each finishes or hands back its in-flight work),
    waits `grace` seconds, then SIGKILLs what is left.
    """

    def __init__(
        self,
        children: Sequence[Child],
        say: Say,
        *,
        grace: float = 30.0,
        max_restarts: int = 5,
        restart_window: float = 300.0,
    ) -> None:
        self.children = list(children)
        self.say = say
        self.grace = grace
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.stop_event = threading.Event()
        self.failure: str | None = None

    def _start(self, child: Child) -> None:
        # Unbuffered, and wide: Rich in a child wraps at 80 columns when its output is a pipe.
        env = {"COLUMNS": "200", **os.environ, **(child.env or {}), "PYTHONUNBUFFERED": "1"}
        child.process = subprocess.Popen(
            list(child.argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1, env=env, start_new_session=True,
        )  # fmt: skip
        # Own session: a Ctrl-C in the terminal reaches only `up`, which stops children in order.
        process = child.process

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.say(child.name, line.rstrip("\n"))

        child._reader = threading.Thread(target=pump, name=f"up-{child.name}", daemon=True)
        child._reader.start()

    def start(self) -> None:
        for child in self.children:
            self._start(child)

    def check(self, now: float | None = None) -> None:
        """Restart children that exited (after their backoff); raise GaveUp when one keeps
        dying. Called in a loop by `run`."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            if child.alive or self.stop_event.is_set():
                continue
            if child.next_start == 0.0:
                code = child.process.returncode if child.process is not None else None
                child.restarts = [t for t in child.restarts if now - t < self.restart_window]
                if len(child.restarts) >= self.max_restarts:
                    raise GaveUp(
                        f"{child.name} exited {len(child.restarts) + 1} times within "
                        f"{self.restart_window:g}s (last exit code {code})"
                    )
                delay = min(30.0, 2.0 ** len(child.restarts))
                child.next_start = now + delay
                self.say("up", f"{child.name} exited with code {code}; restarting in {delay:g}s")
            elif now >= child.next_start:
                child.restarts.append(now)
                child.next_start = 0.0
                self._start(child)

    def run(self, timeout: float | None = None, interval: float = 0.2) -> bool:
        """Supervise until stopped (True) or `timeout` passed (False); GaveUp propagates."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.stop_event.wait(interval):
            self.check()
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return True

    def stop(self) -> dict[str, int | None]:
        """SIGTERM everything, wait up to `grace`, SIGKILL the rest; the exit codes by name."""
        self.stop_event.set()
        for child in self.children:
            if child.alive:
                assert child.process is not None
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say("up", f"{child.name} did not stop within {self.grace:g}s: killing it")
                child.process.kill()
                child.process.wait()
        for child in self.children:
            if child._reader is not None:
                child._reader.join(timeout=5)
        return {c.name: c.process.returncode if c.process else None for c in self.children}
