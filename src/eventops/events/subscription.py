"""Delivery semantics built once over any backend's consumer.

A subscription reads records, filters them by event type, calls the handler, retries a failing
handler with exponential backoff, sends an event that keeps failing to the dead-letter topic
together with its error, and commits offsets only for records that were fully dealt with. That
gives at-least-once delivery with no loss: a crash re-delivers at most the uncommitted tail, and
handlers wrapped by `eventops.store.idempotency` turn the re-delivery into a no-op.

Retries block the partition on purpose: a later event about the same subject must not overtake
an earlier one that is still being retried.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eventops.errors import BackendUnavailable
from eventops.events.bus import (
    Bus,
    Consumer,
    Record,
    StartAt,
    dlq_topic,
    topics_for_patterns,
    type_matches,
)
from eventops.events.envelope import Event

log = logging.getLogger(__name__)

Handler = Callable[[Event], Any]
UNDECODABLE_TYPE = "bus.record.undecodable"
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and exponential backoff for a failing handler before it goes to the DLQ."""

    max_attempts: int = 5
    initial_backoff: float = 0.2
    multiplier: float = 2.0
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.multiplier < 1 or self.max_backoff < 0:
            raise ValueError("backoff values must be non-negative and multiplier >= 1")

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after the n-th failed attempt (1-based)."""
        raw = self.initial_backoff * self.multiplier ** (failed_attempts - 1)
        return float(min(raw, self.max_backoff))


@dataclass
class SubscriptionStats:
    handled: int = 0
    skipped: int = 0
    retried: int = 0
    dead_lettered: int = 0
    last_error: str | None = None


def dead_letter_event(record: Record, *, group: str, error: str, attempts: int) -> Event:
    """The DLQ copy of a record: the original event with the failure recorded as extensions."""
    meta: dict[str, str | int | bool] = {
        "dlqerror": error[:MAX_ERROR_CHARS],
        "dlqgroup": group,
        "dlqtopic": record.topic,
        "dlqpartition": record.partition,
        "dlqoffset": record.offset,
        "dlqattempts": attempts,
    }
    if record.event is not None:
        return record.event.model_copy(update={"extensions": {**record.event.extensions, **meta}})
    raw = base64.b64encode(record.raw or b"").decode()
    return Event(type=UNDECODABLE_TYPE, data={"value_base64": raw}, extensions=meta)


def strip_dead_letter(event: Event) -> Event:
    """The original event back from its DLQ copy (for `dlq retry`)."""
    ext = {k: v for k, v in event.extensions.items() if not k.startswith("dlq")}
    return event.model_copy(update={"extensions": ext})


class Subscription:
    """Runs `handler` for every event of `types` that `group` has not yet committed."""

    def __init__(
        self,
        bus: Bus,
        group: str,
        handler: Handler,
        *,
        types: Sequence[str] | None = None,
        retry: RetryPolicy | None = None,
        start: StartAt = "latest",
        dead_letter: bool = True,
        max_records: int = 500,
    ) -> None:
        self.bus = bus
        self.group = group
        self.handler = handler
        self.types = list(types) if types else None
        self.retry = retry or RetryPolicy()
        self.start_at: StartAt = start
        self.dead_letter = dead_letter
        self.max_records = max_records
        self.stats = SubscriptionStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Subscription:
        """Run in a daemon thread until `stop()`."""
        self._thread = threading.Thread(target=self.run, name=f"sub-{self.group}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def assignment(self) -> set[tuple[str, int]]:
        return self._consumer.assignment() if self._consumer else set()

    def run(
        self,
        *,
        max_events: int | None = None,
        timeout: float | None = None,
        poll_interval: float = 0.2,
    ) -> SubscriptionStats:
        """Consume until stopped, `max_events` handled, or `timeout` seconds have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        topics = topics_for_patterns(self.types, self.bus.prefix)
        consumer = self.bus.consumer(self.group, topics, start=self.start_at)
        self._consumer = consumer
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                limit = self.max_records
                if max_events is not None:
                    limit = min(limit, max(1, max_events - self.stats.handled))
                records = consumer.poll(poll_interval, limit)
                if records:
                    done = self._handle_batch(consumer, records)
                    consumer.commit(done)
                if max_events is not None and self.stats.handled >= max_events:
                    break
        finally:
            consumer.close()
            self._consumer = None
        return self.stats

    # ------------------------------------------------------------------ delivery
    def _handle_batch(self, consumer: Consumer, records: list[Record]) -> list[Record]:
        done: list[Record] = []
        for record in records:
            if self._stop.is_set():
                break
            if record.event is None:
                self._to_dlq(record, record.error or "undecodable record", 0)
            elif not type_matches(record.event.type, self.types):
                self.stats.skipped += 1
            elif not self._deliver(consumer, record):
                break  # stopped while retrying: leave it uncommitted for the next owner
            done.append(record)
        return done

    def _deliver(self, consumer: Consumer, record: Record) -> bool:
        assert record.event is not None
        attempt = 0
        outage = 0
        while True:
            attempt += 1
            try:
                self.handler(record.event)
            except BackendUnavailable as exc:
                # The store or a service is down: the event is not at fault, so it is never
                # dead-lettered for this; it waits, with the partition, until the backend is back.
                outage += 1
                attempt -= 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if outage == 1:
                    log.warning(
                        "group %s: a backend is unavailable (%s); retrying event %s until it is back",
                        self.group, exc, record.event.id,
                    )  # fmt: skip
                self.stats.retried += 1
                if not self._backoff(consumer, self.retry.delay(min(outage, 8))):
                    return False
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                self.stats.last_error = error
                if attempt >= self.retry.max_attempts:
                    log.warning(
                        "handler of group %s failed %d times on event %s (%s): dead-lettered",
                        self.group, attempt, record.event.id, error,
                    )  # fmt: skip
                    self._to_dlq(record, error, attempt)
                    return True
                self.stats.retried += 1
                if not self._backoff(consumer, self.retry.delay(attempt)):
                    return False
            else:
                self.stats.handled += 1
                return True

    def _backoff(self, consumer: Consumer, seconds: float) -> bool:
        """Wait, keeping group membership alive; False if stopped meanwhile."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self._stop.wait(min(left, 1.0)):
                return False
            consumer.keepalive()
        return True

    def _to_dlq(self, record: Record, error: str, attempts: int) -> None:
        if not self.dead_letter:
            raise RuntimeError(
                f"event at {record.topic}[{record.partition}]@{record.offset}: {error}"
            )
        event = dead_letter_event(record, group=self.group, error=error, attempts=attempts)
        self.bus.publish([event], topic=dlq_topic(self.bus.prefix))
        self.stats.dead_lettered += 1
