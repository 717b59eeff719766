"""Following an alias: bus events and the registry poll swap the slot, failed loads keep the
old model, and every swap is announced through the outbox. A fake registry (a dict of
alias -> version) and a fake loader keep MLflow out of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from conftest import wait_for
from eventops.errors import NotFound, ValidationError
from eventops.events.bus import open_bus
from eventops.events.envelope import Event
from eventops.serving.deployment import Deployment
from eventops.serving.follower import AliasFollower
from eventops.serving.models import LoadedModel, ModelRef, ModelSlot
from eventops.store import OutboxEntry, Store
from serving_models import fake_model


class Registry:
    """alias -> version, and a loader that can be told to fail for a version."""

    def __init__(self) -> None:
        self.aliases = {"champion": "1"}
        self.broken: set[str] = set()
        self.loads: list[str] = []

    def resolve(self, uri: str) -> ModelRef:
        alias = uri.rsplit("@", 1)[1]
        if alias not in self.aliases:
            raise NotFound(f"no alias {alias}", field="model_uri", rule="resolvable")
        version = self.aliases[alias]
        return ModelRef(uri, f"models:/churn/{version}", "churn", version, alias)

    def load(self, ref: ModelRef) -> LoadedModel:
        assert ref.version is not None
        self.loads.append(ref.version)
        if ref.version in self.broken:
            raise ValidationError("the input example fails", field="input_example", rule="predict")
        return fake_model(version=ref.version, name="churn", alias=ref.alias)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path}/store.db")
    store.upgrade()
    yield store
    store.close()


def announced(store: Store) -> list[tuple[str, dict[str, Any]]]:
    with store.session() as session:
        rows = session.scalars(select(OutboxEntry).where(OutboxEntry.type.like("deployment.%")))
        return [(r.type, orjson.loads(r.payload)["data"]) for r in rows]


def promoted(version: str, *, alias: str = "champion", kind: str = "promoted") -> Event:
    data = {"model": "churn", "version": version, "alias": alias, "previous_version": None}
    return Event(type=f"model.version.{kind}", subject="churn", data=data)


def test_a_promotion_on_the_bus_swaps_and_is_announced(tmp_path: Path, store: Store) -> None:
    registry = Registry()
    bus = open_bus(f"sqlite:///{tmp_path}/events.db")
    slot = ModelSlot(
        "primary",
        "models:/churn@champion",
        registry.load(registry.resolve("models:/churn@champion")),
    )
    swaps: list[tuple[str, str | None]] = []
    follower = AliasFollower(
        "churn-api", [slot], bus=bus, store=store, poll_seconds=3600,
        loader=registry.load, resolver=registry.resolve,
        on_swap=lambda s, new, old: swaps.append((new.version, old.version if old else None)),
    )  # fmt: skip
    follower.start()
    try:
        wait_for(follower.listening.is_set, timeout=10)
        bus.publish([promoted("7", alias="challenger")])  # another alias: ignored
        registry.aliases["champion"] = "2"
        bus.publish([promoted("2")])
        wait_for(lambda: slot.model is not None and slot.model.version == "2", timeout=10)
        registry.aliases["champion"] = "1"
        bus.publish([promoted("1", kind="rolled_back")])
        wait_for(lambda: slot.model is not None and slot.model.version == "1", timeout=10)
    finally:
        follower.stop()
        bus.close()
    assert swaps == [("2", "1"), ("1", "2")]
    assert [
        (kind, data["version"], data["previous_version"]) for kind, data in announced(store)
    ] == [
        ("deployment.updated", "2", "1"),
        ("deployment.rolled_back", "1", "2"),
    ]
    first = follower.events[0]
    assert first.causationid is not None  # traced to the promotion that caused it
    assert announced(store)[0][1]["deployment"] == "churn-api"


def test_the_registry_poll_is_the_backstop_and_a_broken_version_is_not_served(store: Store) -> None:
    registry = Registry()
    slot = ModelSlot(
        "primary",
        "models:/churn@champion",
        registry.load(registry.resolve("models:/churn@champion")),
    )
    failures: list[str] = []
    follower = AliasFollower(
        "churn-api", [slot], bus=None, store=store, poll_seconds=0.05,
        loader=registry.load, resolver=registry.resolve,
        on_failure=lambda s, exc: failures.append(str(exc)),
    )  # fmt: skip
    follower.start()
    try:
        registry.broken.add("3")
        registry.aliases["champion"] = "3"
        wait_for(lambda: len(failures) >= 2, timeout=10)  # retried on every poll
        assert slot.model is not None and slot.model.version == "1"  # the old one stays
        registry.aliases["champion"] = "4"
        wait_for(lambda: slot.model is not None and slot.model.version == "4", timeout=10)
    finally:
        follower.stop()
    assert "input example" in failures[0]
    assert [(k, d["version"]) for k, d in announced(store)] == [("deployment.updated", "4")]


def test_a_challenger_that_appears_later_is_picked_up(store: Store) -> None:
    registry = Registry()
    challenger = ModelSlot("challenger", "models:/churn@challenger")
    follower = AliasFollower("api", [challenger], store=store, poll_seconds=0.05,
                             loader=registry.load, resolver=registry.resolve)  # fmt: skip
    follower.start()
    try:
        registry.aliases["challenger"] = "5"
        wait_for(lambda: challenger.ready, timeout=10)
    finally:
        follower.stop()
    assert challenger.model is not None and challenger.model.version == "5"
    assert announced(store)[0][1]["role"] == "challenger"


def test_pinned_uris_are_not_followed() -> None:
    slots = [ModelSlot("primary", "models:/churn/3"), ModelSlot("primary", "/models/local")]
    assert AliasFollower("api", slots).slots == []


@pytest.mark.parametrize(
    ("given", "field", "rule"),
    [
        ({"canary_percent": 150}, "deployments.api.canary_percent", "less_than_equal"),
        ({"capture_sample": -0.1}, "deployments.api.capture_sample", "greater_than_equal"),
        ({"mode": "blue-green"}, "deployments.api.mode", "literal_error"),
        ({"max_batch_size": 0}, "deployments.api.max_batch_size", "greater_than_equal"),
        (
            {"mode": "canary", "challenger_alias": "champion"},
            "deployments.api.challenger_alias",
            "distinct-alias",
        ),
        ({"replicas": 3}, "deployments.api.replicas", "known-field"),
        ({"name": "Churn API"}, "deployments.Churn API.name", "string_pattern_mismatch"),
    ],
)
def test_a_deployment_that_cannot_work_is_refused_naming_it(
    given: dict[str, Any], field: str, rule: str
) -> None:
    with pytest.raises(ValidationError) as error:
        Deployment(**{"name": "api", "model": "churn", **given})
    assert (error.value.field, error.value.rule) == (field, rule)


def test_deployment_defaults_and_uris() -> None:
    d = Deployment(name="churn-api", model="churn", mode="shadow")
    assert (d.model_uri, d.challenger_uri) == ("models:/churn@champion", "models:/churn@challenger")
    assert d.capture_dataset == "predictions_churn_api"
    assert (d.max_batch_size, d.max_wait_ms, d.port, d.workers, d.capture_sample) == (
        64,
        5.0,
        8080,
        1,
        1.0,
    )
    assert Deployment(name="x", model="m").challenger_uri is None


def test_an_unexpected_error_is_logged_and_following_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A resolver raising something that is not ours (a dropped connection) and a swap hook
    that raises: each is logged, and the thread keeps following (it used to die silently)."""
    registry = Registry()
    resolves: list[str] = []

    def flaky(uri: str) -> ModelRef:
        resolves.append(uri)
        if len(resolves) == 1:
            raise ConnectionResetError("the registry hung up")
        return registry.resolve(uri)

    def hook(slot: ModelSlot, new: LoadedModel, old: LoadedModel | None) -> None:
        raise RuntimeError("a metrics hook broke")

    slot = ModelSlot(
        "primary", "models:/churn@champion", registry.load(registry.resolve("x@champion"))
    )
    follower = AliasFollower(
        "churn-api", [slot], poll_seconds=0.01, loader=registry.load, resolver=flaky, on_swap=hook
    )
    registry.aliases["champion"] = "2"
    follower.start()
    try:
        wait_for(lambda: slot.model is not None and slot.model.version == "2", timeout=5)
        assert [e.data["version"] for e in follower.events] == ["2"]  # announced all the same
        assert follower._thread is not None and follower._thread.is_alive()
    finally:
        follower.stop()
    assert "the registry hung up" in caplog.text and "a metrics hook broke" in caplog.text


def test_server_parts_close_stops_the_follower_and_flushes_capture(store: Store) -> None:
    """`close()` covers an app whose shutdown never ran: no thread left, no row left."""
    import numpy as np

    from eventops.serving.capture import PredictionCapture
    from eventops.serving.inputs import Inputs
    from eventops.serving.server import ServerParts

    written: list[int] = []

    class Tables:
        def commit_batch(self, name: str, table: Any, *, source: str) -> Any:
            written.append(table.num_rows)

    registry = Registry()
    slot = ModelSlot("primary", "models:/churn@champion")
    follower = AliasFollower(
        "api", [slot], poll_seconds=3600, loader=registry.load, resolver=registry.resolve
    )
    capture = PredictionCapture(Tables(), "p", flush_rows=10**6, flush_seconds=3600)
    capture.record(
        Inputs(1, "matrix", np.array([[1.0, 2.0]])), ("a", "b"), np.array([1]), ["i"], "1"
    )
    follower.start()
    capture.start()
    thread = follower._thread
    assert thread is not None
    parts = ServerParts(None, Deployment(name="api", model="churn"), slot, None, follower, capture,
                        store)  # fmt: skip
    parts.close()
    parts.close()  # idempotent
    assert not thread.is_alive() and written == [1]
