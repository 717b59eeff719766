"""Shared fixtures: real services only. A service that cannot start fails the run, never skips."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="module")
def kafka_broker() -> Iterator[object]:
    """A fresh tansu broker per test module (it keeps everything in memory)."""
    from kafka_broker import start_tansu

    broker = start_tansu()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[object]:
    """One moto server (every AWS service on one loopback port) for the whole run; tests give
    their streams, buses and endpoints unique names instead of resetting it."""
    from moto_server import start_moto

    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server: object, monkeypatch: pytest.MonkeyPatch) -> object:
    """The standard AWS variables pointed at the shared moto server for this test only."""
    for name, value in moto_server.env().items():  # type: ignore[attr-defined]
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_server


@pytest.fixture(autouse=True)
def _mlflow_uris_reset() -> Iterator[None]:
    """MLflow keeps its tracking and registry URIs process-wide (a model server sets them):
    a test that set them must not send the next test's bare `MlflowClient` elsewhere."""
    yield
    if "mlflow" in sys.modules:
        import mlflow.tracking._model_registry.utils as registry_utils
        import mlflow.tracking._tracking_service.utils as tracking_utils

        tracking_utils._tracking_uri = None
        registry_utils._registry_uri = None


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Embedded defaults under tmp_path (EVENTOPS_HOME), with no EVENTOPS_* from the caller's
    environment leaking in, and tmp_path as the working directory."""
    folder = tmp_path / "home"
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("EVENTOPS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("EVENTOPS_HOME", str(folder))
    return folder


def wait_for(
    condition: Callable[[], object], timeout: float = 30.0, interval: float = 0.02
) -> None:
    """Wait until `condition()` is truthy; fail the test with a clear message on timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(
                f"condition not met within {timeout}s: {getattr(condition, '__name__', condition)}"
            )
        time.sleep(interval)
