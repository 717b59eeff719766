"""The platform's events to EventBridge and Kinesis, against moto's server on loopback.

EventBridge delivery is checked end to end: a rule on the bus sends matching events to an SQS
queue, which the test reads. Partial failures and throttling (which moto never produces) are
injected with a botocore `before-call` hook on the sink's own client that answers instead of
the server.
"""

from __future__ import annotations

import json
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import wait_for
from eventops.cli import app
from eventops.events.aws import Backoff
from eventops.events.bus import Bus, dlq_topic, open_bus
from eventops.events.envelope import Event
from eventops.events.eventbridge import EventBridgeSink
from eventops.events.forward import Forwarder
from eventops.events.kinesis_sink import KinesisSink

FAST = Backoff(attempts=4, base=0.001, cap=0.01)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    opened = open_bus(f"sqlite:///{tmp_path}/e.db")
    yield opened
    opened.close()


@pytest.fixture
def event_bus(aws: Any) -> tuple[str, str]:
    """An EventBridge bus whose `eventops` events land in an SQS queue: (bus, queue URL)."""
    name = f"platform-{uuid.uuid4().hex[:8]}"
    events, sqs = aws.client("events"), aws.client("sqs")
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.create_event_bus(Name=name)
    events.put_rule(Name=name, EventBusName=name, EventPattern=json.dumps({"source": ["eventops"]}))
    events.put_targets(Rule=name, EventBusName=name, Targets=[{"Id": "q", "Arn": arn}])
    return name, queue


def received(aws: Any, queue: str, want: int) -> list[dict[str, Any]]:
    sqs = aws.client("sqs")
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        answer = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
        for message in answer.get("Messages", []):
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        return len(found) >= want

    wait_for(enough, timeout=15)
    return found


def events(n: int, type_: str = "model.version.promoted") -> list[Event]:
    return [
        Event(type=type_, subject=f"churn/{i}", data={"model": "churn", "version": str(i)})
        for i in range(n)
    ]


def answer_instead(
    client: Any, operation: str, respond: Callable[[dict[str, Any]], Any]
) -> list[int]:
    """Count calls of `operation`; `respond(params)` may answer instead of the server."""
    calls: list[int] = []

    def keep(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["params"] = params

    def handler(context: dict[str, Any], **_: Any) -> Any:
        calls.append(1)
        answer = respond(context.get("params", {}))
        if answer is None:
            return None
        return types.SimpleNamespace(status_code=answer[0], headers={}), answer[1]

    client.meta.events.register(f"before-parameter-build.{operation}", keep)
    client.meta.events.register(f"before-call.{operation}", handler)
    return calls


def test_events_reach_the_eventbridge_bus_ten_per_call(
    aws: Any, bus: Bus, event_bus: tuple[str, str]
) -> None:
    name, queue = event_bus
    client = aws.client("events")
    calls = answer_instead(client, "events.PutEvents", lambda params: None)
    bus.publish(events(23))
    bus.publish([Event(type="dataset.batch.ingested", subject="d", data={"dataset": "d"})])
    sink = EventBridgeSink(name, types=["model.*"], client=client, backoff=FAST)
    stats = Forwarder(bus, sink, group="to-eb").run(idle_timeout=0.5, timeout=30)
    assert (stats.forwarded, stats.dead_lettered) == (23, 0)  # the dataset event is not read
    assert len(calls) == 3  # 10 + 10 + 3
    got = received(aws, queue, 23)
    assert {g["detail-type"] for g in got} == {"model.version.promoted"}
    detail = got[0]["detail"]
    assert detail["specversion"] == "1.0" and detail["type"] == "model.version.promoted"
    assert {g["detail"]["id"] for g in got} == {e["detail"]["id"] for e in got}
    assert len({g["detail"]["id"] for g in got}) == 23


def test_a_partial_failure_resends_only_the_failed_entries(
    aws: Any, bus: Bus, event_bus: tuple[str, str]
) -> None:
    name, queue = event_bus
    client = aws.client("events")
    first = [True]
    batches: list[int] = []

    def fail_two_once(params: dict[str, Any]) -> Any:
        batches.append(len(params["Entries"]))
        if not first[0]:
            return None
        first[0] = False
        entries = [
            {"ErrorCode": "ThrottlingException", "ErrorMessage": "slow"}
            if i in (1, 4)
            else {"EventId": f"e{i}"}
            for i in range(len(params["Entries"]))
        ]
        return 200, {
            "FailedEntryCount": 2,
            "Entries": entries,
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }

    answer_instead(client, "events.PutEvents", fail_two_once)
    bus.publish(events(6))
    sink = EventBridgeSink(name, types=["model.*"], client=client, backoff=FAST)
    stats = Forwarder(bus, sink, group="to-eb").run(idle_timeout=0.5, timeout=30)
    assert batches == [6, 2]
    assert stats.forwarded == 6
    assert sink.retries.entries_retried == 2
    # moto got the 2 re-sent entries; the 4 "accepted" by the fake answer never reached it.
    assert len(received(aws, queue, 2)) == 2


def test_a_throttled_call_is_retried_whole(aws: Any, bus: Bus, event_bus: tuple[str, str]) -> None:
    name, queue = event_bus
    client = aws.client("events")
    throttles = [2]

    def throttle(params: dict[str, Any]) -> Any:
        if throttles[0]:
            throttles[0] -= 1
            error = {"Code": "ThrottlingException", "Message": "Rate exceeded"}
            return 400, {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return None

    answer_instead(client, "events.PutEvents", throttle)
    bus.publish(events(3))
    sink = EventBridgeSink(name, types=["model.*"], client=client, backoff=FAST)
    Forwarder(bus, sink, group="to-eb").run(idle_timeout=0.5, timeout=30)
    assert len(received(aws, queue, 3)) == 3
    assert sink.retries.throttled == 2


def dead_letters(bus: Bus) -> list[Event]:
    reader = bus.consumer(None, [dlq_topic(bus.prefix)], start="earliest")
    try:
        return [r.event for r in reader.poll(0.5, 100) if r.event is not None]
    finally:
        reader.close()


def test_entries_refused_for_good_and_oversized_ones_are_dead_lettered(
    aws: Any, bus: Bus, event_bus: tuple[str, str]
) -> None:
    name, _ = event_bus
    client = aws.client("events")

    def refuse_first(params: dict[str, Any]) -> Any:
        entries = [
            {"ErrorCode": "MalformedDetail", "ErrorMessage": "no"} if i == 0 else {"EventId": "x"}
            for i in range(len(params["Entries"]))
        ]
        return 200, {
            "FailedEntryCount": 1,
            "Entries": entries,
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }

    answer_instead(client, "events.PutEvents", refuse_first)
    huge = Event(type="model.version.registered", subject="big", data={"blob": "x" * 300_000})
    bus.publish([*events(2), huge])
    sink = EventBridgeSink(name, types=["model.*"], client=client, backoff=FAST)
    stats = Forwarder(bus, sink, group="to-eb").run(idle_timeout=0.5, timeout=30)
    assert (stats.forwarded, stats.dead_lettered) == (1, 2)
    errors = sorted(str(e.extensions["dlqerror"]) for e in dead_letters(bus))
    assert any("EntryTooLarge" in e for e in errors)
    assert any("MalformedDetail" in e for e in errors)


def test_an_unreachable_service_keeps_the_batch_and_loses_nothing(
    aws: Any, bus: Bus, event_bus: tuple[str, str]
) -> None:
    name, queue = event_bus
    client = aws.client("events")
    down = [True]

    def outage(params: dict[str, Any]) -> Any:
        if down[0]:
            error = {"Code": "ServiceUnavailable", "Message": "down"}
            return 503, {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 503}}
        return None

    answer_instead(client, "events.PutEvents", outage)
    bus.publish(events(4))
    sink = EventBridgeSink(name, types=["model.*"], client=client, backoff=FAST)
    forwarder = Forwarder(bus, sink, group="to-eb", pause=0.05).start(timeout=30)
    try:
        wait_for(lambda: forwarder.stats.batch_failures >= 2, timeout=10)
        down[0] = False
        wait_for(lambda: forwarder.stats.forwarded == 4, timeout=10)
    finally:
        forwarder.stop()
    assert forwarder.error is None
    assert len(received(aws, queue, 4)) == 4
    assert forwarder.stats.dead_lettered == 0


def test_a_restarted_forwarder_resumes_after_what_it_committed(
    aws: Any, bus: Bus, event_bus: tuple[str, str]
) -> None:
    name, queue = event_bus
    bus.publish(events(5))
    sink = EventBridgeSink(name, types=["model.*"], client=aws.client("events"), backoff=FAST)
    Forwarder(bus, sink, group="to-eb").run(idle_timeout=0.5, timeout=30)
    bus.publish(events(3, "model.version.rejected"))
    again = Forwarder(bus, sink, group="to-eb").run(idle_timeout=0.5, timeout=30)
    assert again.forwarded == 3
    got = received(aws, queue, 8)
    assert len(got) == 8


@pytest.fixture
def stream(aws: Any) -> str:
    name = f"events-{uuid.uuid4().hex[:8]}"
    client = aws.client("kinesis")
    client.create_stream(StreamName=name, ShardCount=2)
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1})
    return name


def read_stream(aws: Any, stream: str) -> list[tuple[str, dict[str, Any]]]:
    client = aws.client("kinesis")
    out = []
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for record in client.get_records(ShardIterator=iterator, Limit=1000)["Records"]:
            out.append((record["PartitionKey"], json.loads(record["Data"])))
    return out


def test_events_on_a_kinesis_stream_keyed_by_subject(aws: Any, bus: Bus, stream: str) -> None:
    client = aws.client("kinesis")
    rounds: list[int] = []

    def fail_one_once(params: dict[str, Any]) -> Any:
        rounds.append(len(params["Records"]))
        if len(rounds) > 1:
            return None
        records = [
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "hot"}
            if i == 0
            else {"SequenceNumber": "1", "ShardId": "shardId-000000000000"}
            for i in range(len(params["Records"]))
        ]
        return 200, {
            "FailedRecordCount": 1,
            "Records": records,
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }

    answer_instead(client, "kinesis.PutRecords", fail_one_once)
    bus.publish(events(4))
    sink = KinesisSink(stream, types=["*"], client=client, backoff=FAST)
    stats = Forwarder(bus, sink, group="to-kinesis").run(idle_timeout=0.5, timeout=30)
    assert stats.forwarded == 4
    assert rounds == [4, 1]
    landed = read_stream(aws, stream)
    assert len(landed) == 1  # the other three were "accepted" by the fake answer
    key, event = landed[0]
    assert key == event["subject"]
    assert event["type"] == "model.version.promoted"
    # Without interference every event lands, keyed by its subject.
    bus.publish(events(3, "model.version.rejected"))
    plain = KinesisSink(stream, types=["*"], client=aws.client("kinesis"), backoff=FAST)
    Forwarder(bus, plain, group="to-kinesis").run(idle_timeout=0.5, timeout=30)
    landed = read_stream(aws, stream)
    assert len(landed) == 4
    assert all(key == event["subject"] for key, event in landed)


def test_the_worker_forward_role_uses_the_aws_settings(
    aws: Any, home: Path, event_bus: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventops.config import load_settings
    from eventops.events.bus import open_configured_bus
    from eventops.lake.storage import LakeStorage
    from eventops.project import Project
    from eventops.store import Store
    from eventops.worker import Worker

    name, queue = event_bus
    monkeypatch.setenv("EVENTOPS_AWS_EVENTBRIDGE_BUS", name)
    settings = load_settings()
    store = Store(settings.store_url)
    store.upgrade()
    publisher = open_configured_bus(settings)
    publisher.publish(events(2))
    worker = Worker(
        Project(name="fwd", path=home, module=types.ModuleType("fwd")), store, LakeStorage(settings.lake_url),
        lambda: open_configured_bus(settings), roles=["forward"], aws=settings.aws,
    )  # fmt: skip
    worker.start()
    try:
        got = received(aws, queue, 2)
    finally:
        worker.stop()
        publisher.close()
        store.close()
    assert {g["detail"]["subject"] for g in got} == {"churn/0", "churn/1"}
    assert [f.group for f in worker.forwarders] == ["eventops-forward-eventbridge.fwd"]


def test_the_cli_forwards_and_refuses_a_bad_target(
    aws: Any, home: Path, event_bus: tuple[str, str]
) -> None:
    name, queue = event_bus
    runner = CliRunner()
    published = runner.invoke(
        app, ["events", "publish", "--type", "model.version.promoted", "--subject", "s",
              "--data", '{"model": "m", "version": "1"}'],
    )  # fmt: skip
    assert published.exit_code == 0, published.output
    result = runner.invoke(
        app, ["events", "forward", "--to", f"eventbridge://{name}", "--idle", "0.5"]
    )
    assert result.exit_code == 0, result.output
    assert "events forwarded" in result.output
    assert len(received(aws, queue, 1)) == 1
    bad = runner.invoke(app, ["events", "forward", "--to", "sns://topic", "--idle", "0.1"])
    assert bad.exit_code == 2
    assert "--to" in bad.output and "url-scheme" in bad.output
