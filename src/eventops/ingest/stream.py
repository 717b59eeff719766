"""Stream ingestion (the Firehose role): events on the bus become micro-batches in the lake.

Each event of the chosen types carries one record (`data` is a JSON object) or several (`data`
is an array of objects). Records are buffered and committed as one lake batch when `max_rows`
are buffered or `max_seconds` have passed since the first of them, so the lake gets files of a
useful size instead of one file per event. Events of other types are skipped; an event whose
data is not records goes to the dead-letter topic with the reason (nothing is dropped silently).

Exactly-once rows over an at-least-once bus
-------------------------------------------
The bus re-delivers everything after a group's last committed offset, so the order of the two
commits decides what a crash costs:

1. `Lake.commit_batch` writes the batch *and*, in the same store transaction, a checkpoint
   ``stream:<group>:<dataset>`` -> ``{"<topic>:<partition>": "<last offset>"}`` covering every
   record read into the batch (those with rows, and the skipped or dead-lettered ones between);
2. only then are the offsets committed on the bus.

A crash before (1) leaves neither the batch nor the checkpoint: the records are re-delivered
and written once. A crash between (1) and (2) leaves the batch and its checkpoint but not the
bus offsets: the records are re-delivered, and the ingestor drops every record whose offset is
at or below the checkpoint of its partition (checked on start, after every poll and once more
just before a commit), so they are not written twice. The batch id is derived from the source
and the offset ranges it holds, a second guard that makes the same records commit as the same
(duplicate) batch. Two leftovers are at-least-once by design: a dead-lettered event may reach
the dead-letter topic twice, and `dataset.batch.*` events are relayed at least once (consumers
dedupe by event id).

Records are buffered across polls without committing in between: both backends keep the read
position in memory, so that is safe. A partition taken away by a rebalance loses its buffered
records here (its new owner reads them again from the committed offset), which keeps two group
members from both writing them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventops.errors import ValidationError
from eventops.events.bus import Bus, Consumer, Record, dlq_topic, topics_for_patterns, type_matches
from eventops.events.loop import BackgroundLoop
from eventops.events.subscription import dead_letter_event
from eventops.ingest import json_kind, record_error, records_to_table
from eventops.lake import IngestResult, Lake, SchemaConflict
from eventops.lake.spec import NAME_PATTERN
from eventops.store import OutboxRelay

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
CONCURRENT_CHANGE_RETRIES = 3


@dataclass
class StreamStats:
    """What an ingestor has done so far (read from other threads for progress displays)."""

    events: int = 0
    rows: int = 0
    rows_rejected: int = 0
    batches: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    redelivered: int = 0
    last_batch_id: str | None = None
    last_rejection: str | None = None


@dataclass
class _Buffer:
    """Records read since the last bus commit; `rows` only from those that carry records."""

    records: list[Record] = field(default_factory=list)
    rows: list[tuple[Record, list[dict[str, Any]]]] = field(default_factory=list)
    row_count: int = 0
    started: float = 0.0

    def drop(self, keep: Callable[[Record], bool]) -> None:
        self.records = [r for r in self.records if keep(r)]
        self.rows = [(r, rows) for r, rows in self.rows if keep(r)]
        self.row_count = sum(len(rows) for _, rows in self.rows)

    def clear(self) -> None:
        self.records, self.rows, self.row_count = [], [], 0


def event_rows(data: Any) -> list[dict[str, Any]] | str:
    """The records an event's data carries, or why it carries none."""
    if isinstance(data, list):
        for index, item in enumerate(data):
            if (problem := record_error(item)) is not None:
                return f"data[{index}] {problem}"
        return data
    if not isinstance(data, dict):
        return (
            f"data must be a JSON object (one record) or an array of objects, got {json_kind(data)}"
        )
    if (problem := record_error(data)) is not None:
        return f"data {problem}"
    return [data]


class StreamIngestor(BackgroundLoop):
    """Consumes `types` as consumer group `group` and commits their records to `dataset`."""

    def __init__(
        self,
        bus: Bus,
        lake: Lake,
        dataset: str,
        *,
        group: str,
        types: list[str],
        max_rows: int = 10_000,
        max_seconds: float = 5.0,
        relay: OutboxRelay | None = None,
        poll_interval: float = 0.2,
        max_records: int = 500,
    ) -> None:
        if not re.fullmatch(NAME_PATTERN, dataset):
            raise ValidationError(
                f"invalid dataset name {dataset!r}", field="dataset", rule="pattern"
            )
        if not types:
            raise ValidationError(
                "give at least one event type pattern", field="types", rule="required"
            )
        if max_rows < 1 or max_seconds <= 0:
            raise ValidationError(
                "max_rows and max_seconds must be positive", field="max_rows", rule="min"
            )
        self.bus, self.lake, self.dataset, self.group = bus, lake, dataset, group
        self.types = list(types)
        self.max_rows, self.max_seconds, self.relay = max_rows, max_seconds, relay
        self.poll_interval, self.max_records = poll_interval, max_records
        self.source = f"stream:{group}"
        self.checkpoint_source = f"stream:{group}:{dataset}"
        self.stats = StreamStats()
        self._init_loop()
        self._checkpointed: dict[TopicPartition, int] = {}
        self._seen: dict[TopicPartition, int] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(
        self,
        *,
        timeout: float | None = None,
        max_batches: int | None = None,
        idle_timeout: float | None = None,
    ) -> StreamIngestor:
        """Run in a daemon thread until `stop()` (or a limit); a failure is kept in `error`."""
        self._start_thread(
            f"ingest-{self.group}",
            lambda: self.run(timeout=timeout, max_batches=max_batches, idle_timeout=idle_timeout),
        )
        return self

    def run(
        self,
        stop: threading.Event | None = None,
        timeout: float | None = None,
        max_batches: int | None = None,
        *,
        idle_timeout: float | None = None,
    ) -> StreamStats:
        """Consume until `stop` is set, `timeout` seconds have passed, `max_batches` batches were
        committed, or nothing new arrived for `idle_timeout` seconds; what is buffered when it
        stops is committed first."""
        begun = last_seen = time.monotonic()
        topics = topics_for_patterns(self.types, self.bus.prefix)
        consumer = self.bus.consumer(self.group, topics, start="earliest")
        buffer = _Buffer()
        self._seen = {}
        self._refresh_checkpoint()
        log.info("stream %s: ingesting %s into %s", self.group, ", ".join(self.types), self.dataset)
        try:
            while not (self._stop.is_set() or (stop is not None and stop.is_set())):
                now = time.monotonic()
                if timeout is not None and now - begun >= timeout:
                    break
                if idle_timeout is not None and now - last_seen >= idle_timeout:
                    break
                wait = self.poll_interval
                if buffer.row_count:
                    wait = max(0.0, min(wait, buffer.started + self.max_seconds - now))
                limit = max(1, min(self.max_records, self.max_rows - buffer.row_count))
                records = consumer.poll(wait, limit)
                if records:
                    last_seen = time.monotonic()
                    self._refresh_checkpoint()
                self._forget_revoked(consumer, buffer)
                self._take(records, buffer)
                full = buffer.row_count >= self.max_rows
                due = buffer.row_count and time.monotonic() - buffer.started >= self.max_seconds
                if full or due:
                    self._flush(consumer, buffer)
                    if max_batches is not None and self.stats.batches >= max_batches:
                        break
                elif not buffer.row_count and buffer.records:
                    consumer.commit(buffer.records)  # nothing waits for the lake: move on
                    buffer.clear()
            if buffer.records:
                self._flush(consumer, buffer)
        finally:
            consumer.close()
        return self.stats

    # ------------------------------------------------------------------ reading
    def _refresh_checkpoint(self) -> None:
        for key, position in self.lake.checkpoint(self.checkpoint_source).items():
            topic, _, partition = key.rpartition(":")
            self._checkpointed[(topic, int(partition))] = int(position)

    def _handled(self, record: Record) -> bool:
        tp = (record.topic, record.partition)
        return record.offset <= max(self._checkpointed.get(tp, -1), self._seen.get(tp, -1))

    def _forget_revoked(self, consumer: Consumer, buffer: _Buffer) -> None:
        """Drop what we hold of partitions that moved to another member: it reads them again."""
        mine = consumer.assignment()
        lost = {tp for tp in self._seen if tp not in mine}
        if lost:
            log.info("stream %s: partitions %s moved to another member", self.group, sorted(lost))
            for tp in lost:
                del self._seen[tp]
            buffer.drop(lambda r: (r.topic, r.partition) not in lost)

    def _take(self, records: list[Record], buffer: _Buffer) -> None:
        for record in records:
            tp = (record.topic, record.partition)
            if self._handled(record):
                self.stats.redelivered += 1
                buffer.records.append(record)  # its offset still has to be committed
                continue
            self._seen[tp] = record.offset
            buffer.records.append(record)
            event = record.event
            if event is None:
                self._dead_letter(record, record.error or "undecodable record")
                continue
            if not type_matches(event.type, self.types):
                self.stats.skipped += 1
                continue
            rows = event_rows(event.data)
            if isinstance(rows, str):
                self._dead_letter(record, f"{event.type} event {event.id}: {rows}")
                continue
            self.stats.events += 1
            if rows:
                if not buffer.row_count:
                    buffer.started = time.monotonic()
                buffer.rows.append((record, rows))
                buffer.row_count += len(rows)

    def _dead_letter(self, record: Record, error: str) -> None:
        log.warning(
            "stream %s: %s[%d]@%d dead-lettered: %s",
            self.group,
            record.topic,
            record.partition,
            record.offset,
            error,
        )
        event = dead_letter_event(record, group=self.group, error=error, attempts=0)
        self.bus.publish([event], topic=dlq_topic(self.bus.prefix))
        self.stats.dead_lettered += 1

    # ------------------------------------------------------------------ writing
    def _batch_id(self, buffer: _Buffer) -> str:
        """Deterministic: the same records always make the same batch id."""
        ranges: dict[TopicPartition, tuple[int, int]] = {}
        for record, _ in buffer.rows:
            tp = (record.topic, record.partition)
            first, last = ranges.get(tp, (record.offset, record.offset))
            ranges[tp] = (min(first, record.offset), max(last, record.offset))
        spans = ";".join(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in sorted(ranges.items()))
        return hashlib.sha256(f"{self.source}\0{self.dataset}\0{spans}".encode()).hexdigest()[:32]

    def _flush(self, consumer: Consumer, buffer: _Buffer) -> None:
        self._refresh_checkpoint()  # another member may have written some of these meanwhile
        fresh = [
            (r, rows)
            for r, rows in buffer.rows
            if r.offset > self._checkpointed.get((r.topic, r.partition), -1)
        ]
        if len(fresh) < len(buffer.rows):
            log.warning(
                "stream %s: %d event(s) already in the lake were dropped",
                self.group,
                len(buffer.rows) - len(fresh),
            )
            self.stats.redelivered += len(buffer.rows) - len(fresh)
            buffer.rows = fresh
        if buffer.rows:
            last: dict[TopicPartition, int] = {}
            for record in buffer.records:  # never behind the stored checkpoint: it only moves on
                tp = (record.topic, record.partition)
                last[tp] = max(record.offset, last.get(tp, -1), self._checkpointed.get(tp, -1))
            positions = {f"{t}:{p}": str(offset) for (t, p), offset in last.items()}
            table = records_to_table([row for _, rows in buffer.rows for row in rows])
            result = self._commit(table, self._batch_id(buffer), positions)
            self._record(result)
        consumer.commit(buffer.records)
        buffer.clear()

    def _commit(self, table: Any, batch_id: str, positions: dict[str, str]) -> IngestResult:
        for attempt in range(1, CONCURRENT_CHANGE_RETRIES + 1):
            try:
                return self.lake.commit_batch(
                    self.dataset, table, source=self.source, batch_id=batch_id,
                    checkpoint=(self.checkpoint_source, positions),
                )  # fmt: skip
            except SchemaConflict as exc:
                if exc.rule != "concurrent-change" or attempt == CONCURRENT_CHANGE_RETRIES:
                    raise
                log.info(
                    "stream %s: schema changed concurrently; retrying batch %s",
                    self.group,
                    batch_id,
                )
        raise AssertionError("unreachable")

    def _record(self, result: IngestResult) -> None:
        stats = self.stats
        stats.batches += 1
        stats.rows += result.rows_accepted
        stats.rows_rejected += result.rows_rejected
        stats.last_batch_id = result.batch_id
        if result.reason:
            stats.last_rejection = result.reason
        if result.rejected_batch:
            log.warning(
                "stream %s: batch %s rejected: %s (kept in %s)",
                self.group,
                result.batch_id,
                result.reason,
                result.quarantine_uri,
            )
        log.info(
            "stream %s -> %s: batch %s, %d row(s) accepted, %d rejected%s; %d rows in %d batches so far",
            self.group, self.dataset, result.batch_id, result.rows_accepted, result.rows_rejected,
            " (duplicate)" if result.duplicate else "", stats.rows, stats.batches,
        )  # fmt: skip
        if self.relay is not None and result.events:
            try:
                self.relay.relay_once()
            except Exception as exc:  # the events stay in the outbox for the next relay
                log.warning("outbox relay after batch %s failed: %s", result.batch_id, exc)


__all__ = ["StreamIngestor", "StreamStats", "event_rows"]
