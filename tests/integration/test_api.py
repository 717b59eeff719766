"""The REST API over a real SQLite store, bus and lake and a real MLflow registry: the auth
matrix built from the app's own routes, audited model decisions and run requests, pagination,
the error body, the body-size and rate limits, and the live event stream."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient
from sqlalchemy import select

from conftest import wait_for
from eventops.api import create_api
from eventops.api.context import ApiContext
from eventops.api.tokens import create_token
from eventops.config import Settings, load_settings
from eventops.events.bus import open_configured_bus
from eventops.events.envelope import Event
from eventops.pipelines.dsl import pipeline, step
from eventops.store import OutboxEntry, Store

PUBLIC = {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@step
def api_noop(n: int) -> int:
    return n


@pipeline(name="api-test-pipeline")
def api_test_pipeline(n: int = 1) -> None:
    api_noop(n)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_uri: str) -> Settings:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("EVENTOPS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("EVENTOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EVENTOPS_TRACKING_URI", mlflow_uri)
    return load_settings()


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = Store(settings.store_url)
    store.upgrade()
    yield store
    store.close()


def make_client(settings: Settings, store: Store, **options: Any) -> TestClient:
    return TestClient(create_api(settings, store=store, **options))


@pytest.fixture
def client(settings: Settings, store: Store) -> TestClient:
    return make_client(settings, store, rate_burst=10_000)


@pytest.fixture
def headers(store: Store) -> dict[str, dict[str, str]]:
    out = {}
    for role in ("viewer", "operator", "admin"):
        made = create_token(store, f"{role}-bot", role, actor="test")
        out[role] = {"Authorization": f"Bearer {made.secret}"}
    return out


def routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, concrete path) the app declares, path parameters filled with `x`.

    Read from the app's own OpenAPI document, which FastAPI builds from its routes (included
    routers are nested in the route table, so walking `app.routes` would miss them)."""
    schema: dict[str, Any] = client.app.openapi()  # type: ignore[attr-defined]
    out = []
    for template, operations in schema["paths"].items():
        if template in PUBLIC:
            continue
        path = re.sub(r"\{[^}]+\}", "x", template)
        out.extend((method.upper(), path) for method in sorted(operations))
    return out


def outbox(store: Store, prefix: str) -> list[Event]:
    with store.session() as session:
        rows = session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)).all()
        return [e for e in (Event.from_json(r.payload) for r in rows) if e.type.startswith(prefix)]


# ---------------------------------------------------------------------- auth
def test_every_route_needs_a_token(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    found = routes(client)
    assert len(found) >= 18
    for method, path in found:
        for auth in ({}, {"Authorization": "Bearer eo_wrong"}, {"Authorization": "Basic abc"}):
            response = client.request(method, path, headers=auth)
            assert response.status_code == 401, (method, path, auth)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.json()["error"]["rule"] in ("authenticated", "valid-token")


def test_a_viewer_cannot_change_anything(
    client: TestClient, headers: dict[str, dict[str, str]]
) -> None:
    mutating = [(m, p) for m, p in routes(client) if m in MUTATING]
    assert len(mutating) >= 6
    for method, path in mutating:
        response = client.request(method, path, headers=headers["viewer"], json={})
        assert response.status_code == 403, (method, path)
        assert response.json()["error"]["rule"] == "role"
    assert client.get("/api/tokens", headers=headers["operator"]).status_code == 403


def test_a_revoked_token_gets_401(client: TestClient, headers: dict[str, dict[str, str]]) -> None:
    made = client.post(
        "/api/tokens", headers=headers["admin"], json={"name": "tmp", "role": "viewer"}
    ).json()
    mine = {"Authorization": f"Bearer {made['secret']}"}
    assert client.get("/api/events", headers=mine).status_code == 200
    assert client.delete(f"/api/tokens/{made['id']}", headers=headers["admin"]).status_code == 200
    assert client.get("/api/events", headers=mine).status_code == 401
    listed = client.get("/api/tokens", headers=headers["admin"]).json()["items"]
    assert made["secret"][3:] not in str(listed)
    assert [
        e.data["actor"] for e in outbox(client.app.state.context.store, "audit.token.revoked")
    ] == [  # type: ignore[attr-defined]
        "admin-bot"
    ]


# ---------------------------------------------------------------------- models
def versions(name: str, uri: str, count: int, source: Path) -> None:
    source.mkdir(parents=True, exist_ok=True)
    mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.create_registered_model(name)
    for _ in range(count):
        mlflow.create_model_version(name, source.as_uri())


def test_an_operator_promotes_and_rolls_back_with_audit(
    client: TestClient,
    headers: dict[str, dict[str, str]],
    store: Store,
    mlflow_uri: str,
    tmp_path: Path,
) -> None:
    versions("churn-api", mlflow_uri, 2, tmp_path / "model")
    operator = headers["operator"]
    for version in ("1", "2"):
        response = client.post(
            "/api/models/churn-api/promote",
            headers=operator,
            json={"version": version, "reason": "better"},
        )
        assert response.status_code == 200, response.text
    shown = client.get("/api/models/churn-api", headers=headers["viewer"]).json()
    assert [d["version"] for d in shown["decisions"]][:2] in (["2", "1"], ["1", "2"])
    back = client.post("/api/models/churn-api/rollback", headers=operator, json={})
    assert back.status_code == 200, back.text
    assert back.json()["version"] == "1"
    rejected = client.post("/api/models/churn-api/versions/2/reject", headers=operator)
    assert rejected.status_code == 200, rejected.text
    audited = [(e.type, e.data["actor"], e.subject) for e in outbox(store, "audit.model.")]
    assert audited == [
        ("audit.model.promoted", "operator-bot", "model/churn-api/1"),
        ("audit.model.promoted", "operator-bot", "model/churn-api/2"),
        ("audit.model.rolled_back", "operator-bot", "model/churn-api/1"),
        ("audit.model.rejected", "operator-bot", "model/churn-api/2"),
    ]
    decisions = outbox(store, "model.version.")
    assert {e.data["actor"] for e in decisions} == {"operator-bot"}
    listed = client.get("/api/models", headers=headers["viewer"]).json()["items"]
    assert "churn-api" in [m["name"] for m in listed]
    # rolling back past the first champion is a rule broken: 422 with the error body
    again = client.post("/api/models/churn-api/rollback", headers=operator)
    assert again.status_code == 422
    assert again.json()["error"]["rule"] == "has-previous"


def test_an_operator_requests_a_run(
    client: TestClient, headers: dict[str, dict[str, str]], store: Store
) -> None:
    response = client.post(
        "/api/pipelines/api-test-pipeline/runs",
        headers=headers["operator"],
        json={"params": {"n": 3}},
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    viewer = headers["viewer"]
    run = client.get(f"/api/runs/{run_id}", headers=viewer).json()
    assert (run["status"], run["params"]) == ("requested", {"n": 3})
    assert [r["id"] for r in client.get("/api/runs", headers=viewer).json()["items"]] == [run_id]
    assert client.get(f"/api/runs/{run_id}/logs", headers=viewer).status_code == 200
    assert client.get(f"/api/runs/{run_id}/lineage", headers=viewer).status_code == 200
    [audit] = outbox(store, "audit.run.requested")
    assert audit.data["actor"] == "operator-bot" and audit.subject == f"run/{run_id}"
    unknown = client.post("/api/pipelines/nope/runs", headers=headers["operator"])
    assert unknown.status_code == 404


# ---------------------------------------------------------------------- reads, errors, limits
def test_read_endpoints_answer(client: TestClient, headers: dict[str, dict[str, str]]) -> None:
    for path in ("/api/datasets", "/api/monitors", "/api/monitors/m/checks", "/api/alerts"):
        response = client.get(path, headers=headers["viewer"])
        assert response.status_code == 200, path
        assert response.json() == {"items": [], "next": None}


def test_pages_walk_with_next(
    client: TestClient, headers: dict[str, dict[str, str]], store: Store
) -> None:
    for i in range(4):
        create_token(store, f"extra-{i}", "viewer", actor="test")
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, "type": "audit.token.*"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/events", headers=headers["viewer"], params=params).json()
        assert len(page["items"]) <= 2
        seen.extend(e["id"] for e in page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7  # 3 fixture tokens + 4 here
    tokens: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/tokens", headers=headers["admin"], params=params).json()
        tokens.extend(t["id"] for t in page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    assert len(tokens) == len(set(tokens)) == 7


def test_errors_have_one_body(client: TestClient, headers: dict[str, dict[str, str]]) -> None:
    viewer = headers["viewer"]
    missing = client.get("/api/runs/nope", headers=viewer)
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "field": "run_id", "rule": "exists", "message": "no pipeline run 'nope'",
    }  # fmt: skip
    assert client.get("/api/datasets/nope", headers=viewer).status_code == 404
    bad = client.get("/api/events", headers=viewer, params={"limit": 0})
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "limit"
    assert set(bad.json()["error"]) >= {"field", "rule", "message"}
    cursor = client.get("/api/events", headers=viewer, params={"cursor": "abc"})
    assert cursor.status_code == 422 and cursor.json()["error"]["field"] == "cursor"
    no_body = client.post("/api/models/m/promote", headers=headers["operator"], json={})
    assert no_body.status_code == 422 and no_body.json()["error"]["field"] == "version"
    route = client.get("/api/nothing-here", headers=viewer)
    assert route.status_code == 404 and route.json()["error"]["rule"] == "route"


def test_a_big_body_is_refused(client: TestClient, headers: dict[str, dict[str, str]]) -> None:
    big = {"name": "x" * (2 * 1024 * 1024), "role": "viewer"}
    response = client.post("/api/tokens", headers=headers["admin"], json=big)
    assert response.status_code == 413
    assert response.json()["error"]["rule"] == "max-size"


def test_too_many_requests_get_429(
    settings: Settings, store: Store, headers: dict[str, dict[str, str]]
) -> None:
    client = make_client(settings, store, rate_burst=3, rate_per_second=0.01)
    codes = [client.get("/api/alerts", headers=headers["viewer"]).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/api/alerts", headers=headers["viewer"])
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["rule"] == "rate-limit"
    assert client.get("/api/alerts", headers=headers["operator"]).status_code == 200


# ---------------------------------------------------------------------- live events
def test_the_stream_delivers_an_event_published_after_connecting(
    client: TestClient, headers: dict[str, dict[str, str]], settings: Settings
) -> None:
    ctx: ApiContext = client.app.state.context  # type: ignore[attr-defined]
    result: dict[str, Any] = {}

    def read() -> None:
        result["response"] = client.get(
            "/api/events/stream",
            headers=headers["viewer"],
            params={"max_events": 1, "timeout": 20, "type": "apitest.*"},
        )

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: ctx.streams_ready == 1, timeout=15)
    bus = open_configured_bus(settings)
    try:
        event = Event(type="apitest.ping.sent", source="/tests", data={"n": 1})
        bus.publish([event])
    finally:
        bus.close()
    reader.join(timeout=25)
    response = result["response"]
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert f"id: {event.id}" in response.text
    assert "event: apitest.ping.sent" in response.text


# ---------------------------------------------------------------------- ingestion
def test_an_operator_ingests_records_once_with_audit(
    client: TestClient, headers: dict[str, dict[str, str]], store: Store
) -> None:
    operator = {**headers["operator"], "Idempotency-Key": "order-batch-1"}
    rows = [{"id": 1, "amount": 9.5}, {"id": 2, "amount": 3.0}]
    first = client.post("/api/datasets/orders/records", headers=operator, json=rows)
    assert first.status_code == 201, first.text
    assert first.json()["rows_accepted"] == 2 and first.json()["duplicate"] is False
    again = client.post("/api/datasets/orders/records", headers=operator, json=rows)
    assert again.json()["duplicate"] is True
    assert again.json()["batch_id"] == first.json()["batch_id"]
    shown = client.get("/api/datasets/orders", headers=headers["viewer"]).json()
    assert shown["rows"] == 2
    audited = outbox(store, "audit.dataset.ingested")
    assert [(e.data["actor"], e.data["rows"], e.data["duplicate"]) for e in audited] == [
        ("operator-bot", 2, False),
        ("operator-bot", 0, True),  # the retry is audited too, as a no-op
    ]
    assert outbox(store, "dataset.batch.ingested")[0].data["rows"] == 2


def test_bad_records_are_refused_naming_the_rule(
    client: TestClient, headers: dict[str, dict[str, str]]
) -> None:
    operator = headers["operator"]
    broken = client.post(
        "/api/datasets/orders/records",
        headers={**operator, "Content-Type": "application/json"},
        content=b'[{"id": 1,',
    )
    assert broken.status_code == 400, broken.text
    assert broken.json()["error"]["field"] == "body"
    bad_name = client.post("/api/datasets/Bad Name!/records", headers=operator, json=[{"a": 1}])
    assert bad_name.status_code == 422
    assert bad_name.json()["error"]["field"] == "name"


def test_non_ascii_digits_are_refused_not_crashed(
    client: TestClient, headers: dict[str, dict[str, str]]
) -> None:
    """'²' passes str.isdigit() but not int(): found by the schema fuzzing as a 500."""
    cursor = client.get("/api/monitors/m/checks?cursor=²", headers=headers["viewer"])
    assert cursor.status_code == 422
    assert cursor.json()["error"]["field"] == "cursor"
    version = client.post("/api/models/m/versions/²/reject", headers=headers["operator"])
    assert version.status_code == 422
    assert version.json()["error"]["rule"] == "version"
