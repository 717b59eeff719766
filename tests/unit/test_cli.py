"""The `eventops` command, driven in process (fast) on a SQLite bus in a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eventops.cli import app
from eventops.events.bus import dlq_topic, open_bus
from eventops.events.envelope import Event
from eventops.events.subscription import RetryPolicy, Subscription

runner = CliRunner()


@pytest.fixture
def bus_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    for var in list(__import__("os").environ):
        if var.startswith("EVENTOPS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("COLUMNS", "200")  # Rich tables: no folding inside cells
    return f"sqlite:///{tmp_path}/events.db"


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def tail_json(bus_url: str, *extra: str) -> list[dict]:
    result = invoke("events", "tail", "--bus", bus_url, "--json", "--timeout", "1", *extra)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_publish_one_event_and_tail_it(bus_url: str) -> None:
    data = '{"pipeline": "train", "params": {"lr": 0.1}}'
    result = invoke(
        "events",
        "publish",
        "--bus",
        bus_url,
        "--type",
        "pipeline.run.requested",
        "--subject",
        "train",
        "--data",
        data,
    )
    assert result.exit_code == 0, result.output
    events = tail_json(bus_url, "--from-beginning")
    assert len(events) == 1
    assert events[0]["type"] == "pipeline.run.requested"
    assert events[0]["subject"] == "train"
    assert events[0]["data"]["params"] == {"lr": 0.1}


def test_publish_from_a_file_in_bulk(bus_url: str, tmp_path: Path) -> None:
    lines = [
        json.dumps({"type": "shop.order.placed", "subject": f"o{i}", "data": {"n": i}})
        for i in range(25)
    ]
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n\n")
    result = invoke("events", "publish", "--bus", bus_url, "--file", str(path))
    assert result.exit_code == 0, result.output
    assert "published 25 events" in result.output
    assert [e["data"]["n"] for e in tail_json(bus_url, "--from-beginning")] == list(range(25))


def test_publish_from_stdin(bus_url: str) -> None:
    result = invoke(
        "events", "publish", "--bus", bus_url, "--file", "-", input='{"type": "a.b", "data": 1}\n'
    )
    assert result.exit_code == 0, result.output
    assert len(tail_json(bus_url, "--from-beginning")) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--type", "Not A Type"], "type"),
        (["--type", "a.b", "--data", "{broken"], "--data"),
        (
            ["--type", "pipeline.run.failed", "--data", '{"pipeline": "p", "run_id": "r"}'],
            "data.error",
        ),
        (["--type", "model.version.melted"], "catalog"),
        ([], "--type"),
    ],
)
def test_invalid_events_are_refused_naming_the_field(
    bus_url: str, args: list[str], needle: str
) -> None:
    result = invoke("events", "publish", "--bus", bus_url, *args)
    assert result.exit_code == 2
    assert needle in result.output
    bus = open_bus(bus_url)
    assert bus.topics() == []  # nothing was published


def test_a_bad_line_in_a_file_publishes_nothing_and_names_the_line(
    bus_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text('{"type": "a.b"}\n{"type": "a.b", "time": "yesterday"}\nnot json\n')
    result = invoke("events", "publish", "--bus", bus_url, "--file", str(path))
    assert result.exit_code == 2
    assert "line 2" in result.output and "time" in result.output
    assert "line 3" in result.output
    assert open_bus(bus_url).topics() == []


def test_tail_filters_by_type_and_stops_at_max(bus_url: str) -> None:
    bus = open_bus(bus_url)
    bus.publish([Event(type="shop.order.placed", data=i) for i in range(5)])
    bus.publish([Event(type="shop.order.cancelled", data=i) for i in range(5)])
    got = tail_json(bus_url, "--from-beginning", "--type", "*.cancelled")
    assert [e["type"] for e in got] == ["shop.order.cancelled"] * 5
    assert len(tail_json(bus_url, "--from-beginning", "--max", "3")) == 3


def test_tail_with_a_group_continues_where_it_stopped(bus_url: str) -> None:
    bus = open_bus(bus_url)
    bus.publish([Event(type="shop.order.placed", subject="x", data=i) for i in range(10)])
    first = tail_json(bus_url, "--group", "g", "--from-beginning", "--max", "4")
    rest = tail_json(bus_url, "--group", "g", "--from-beginning")
    assert [e["data"] for e in first + rest] == list(range(10))


def test_replay_rewinds_a_group(bus_url: str) -> None:
    bus = open_bus(bus_url)
    bus.publish([Event(type="shop.order.placed", subject="x", data=i) for i in range(6)])
    assert len(tail_json(bus_url, "--group", "g", "--from-beginning")) == 6
    assert tail_json(bus_url, "--group", "g") == []
    result = invoke("events", "replay", "--bus", bus_url, "--group", "g", "--from-beginning")
    assert result.exit_code == 0, result.output
    assert len(tail_json(bus_url, "--group", "g")) == 6


def test_replay_needs_exactly_one_position(bus_url: str) -> None:
    result = invoke("events", "replay", "--bus", bus_url, "--group", "g")
    assert result.exit_code == 2
    assert "exactly one" in result.output


def test_dlq_list_and_retry(bus_url: str) -> None:
    bus = open_bus(bus_url)
    poison = Event(type="shop.order.placed", subject="o1", data={"bad": True})
    bus.publish([poison])

    def fail(event: Event) -> None:
        raise RuntimeError("payment service down")

    Subscription(bus, "billing", fail, start="earliest", retry=RetryPolicy(2, 0.01)).run(timeout=2)
    listed = invoke("events", "dlq", "list", "--bus", bus_url, "--json", "--wait", "0.5")
    assert listed.exit_code == 0, listed.output
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [e["id"] for e in entries] == [poison.id]
    assert entries[0]["dlqerror"] == "RuntimeError: payment service down"
    table = invoke("events", "dlq", "list", "--bus", bus_url, "--wait", "0.5")
    assert "payment service down" in table.output and "billing" in table.output

    retried = invoke(
        "events", "dlq", "retry", "--bus", bus_url, "--group", "billing", "--wait", "0.5"
    )
    assert retried.exit_code == 0, retried.output
    assert "1 event(s) published again" in retried.output
    again = invoke(
        "events", "dlq", "retry", "--bus", bus_url, "--group", "billing", "--wait", "0.5"
    )
    assert "0 event(s) published again" in again.output
    seen: list[Event] = []
    Subscription(bus, "billing", seen.append).run(max_events=1, timeout=5)
    assert [e.id for e in seen] == [poison.id]
    assert "dlqerror" not in seen[0].extensions
    assert dlq_topic() in bus.topics()


def test_config_show_redacts_and_reports_errors(
    bus_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pragma: allowlist nextline secret
    monkeypatch.setenv("EVENTOPS_STORE_URL", "postgresql://app:topsecret@db/eventops")
    result = invoke("config", "show", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["store"]["url"] == "postgresql://app:***@db/eventops"
    assert "topsecret" not in invoke("config", "show").output
    monkeypatch.setenv("EVENTOPS_BUS_URL", "amqp://nope")
    bad = invoke("config", "show")
    assert bad.exit_code == 2
    assert "bus.url" in bad.output


def test_events_types_lists_the_catalog(bus_url: str) -> None:
    result = invoke("events", "types")
    assert result.exit_code == 0
    assert "dataset.batch.ingested" in result.output and "audit.*" in result.output


def test_the_demo_runs_to_completion(bus_url: str, tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[2] / "examples" / "churn" / "data"
    result = invoke("demo", "--home", str(tmp_path / "demo"), "--data", str(data), "--events", "60")
    assert result.exit_code == 0, result.output
    assert "nothing lost, nothing applied twice" in result.output
    assert "0 effects repeated" in result.output
    assert "accepted 197, rejected 3" in result.output
    assert "succeeded - load_features succeeded" in result.output  # the trigger trained a model
    out = " ".join(result.output.split())  # Rich wraps long lines
    assert "version 1: promoted by gate" in out  # registered, gated, served
    assert "server swapped back to version 1" in out  # promotion and rollback, followed live
    assert "monitor.drift.detected" in out and "alert.fired" in out  # the closed loop
    assert "deployment.updated: churn-api serves version 3" in out
    assert "steady load through the loop" in out and " 0 failed" in out


def test_the_demo_names_missing_example_data(bus_url: str, tmp_path: Path) -> None:
    result = invoke("demo", "--home", str(tmp_path / "demo"), "--data", str(tmp_path / "none"))
    assert result.exit_code == 2
    assert "--data" in result.output
