"""The Kafka backend (AWS MSK in production) over confluent-kafka / librdkafka.

A thin layer. Events travel in the CloudEvents Kafka binary content mode (`Event.to_kafka`:
key = subject, ``ce_*`` headers, value = JSON data) so any CloudEvents SDK reads them. `publish`
produces a whole batch through one idempotent producer (acks=all, 5 ms linger, no per-message
flush), then flushes once and checks every delivery report: the batch is stored or PublishError
says how many events were not and why. Topics are created on first use with the configured
partitions (cached; a concurrent creator's TOPIC_ALREADY_EXISTS is fine). Consumers never
auto-commit; `commit` is synchronous and only for partitions still assigned, so a record whose
partition moved to another member is re-delivered there (at-least-once, as on SQLite).
librdkafka's defaults are kept for real brokers; what tests on tansu need is settable. A
consumer tracks its assignment in its rebalance callbacks, because Consumer.assignment() called
from another thread while consume() is in a rebalance blocks for good (confluent-kafka 2.16).

"latest" means "as of `consumer()`", as on SQLite: end offsets are read when the consumer is
made and used for partitions that have no committed offset when they are assigned; a topic
that appears later is read from its start, since all of it is newer than the consumer.
Wildcard group consumers subscribe to ``^<prefix>\\.[a-z][a-z0-9_]*$`` (so not
``<prefix>-dlq``) and refresh metadata every 5 s to see new topics.

Broker differences worked around (tansu 0.6.0; the checks cost one read on Kafka/MSK):
* ListOffsets(latest) answers the last *batch*'s base offset + 1, so the end of a partition is
  confirmed by reading from the reported end - 1.
* ListOffsets(timestamp) answers a batch's base offset, and the log start for a time after the
  last record, so a seek by time checks the answer against the records' timestamps and
  binary-searches them if it is wrong.
* A group join is held for ~half of session.timeout.ms and a Fetch parked for ~half of
  fetch.wait.max.ms: both are options (`session_timeout_ms`, `fetch_wait_max_ms`).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlsplit

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from pydantic import SecretStr

from eventops.errors import BackendUnavailable, ConfigError, PublishError, ValidationError
from eventops.events import bus
from eventops.events.bus import Record, StartAt, check_seek_target
from eventops.events.envelope import Event

log = logging.getLogger(__name__)

TP = tuple[str, int]
PASSWORD_ENV = "EVENTOPS_KAFKA_SASL_PASSWORD"  # noqa: S105 - the variable's name
PASSWORD_FILE_ENV = "EVENTOPS_KAFKA_SASL_PASSWORD_FILE"  # noqa: S105
ENUMS = {
    "security_protocol": ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    "sasl_mechanism": ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"),
}
MIN = {"partitions": 1, "replication_factor": 1, "session_timeout_ms": 1, "fetch_wait_max_ms": 0}
MIN["linger_ms"] = 0
SSL_FILES = ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location")
PASSED = (*ENUMS, "sasl_username", *SSL_FILES, "client_id")  # librdkafka's names with dots
HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$")
TIMEOUT = 30.0  # seconds for admin and metadata requests
READ_WAIT = 5.0  # seconds to wait for a record known to exist
TOPIC_REFRESH = 5.0  # seconds between looks for new topics (wildcard consumers)
TRANSIENT = {KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TRANSPORT}
TRANSIENT |= {KafkaError._UNKNOWN_PARTITION, KafkaError._MAX_POLL_EXCEEDED}
NOT_A_MEMBER = {KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION}
NOT_A_MEMBER |= {KafkaError.REBALANCE_IN_PROGRESS, KafkaError.FENCED_INSTANCE_ID}


def _bad(message: str, rule: str, field: str = "bus.url") -> ConfigError:
    return ConfigError(message, field=field, rule=rule)


def parse_kafka_url(url: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Validated settings from the URL and its query options; keyword `overrides` win."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if parts.scheme not in ("kafka", "kafka+ssl"):
        raise _bad(f"{parts.scheme!r} is not kafka:// or kafka+ssl://", "scheme")
    if "@" in parts.netloc or {"sasl_password", "password"} & set(query):
        secret = ":" in parts.netloc.rpartition("@")[0] or "@" not in parts.netloc
        raise _bad(
            f"no credentials in the URL: give sasl_username as an option and the password in "
            f"{PASSWORD_ENV} or {PASSWORD_FILE_ENV}",
            "no-password-in-url" if secret else "no-userinfo",
        )
    for host in parts.netloc.split(","):
        match = HOST_PORT.match(host)
        if not match or not 1 <= int(match.group(3)) <= 65535:
            raise _bad(f"{host!r} is not host:port (port 1-65535)", "host-port")
    if parts.path not in ("", "/"):
        raise _bad(f"a Kafka URL has no path, got {parts.path!r}", "no-path")
    unknown = sorted((set(query) | set(overrides)) - {*MIN, *PASSED, "prefix"})
    if unknown:
        raise _bad(f"unknown Kafka bus option(s): {', '.join(unknown)}", "known-options")
    out: dict[str, Any] = {"bootstrap": parts.netloc, "partitions": 3, "replication_factor": 1}
    out |= {"prefix": bus.DEFAULT_PREFIX, "linger_ms": 5}
    for name, value in (query | {k: v for k, v in overrides.items() if v is not None}).items():
        field = f"bus.{name}"
        if name in MIN:
            try:
                out[name] = int(value)
            except (TypeError, ValueError):
                raise _bad(f"{value!r} is not a whole number", "integer", field) from None
            if out[name] < MIN[name]:
                raise _bad(f"must be at least {MIN[name]}", "min", field)
        elif not isinstance(value, str) or not value:
            raise _bad("must be a non-empty string", "string", field)
        elif name in ENUMS and value.upper() not in ENUMS[name]:
            raise _bad(f"must be one of {', '.join(ENUMS[name])}", "enum", field)
        else:
            out[name] = value.upper() if name in ENUMS else value
    if not re.fullmatch(r"[A-Za-z0-9_-]+", out["prefix"]):
        raise _bad("only letters, digits, '_' and '-'", "topic-chars", "bus.prefix")
    protocol = out.get("security_protocol", "")
    if parts.scheme == "kafka+ssl":
        protocol = protocol or ("SASL_SSL" if "sasl_mechanism" in out else "SSL")
        if not protocol.endswith("SSL"):
            raise _bad("kafka+ssl:// needs SSL or SASL_SSL", "scheme", "bus.security_protocol")
    sasl, ssl = protocol.startswith("SASL"), protocol.endswith("SSL")
    if "sasl_mechanism" in out and not sasl:
        raise _bad("needs security_protocol SASL_SSL", "requires-sasl", "bus.sasl_mechanism")
    for name in ("sasl_mechanism", "sasl_username"):
        if sasl and name not in out:
            raise _bad(f"security_protocol {protocol} needs {name}", "required", f"bus.{name}")
    for name in SSL_FILES:
        if name in out and not ssl:
            raise _bad("needs security_protocol SSL or SASL_SSL", "requires-ssl", f"bus.{name}")
    if ("ssl_certificate_location" in out) != ("ssl_key_location" in out):
        raise _bad("mutual TLS needs a certificate and a key", "pair", "bus.ssl_key_location")
    return out | ({"security_protocol": protocol} if protocol else {})


def _password(given: str | None) -> SecretStr:
    """The SASL password: keyword, else $EVENTOPS_KAFKA_SASL_PASSWORD, else the file it names."""
    if given or os.environ.get(PASSWORD_ENV):
        return SecretStr(given or os.environ[PASSWORD_ENV])
    if path := os.environ.get(PASSWORD_FILE_ENV):
        try:
            return SecretStr(Path(path).read_text().strip("\r\n"))
        except OSError as exc:
            raise _bad(
                f"cannot read it: {exc.strerror}", "file-readable", PASSWORD_FILE_ENV
            ) from None
    raise _bad(f"SASL needs {PASSWORD_ENV} or {PASSWORD_FILE_ENV}", "required", "bus.sasl_password")


def _unavailable(where: str, err: KafkaError | KafkaException) -> BackendUnavailable:
    if isinstance(err, KafkaException):
        err = err.args[0]
    return BackendUnavailable(f"{where}: {err.str() if isinstance(err, KafkaError) else err}")


def _commit(c: Consumer, offsets: list[TopicPartition]) -> list[KafkaError]:
    """Commit synchronously; the errors, if any."""
    try:
        return [tp.error for tp in c.commit(offsets=offsets, asynchronous=False) if tp.error]
    except KafkaException as exc:
        return [exc.args[0]]


class KafkaBus:
    """`Bus` over Kafka; options come from the URL query or keywords (keywords win)."""

    def __init__(self, url: str, *, sasl_password: str | None = None, **options: Any) -> None:
        self.url = url
        self.settings = parse_kafka_url(url, options)
        self.bootstrap: str = self.settings["bootstrap"]
        self.prefix: str = self.settings["prefix"]
        self.partitions: int = self.settings["partitions"]
        self.replication_factor: int = self.settings["replication_factor"]
        sasl = self.settings.get("security_protocol", "").startswith("SASL")
        if sasl_password and not sasl:
            raise _bad("is only used with SASL", "requires-sasl", "bus.sasl_password")
        self._password = _password(sasl_password) if sasl else None
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._created: dict[str, int] = {}  # topics made here, in case metadata lags
        self._producer: Producer | None = None
        self._admin_client: AdminClient | None = None

    def __repr__(self) -> str:
        return f"KafkaBus({self.url!r}, prefix={self.prefix!r})"

    def config(self, role: Literal["producer", "consumer", "admin"]) -> dict[str, Any]:
        """librdkafka settings for one client. Holds the password: never log it."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "error_cb": self._on_error}
        conf |= {k.replace("_", "."): self.settings[k] for k in PASSED if k in self.settings}
        if self._password is not None:
            conf["sasl.password"] = self._password.get_secret_value()
        if role == "producer":
            conf |= {"enable.idempotence": True, "acks": "all"}
            conf["linger.ms"] = self.settings["linger_ms"]
        elif role == "consumer":
            conf |= {"enable.auto.commit": False, "enable.partition.eof": False}
            for name in ("session_timeout_ms", "fetch_wait_max_ms"):
                if name in self.settings:
                    conf[name.replace("_", ".")] = self.settings[name]
        return conf

    def _on_error(self, err: KafkaError) -> None:
        log.warning("kafka %s: %s", self.bootstrap, err.str())

    def _admin(self) -> AdminClient:
        if self._admin_client is None:
            self._admin_client = AdminClient(self.config("admin"))
        return self._admin_client

    def _metadata(self) -> dict[str, Any]:
        try:
            return cast(dict[str, Any], self._admin().list_topics(timeout=TIMEOUT).topics)
        except KafkaException as exc:
            raise _unavailable(f"Kafka at {self.bootstrap}", exc) from None

    # ------------------------------------------------------------------ topics
    def ensure_topics(self, topics: Iterable[str]) -> None:
        """Create the topics that do not exist yet, with the configured partitions."""
        with self._lock:
            missing = [t for t in dict.fromkeys(topics) if t not in self._known]
            if missing:
                meta = self._metadata()
                new = [NewTopic(t, self.partitions, self.replication_factor) for t in missing]
                new = [n for n in new if n.topic not in meta]
                for name, done in (
                    self._admin().create_topics(new, operation_timeout=TIMEOUT) if new else {}
                ).items():
                    try:
                        done.result()
                        self._created[name] = self.partitions
                    except KafkaException as exc:
                        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                            raise _unavailable(f"cannot create topic {name}", exc) from None
                self._known.update(missing)

    def topics(self) -> list[str]:
        dlq = bus.dlq_topic(self.prefix)
        return sorted(t for t in self._metadata() if bus.is_event_topic(t, self.prefix) or t == dlq)

    def event_topics(self) -> list[str]:
        return sorted(t for t in self._metadata() if bus.is_event_topic(t, self.prefix))

    def partitions_of(self, topics: Iterable[str]) -> list[TP]:
        meta, out = self._metadata(), list[TP]()
        for t in topics:
            info = meta.get(t)
            count = len(info.partitions) if info is not None and info.error is None else 0
            out.extend((t, p) for p in range(count or self._created.get(t, 0)))
        return out

    # ------------------------------------------------------------------ publish
    def publish(self, events: Iterable[Event], *, topic: str | None = None) -> int:
        batch = list(events)
        if not all(isinstance(e, Event) for e in batch):
            raise ValidationError("only Event objects can be published", field="event")
        targets = [topic or bus.topic_for(e.type, self.prefix) for e in batch]
        try:
            self.ensure_topics(targets)
        except BackendUnavailable as exc:
            raise PublishError(f"no event was stored: {exc.message}") from None
        with self._lock:  # (not `or`: an idle Producer is falsy in older confluent-kafka)
            if self._producer is None:
                self._producer = Producer(self.config("producer"))
            producer = self._producer
        reports: list[KafkaError | None] = []  # one per event, appended by delivery reports

        def delivered(err: KafkaError | None, _msg: object) -> None:
            reports.append(err)  # atomic: another thread's flush may serve the report

        produce = cast(Any, producer.produce)  # to_kafka's headers are a subtype it accepts
        for n, (event, target) in enumerate(zip(batch, targets, strict=True)):
            key, value, headers = event.to_kafka()
            while True:
                try:
                    produce(target, value, key, headers=headers, on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    producer.poll(0.05)
                except KafkaException as exc:  # refused locally (e.g. too large): never sent
                    reports.append(exc.args[0])
                    break
            if n % 1000 == 999:
                producer.poll(0)  # serve delivery reports so they do not pile up
        while len(reports) < len(batch):  # librdkafka reports each by message.timeout.ms
            producer.flush(1.0)
        if failed := Counter(f"{e.name()}: {e.str()}" for e in reports if e is not None):
            if any(e.fatal() for e in reports if e is not None):
                with self._lock:  # an idempotent producer's fatal error: use a new one next time
                    self._producer = None if self._producer is producer else self._producer
            why = "; ".join(f"{n} x {reason}" for reason, n in failed.most_common())
            raise PublishError(f"{failed.total()} of {len(batch)} events were not stored: {why}")
        return len(batch)

    # ------------------------------------------------------------------ consume / seek
    def consumer(
        self, group: str | None, topics: Sequence[str] | None = None, *, start: StartAt = "latest"
    ) -> KafkaConsumer:
        return KafkaConsumer(self, group, topics, start)

    @contextmanager
    def _probe(self, group: str | None = None) -> Iterator[Consumer]:
        """A consumer that only assigns (never joins its group): reads, offsets, commits."""
        c = Consumer(self.config("consumer") | {"group.id": group or f"{self.prefix}-probe"})
        try:
            yield c
        finally:
            c.close()

    def _read(self, c: Consumer, tp: TP, offset: int) -> list[Message]:
        """The records of one fetch from `offset` on (none if none come within READ_WAIT)."""
        c.assign([TopicPartition(*tp, offset)])
        deadline = time.monotonic() + READ_WAIT
        while (left := deadline - time.monotonic()) > 0:
            got = [m for m in c.consume(1, left) if not m.error() and (m.offset() or 0) >= offset]
            if got:
                return got + [m for m in c.consume(10_000, 0) if not m.error()]
        return []

    def _bounds(self, c: Consumer, tp: TP) -> tuple[int, int]:
        """(first offset, next offset to be written) of a partition."""
        low, high = c.get_watermark_offsets(TopicPartition(*tp), timeout=TIMEOUT)
        if high > low:  # tansu says the last batch's base offset + 1: read to the batch's end
            high = max([high] + [(m.offset() or 0) + 1 for m in self._read(c, tp, high - 1)])
        return low, high

    def end_offsets(self, parts: Iterable[TP]) -> dict[TP, int]:
        with self._probe() as c:
            return {tp: self._bounds(c, tp)[1] for tp in parts}

    def _offset_for_time(self, c: Consumer, tp: TP, ms: int, low: int, high: int) -> int:
        def stamp(offset: int) -> int:
            if msgs := self._read(c, tp, offset):
                return msgs[0].timestamp()[1]
            raise BackendUnavailable(f"no record at {tp[0]}[{tp[1]}]@{offset} to read")

        got = c.offsets_for_times([TopicPartition(*tp, ms)], timeout=TIMEOUT)[0].offset
        lo, hi = low, high
        cand = high if got < 0 else min(max(got, low), high)
        if (cand == hi or stamp(cand) >= ms) and (cand == lo or stamp(cand - 1) < ms):
            return cand
        while lo < hi:  # the broker ignored the timestamp: search the records' timestamps
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if stamp(mid) >= ms else (mid + 1, hi)
        return lo

    def seek(
        self,
        group: str,
        topics: Sequence[str] | None = None,
        *,
        offset: int | None = None,
        time: datetime | None = None,
        to: StartAt | None = None,
    ) -> dict[TP, int]:
        check_seek_target(offset, time, to)
        self.ensure_topics(topics or [])
        result: dict[TP, int] = {}
        with self._probe(group) as c:
            for tp in self.partitions_of(self.event_topics() if topics is None else topics):
                low, high = self._bounds(c, tp)
                if offset is not None:
                    result[tp] = min(max(offset, low), high)
                elif time is not None:
                    ms = int(time.astimezone(UTC).timestamp() * 1000)
                    result[tp] = self._offset_for_time(c, tp, ms, low, high) if high > low else low
                else:
                    result[tp] = low if to == "earliest" else high
            offsets = [TopicPartition(t, p, o) for (t, p), o in result.items()]
            c.assign(offsets)
            for err in _commit(c, offsets) if offsets else []:
                if err.code() in NOT_A_MEMBER:
                    message = f"group {group!r} has active members; stop them before seeking"
                    raise ValidationError(message, field="group", rule="no-active-members")
                raise _unavailable(f"cannot commit offsets of {group!r}", err)
        return result

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(TIMEOUT)
        self._producer = self._admin_client = None


class KafkaConsumer:
    """A `Consumer`: a group member (subscribe) or, with group None, a read-only tail (assign)."""

    def __init__(
        self, kafka: KafkaBus, group: str | None, topics: Sequence[str] | None, start: StartAt
    ) -> None:
        self.bus, self.group, self.start = kafka, group, start
        self._closed, self._refreshed = False, time.monotonic()
        self._discover = group is None and topics is None  # a tail looks for new topics itself
        kafka.ensure_topics(topics or [])
        names = kafka.event_topics() if topics is None else list(dict.fromkeys(topics))
        self._topics, parts = set(names), kafka.partitions_of(names)
        self._marks = kafka.end_offsets(parts) if start == "latest" else {}
        conf = kafka.config("consumer") | {"auto.offset.reset": start}
        conf["group.id"] = group or f"{kafka.prefix}-tail-{uuid.uuid4().hex[:12]}"
        if group is not None and topics is None:
            conf["topic.metadata.refresh.interval.ms"] = int(TOPIC_REFRESH * 1000)
        self._c = Consumer(conf)
        # Tracked here: Subscription.assignment is read from other threads (module docstring).
        self._assigned: frozenset[TP] = frozenset()
        hooks = {"on_assign": self._on_assign, "on_revoke": self._on_revoke}
        if group is None:
            self._assign(parts)
        elif topics is None:  # a regex, so that later event topics are consumed too
            self._c.subscribe([rf"^{kafka.prefix}\.[a-z][a-z0-9_]*$"], **hooks)
        elif names:
            self._c.subscribe(names, **hooks)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Track the assignment; with "latest", uncommitted partitions start at our marks."""
        if self.start == "latest":
            try:
                done = {(c.topic, c.partition): c for c in consumer.committed(partitions, TIMEOUT)}
            except KafkaException as exc:
                log.warning("group %s: committed offsets unknown: %s", self.group, exc)
                done = {}
            for tp in partitions:
                got = done.get(key := (tp.topic, tp.partition))
                if got is not None and got.error is None:  # else librdkafka looks it up
                    mark = self._marks.get(key, OFFSET_BEGINNING)  # none: a topic newer than us
                    tp.offset = got.offset if got.offset >= 0 else mark
        consumer.assign(partitions)
        self._assigned = self._assigned | {(tp.topic, tp.partition) for tp in partitions}

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = self._assigned - {(tp.topic, tp.partition) for tp in partitions}

    def _assign(self, parts: Iterable[TP]) -> None:
        offsets = [TopicPartition(*tp, self._marks.get(tp, OFFSET_BEGINNING)) for tp in parts]
        if offsets:
            self._c.incremental_assign(offsets)
            self._assigned = self._assigned | {(tp.topic, tp.partition) for tp in offsets}

    def poll(self, timeout: float, max_records: int = 500) -> list[Record]:
        if self._discover and time.monotonic() > self._refreshed + TOPIC_REFRESH:
            self._refreshed = time.monotonic()
            new = sorted(set(self.bus.event_topics()) - self._topics)
            self._topics.update(new)
            self._assign(self.bus.partitions_of(new))
        deadline = time.monotonic() + timeout
        try:
            while True:
                msgs = self._c.consume(1, max(0.0, deadline - time.monotonic()))
                if msgs and max_records > 1:  # then whatever else has already arrived
                    msgs += self._c.consume(max_records - 1, 0)
                records = [r for m in msgs if (r := self._record(m)) is not None]
                if records or time.monotonic() >= deadline:
                    return records
        except KafkaException as exc:
            raise _unavailable(f"Kafka at {self.bus.bootstrap}", exc) from None

    def _record(self, msg: Message) -> Record | None:
        if err := msg.error():
            if err.fatal() or not (err.retriable() or err.code() in TRANSIENT):
                raise _unavailable(f"Kafka at {self.bus.bootstrap}", err)
            log.debug("transient consumer error: %s", err.str())
            return None
        kind, ms = msg.timestamp()
        stamp = datetime.fromtimestamp(ms / 1000, UTC)
        if kind == TIMESTAMP_NOT_AVAILABLE:
            stamp = datetime.now(UTC)
        where = (msg.topic() or "", msg.partition() or 0, msg.offset() or 0, stamp)
        headers = msg.headers() or []
        items = headers.items() if isinstance(headers, dict) else headers
        pairs = [(k, v.encode() if isinstance(v, str) else v) for k, v in items]
        try:
            return Record(*where, Event.from_kafka(msg.key(), msg.value(), pairs))
        except (ValidationError, UnicodeDecodeError) as exc:
            return Record(*where, None, msg.value() or b"", str(exc))

    def commit(self, records: Sequence[Record]) -> None:
        if self.group is None or not records:
            return
        last: dict[TP, int] = {}
        for r in records:
            last[(r.topic, r.partition)] = max(last.get((r.topic, r.partition), -1), r.offset)
        mine = self.assignment()
        offsets = [TopicPartition(*tp, o + 1) for tp, o in last.items() if tp in mine]
        for err in _commit(self._c, offsets) if offsets else []:
            if err.code() in NOT_A_MEMBER:  # the partition moved on: its new owner re-delivers
                log.warning("commit of group %s dropped: %s", self.group, err.str())
            elif err.code() != KafkaError._NO_OFFSET:
                raise _unavailable(f"cannot commit offsets of {self.group!r}", err)

    def assignment(self) -> set[TP]:
        return set(self._assigned)

    def keepalive(self) -> None:
        """Nothing to do: librdkafka heartbeats from its own thread (max.poll.interval.ms 300 s)."""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._c.close()  # leaves the group at once
