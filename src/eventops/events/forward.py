"""Forwarding the platform's events to an outside system (EventBridge, Kinesis, CloudWatch).

A `Forwarder` is a consumer group of the bus with one `Sink`. It reads a batch, keeps the
events of the sink's types, hands them to the sink in one call, and commits the offsets only
after the sink returned: at least once, so consumers outside dedupe by event id (the CloudEvents
`id` travels with every copy). What the sink could not deliver for good (a rule broken, an entry
too large, still throttled after every retry) goes to the dead-letter topic with the sink's
error code, where `eventops events dlq list` shows it; nothing is dropped.

When the whole call fails (the service unreachable, throttled past every attempt) nothing is
committed: the batch is tried again after a pause that doubles up to a minute, while the
consumer keeps its partitions alive. A forwarder that is killed re-sends at most the batch in
flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from eventops.errors import BackendUnavailable
from eventops.events.bus import Bus, Record, dlq_topic, topics_for_patterns, type_matches
from eventops.events.envelope import Event
from eventops.events.loop import BackgroundLoop
from eventops.events.subscription import dead_letter_event

log = logging.getLogger(__name__)

MAX_PAUSE = 60.0


class Sink(Protocol):
    """Somewhere events are delivered to."""

    name: str  # e.g. "eventbridge:platform"; shown in logs and summaries
    types: list[str]  # event type patterns this sink wants

    def send(self, events: Sequence[Event]) -> list[tuple[int, str, str]]:
        """Deliver `events` (retrying as the service needs); return those that failed for
        good as (index into `events`, error code, message)."""
        ...


@dataclass
class ForwardStats:
    forwarded: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    batch_failures: int = 0
    last_error: str | None = None


class Forwarder(BackgroundLoop):
    """Delivers the events of `sink.types` on `bus` to `sink`, as consumer group `group`."""

    def __init__(
        self,
        bus: Bus,
        sink: Sink,
        *,
        group: str,
        max_batch: int = 500,
        poll_interval: float = 0.2,
        pause: float = 1.0,
    ) -> None:
        self.bus, self.sink, self.group = bus, sink, group
        self.max_batch, self.poll_interval, self.pause = max_batch, poll_interval, pause
        self.stats = ForwardStats()
        self._init_loop()

    def start(
        self, *, timeout: float | None = None, idle_timeout: float | None = None
    ) -> Forwarder:
        """Run in a daemon thread until `stop()`; a failure is kept in `error`."""
        self._start_thread(
            f"forward-{self.group}", lambda: self.run(timeout=timeout, idle_timeout=idle_timeout)
        )
        return self

    def run(
        self,
        stop: threading.Event | None = None,
        timeout: float | None = None,
        *,
        idle_timeout: float | None = None,
    ) -> ForwardStats:
        """Forward until stopped, `timeout` has passed, or nothing arrived for `idle_timeout`."""
        begun = last_seen = time.monotonic()
        topics = topics_for_patterns(self.sink.types, self.bus.prefix)
        consumer = self.bus.consumer(self.group, topics, start="earliest")
        pause = self.pause
        log.info("forwarding %s to %s", ", ".join(self.sink.types), self.sink.name)
        try:
            while not (self._stop.is_set() or (stop is not None and stop.is_set())):
                now = time.monotonic()
                if timeout is not None and now - begun >= timeout:
                    break
                if idle_timeout is not None and now - last_seen >= idle_timeout:
                    break
                records = consumer.poll(self.poll_interval, self.max_batch)
                if not records:
                    continue
                last_seen = time.monotonic()
                while True:
                    try:
                        self._deliver(records)
                        break
                    except BackendUnavailable as exc:  # nothing committed: the batch again
                        self.stats.batch_failures += 1
                        self.stats.last_error = str(exc)
                        log.warning(
                            "%s: %s; retrying the batch in %.0fs", self.sink.name, exc, pause
                        )
                        consumer.keepalive()
                        if self._stop.wait(pause) or (stop is not None and stop.is_set()):
                            return self.stats  # uncommitted: re-sent by the next forwarder
                        pause = min(MAX_PAUSE, pause * 2)
                pause = self.pause
                consumer.commit(records)
        finally:
            consumer.close()
        return self.stats

    def _deliver(self, records: list[Record]) -> None:
        wanted: list[Record] = []
        for record in records:
            event = record.event
            if event is None:
                self._dead_letter(record, "undecodable record", "Undecodable")
            elif type_matches(event.type, self.sink.types):
                wanted.append(record)
            else:
                self.stats.skipped += 1
        if not wanted:
            return
        failed = self.sink.send([r.event for r in wanted if r.event is not None])
        for index, code, message in failed:
            self._dead_letter(wanted[index], message, code)
        self.stats.forwarded += len(wanted) - len(failed)

    def _dead_letter(self, record: Record, message: str, code: str) -> None:
        error = f"{self.sink.name}: {code}: {message}"
        log.warning(
            "%s[%d]@%d dead-lettered: %s", record.topic, record.partition, record.offset, error
        )
        event = dead_letter_event(record, group=self.group, error=error, attempts=0)
        self.bus.publish([event], topic=dlq_topic(self.bus.prefix))
        self.stats.dead_lettered += 1


__all__ = ["ForwardStats", "Forwarder", "Sink"]
