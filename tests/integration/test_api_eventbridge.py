"""EventBridge API-destination deliveries into the API: pipeline starts and CloudWatch alarms."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from eventops.api import create_api
from eventops.api.tokens import create_token
from eventops.config import Settings, load_settings
from eventops.events.envelope import Event
from eventops.pipelines.dsl import pipeline, step
from eventops.store import OutboxEntry, Store


@step
def eb_echo(eventbridge_detail: dict[str, Any]) -> int:
    return len(eventbridge_detail)


@pipeline(name="eb-started")
def eb_started(eventbridge_detail: dict[str, Any] | None = None) -> None:
    eb_echo(eventbridge_detail)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("EVENTOPS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("EVENTOPS_HOME", str(tmp_path / "home"))
    return load_settings()


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = Store(settings.store_url)
    opened.upgrade()
    yield opened
    opened.close()


@pytest.fixture
def client(settings: Settings, store: Store) -> TestClient:
    return TestClient(create_api(settings, store=store, rate_burst=10_000))


@pytest.fixture
def headers(store: Store) -> dict[str, dict[str, str]]:
    out = {}
    for role in ("viewer", "operator"):
        made = create_token(store, f"eb-{role}", role, actor="test")
        out[role] = {"Authorization": f"Bearer {made.secret}"}
    return out


def delivery(
    event_id: str = "7bf73129-1428-4cd3-a780-95db273d1602", **changes: Any
) -> dict[str, Any]:
    body = {
        "version": "0",
        "id": event_id,
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-11-23T10:00:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:s3:::lake"],
        "detail": {"bucket": {"name": "lake"}, "object": {"key": "incoming/a.csv"}},
    }
    return body | changes


def alarm(
    state: str, event_id: str = "a1", name: str = "eventops-churn-api-errors"
) -> dict[str, Any]:
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": "123456789012",
        "time": "2026-11-23T10:00:00Z",
        "region": "eu-west-1",
        "resources": [f"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{name}"],
        "detail": {
            "alarmName": name,
            "state": {"value": state, "reason": "Threshold Crossed: 1 datapoint [12.0] > 5.0"},
            "previousState": {"value": "OK" if state == "ALARM" else "ALARM"},
        },
    }


def outbox(store: Store, prefix: str) -> list[Event]:
    with store.session() as session:
        rows = session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)).all()
        return [e for e in (Event.from_json(r.payload) for r in rows) if e.type.startswith(prefix)]


def test_a_delivery_starts_a_run_once(
    client: TestClient, headers: dict[str, Any], store: Store
) -> None:
    first = client.post("/api/aws/eventbridge/pipelines/eb-started", json=delivery(),
                        headers=headers["operator"])  # fmt: skip
    assert first.status_code == 202, first.text
    run_id = first.json()["run_id"]
    again = client.post("/api/aws/eventbridge/pipelines/eb-started", json=delivery(),
                        headers=headers["operator"])  # fmt: skip
    assert again.status_code == 200
    assert again.json()["run_id"] == run_id and again.json()["duplicate"] is True
    run = client.get(f"/api/runs/{run_id}", headers=headers["viewer"]).json()
    assert run["trigger"]["name"] == f"eventbridge:{delivery()['id']}"
    assert run["params"]["eventbridge_detail"]["object"]["key"] == "incoming/a.csv"
    requested = outbox(store, "pipeline.run.requested")
    assert len(requested) == 1
    audits = [
        e for e in outbox(store, "audit.run.requested") if e.data["resource"] == f"run/{run_id}"
    ]
    assert audits[0].data["eventbridge"]["source"] == "aws.s3"
    other = client.post("/api/aws/eventbridge/pipelines/eb-started", json=delivery("another"),
                        headers=headers["operator"])  # fmt: skip
    assert other.status_code == 202 and other.json()["run_id"] != run_id


def test_an_unknown_pipeline_is_404_and_a_later_delivery_can_still_start_it(
    client: TestClient, headers: dict[str, Any]
) -> None:
    answer = client.post("/api/aws/eventbridge/pipelines/nope", json=delivery("x1"),
                         headers=headers["operator"])  # fmt: skip
    assert answer.status_code == 404
    # the failed delivery did not mark its id as handled
    again = client.post("/api/aws/eventbridge/pipelines/nope", json=delivery("x1"),
                        headers=headers["operator"])  # fmt: skip
    assert again.status_code == 404


@pytest.mark.parametrize(
    "path", ["/api/aws/eventbridge/pipelines/eb-started", "/api/aws/eventbridge/alarms"]
)
def test_tokens_and_roles_are_checked(
    client: TestClient, headers: dict[str, Any], path: str
) -> None:
    assert client.post(path, json=alarm("ALARM")).status_code == 401
    assert client.post(path, json=alarm("ALARM"), headers=headers["viewer"]).status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": "aws.s3", "detail-type": "x"}, "id"),
        ({"id": "1", "source": "aws.s3"}, "detail-type"),
        ({"id": "1", "source": "aws.s3", "detail-type": "x", "detail": "text"}, "detail"),
    ],
)
def test_malformed_deliveries_name_the_field(
    client: TestClient, headers: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    answer = client.post("/api/aws/eventbridge/pipelines/eb-started", json=body,
                         headers=headers["operator"])  # fmt: skip
    assert answer.status_code == 422
    assert field in answer.text


def test_alarm_state_changes_become_alert_events(
    client: TestClient, headers: dict[str, Any], store: Store
) -> None:
    fired = client.post("/api/aws/eventbridge/alarms?severity=critical", json=alarm("ALARM", "e1"),
                        headers=headers["operator"])  # fmt: skip
    assert fired.status_code == 202, fired.text
    assert fired.json()["type"] == "alert.fired"
    resolved = client.post("/api/aws/eventbridge/alarms", json=alarm("OK", "e2"),
                           headers=headers["operator"])  # fmt: skip
    assert resolved.json()["type"] == "alert.resolved"
    repeat = client.post("/api/aws/eventbridge/alarms", json=alarm("OK", "e2"),
                         headers=headers["operator"])  # fmt: skip
    assert repeat.json()["status"] == "duplicate"
    ignored = client.post("/api/aws/eventbridge/alarms", json=alarm("INSUFFICIENT_DATA", "e3"),
                          headers=headers["operator"])  # fmt: skip
    assert ignored.json()["status"] == "ignored"
    alerts = outbox(store, "alert.")
    assert [e.type for e in alerts] == ["alert.fired", "alert.resolved"]
    first = alerts[0]
    assert first.data["rule"] == "cloudwatch:eventops-churn-api-errors"
    assert first.data["severity"] == "critical"
    assert "Threshold Crossed" in first.data["summary"]
    assert first.subject is not None and first.subject.endswith(":alarm:eventops-churn-api-errors")
    assert first.id == fired.json()["event_id"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"detail-type": "EC2 Instance State-change Notification"}, "detail-type"),
        ({"detail": {"state": {"value": "ALARM"}}}, "detail.alarmName"),
        ({"detail": {"alarmName": "a", "state": {"value": "RED"}}}, "detail.state.value"),
    ],
)
def test_a_delivery_that_is_not_an_alarm_state_change_is_refused(
    client: TestClient, headers: dict[str, Any], change: dict[str, Any], field: str
) -> None:
    answer = client.post("/api/aws/eventbridge/alarms", json=alarm("ALARM") | change,
                         headers=headers["operator"])  # fmt: skip
    assert answer.status_code == 422
    assert field in answer.text


def test_a_once_key_is_claimed_with_the_run_or_not_at_all(store: Store, tmp_path: Path) -> None:
    from eventops.errors import ValidationError
    from eventops.lake import LakeStorage
    from eventops.pipelines.runner import AlreadyRequested, Runner

    runner = Runner(store, LakeStorage(str(tmp_path / "lake")))
    with pytest.raises(ValidationError):  # a failed request leaves the key free...
        runner.request("eb-started", {"nope": 1}, once=("eventbridge-test", "k1"))
    first = runner.request("eb-started", {}, once=("eventbridge-test", "k1"))
    assert first
    with pytest.raises(AlreadyRequested):  # ...and a recorded one takes it
        runner.request("eb-started", {}, once=("eventbridge-test", "k1"))
    with store.session() as session:
        rows = session.scalars(
            select(OutboxEntry).where(OutboxEntry.type == "pipeline.run.requested")
        )
        assert len(rows.all()) == 1
