"""Monitors on a real store and lake (SQLite and a local folder under EVENTOPS_HOME; one test
also on PostgreSQL): drift windows by rows and by time, replays and restarts, performance on
delayed labels, the Prometheus exposition, the bus end to end, and the CLI."""

from __future__ import annotations

import json
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from typer.testing import CliRunner

from conftest import wait_for
from eventops.cli import app as cli_app
from eventops.config import load_settings
from eventops.events.bus import open_configured_bus
from eventops.events.envelope import Event
from eventops.lake import Lake
from eventops.lake.storage import LakeStorage
from eventops.monitoring.monitors import Check, Monitor, Performance, list_checks
from eventops.monitoring.prometheus import monitor_metrics
from eventops.monitoring.service import MonitorService
from eventops.serving.ids import PredictionIds
from eventops.store import OutboxEntry, OutboxRelay, Store
from eventops.store.monitoring import MonitorLabelRow, MonitorWindowRow
from store_db import DATABASES, database_for

CAPTURE = "predictions_churn_api"
IDS = PredictionIds()
cli = CliRunner()


@pytest.fixture
def lake(home: Path) -> Iterator[Lake]:
    lake = Lake.from_settings(load_settings())
    commit_reference(lake)
    yield lake
    lake.store.close()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def commit_reference(lake: Lake) -> None:
    rng = np.random.default_rng(1)
    reference = pa.table(
        {
            "tenure": rng.normal(0, 1, 2000),
            "plan": rng.choice(["basic", "premium"], 2000),
            "churned": rng.integers(0, 2, 2000),
        }
    )
    lake.commit_batch("reference", reference, source="test")


def capture(
    lake: Lake, rows: int, *, shift: float = 0.0, seed: int = 0, predictions: Any = None
) -> tuple[Event, pa.Table]:
    """A batch as the model server captures it; returns its ingested event and the table."""
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "prediction_id": IDS.new(rows),
            "served_at": pa.array([datetime.now(UTC)] * rows, pa.timestamp("us", tz="UTC")),
            "model_version": ["3"] * rows,
            "role": ["primary"] * rows,
            "tenure": rng.normal(shift, 1, rows),
            "plan": rng.choice(["basic", "premium"], rows),
            "prediction": predictions if predictions is not None else rng.integers(0, 2, rows),
        }
    )
    result = lake.commit_batch(CAPTURE, table, source="serving")
    (event,) = [e for e in result.events if e.type == "dataset.batch.ingested"]
    return event, table


def feedback(prediction_id: str, label: Any, deployment: str = "churn-api") -> Event:
    data = {"prediction_id": prediction_id, "label": label, "deployment": deployment}
    return Event(type="feedback.received", subject=prediction_id, data=data)


def monitor_events(store: Store) -> list[Event]:
    with store.session() as session:
        rows = session.scalars(
            select(OutboxEntry).where(OutboxEntry.type.like("monitor.%")).order_by(OutboxEntry.id)
        )
        return [Event.from_json(r.payload) for r in rows]


def drift_monitor(**kw: Any) -> Monitor:
    data: dict[str, Any] = {
        "name": "churn-drift", "deployment": "churn-api", "reference": "reference",
        "window_rows": 500, **kw,
    }  # fmt: skip
    return Monitor(**data)


# ---------------------------------------------------------------------- drift windows
def test_a_window_closes_once_per_window_rows_of_whole_batches(lake: Lake) -> None:
    service = MonitorService(lake, [drift_monitor()])
    events = [capture(lake, 200, seed=i)[0] for i in range(6)]
    closed = [len(service.handle(e)) for e in events]
    assert closed == [0, 0, 1, 0, 0, 1]  # 600 rows, then 600 more
    first, second = sorted(list_checks(lake.store, "churn-drift"), key=lambda c: c.id)
    assert (first.window_seq, second.window_seq) == (1, 2)
    assert first.batch_ids == [e.data["batch_id"] for e in events[:3]]
    assert second.batch_ids == [e.data["batch_id"] for e in events[3:]]
    assert first.rows == second.rows == 600 and first.trigger == "rows"
    with lake.store.session() as session:
        state = session.get(MonitorWindowRow, ("churn-drift", "drift"))
        assert state is not None and (state.seq, state.rows, state.batch_ids) == (2, 0, [])


def test_a_shifted_window_is_announced_with_its_drifted_columns(lake: Lake) -> None:
    service = MonitorService(lake, [drift_monitor(window_rows=600)])
    (calm,) = service.handle(capture(lake, 600, seed=11)[0])
    assert calm.drifted is False and calm.status == "ok"
    assert [e.type for e in monitor_events(lake.store)] == ["monitor.check.completed"]

    event = capture(lake, 600, shift=1.0, seed=12)[0]
    (shifted,) = service.handle(event)
    assert shifted.drifted and shifted.value == 0.5  # tenure of tenure and plan
    completed, detected = monitor_events(lake.store)[1:]
    assert (completed.type, detected.type) == ("monitor.check.completed", "monitor.drift.detected")
    assert detected.data["drifted_columns"] == ["tenure"]
    assert detected.data["check_id"] == shifted.id and detected.data["monitor"] == "churn-drift"
    assert detected.data["deployment"] == "churn-api" and detected.data["share"] == 0.5
    evidence = detected.data["metrics"]["tenure"]
    assert evidence["p_value"] < 0.025 and evidence["effect"] > 0.5
    assert evidence["effect_name"] == "wasserstein"
    assert detected.causationid == event.id and detected.subject == "churn-drift"
    assert completed.data["metrics"]["drifted_count"] == 1
    assert shifted.event_ids == [completed.id, detected.id]
    assert shifted.result["window"] == {"batches": 1, "missing_batches": []}


def test_a_time_window_closes_on_a_tick(lake: Lake) -> None:
    clock = Clock()
    monitor = drift_monitor(window_rows=None, window_seconds=60)
    service = MonitorService(lake, [monitor], clock=clock)
    opened = clock.now
    assert service.handle(capture(lake, 300, seed=3)[0]) == []
    assert service.tick(opened + timedelta(seconds=59)) == []
    (check,) = service.tick(opened + timedelta(seconds=61))
    assert check.trigger == "time" and check.rows == 300 and check.window_start == opened
    assert service.tick(opened + timedelta(seconds=200)) == []  # nothing new: nothing opens


def test_a_replayed_event_is_not_counted_twice(lake: Lake) -> None:
    service = MonitorService(lake, [drift_monitor()])
    first, second = capture(lake, 200, seed=1)[0], capture(lake, 200, seed=2)[0]
    for event in (first, first, second, first, second):
        assert service.handle(event) == []
    with lake.store.session() as session:
        state = session.get(MonitorWindowRow, ("churn-drift", "drift"))
        assert state is not None and state.rows == 400 and len(state.batch_ids) == 2
    assert len(service.handle(capture(lake, 200, seed=3)[0])) == 1


def test_a_restarted_service_carries_on_with_the_open_window(lake: Lake) -> None:
    before = MonitorService(lake, [drift_monitor()])
    events = [capture(lake, 200, seed=i)[0] for i in range(3)]
    before.handle(events[0])
    before.handle(events[1])
    after = MonitorService(lake, [drift_monitor()])  # a new process: only the store remains
    assert after.handle(events[1]) == []  # redelivered after the restart: already counted
    (check,) = after.handle(events[2])
    assert check.batch_ids == [e.data["batch_id"] for e in events] and check.window_seq == 1


def test_a_declaration_problem_is_recorded_as_a_failed_check(lake: Lake) -> None:
    service = MonitorService(lake, [drift_monitor(features=["tenure", "no_such"])])
    (check,) = service.handle(capture(lake, 600)[0])
    assert check.status == "error" and "no_such" in (check.error or "")
    (completed,) = monitor_events(lake.store)
    assert completed.data["status"] == "error" and completed.data["error"] == check.error


@pytest.mark.parametrize("database", DATABASES)
def test_two_services_close_one_window_once(database: str, tmp_path: Path) -> None:
    with database_for(database, tmp_path) as url:
        store = Store(url)
        store.upgrade()
        lake = Lake(store, LakeStorage(str(tmp_path / "lake")))
        try:
            commit_reference(lake)
            monitor = drift_monitor(window_rows=None, window_seconds=30)
            services = [MonitorService(lake, [monitor]) for _ in range(2)]
            services[0].handle(capture(lake, 300)[0])
            later = datetime.now(UTC) + timedelta(minutes=5)
            found: list[list[Check]] = []
            threads = [
                threading.Thread(target=lambda s=s: found.append(s.tick(later))) for s in services
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert sorted(len(f) for f in found) == [0, 1]
            (check,) = list_checks(store, "churn-drift")
            assert check.window_seq == 1 and check.rows == 300
            assert len(monitor_events(store)) == 1
        finally:
            store.close()


# ---------------------------------------------------------------------- performance
def perf_monitor(**kw: Any) -> Monitor:
    performance = Performance(metric="accuracy", min=0.8, window_labels=100, **kw)
    return Monitor(name="churn-perf", deployment="churn-api", performance=performance)


def test_labels_join_captured_predictions_and_a_bad_window_is_degraded(lake: Lake) -> None:
    service = MonitorService(lake, [perf_monitor()])
    predictions = np.arange(300) % 2
    event, table = capture(lake, 300, predictions=predictions)
    service.handle(event)
    ids = table["prediction_id"].to_pylist()
    checks: list[Check] = []
    for i, pid in enumerate(ids[:100]):  # all right
        checks += service.handle(feedback(pid, int(predictions[i])))
    for i, pid in enumerate(ids[100:200], start=100):  # half wrong: accuracy 0.5
        checks += service.handle(feedback(pid, int(predictions[i]) if i % 2 else 1))
    good, bad = checks
    assert (good.value, good.degraded, bad.value, bad.degraded) == (1.0, False, 0.5, True)
    assert bad.result["matched"] == 100 and bad.result["by_version"] == {
        "3": {"labels": 100, "accuracy": 0.5}
    }
    events = monitor_events(lake.store)
    assert [e.type for e in events] == [
        "monitor.check.completed", "monitor.check.completed", "monitor.performance.degraded",
    ]  # fmt: skip
    degraded = events[-1].data
    assert (degraded["metric"], degraded["value"], degraded["min"]) == ("accuracy", 0.5, 0.8)
    assert degraded["check_id"] == bad.id and degraded["metrics"]["labels"] == 100


def test_feedback_before_its_capture_waits_and_unknown_ids_are_reported(lake: Lake) -> None:
    clock = Clock()
    service = MonitorService(lake, [perf_monitor(match_timeout_seconds=60)], clock=clock)
    ids = IDS.new(60)
    for pid in ids:  # the server has not flushed these predictions yet
        assert service.handle(feedback(pid, 1)) == []
    strangers = IDS.new(40)  # never captured (not sampled)
    for pid in strangers:
        assert service.handle(feedback(pid, 1)) == []
    table = pa.table(
        {"prediction_id": ids, "model_version": ["3"] * 60, "role": ["primary"] * 60,
         "prediction": [1] * 60}
    )  # fmt: skip
    flushed = lake.commit_batch(CAPTURE, table, source="serving").events[-1]
    assert service.handle(flushed) == []  # 60 matched, 40 waiting: no window yet
    with lake.store.session() as session:
        statuses = session.scalars(select(MonitorLabelRow.status)).all()
        assert sorted(set(statuses)) == ["matched", "pending"] and statuses.count("matched") == 60
    (check,) = service.tick(clock.now + timedelta(seconds=61))
    assert check.result["matched"] == 60 and check.result["unmatched"] == 40
    assert check.value == 1.0 and not check.degraded
    assert set(check.result["unmatched_ids"]) <= set(strangers)
    assert len(check.result["unmatched_ids"]) == 20  # a sample; the count is whole
    with lake.store.session() as session:
        assert session.scalars(select(MonitorLabelRow.check_id).distinct()).all() == [check.id]


def test_shadow_predictions_and_other_deployments_are_not_joined(lake: Lake) -> None:
    service = MonitorService(lake, [perf_monitor()])
    ids = IDS.new(100)
    shadow = pa.table(
        {"prediction_id": ids, "role": ["shadow"] * 100, "prediction": [0] * 100}
    )  # same ids, the challenger's answers
    primary = pa.table({"prediction_id": ids, "role": ["primary"] * 100, "prediction": [1] * 100})
    for table in (shadow, primary):
        service.handle(lake.commit_batch(CAPTURE, table, source="serving").events[-1])
    for pid in ids:
        assert service.handle(feedback(pid, 1, deployment="other-api")) == []
    checks = [c for pid in ids for c in service.handle(feedback(pid, 1))]
    assert len(checks) == 1 and checks[0].value == 1.0


# ---------------------------------------------------------------------- prometheus
def test_the_exposition_parses_and_carries_the_latest_checks(lake: Lake) -> None:
    service = MonitorService(lake, [drift_monitor(window_rows=600), perf_monitor()])
    service.handle(capture(lake, 600, seed=4)[0])
    event, table = capture(lake, 600, shift=1.0, seed=5, predictions=np.ones(600, int))
    service.handle(event)
    for pid in table["prediction_id"].to_pylist()[:100]:
        service.handle(feedback(pid, 0))  # all wrong
    families = {
        f.name: f for f in text_string_to_metric_families(monitor_metrics(lake.store).decode())
    }

    def value(name: str, **labels: str) -> float:
        matches = [s.value for s in families[name].samples if labels.items() <= s.labels.items()]
        assert len(matches) == 1, (name, labels, families[name].samples)
        return float(matches[0])

    assert value("eventops_monitor_drift", monitor="churn-drift") == 1.0
    assert value("eventops_monitor_drift_share", monitor="churn-drift") == 0.5
    assert value("eventops_monitor_drifted_columns", monitor="churn-drift") == 1.0
    assert value("eventops_monitor_feature_drifted", monitor="churn-drift", feature="tenure") == 1
    assert value("eventops_monitor_feature_p_value", feature="tenure") < 0.001
    assert value("eventops_monitor_feature_effect", feature="tenure", measure="wasserstein") > 0.5
    assert value("eventops_monitor_feature_drifted", feature="plan") == 0.0
    counts = {
        s.labels["outcome"]: s.value
        for s in families["eventops_monitor_checks"].samples
        if s.name == "eventops_monitor_checks_total" and s.labels["monitor"] == "churn-drift"
    }
    assert counts == {"ok": 1.0, "drifted": 1.0}
    assert value("eventops_monitor_performance", monitor="churn-perf", metric="accuracy") == 0.0
    assert value("eventops_monitor_performance_degraded", monitor="churn-perf") == 1.0
    assert value("eventops_monitor_performance_threshold", bound="min") == 0.8
    assert value("eventops_monitor_labels", monitor="churn-perf", status="matched") == 100
    assert value("eventops_monitor_window_rows", monitor="churn-drift", kind="drift") == 600
    (newest,) = list_checks(lake.store, "churn-drift", limit=1)
    stamp = value("eventops_monitor_last_check_timestamp_seconds", monitor="churn-drift")
    assert stamp == pytest.approx(newest.created_at.timestamp())


# ---------------------------------------------------------------------- bus and CLI
def test_the_service_consumes_the_bus_and_a_replay_changes_nothing(lake: Lake) -> None:
    bus = open_configured_bus(load_settings())
    relay = OutboxRelay(lake.store, bus)
    service = MonitorService(lake, [drift_monitor()], relay=relay)
    try:
        subscription = service.subscription(bus, "test-monitors").start()
        for seed in range(3):
            capture(lake, 200, seed=seed)
        relay.relay_once()
        wait_for(lambda: len(list_checks(lake.store)) == 1)
        wait_for(lambda: subscription.stats.handled >= 4)  # the reference's batch, and three
        subscription.stop()
        bus.seek("test-monitors", to="earliest")
        again = service.subscription(bus, "test-monitors").start()
        wait_for(lambda: again.stats.handled >= 4)
        again.stop()
        assert len(list_checks(lake.store)) == 1
        consumer = bus.consumer(None, ["eventops.monitor"], start="earliest")
        published = [r.event.type for r in consumer.poll(1.0) if r.event is not None]
        consumer.close()
        assert published == ["monitor.check.completed"]  # relayed by the service itself
    finally:
        bus.close()


def test_the_cli_lists_monitors_shows_checks_and_runs_one(lake: Lake, tmp_path: Path) -> None:
    project = tmp_path / "proj_monitors.py"
    project.write_text(
        textwrap.dedent(
            """
            from eventops.monitoring.monitors import Monitor
            monitors = [Monitor(name="churn-drift", deployment="churn-api",
                                reference="reference", window_rows=500)]
            """
        )
    )
    for seed in range(2):
        capture(lake, 300, shift=1.0, seed=seed)
    ran = cli.invoke(cli_app, ["monitors", "run", "churn-drift", "--project", str(project)])
    assert ran.exit_code == 0, ran.output
    assert "manual" in ran.output and "drift in tenure" in ran.output
    shown = cli.invoke(cli_app, ["monitors", "checks", "churn-drift", "--json"])
    assert shown.exit_code == 0, shown.output
    (check,) = json.loads(shown.output)
    assert check["trigger"] == "manual" and check["rows"] == 600 and check["window_seq"] is None
    listed = cli.invoke(
        cli_app, ["monitors", "list", "--project", str(project)], env={"COLUMNS": "250"}
    )
    assert listed.exit_code == 0 and "predictions_churn_api" in listed.output
    assert "drift in tenure" in listed.output
    (entry,) = json.loads(cli.invoke(cli_app, ["monitors", "list", "--json"]).output)
    assert entry["name"] == "churn-drift" and entry["declared"] is None  # no project: the store's
    assert entry["latest"]["drift"]["id"] == check["id"]
    missing = cli.invoke(cli_app, ["monitors", "run", "nope", "--project", str(project)])
    assert missing.exit_code == 3 and "churn-drift" in missing.output
