"""Kinesis Data Streams as an ingest source: shards become micro-batches in the lake.

Each Kinesis record's data is one record (a JSON object) or several (a JSON array of objects),
UTF-8, the same rule as bus stream ingestion. Records are buffered across shards and committed as
one lake batch when `max_rows` are buffered or `max_seconds` have passed since the first.

Exactly-once rows over at-least-once reads
------------------------------------------
Kinesis keeps no consumer position; the position of every shard (the last sequence number
handled, or ``end`` once a closed shard has been read to its end) is a checkpoint in the store,
``kinesis:<stream>:<dataset>``, written **in the same transaction** as the batch
(`Lake.commit_batch(checkpoint=...)`). A crash before that commit loses the buffer and its
positions together, so the records are read again from the last checkpoint; a crash after it
has both. The batch id is derived from the stream and the sequence ranges it holds, so the same
records always make the same (duplicate) batch: a second guard.

A malformed record (not UTF-8, not JSON, not objects) goes to quarantine with its shard,
sequence number, partition key and arrival time; the shard keeps moving. When nothing is
buffered its position moves in the quarantine's own transaction; otherwise with the next batch
(a crash in between may quarantine it twice, never lose it).

Resharding: closed shards stay listed for the stream's retention. A child shard is read only
once its parents are read to their end (`NextShardIterator` absent), which keeps each partition
key's records in order across a split or merge. Shards are listed again when one closes and every
`discover_seconds`.

One ingestor reads every shard of a stream for one dataset; two ingestors of the same stream and
dataset would both write its records (there are no shard leases). Run one per stream and
dataset, and restart it anywhere: the position is in the store, not in the process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from eventops.errors import ValidationError
from eventops.events import aws
from eventops.events.loop import BackgroundLoop
from eventops.ingest import records_to_table
from eventops.ingest.stream import event_rows
from eventops.lake import IngestResult, Lake
from eventops.lake.spec import NAME_PATTERN
from eventops.store import OutboxRelay

log = logging.getLogger(__name__)

SHARD_END = "end"  # checkpoint position of a closed shard read to its end
MAX_GET_RECORDS = 10_000  # the GetRecords limit
StartAt = Literal["trim_horizon", "latest"]


@dataclass
class KinesisStats:
    """What an ingestor has done so far (read from other threads for progress displays)."""

    records: int = 0
    rows: int = 0
    rows_rejected: int = 0
    batches: int = 0
    quarantined: int = 0
    duplicates: int = 0
    shards: int = 0
    shards_finished: int = 0
    iterators_renewed: int = 0
    retries: aws.RetryStats = field(default_factory=aws.RetryStats)
    last_batch_id: str | None = None
    last_rejection: str | None = None


@dataclass
class _Shard:
    id: str
    parents: tuple[str, ...]
    iterator: str | None = None
    next_read: float = 0.0


@dataclass
class _Buffer:
    rows: list[dict[str, Any]] = field(default_factory=list)
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    started: float = 0.0

    def add(self, shard: str, sequence: int, rows: list[dict[str, Any]]) -> None:
        if not self.rows:
            self.started = time.monotonic()
        self.rows.extend(rows)
        first, last = self.ranges.get(shard, (sequence, sequence))
        self.ranges[shard] = (min(first, sequence), max(last, sequence))

    def clear(self) -> None:
        self.rows, self.ranges = [], {}


def parse_kinesis_url(url: str) -> aws.AwsUrl:
    """`kinesis://STREAM?region=R&start=trim_horizon|latest` (a stream ARN works as the name)."""
    parsed = aws.parse_aws_url(url, "kinesis", field="source", allowed=("start",))
    start = parsed.options.get("start")
    if start is not None and start not in ("trim_horizon", "latest"):
        raise ValidationError(
            f"start must be trim_horizon or latest, got {start!r}", field="start", rule="one-of"
        )
    return parsed


def record_rows(data: bytes) -> list[dict[str, Any]] | str:
    """The records one Kinesis record carries, or why it carries none (the quarantine reason)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"data is not UTF-8 (byte {exc.start}); rule: utf-8"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"data is not JSON ({exc.msg} at char {exc.pos}); rule: json"
    rows = event_rows(value)
    if isinstance(rows, str):
        return f"{rows}; rule: records"
    return rows


class KinesisIngestor(BackgroundLoop):
    """Reads every shard of `stream` and commits its records to `dataset` in micro-batches."""

    def __init__(
        self,
        lake: Lake,
        dataset: str,
        stream: str,
        *,
        region: str | None = None,
        start: StartAt | None = None,
        max_rows: int = 10_000,
        max_seconds: float = 5.0,
        relay: OutboxRelay | None = None,
        poll_interval: float = 0.2,
        records_per_call: int = MAX_GET_RECORDS,
        discover_seconds: float = 30.0,
        client: Any = None,
        backoff: aws.Backoff = aws.DEFAULT_BACKOFF,
    ) -> None:
        if stream.startswith("kinesis://"):
            parsed = parse_kinesis_url(stream)
            stream, region = parsed.name, region or parsed.region
            start = start or parsed.options.get("start")  # type: ignore[assignment]
        if not re.fullmatch(NAME_PATTERN, dataset):
            raise ValidationError(
                f"invalid dataset name {dataset!r}", field="dataset", rule="pattern"
            )
        if max_rows < 1 or max_seconds <= 0:
            raise ValidationError(
                "max_rows and max_seconds must be positive", field="max_rows", rule="min"
            )
        if not 1 <= records_per_call <= MAX_GET_RECORDS:
            raise ValidationError(
                f"records_per_call must be 1..{MAX_GET_RECORDS}",
                field="records_per_call",
                rule="range",
            )
        self.lake, self.dataset, self.stream = lake, dataset, stream
        self.start: StartAt = start or "trim_horizon"
        self.max_rows, self.max_seconds, self.relay = max_rows, max_seconds, relay
        self.poll_interval, self.records_per_call = poll_interval, records_per_call
        self.discover_seconds, self.backoff = discover_seconds, backoff
        self.client = client if client is not None else aws.client("kinesis", region=region)
        self.source = f"kinesis:{stream}"
        self.checkpoint_source = f"kinesis:{stream}:{dataset}"
        self.stats = KinesisStats()
        self._init_loop()
        self._shards: dict[str, _Shard] = {}
        self._read: dict[str, str] = {}  # shard -> last position read (seq or SHARD_END)
        self._saved: dict[str, str] = {}  # shard -> position in the store
        self._stream_arg: dict[str, Any] = (
            {"StreamARN": stream} if stream.startswith("arn:") else {"StreamName": stream}
        )

    # ------------------------------------------------------------------ lifecycle
    def start_thread(
        self, *, timeout: float | None = None, idle_timeout: float | None = None
    ) -> KinesisIngestor:
        """Run in a daemon thread until `stop()` (or a limit); a failure is kept in `error`."""
        self._start_thread(
            f"kinesis-{self.stream}", lambda: self.run(timeout=timeout, idle_timeout=idle_timeout)
        )
        return self

    def run(
        self,
        stop: threading.Event | None = None,
        timeout: float | None = None,
        max_batches: int | None = None,
        *,
        idle_timeout: float | None = None,
    ) -> KinesisStats:
        """Read until `stop` is set, `timeout` seconds have passed, `max_batches` batches were
        committed, or no record arrived for `idle_timeout` seconds; what is buffered when it
        stops is committed first."""
        begun = last_seen = last_listed = time.monotonic()
        self._saved = dict(self.lake.checkpoint(self.checkpoint_source))
        self._read = dict(self._saved)
        self._discover(first=True)
        buffer = _Buffer()
        log.info("kinesis %s: ingesting into %s", self.stream, self.dataset)
        while not (self._stop.is_set() or (stop is not None and stop.is_set())):
            now = time.monotonic()
            if timeout is not None and now - begun >= timeout:
                break
            if idle_timeout is not None and now - last_seen >= idle_timeout:
                break
            if now - last_listed >= self.discover_seconds:
                self._discover()
                last_listed = now
            got, closed = self._read_once(buffer)
            if got:
                last_seen = time.monotonic()
            if closed:
                self._discover()
                last_listed = time.monotonic()
            full = len(buffer.rows) >= self.max_rows
            due = buffer.rows and time.monotonic() - buffer.started >= self.max_seconds
            if full or due:
                self._flush(buffer)
                if max_batches is not None and self.stats.batches >= max_batches:
                    break
            elif not buffer.rows and self._read != self._saved:
                self._save_positions()
            if not got and not closed:
                self._wait(buffer)
        self._flush(buffer)
        return self.stats

    # ------------------------------------------------------------------ shards
    def _call(self, method: str, **kwargs: Any) -> Any:
        return aws.call(
            getattr(self.client, method), what=f"kinesis {method} on {self.stream}",
            backoff=self.backoff, stats=self.stats.retries, **self._stream_arg, **kwargs,
        )  # fmt: skip

    def _list_shards(self) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        page = self._call("list_shards")
        while True:
            shards.extend(page.get("Shards", []))
            token = page.get("NextToken")
            if not token:
                return shards
            page = aws.call(
                self.client.list_shards, NextToken=token, what=f"kinesis list_shards on {self.stream}",
                backoff=self.backoff, stats=self.stats.retries,
            )  # fmt: skip

    def _discover(self, *, first: bool = False) -> None:
        listed = self._list_shards()
        ids = {s["ShardId"] for s in listed}
        for shard in listed:
            sid = shard["ShardId"]
            if sid in self._shards or self._read.get(sid) == SHARD_END:
                continue
            parents = tuple(
                p
                for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
                if p and p in ids
            )
            self._shards[sid] = _Shard(sid, parents)
            if first and not parents and sid not in self._read and self.start == "latest":
                self._shards[sid].iterator = self._iterator(sid, latest=True)
        self.stats.shards = len(self._shards) + sum(
            1 for p in self._read.values() if p == SHARD_END
        )

    def _iterator(self, shard: str, *, latest: bool = False) -> str:
        position = self._read.get(shard)
        if position is not None and position != SHARD_END:
            kind = {
                "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                "StartingSequenceNumber": position,
            }
        else:
            kind = {"ShardIteratorType": "LATEST" if latest else "TRIM_HORIZON"}
        answer = self._call("get_shard_iterator", ShardId=shard, **kind)
        return str(answer["ShardIterator"])

    def _readable(self, shard: _Shard) -> bool:
        return all(self._read.get(p) == SHARD_END for p in shard.parents)

    def _read_once(self, buffer: _Buffer) -> tuple[bool, bool]:
        """One GetRecords on every shard that is due; (records seen?, a shard closed?)."""
        got = closed = False
        now = time.monotonic()
        for shard in list(self._shards.values()):
            if len(buffer.rows) >= self.max_rows:
                break  # the batch is full: commit it before reading more
            if shard.next_read > now or not self._readable(shard):
                continue
            room = max(1, min(self.records_per_call, self.max_rows - len(buffer.rows)))
            answer = self._get_records(shard, room)
            if answer is None:
                continue
            records = answer.get("Records", [])
            for record in records:
                self._take(shard.id, record, buffer)
            got = got or bool(records)
            shard.iterator = answer.get("NextShardIterator")
            if shard.iterator is None:  # closed, and read to its end
                self._read[shard.id] = SHARD_END
                del self._shards[shard.id]
                self.stats.shards_finished += 1
                closed = True
                log.info("kinesis %s: shard %s read to its end", self.stream, shard.id)
            elif not records and not answer.get("MillisBehindLatest"):
                shard.next_read = time.monotonic() + self.poll_interval
        return got, closed

    def _get_records(self, shard: _Shard, limit: int) -> dict[str, Any] | None:
        if shard.iterator is None:
            shard.iterator = self._iterator(shard.id)
        try:
            answer: dict[str, Any] = aws.call(
                self.client.get_records, ShardIterator=shard.iterator, Limit=limit,
                what=f"kinesis get_records on {self.stream}/{shard.id}", backoff=self.backoff,
                stats=self.stats.retries,
            )  # fmt: skip
        except aws.AwsError as exc:
            if exc.code != "ExpiredIteratorException":
                raise
            # Iterators live 5 minutes; start again after the last record read.
            self.stats.iterators_renewed += 1
            shard.iterator = None
            return None
        return answer

    def _wait(self, buffer: _Buffer) -> None:
        pending = [s.next_read for s in self._shards.values() if self._readable(s)]
        wake = min(pending, default=time.monotonic() + self.poll_interval)
        if buffer.rows:
            wake = min(wake, buffer.started + self.max_seconds)
        delay = max(0.0, min(self.poll_interval, wake - time.monotonic()))
        self._stop.wait(delay)

    # ------------------------------------------------------------------ records
    def _take(self, shard: str, record: dict[str, Any], buffer: _Buffer) -> None:
        sequence = str(record["SequenceNumber"])
        self.stats.records += 1
        rows = record_rows(bytes(record["Data"]))
        if isinstance(rows, str):
            self._quarantine(shard, record, rows, buffer)
        else:
            buffer.add(shard, int(sequence), rows)
        self._read[shard] = sequence

    def _quarantine(self, shard: str, record: dict[str, Any], reason: str, buffer: _Buffer) -> None:
        data = bytes(record["Data"])
        sequence = str(record["SequenceNumber"])
        arrived = record.get("ApproximateArrivalTimestamp")
        entry = {
            "stream": self.stream,
            "shard": shard,
            "sequence_number": sequence,
            "partition_key": record.get("PartitionKey"),
            "arrived": arrived.isoformat() if isinstance(arrived, datetime) else arrived,
            "reason": reason,
            "data": data.decode("utf-8", errors="replace")[:65_536],
        }
        # With nothing of this shard buffered, the position can move with the quarantine.
        checkpoint = None
        if shard not in buffer.ranges:
            checkpoint = (self.checkpoint_source, {shard: sequence})
        result = self.lake.quarantine_raw(
            self.dataset, [entry], f"kinesis {shard}@{sequence}: {reason}",
            source=self.source, checkpoint=checkpoint,
        )  # fmt: skip
        if checkpoint is not None:
            self._saved[shard] = sequence
        self.stats.quarantined += 1
        log.warning(
            "kinesis %s: record %s@%s quarantined: %s (%s)",
            self.stream, shard, sequence, reason, result.quarantine_uri,
        )  # fmt: skip
        self._relay(result)

    # ------------------------------------------------------------------ writing
    def _batch_id(self, buffer: _Buffer) -> str:
        spans = ";".join(f"{s}:{a}-{b}" for s, (a, b) in sorted(buffer.ranges.items()))
        return hashlib.sha256(f"{self.source}\0{self.dataset}\0{spans}".encode()).hexdigest()[:32]

    def _save_positions(self) -> None:
        changed = {s: p for s, p in self._read.items() if self._saved.get(s) != p}
        if changed:
            self.lake.save_checkpoint(self.checkpoint_source, changed)
            self._saved.update(changed)

    def _flush(self, buffer: _Buffer) -> None:
        if not buffer.rows:
            self._save_positions()
            return
        positions = {s: p for s, p in self._read.items() if self._saved.get(s) != p}
        table = records_to_table(buffer.rows)
        result = self.lake.commit_batch(
            self.dataset, table, source=self.source, batch_id=self._batch_id(buffer),
            checkpoint=(self.checkpoint_source, positions),
        )  # fmt: skip
        self._saved.update(positions)
        buffer.clear()
        self._record(result)

    def _record(self, result: IngestResult) -> None:
        stats = self.stats
        if result.duplicate:
            stats.duplicates += 1
        else:
            stats.batches += 1
        stats.rows += result.rows_accepted
        stats.rows_rejected += result.rows_rejected
        stats.last_batch_id = result.batch_id
        if result.reason:
            stats.last_rejection = result.reason
        log.info(
            "kinesis %s -> %s: batch %s, %d row(s) accepted, %d rejected%s",
            self.stream, self.dataset, result.batch_id, result.rows_accepted,
            result.rows_rejected, " (duplicate)" if result.duplicate else "",
        )  # fmt: skip
        self._relay(result)

    def _relay(self, result: IngestResult) -> None:
        if self.relay is not None and result.events:
            try:
                self.relay.relay_once()
            except Exception as exc:  # the events stay in the outbox for the next relay
                log.warning("outbox relay after batch %s failed: %s", result.batch_id, exc)


__all__ = ["SHARD_END", "KinesisIngestor", "KinesisStats", "parse_kinesis_url", "record_rows"]
