"""Capture to the lake, feedback through the outbox, canary and shadow traffic, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from conftest import wait_for
from eventops.lake import Lake, LakeStorage
from eventops.serving.app import create_app
from eventops.serving.capture import PredictionCapture
from eventops.serving.deployment import Deployment
from eventops.serving.models import ModelSlot
from eventops.store import OutboxEntry, Store
from serving_models import fake_model, http_post, linear, running, test_client


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    store = Store(f"sqlite:///{tmp_path}/store.db")
    store.upgrade()
    yield Lake(store, LakeStorage(str(tmp_path / "lake")))
    store.close()


def outbox(store: Store, type_: str) -> list[dict[str, Any]]:
    with store.session() as session:
        rows = session.scalars(select(OutboxEntry).where(OutboxEntry.type == type_))
        return [orjson.loads(r.payload) for r in rows]


def records(*pairs: tuple[float, float]) -> dict[str, Any]:
    return {"dataframe_records": [{"a": a, "b": b} for a, b in pairs]}


# ---------------------------------------------------------------------- capture
def test_captured_predictions_reach_the_lake_with_their_ids(lake: Lake) -> None:
    capture = PredictionCapture(lake, "predictions_api", flush_rows=1000, flush_seconds=60)
    app = create_app(
        fake_model(), deployment=Deployment(name="api", model="linear"), capture=capture
    )
    with test_client(app) as client:
        answers = [client.post("/invocations", json=records((i, 1.0), (i, 2.0))) for i in range(5)]
        assert capture.buffered_rows == 10  # nothing written yet: under flush_rows, before T
    # leaving the client shut the app down, which flushes
    table = lake.read("predictions_api").to_pylist()
    ids = [pid for a in answers for pid in a.json()["prediction_ids"]]
    assert [r["prediction_id"] for r in table] == ids
    assert [(r["a"], r["b"], r["prediction"]) for r in table][:2] == [
        (0.0, 1.0, 1.0),
        (0.0, 2.0, 2.0),
    ]
    assert {r["model_version"] for r in table} == {"1"} and {r["role"] for r in table} == {
        "primary"
    }
    assert all(r["served_at"] is not None for r in table)
    ingested = outbox(lake.store, "dataset.batch.ingested")
    assert [e["data"]["dataset"] for e in ingested] == ["predictions_api"]
    assert ingested[0]["data"]["rows"] == 10


def test_capture_flushes_every_n_rows_and_every_t_seconds(lake: Lake) -> None:
    by_rows = PredictionCapture(lake, "by_rows", flush_rows=4, flush_seconds=60)
    by_time = PredictionCapture(lake, "by_time", flush_rows=10_000, flush_seconds=0.05)
    inputs_model = fake_model()
    from eventops.serving.inputs import Inputs

    one = Inputs(2, "matrix", np.array([[1.0, 2.0], [3.0, 4.0]]))
    for capture in (by_rows, by_time):
        capture.start()
        for _ in range(2):
            capture.record(one, ("a", "b"), np.array([1, 2]), ["x", "y"], inputs_model.version)
    try:
        wait_for(lambda: by_rows.rows_committed == 4, timeout=10)
        wait_for(lambda: by_time.rows_committed == 4, timeout=10)
    finally:
        by_rows.close()
        by_time.close()
    assert lake.read("by_rows").num_rows == 4 and lake.read("by_time").num_rows == 4


def test_a_lake_outage_keeps_rows_buffered_up_to_a_bound() -> None:
    class Down:
        def commit_batch(self, name: str, table: Any, *, source: str) -> Any:
            raise OSError("lake down")

    from eventops.serving.inputs import Inputs

    capture = PredictionCapture(Down(), "x", flush_rows=10**6, max_buffer_rows=5)
    one = Inputs(2, "matrix", np.array([[1.0, 2.0], [3.0, 4.0]]))
    for _ in range(4):
        capture.record(one, ("a", "b"), np.array([1, 2]), ["i", "j"], "1")
    with pytest.raises(OSError):
        capture.flush()
    assert capture.buffered_rows == 4 and capture.rows_dropped == 4  # oldest dropped, rest kept
    assert capture.last_error == "OSError: lake down"


def test_a_failed_flush_is_retried_at_the_next_interval_not_on_every_request() -> None:
    attempts: list[int] = []

    class Down:
        def commit_batch(self, name: str, table: Any, *, source: str) -> Any:
            attempts.append(table.num_rows)
            raise OSError("lake down")

    from eventops.serving.inputs import Inputs

    capture = PredictionCapture(Down(), "x", flush_rows=1, flush_seconds=3600)
    one = Inputs(1, "matrix", np.array([[1.0, 2.0]]))
    capture.start()
    try:
        capture.record(one, ("a", "b"), np.array([1]), ["i"], "1")
        wait_for(lambda: capture.last_error is not None)
        capture.record(one, ("a", "b"), np.array([1]), ["j"], "1")
        # the flusher is not woken again: each wake-up rebuilt a table of the whole buffer
        assert not capture._due.is_set() and attempts == [1]
    finally:
        capture.close(attempts=1)
    assert attempts == [1, 2] and capture.rows_dropped == 2  # shutdown: logged and counted


def test_requests_that_cannot_share_a_table_do_not_stop_capture() -> None:
    """A model without a signature answered 2-D and 1-D inputs (no one table holds both), and
    a request whose answer has too few rows (no table at all): the rest is still written."""
    from eventops.serving.inputs import Inputs

    class Tables:
        def __init__(self) -> None:
            self.ids: list[str] = []

        def commit_batch(self, name: str, table: Any, *, source: str) -> Any:
            self.ids += table.column("prediction_id").to_pylist()

    lake = Tables()
    counted: list[tuple[str, int]] = []
    capture = PredictionCapture(
        lake, "mixed", flush_rows=10**6, on_rows=lambda outcome, rows: counted.append((outcome, rows))
    )  # fmt: skip
    wide = Inputs(1, "tensor", np.array([[1.0, 2.0]]))
    flat = Inputs(1, "tensor", np.array([3.0]))
    capture.record(wide, (), np.array([1]), ["w"], "1")
    capture.record(flat, (), np.array([2]), ["f"], "1")
    capture.record(Inputs(2, "tensor", np.array([4.0, 5.0])), (), np.array([3]), ["x", "y"], "1")
    capture.record(flat, (), np.array([4]), ["g"], "1")
    assert capture.flush() == 3
    assert capture.buffered_rows == 0 and capture.rows_dropped == 2
    assert ("dropped", 2) in counted and ("committed", 3) in counted
    assert sorted(lake.ids) == ["f", "g", "w"]


def test_sampling_captures_a_seeded_share_of_requests(lake: Lake) -> None:
    capture = PredictionCapture(lake, "sampled", sample=0.25, seed=7)
    draws = [capture.wants() for _ in range(2000)]
    assert 400 < sum(draws) < 600
    assert not any(PredictionCapture(lake, "none", sample=0.0).wants() for _ in range(100))


# ---------------------------------------------------------------------- feedback
def test_feedback_is_announced_through_the_outbox(lake: Lake) -> None:
    app = create_app(
        fake_model(), deployment=Deployment(name="api", model="linear"), store=lake.store
    )
    with test_client(app) as client:
        one = client.post("/feedback", json={"prediction_id": "p-1", "label": 1})
        many = client.post(
            "/feedback", json=[{"prediction_id": f"p-{i}", "label": "yes"} for i in (2, 3)]
        )
    assert (one.status_code, one.json()["accepted"]) == (202, 1)
    assert many.json()["accepted"] == 2
    events = outbox(lake.store, "feedback.received")
    assert [(e["subject"], e["data"]) for e in events] == [
        ("p-1", {"prediction_id": "p-1", "label": 1, "deployment": "api"}),
        ("p-2", {"prediction_id": "p-2", "label": "yes", "deployment": "api"}),
        ("p-3", {"prediction_id": "p-3", "label": "yes", "deployment": "api"}),
    ]


@pytest.mark.parametrize(
    ("body", "status", "field", "rule"),
    [
        (b"{", 400, "body", "json"),
        (b"[]", 422, "body", "non-empty"),
        (b'{"label": 1}', 422, "prediction_id", "required"),
        (b'{"prediction_id": 5, "label": 1}', 422, "prediction_id", "type"),
        (b'{"prediction_id": "p"}', 422, "label", "required"),
        (b'{"prediction_id": "p", "label": null}', 422, "label", "required"),
        (
            b'[{"prediction_id": "p", "label": 1}, {"prediction_id": "q"}]',
            422,
            "[1].label",
            "required",
        ),
        (b'{"prediction_id": "p", "label": 1, "score": 3}', 422, "score", "known-field"),
        (b"[1]", 422, "[0]", "object"),
    ],
)
def test_bad_feedback_is_refused_naming_the_field(
    lake: Lake, body: bytes, status: int, field: str, rule: str
) -> None:
    app = create_app(fake_model(), store=lake.store)
    with test_client(app) as client:
        response = client.post(
            "/feedback", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == status, response.text
    assert (response.json()["error"]["field"], response.json()["error"]["rule"]) == (field, rule)
    assert outbox(lake.store, "feedback.received") == []  # a bad body is refused whole


def test_tokens_guard_feedback_and_optionally_predictions(lake: Lake) -> None:
    good = {"prediction_id": "p", "label": 1}
    predict = records((1.0, 2.0))
    open_predictions = create_app(fake_model(), store=lake.store, token="s3cret")
    protected = create_app(
        fake_model(), deployment=Deployment(name="x", model="linear", protect_predictions=True),
        store=lake.store, token="s3cret",
    )  # fmt: skip
    no_token_remote = create_app(fake_model(), store=lake.store, anonymous_feedback=False)
    bearer = {"authorization": "Bearer s3cret"}
    with test_client(open_predictions) as client:
        assert client.post("/feedback", json=good).status_code == 401
        assert (
            client.post("/feedback", json=good, headers={"authorization": "Bearer no"}).status_code
            == 403
        )
        assert client.post("/feedback", json=good, headers=bearer).status_code == 202
        assert client.post("/invocations", json=predict).status_code == 200
    with test_client(protected) as client:
        assert client.post("/invocations", json=predict).status_code == 401
        assert client.post("/invocations", json=predict, headers=bearer).status_code == 200
        assert client.get("/metrics").status_code == 200  # read-only routes stay open
    with test_client(no_token_remote) as client:
        refused = client.post("/feedback", json=good)
        assert (refused.status_code, refused.json()["error"]["rule"]) == (403, "token-configured")
    protected_without_token = create_app(
        fake_model(), deployment=Deployment(name="x", model="linear", protect_predictions=True)
    )
    with test_client(protected_without_token) as client:  # closed, not open
        refused = client.post("/invocations", json=predict)
        assert (refused.status_code, refused.json()["error"]["rule"]) == (403, "token-configured")


# ---------------------------------------------------------------------- canary and shadow
def test_canary_sends_a_seeded_share_to_the_challenger() -> None:
    champion, challenger = (
        fake_model(version="1"),
        fake_model(linear(1000.0), version="2", alias="challenger"),
    )
    deployment = Deployment(name="api", model="linear", mode="canary", canary_percent=20)
    app = create_app(champion, deployment=deployment, challenger=challenger, seed=3)
    bodies = [orjson.dumps(records((i, 0.0))) for i in range(500)]
    with running(app) as url:
        replies = asyncio.run(http_post(url, "/invocations", bodies, connections=8))
    roles = [r.headers["x-model-role"] for r in replies]
    assert 70 < roles.count("canary") < 130  # 20% of 500, give or take chance
    for i, reply in enumerate(replies):
        canary = reply.headers["x-model-role"] == "canary"
        assert reply.headers["x-model-version"] == ("2" if canary else "1")
        assert reply.json()["predictions"] == [i * 10 + (1000.0 if canary else 0.0)]


def test_shadow_scores_off_the_request_path_and_is_captured_not_returned(lake: Lake) -> None:
    def slow_failing(frame: Any) -> Any:
        if (frame["a"] == 3).any():
            raise ValueError("the shadow refuses 3")
        return linear(1000.0)(frame)

    champion = fake_model(version="1")
    shadow = fake_model(slow_failing, version="2", alias="challenger")
    capture = PredictionCapture(lake, "predictions_api", flush_seconds=60)
    deployment = Deployment(name="api", model="linear", mode="shadow")
    app = create_app(champion, deployment=deployment, challenger=shadow, capture=capture)
    with test_client(app) as client:
        answers = [client.post("/invocations", json=records((i, 0.0))) for i in range(6)]
        server = app.state.server
        wait_for(lambda: not server.background, timeout=10)
        metrics = client.get("/metrics").text
    assert [a.json()["predictions"] for a in answers] == [[i * 10.0] for i in range(6)]
    assert {a.headers["x-model-version"] for a in answers} == {"1"}
    rows = lake.read("predictions_api").to_pylist()
    primary = {r["prediction_id"]: r["prediction"] for r in rows if r["role"] == "primary"}
    shadowed = {r["prediction_id"]: r["prediction"] for r in rows if r["role"] == "shadow"}
    assert len(primary) == 6 and len(shadowed) == 5  # the refused one is counted, not captured
    for pid, value in shadowed.items():
        assert value == primary[pid] + 1000
    assert 'eventops_serving_shadow_predictions_total{outcome="failed"} 1.0' in metrics


# ---------------------------------------------------------------------- metrics
def test_metrics_are_valid_exposition_and_count_what_happened() -> None:
    slot = ModelSlot("primary", "models:/linear@champion", fake_model(version="1"))
    app = create_app(slot)
    with test_client(app) as client:
        for _ in range(3):
            client.post("/invocations", json=records((1.0, 2.0)))
        client.post("/invocations", json={"dataframe_records": [{"a": 1.0}]})
        slot.swap(fake_model(version="2"))
        app.state.server.metrics.serving("primary", "linear", "2")
        app.state.server.metrics.swapped("primary", "swapped")
        text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}  # fmt: skip
    route = ("route", "/invocations")
    assert samples[("eventops_serving_requests_total", (route, ("status", "200")))] == 3
    assert samples[("eventops_serving_requests_total", (route, ("status", "422")))] == 1
    assert (
        samples[
            ("eventops_serving_errors_total", (("route", "/invocations"), ("rule", "required")))
        ]
        == 1
    )
    assert samples[("eventops_serving_request_seconds_count", (route,))] == 4
    assert samples[("eventops_serving_batch_rows_sum", (("role", "primary"),))] == 3
    info = [(s.labels["version"], s.value) for s in families["eventops_serving_model_info"].samples]
    assert info == [("2", 1.0)]  # the old version's series is gone
    assert (
        samples[
            ("eventops_serving_model_swaps_total", (("outcome", "swapped"), ("role", "primary")))
        ]
        == 1
    )
    assert (
        samples[("eventops_serving_predictions_total", (("role", "primary"), ("version", "1")))]
        == 3
    )
