"""The bus contract that every backend implements, and the URL that selects a backend.

A backend only has to do four things: append events to topics (`publish`), hand out consumers
that read partitions with a group's committed offsets (`consumer`), move a group's offsets
(`seek`, for replay), and list topics. Retries, backoff, the dead-letter topic, type filtering and
idempotency are built once on top of that in `eventops.events.subscription`, so they behave the
same on every backend and are tested once by the contract suite.

Topics: an event of type ``noun.rest`` goes to topic ``<prefix>.noun`` (``eventops.dataset``,
``eventops.pipeline``...), keyed by its subject so events about one subject stay in order. The
dead-letter topic is ``<prefix>-dlq``; the hyphen keeps it out of the event-type namespace.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from eventops.config import BUS_SCHEMES, Settings, check_url
from eventops.errors import ConfigError, ValidationError
from eventops.events.envelope import Event

DEFAULT_PREFIX = "eventops"
StartAt = Literal["earliest", "latest"]


@dataclass(frozen=True)
class Record:
    """One stored event as a consumer sees it.

    `event` is None when the stored bytes are not a valid event (written by a foreign producer);
    `error` then says why, and the subscription sends the raw value to the dead-letter topic.
    """

    topic: str
    partition: int
    offset: int
    timestamp: datetime
    event: Event | None
    raw: bytes | None = None
    error: str | None = None


@runtime_checkable
class Consumer(Protocol):
    """Reads the partitions the group assigns to it; the caller commits what it has handled.

    Contract: commit everything returned by `poll` before calling `poll` again; a consumer may
    hand partitions to another group member inside `poll`.
    """

    def poll(self, timeout: float, max_records: int = 500) -> list[Record]: ...

    def commit(self, records: Sequence[Record]) -> None: ...

    def assignment(self) -> set[tuple[str, int]]: ...

    def keepalive(self) -> None:
        """Tell the group this member is alive while a handler is busy or backing off."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Bus(Protocol):
    url: str
    prefix: str

    def publish(self, events: Iterable[Event], *, topic: str | None = None) -> int:
        """Store events durably; returns how many. Raises PublishError if any was not stored.

        `topic` overrides the type-derived topic (used for the dead-letter topic).
        """
        ...

    def consumer(
        self,
        group: str | None,
        topics: Sequence[str] | None = None,
        *,
        start: StartAt = "latest",
    ) -> Consumer:
        """A consumer of `topics` (None: every event topic, present and future).

        `group=None` reads every partition without committing (a read-only tail). `start` applies
        only where the group has no committed offset yet.
        """
        ...

    def seek(
        self,
        group: str,
        topics: Sequence[str] | None = None,
        *,
        offset: int | None = None,
        time: datetime | None = None,
        to: StartAt | None = None,
    ) -> dict[tuple[str, int], int]:
        """Move a group's committed offsets (replay). Exactly one of offset/time/to.

        Returns the new next-offset per partition. The group's members should be stopped.
        """
        ...

    def topics(self) -> list[str]: ...

    def close(self) -> None: ...


def check_seek_target(offset: int | None, time: datetime | None, to: StartAt | None) -> None:
    """A seek names exactly one position; every backend refuses the same way."""
    if sum(x is not None for x in (offset, time, to)) != 1:
        raise ValidationError("give exactly one of offset, time or to", field="seek", rule="one-of")


# ---------------------------------------------------------------------- topic naming
def topic_for(event_type: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}.{event_type.split('.', 1)[0]}"


def dlq_topic(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-dlq"


def topics_for_patterns(
    patterns: Sequence[str] | None, prefix: str = DEFAULT_PREFIX
) -> list[str] | None:
    """Topics that can hold events matching these type patterns; None means all event topics."""
    if not patterns:
        return None
    topics: set[str] = set()
    for pattern in patterns:
        head = pattern.split(".", 1)[0]
        if any(ch in head for ch in "*?["):
            return None
        topics.add(f"{prefix}.{head}")
    return sorted(topics)


def type_matches(event_type: str, patterns: Sequence[str] | None) -> bool:
    """Glob match on event types: `dataset.*`, `*.failed`, `pipeline.run.succeeded`."""
    if not patterns:
        return True
    return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in patterns)


def is_event_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> bool:
    head, dot, rest = topic.partition(".")
    return head == prefix and bool(dot) and rest.replace("_", "").isalnum() and rest.islower()


# ---------------------------------------------------------------------- URL selection
def open_bus(url: str, **options: object) -> Bus:
    """Open the backend a URL names: ``sqlite:///path/events.db`` or ``kafka://host:port,...``."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from eventops.events.sqlite import SQLiteBus

        return SQLiteBus(url, **options)  # type: ignore[arg-type]
    if scheme in ("kafka", "kafka+ssl"):
        try:
            from eventops.events.kafka import KafkaBus
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise ConfigError(
                "the Kafka backend needs confluent-kafka: pip install 'eventops[kafka]'",
                field="bus.url",
                rule="extra-installed",
            ) from exc
        return KafkaBus(url, **options)  # type: ignore[arg-type]
    raise ConfigError(
        f"unsupported bus URL scheme {scheme!r}; use sqlite:///path/events.db or kafka://host:port",
        field="bus.url",
        rule="scheme",
    )


def open_configured_bus(settings: Settings, url: str | None = None) -> Bus:
    """The bus the settings name (or `url`, e.g. a CLI's --bus), with the settings' options."""
    target = url or settings.bus_url
    check_url(target, BUS_SCHEMES, "bus.url")
    if urlsplit(target).scheme == "sqlite":
        return open_bus(
            target,
            partitions=settings.bus.partitions,
            retention_age=settings.bus.retention_age,
            retention_bytes=settings.bus.retention_bytes,
            session_timeout=settings.bus.session_timeout,
        )
    # Kafka: the settings' partition count applies to topics the bus creates unless the URL
    # names its own; the SQLite-only options (retention, session) do not apply.
    query = urlsplit(target).query
    if "partitions=" in query:
        return open_bus(target)
    return open_bus(target, partitions=settings.bus.partitions)
