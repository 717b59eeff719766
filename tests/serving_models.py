"""Models and a loopback server for the serving tests.

* `fake_model`: a `LoadedModel` around a plain function, with a hand-written schema: no MLflow,
  so unit tests are fast and can count predict calls or make the model refuse a value.
* `save_sklearn` / `register_versions`: scikit-learn models saved with MLflow (cloudpickle:
  skops refuses trees, see FIELD-NOTES) and registered in a SQLite MLflow registry.
* `running`: a real uvicorn server in a thread on a free loopback port.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import uvicorn

from eventops.serving.models import LoadedModel, ModelRef
from eventops.serving.schema import Column, InputSchema, Tensor

FEATURES = ["a", "b", "c", "d"]
MIXED = InputSchema(
    columns=(
        Column("a", "double"),
        Column("b", "double"),
        Column("n", "long"),
        Column("plan", "string"),
        Column("flag", "boolean", required=False),
    )
)
NUMERIC = InputSchema(columns=tuple(Column(n, "double") for n in ("a", "b")))


class FakePyfunc:
    """Calls `fn(model_input)`; counts calls and the rows of each."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def predict(self, model_input: Any, params: Any = None) -> Any:
        with self.lock:
            self.calls.append(len(model_input))
        return self.fn(model_input)


def linear(offset: float = 0.0) -> Callable[[Any], Any]:
    """a * 10 + b (+ offset): every row's right answer is known to the test."""

    def predict(frame: pd.DataFrame) -> np.ndarray[Any, Any]:
        return np.asarray(frame["a"] * 10 + frame["b"] + offset)

    return predict


def fake_model(
    fn: Callable[[Any], Any] | None = None,
    *,
    schema: InputSchema = NUMERIC,
    version: str = "1",
    name: str = "linear",
    alias: str | None = "champion",
) -> LoadedModel:
    uri = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"
    ref = ModelRef(uri, f"models:/{name}/{version}", name, version, alias)
    return LoadedModel(ref, version, FakePyfunc(fn or linear()), schema)


def tensor_model(width: int = 3) -> LoadedModel:
    schema = InputSchema(tensors=(Tensor(None, np.dtype(np.float32), (-1, width)),))
    return fake_model(lambda x: np.asarray(x).sum(axis=1), schema=schema, name="tensor")


# ---------------------------------------------------------------------- real MLflow models
def training_data(rows: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=FEATURES)
    return frame, (frame["a"] + frame["b"] > 0).to_numpy().astype(int)


def save_sklearn(path: Path, *, flip: bool = False, forest: bool = False) -> Any:
    """A fitted classifier saved with MLflow (signature and input example); returns it."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    frame, labels = training_data()
    model = RandomForestClassifier(10, random_state=0) if forest else LogisticRegression()
    model.fit(frame, 1 - labels if flip else labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.sklearn.save_model(
            model,
            str(path),
            serialization_format="cloudpickle",
            signature=infer_signature(frame, model.predict(frame)),
            input_example=frame.head(3),
            pip_requirements=["scikit-learn"],
        )
    return model


def register_versions(tracking_uri: str, root: Path, name: str = "churn") -> list[Any]:
    """Versions 1 and 2 of `name` (2 predicts the opposite class); champion -> 1."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.create_registered_model(name)
    models = []
    for version, flip in ((1, False), (2, True)):
        path = root / f"{name}-v{version}"
        models.append(save_sklearn(path, flip=flip))
        client.create_model_version(name, source=str(path))
    client.set_registered_model_alias(name, "champion", "1")
    return models


# ---------------------------------------------------------------------- clients and servers
def test_client(app: Any) -> Any:
    """Starlette's TestClient (its import warns about httpx; the warning is not ours)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    return TestClient(app)


test_client.__test__ = False  # type: ignore[attr-defined]


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def http_post(
    url: str, path: str, bodies: Sequence[bytes], *, connections: int = 16,
    content_type: str = "application/json",
) -> list[Reply]:  # fmt: skip
    """POST every body over `connections` keep-alive connections; replies in body order.

    A bare HTTP/1.1 client on asyncio streams: httpx's pool costs milliseconds per request at
    this concurrency, which would make the test measure the client."""
    host, port = url.removeprefix("http://").split(":")
    replies: list[Reply | None] = [None] * len(bodies)
    work = iter(enumerate(bodies))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for index, body in work:  # one shared iterator: each body goes out once
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                )
                writer.write(head.encode() + body)
                replies[index] = await read_reply(reader)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(min(connections, len(bodies)))))
    return [r for r in replies if r is not None]


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    status = int((await reader.readline()).split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Reply(status, headers, body)


@contextmanager
def running(app: Any, timeout: float = 20.0) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on a free loopback port; yields its base URL."""
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:  # bounded: the thread dies or the deadline passes
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
