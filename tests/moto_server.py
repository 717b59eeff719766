"""Start a throw-away S3-protocol server (moto's, in a thread on loopback) for the tests.

The lake reaches S3 through s3fs, which takes its endpoint and credentials from the standard AWS
variables, so a test points the product at this server with ``aws_env(server)`` alone: the
product needs no endpoint setting of its own. Anything that goes wrong raises: a test that needs
S3 must fail loudly, never skip, when it has none.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

START_TIMEOUT = 30.0  # seconds for the server to bind and answer HTTP

# Dummy credentials: moto accepts any, and they keep botocore away from real ones.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # pragma: allowlist secret
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoError(RuntimeError):
    """moto is not installed, or its server did not come up."""


@dataclass
class MotoServer:
    server: object  # moto.server.ThreadedMotoServer
    host: str
    port: int
    stopped: bool = field(default=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 and s3fs at this server.

        ``AWS_CONFIG_FILE`` / ``AWS_SHARED_CREDENTIALS_FILE`` go to /dev/null so a developer's
        own profile (or an ``endpoint_url`` in it) cannot leak into a test.
        """
        return {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            # Every other service (Kinesis, EventBridge, CloudWatch, SageMaker...) too.
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def client(self, service: str) -> Any:
        """A boto3 client of this server for the test's own setup and checks."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, name: str) -> None:
        self.client("s3").create_bucket(Bucket=name)

    def reset(self) -> None:
        """Forget every resource (moto's reset API), so tests sharing a server start empty."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10.0):
            pass

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.server.stop()  # type: ignore[attr-defined]

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(endpoint: str) -> bool:
    """True once the server answers an HTTP request (any status: it is moto talking)."""
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def start_moto(timeout: float = START_TIMEOUT) -> MotoServer:
    """Start moto's S3 server on a free loopback port and wait until it answers; raises if not.

    The port is 0, so the OS picks a free one at bind time (no probe-then-bind race); the bound
    port is read back from the server.
    """
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise MotoError("moto's server is not installed: pip install 'moto[server]'") from exc
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    # start() waits, without a limit, for the bind; a bind that fails kills its thread and
    # would leave start() waiting forever, so it runs in a helper thread with a deadline.
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.start()
        except BaseException as exc:  # reported below
            failure.append(exc)

    starter = threading.Thread(target=run, name="moto-start", daemon=True)
    starter.start()
    deadline = time.monotonic() + timeout
    starter.join(timeout)
    if starter.is_alive() or failure:
        raise MotoError(f"moto's server did not start within {timeout}s: {failure or 'no bind'}")
    host, port = server.get_host_and_port()
    moto = MotoServer(server, host, port)
    while not _answers(moto.endpoint):
        if time.monotonic() > deadline:
            moto.stop()
            raise MotoError(f"moto's server on {moto.endpoint} does not answer HTTP")
        time.sleep(0.02)
    return moto


@contextmanager
def aws_env(server: MotoServer) -> Iterator[None]:
    """Point every AWS client created inside the block at `server`; restore the env after.

    s3fs caches filesystem instances by their arguments, not by the environment, so the cache
    is cleared on the way in and out: an instance made for another endpoint is never reused.
    """
    import s3fs

    saved = {name: os.environ.get(name) for name in server.env()}
    os.environ.update(server.env())
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
