"""The alert service against a real HTTP receiver on loopback and a real metadata store.

The receiver is `http.server` in a thread on a free 127.0.0.1 port; Slack and the generic
webhook post to it. Time is a fake clock handed to the service, so cooldowns and retry
backoffs are crossed by moving the clock, never by sleeping. The core scenarios run on SQLite
and on PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from conftest import wait_for
from eventops.cli import app
from eventops.errors import ConfigError
from eventops.events.bus import open_bus
from eventops.events.envelope import Event
from eventops.monitoring.alerts import AlertRule, AlertService
from eventops.monitoring.channels import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Log,
    Slack,
    Webhook,
    verify_signature,
)
from eventops.store import OutboxEntry, Store
from eventops.store.alerts import AlertStateRow
from store_db import DATABASES, database_for

DRIFT, PERF, CHECK = (
    "monitor.drift.detected",
    "monitor.performance.degraded",
    "monitor.check.completed",
)
SLACK_TOKEN = "xoxSLACKt0ken"  # the secret part of a Slack hook URL
HOOK_SECRET = "hookS3CRET"  # pragma: allowlist secret


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Records every POST; answers `status` (200 unless a test says otherwise)."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.status = 200
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts.append(Post(self.path, dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Close the socket: connections to the port are refused until `start()`."""
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Post]:
        return [p for p in self.posts if p.path == path]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


SLACK_PATH, HOOK_PATH = f"/services/T0/B0/{SLACK_TOKEN}", "/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def environ(receiver: Receiver) -> dict[str, str]:
    return {"SLACK_URL": receiver.url(SLACK_PATH), "HOOK_SECRET": HOOK_SECRET}


def drift_rule(receiver: Receiver, **overrides: Any) -> AlertRule:
    options: dict[str, Any] = {
        "name": "drift",
        "on": [DRIFT, PERF],
        "where": {"monitor": "churn-drift"},
        "severity": "warning",
        "channels": [
            Slack(webhook_url_env="SLACK_URL", max_attempts=2, backoff=0.01, timeout=2),
            Webhook(url=receiver.url(HOOK_PATH), secret_env="HOOK_SECRET", max_attempts=2,
                    backoff=0.01, timeout=2),
            Log(),
        ],
        "cooldown": "10m",
        "group_by": "monitor",
        "resolve_on": [CHECK],
    }  # fmt: skip
    return AlertRule(**{**options, **overrides})


def make_service(
    store: Store, receiver: Receiver, environ: dict[str, str], clock: Clock, **options: Any
) -> AlertService:
    rules = options.pop("rules", None) or [drift_rule(receiver)]
    return AlertService(store, rules, clock=clock, environ=environ, retry_backoff=30, **options)


@pytest.fixture(params=DATABASES)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with database_for(request.param, tmp_path) as url:
        store = Store(url)
        store.upgrade()
        yield store
        store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path}/meta.db")
    store.upgrade()
    yield store
    store.close()


def drift(monitor: str = "churn-drift", **data: Any) -> Event:
    return Event(type=DRIFT, subject=monitor, correlationid="loop-7",
                 data={"monitor": monitor, "drifted_columns": ["age", "plan"], **data})  # fmt: skip


def check(monitor: str = "churn-drift", **data: Any) -> Event:
    return Event(type=CHECK, subject=monitor, data={"monitor": monitor, **data})


def state(store: Store, group: str = "churn-drift") -> AlertStateRow:
    with store.session() as session:
        row = session.get(AlertStateRow, ("drift", group))
        assert row is not None
        return row


def outbox(store: Store, type_: str) -> list[Event]:
    with store.session() as session:
        rows = session.scalars(select(OutboxEntry).where(OutboxEntry.type == type_)).all()
        return [Event.from_json(row.payload) for row in rows]


# ---------------------------------------------------------------------- the life of an alert
def test_fire_deduplicate_renotify_and_resolve(
    any_store: Store, receiver: Receiver, environ: dict[str, str]
) -> None:
    clock = Clock()
    service = make_service(any_store, receiver, environ, clock)
    first = drift()
    assert [o.action for o in service.handle(first)] == ["fired"]
    [slack], [hook] = receiver.on(SLACK_PATH), receiver.on(HOOK_PATH)
    assert slack.json()["blocks"][0]["text"]["text"] == "FIRING: drift (warning)"
    body = hook.json()
    assert (body["rule"], body["severity"], body["status"]) == ("drift", "warning", "firing")
    assert body["summary"] == "churn-drift: drift in 2 column(s): age, plan"
    assert body["event"]["id"] == first.id
    assert verify_signature(
        HOOK_SECRET, hook.body, hook.headers[TIMESTAMP_HEADER], hook.headers[SIGNATURE_HEADER]
    )
    [fired] = outbox(any_store, "alert.fired")
    assert fired.data["group"] == "churn-drift" and fired.data["cause_event_id"] == first.id
    assert fired.causationid == first.id and fired.correlationid == "loop-7"

    for _ in range(3):  # inside the cooldown: counted, not sent
        clock.now += 60
        assert [o.action for o in service.handle(drift())] == ["deduplicated"]
    assert len(receiver.posts) == 2
    row = state(any_store)
    assert (row.status, row.count, row.deduplicated, row.notifications) == ("firing", 4, 3, 1)
    assert not row.delivery_pending and row.last_delivery_error is None

    clock.now += 600  # past the cooldown since the last notification: one reminder
    assert [o.action for o in service.handle(drift())] == ["renotified"]
    assert service.handle(drift())[0].action == "deduplicated"
    assert receiver.on(HOOK_PATH)[-1].json()["notification"] == 2
    assert receiver.on(SLACK_PATH)[-1].json()["blocks"][0]["text"]["text"].startswith("STILL")
    assert len(outbox(any_store, "alert.fired")) == 1  # a reminder is not a new state

    clock.now += 60
    assert service.handle(check(drifted=True)) == []  # still drifting: no change
    assert service.handle(check()) == []  # no 'drifted' field: not a clean check
    assert [o.action for o in service.handle(check(drifted=False))] == ["resolved"]
    resolved = receiver.on(HOOK_PATH)[-1].json()
    assert resolved["status"] == "resolved" and resolved["summary"].startswith("resolved after")
    [announced] = outbox(any_store, "alert.resolved")
    assert announced.data["count"] == 6
    assert state(any_store).status == "resolved"
    assert service.handle(check(drifted=False)) == []  # already resolved

    clock.now += 1
    assert [o.action for o in service.handle(drift())] == ["fired"]  # a new firing, no cooldown
    assert state(any_store).count == 1
    service.close()


def test_groups_are_independent_and_filters_apply(
    store: Store, receiver: Receiver, environ: dict[str, str]
) -> None:
    rule = drift_rule(receiver, where={})
    service = make_service(store, receiver, environ, Clock(), rules=[rule])
    assert service.handle(drift("churn-drift"))[0].action == "fired"
    assert service.handle(drift("fraud-drift"))[0].action == "fired"
    assert service.handle(Event(type="dataset.batch.rejected", data={})) == []
    assert {state(store, g).status for g in ("churn-drift", "fraud-drift")} == {"firing"}
    filtered = make_service(store, receiver, environ, Clock(), consumer="other")
    assert filtered.handle(drift("fraud-drift")) == []  # where: monitor == churn-drift


def test_a_replayed_event_changes_nothing(
    store: Store, receiver: Receiver, environ: dict[str, str]
) -> None:
    service = make_service(store, receiver, environ, Clock())
    event = drift()
    assert service.handle(event)[0].action == "fired"
    assert service.handle(event) == []
    assert make_service(store, receiver, environ, Clock()).handle(event) == []  # a restart too
    assert len(receiver.posts) == 2 and state(store).count == 1


# ---------------------------------------------------------------------- delivery
def test_a_receiver_that_is_down_gets_the_alerts_when_it_is_back(
    store: Store, receiver: Receiver, environ: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    service = make_service(store, receiver, environ, clock)
    receiver.stop()
    assert service.handle(drift())[0].action == "fired"
    clock.now += 60
    assert service.handle(check(drifted=False))[0].action == "resolved"
    row = state(store)
    assert row.delivery_pending and len(row.pending) == 2
    assert row.delivery_attempts == 2 and "ConnectError" in (row.last_delivery_error or "")
    assert "delivery failed" in caplog.text

    assert service.retry_pending() == 0  # not due yet: the backoff holds
    receiver.start()  # the same port, up again
    clock.now += 3600
    assert service.retry_pending() == 2
    statuses = [p.json()["status"] for p in receiver.on(HOOK_PATH)]
    assert statuses == ["firing", "resolved"]  # in order
    assert len(receiver.on(SLACK_PATH)) == 2
    row = state(store)
    assert not row.delivery_pending and row.pending == [] and row.last_delivery_error is None
    assert service.retry_pending() == 0


def test_only_the_failed_channel_is_retried(
    store: Store, receiver: Receiver, environ: dict[str, str]
) -> None:
    clock = Clock()
    rule = drift_rule(receiver)
    broken = {**environ, "SLACK_URL": receiver.url("/status/503")}
    service = make_service(store, receiver, broken, clock, rules=[rule])
    receiver.status = 503
    service.handle(drift())
    receiver.status = 200
    assert {p.path for p in receiver.posts} == {"/status/503", HOOK_PATH}
    assert state(store).pending[0]["channels"] == ["0-slack", "1-webhook"]
    receiver.posts.clear()
    clock.now += 31
    assert service.retry_pending() == 1
    assert [p.path for p in receiver.posts] == ["/status/503", HOOK_PATH]


def test_a_crash_between_commit_and_delivery_delivers_on_retry(
    store: Store, receiver: Receiver, environ: dict[str, str]
) -> None:
    clock = Clock()

    class Crashing(AlertService):
        def deliver(self, rule_name: str, group: str, *, due_only: bool = False) -> int:
            raise SystemExit("killed after the commit")

    with pytest.raises(SystemExit):
        Crashing(store, [drift_rule(receiver)], clock=clock, environ=environ).handle(drift())
    assert receiver.posts == [] and state(store).delivery_pending
    restarted = make_service(store, receiver, environ, clock)
    assert restarted.retry_pending() == 0  # the lease of the crashed delivery still holds
    clock.now += 121
    assert restarted.retry_pending() == 1
    assert len(receiver.posts) == 2 and not state(store).delivery_pending


def test_delivery_gives_up_after_the_rounds_with_the_error_kept(
    store: Store, receiver: Receiver, environ: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    service = make_service(store, receiver, environ, clock, max_delivery_rounds=2)
    receiver.status = 500
    service.handle(drift())
    assert state(store).delivery_attempts == 1
    clock.now += 31
    service.retry_pending()
    row = state(store)
    assert not row.delivery_pending and row.pending == []
    assert "HTTP 500" in (row.last_delivery_error or "")
    assert "gave up delivering after 2 rounds" in caplog.text


def test_secrets_never_reach_logs_state_or_events(
    store: Store, receiver: Receiver, environ: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    service = make_service(store, receiver, environ, clock)
    service.handle(drift())
    receiver.stop()  # failures put errors in the log and on the row
    clock.now += 700
    service.handle(drift())
    receiver.start()
    assert receiver.posts and state(store).last_delivery_error
    with store.session() as session:
        rows = [repr(vars(r)) for r in session.scalars(select(AlertStateRow))]
        rows += [r.payload for r in session.scalars(select(OutboxEntry))]
    for secret in (SLACK_TOKEN, HOOK_SECRET):
        assert secret not in caplog.text
        assert not any(secret in text for text in rows)


def test_a_missing_secret_stops_the_start_naming_the_variable(
    store: Store, receiver: Receiver
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_service(store, receiver, {"HOOK_SECRET": "x"}, Clock())
    assert caught.value.field == "alerts.drift.channels[0].webhook_url_env"
    assert "SLACK_URL" in str(caught.value)


# ---------------------------------------------------------------------- wiring
def test_the_subscription_feeds_the_service_from_the_bus(
    store: Store, receiver: Receiver, environ: dict[str, str], tmp_path: Path
) -> None:
    bus = open_bus(f"sqlite:///{tmp_path}/events.db")
    service = make_service(store, receiver, environ, Clock())
    subscription = service.subscription(bus, "test-alerts", start="earliest").start()
    try:
        bus.publish([drift(), check(drifted=False)])
        wait_for(lambda: len(receiver.on(HOOK_PATH)) == 2, timeout=20)
    finally:
        subscription.stop()
        bus.close()
    assert [p.json()["status"] for p in receiver.on(HOOK_PATH)] == ["firing", "resolved"]


def test_the_cli_lists_states_and_sends_a_test(
    store: Store,
    receiver: Receiver,
    environ: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVENTOPS_STORE_URL", f"sqlite:///{tmp_path}/meta.db")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    make_service(store, receiver, environ, Clock()).handle(drift())
    receiver.posts.clear()
    runner = CliRunner()
    result = runner.invoke(app, ["alerts", "list", "--json"])
    assert result.exit_code == 0, result.output
    [listed] = json.loads(result.stdout)
    assert (listed["rule"], listed["group"], listed["status"], listed["count"]) == (
        "drift", "churn-drift", "firing", 1
    )  # fmt: skip
    project = tmp_path / "alerting.py"
    project.write_text(
        "from eventops.monitoring.alerts import AlertRule\n"
        "from eventops.monitoring.channels import Slack, Webhook\n"
        f"alerts = [AlertRule(name='drift', on=['{DRIFT}'], channels=["
        "Slack(webhook_url_env='SLACK_URL'), "
        f"Webhook(url='{receiver.url(HOOK_PATH)}', secret_env='HOOK_SECRET')])]\n"
    )
    result = runner.invoke(app, ["alerts", "test", "drift", "--project", str(project)])
    assert result.exit_code == 0, result.output
    assert "0: slack (SLACK_URL): sent" in result.stdout
    assert [p.json()["test"] for p in receiver.on(HOOK_PATH)] == [True]
    assert len(receiver.on(SLACK_PATH)) == 1
    result = runner.invoke(app, ["alerts", "test", "nope", "--project", str(project)])
    assert result.exit_code == 3 and "no alert rule 'nope'" in result.output
    monkeypatch.delenv("SLACK_URL")
    result = runner.invoke(app, ["alerts", "test", "drift", "--project", str(project)])
    assert result.exit_code == 4
    assert "alerts.drift.channels[0].webhook_url_env" in result.output
