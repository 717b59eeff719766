"""The production profile on one machine, for the tests: Kafka protocol (tansu), PostgreSQL (the
machine's server, fresh databases), S3 (moto's server), an MLflow tracking server backed by
PostgreSQL and S3, and Ray as the executor. EventOps itself runs as separate `eventops`
processes configured only through EVENTOPS_* variables, as it would on a cluster.

Anything that cannot start raises: these tests fail, never skip, without their services.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from eventops.cli.demo_data import free_port
from kafka_broker import TansuBroker, start_tansu
from moto_server import MotoServer, start_moto
from store_db import postgres_database

BUCKET = "eventops-prod"
# One request row for the example churn model, and the version a replica answers it with.
CHURN_ROW = {
    "tenure_months": 3,
    "monthly_charges": 91.5,
    "basic": 0,
    "premium": 1,
    "support_calls": 4,
}


def served_version(port: int) -> str | None:
    """The model version the server on `port` answers with (header), or None if it cannot."""
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_records": [CHURN_ROW]},
            timeout=2,
        )
    except httpx.HTTPError:
        return None
    return response.headers.get("x-model-version") if response.status_code == 200 else None


KAFKA_OPTIONS = "partitions=4&session_timeout_ms=6000&fetch_wait_max_ms=10"


@dataclass
class Proc:
    """One `eventops` (or MLflow) process with its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} ---\n" + "\n".join(self.text().splitlines()[-lines:])

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 30.0) -> int:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


@dataclass
class Stack:
    broker: TansuBroker
    moto: MotoServer
    store_url: str
    tracking_url: str
    folder: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    def eventops(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "eventops", *args], cwd=self.folder, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def spawn(
        self,
        name: str,
        args: Sequence[str],
        *,
        eventops: bool = True,
        env: dict[str, str] | None = None,
    ) -> Proc:
        log = self.folder / f"{name}.log"
        argv = [sys.executable, "-m", "eventops", *args] if eventops else list(args)
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv, cwd=self.folder, env={**self.env, **(env or {})}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        proc = Proc(name, process, log)
        self.procs.append(proc)
        return proc

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.procs)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(condition: object, timeout: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if proc is not None and not proc.alive:
            raise RuntimeError(f"{what}: {proc.name} exited\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not within {timeout}s\n{proc.tail() if proc else ''}")
        time.sleep(0.2)


@contextlib.contextmanager
def production_stack(folder: Path) -> Iterator[Stack]:
    """Start every service of the production profile; stop them all afterwards."""
    broker = start_tansu()
    moto = start_moto()
    try:
        moto.create_bucket(BUCKET)
        with postgres_database() as store_url, postgres_database() as mlflow_db:
            base = {k: v for k, v in os.environ.items() if not k.startswith("EVENTOPS_")}
            aws = {**moto.env(), "MLFLOW_S3_ENDPOINT_URL": moto.endpoint}
            port = free_port()
            tracking = f"http://127.0.0.1:{port}"
            env = {
                **base, **aws, "COLUMNS": "200", "RAY_USAGE_STATS_ENABLED": "0",
                "EVENTOPS_HOME": str(folder / "home"),
                "EVENTOPS_BUS_URL": f"{broker.url}?{KAFKA_OPTIONS}",
                "EVENTOPS_STORE_URL": store_url,
                "EVENTOPS_LAKE_URL": f"s3://{BUCKET}/lake",
                "EVENTOPS_TRACKING_URI": tracking,
                "EVENTOPS_PIPELINES_EXECUTOR": "ray",
            }  # fmt: skip
            stack = Stack(broker, moto, store_url, tracking, folder, env)
            mlflow = stack.spawn(
                "mlflow",
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                 "--port", str(port), "--backend-store-uri", mlflow_db,
                 "--artifacts-destination", f"s3://{BUCKET}/mlflow", "--serve-artifacts",
                 "--workers", "1"],
                eventops=False,
            )  # fmt: skip
            try:
                _wait(lambda: _healthy(f"{tracking}/health"), 180, "MLflow server", mlflow)
                yield stack
            finally:
                for proc in reversed(stack.procs):
                    proc.stop(grace=20)
                stack.broker.stop()
    finally:
        moto.stop()
        with contextlib.suppress(Exception):
            broker.stop()


class TcpProxy:
    """A loopback TCP proxy to `target` that a test can cut (every connection dropped, new ones
    refused) and restore: "the store is unreachable for a while" without stopping a server
    other tests share."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
