"""Embedded durable event log on SQLite in WAL mode.

Why hand-written: no embeddable library gives a Kafka-shaped log (partitions, consumer groups
with committed offsets, replay by offset or time) over one file that several processes share.
SQLite gives atomic appends and a single writer, which makes the design simple:

* ``log`` holds every event; its INTEGER PRIMARY KEY is the offset. Writers are serialised by
  SQLite, so offsets grow in commit order and a reader that remembers the last offset it saw
  never misses a row committed later.
* Each topic has a fixed number of partitions; an event's partition is a hash of its subject,
  so one subject's events keep their order.
* Group members share the partitions through leases (``leases``) that expire after the session
  timeout; a member that dies (even by SIGKILL) loses its partitions to the survivors.
* Committed offsets (``offsets``) are written only by the partition's lease holder.

Durability: WAL with synchronous=NORMAL survives a crash of any process; synchronous=FULL (URL
``?synchronous=FULL``) also survives a power loss, at a cost per transaction.
"""

from __future__ import annotations

import itertools
import math
import os
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from eventops.errors import ConfigError, PublishError, ValidationError
from eventops.events.bus import (
    DEFAULT_PREFIX,
    Record,
    StartAt,
    check_seek_target,
    is_event_topic,
    topic_for,
)
from eventops.events.envelope import Event
from eventops.quantities import parse_duration, parse_size

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    offset INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    event TEXT NOT NULL,
    appended REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS log_topic_partition ON log (topic, partition, offset);
CREATE INDEX IF NOT EXISTS log_appended ON log (appended);
CREATE TABLE IF NOT EXISTS topics (topic TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (
    grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
);
CREATE TABLE IF NOT EXISTS leases (
    grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    owner TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (grp, topic, partition)
);
CREATE TABLE IF NOT EXISTS members (
    grp TEXT NOT NULL, owner TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (grp, owner)
);
"""

TopicPartition = tuple[str, int]
RETENTION_CHECK_EVERY = 30.0


def sqlite_path(url: str) -> Path:
    """``sqlite:///rel/events.db`` is relative, ``sqlite:////abs/events.db`` absolute."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise ConfigError(
            f"{url!r} is not a SQLite URL; write sqlite:///relative/path.db or sqlite:////abs/path.db",
            field="bus.url",
            rule="sqlite-url",
        )
    path = parts.path[1:]
    if not path:
        raise ConfigError("the SQLite URL has no file path", field="bus.url", rule="sqlite-url")
    return Path(path)


class SQLiteBus:
    def __init__(
        self,
        url: str,
        *,
        partitions: int | None = None,
        prefix: str | None = None,
        retention_age: str | float | None = None,
        retention_bytes: str | int | None = None,
        session_timeout: str | float | None = None,
        synchronous: str | None = None,
        poll_interval: float = 0.001,
    ) -> None:
        self.url = url
        self.path = sqlite_path(url)
        query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
        self.prefix = prefix or query.pop("prefix", DEFAULT_PREFIX)
        self.partitions = partitions or int(query.pop("partitions", "4"))
        age = retention_age or query.pop("retention_age", None)
        size = retention_bytes or query.pop("retention_bytes", None)
        self.retention_age = parse_duration(age, field="bus.retention_age") if age else None
        self.retention_bytes = parse_size(size, field="bus.retention_bytes") if size else None
        timeout = session_timeout or query.pop("session_timeout", "10s")
        self.session_timeout = parse_duration(timeout, field="bus.session_timeout")
        self.synchronous = (synchronous or query.pop("synchronous", "NORMAL")).upper()
        if self.synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ConfigError("must be NORMAL, FULL or EXTRA", field="bus.synchronous", rule="enum")
        if self.partitions < 1:
            raise ConfigError("must be at least 1", field="bus.partitions", rule="min")
        if query:
            raise ConfigError(
                f"unknown SQLite bus option(s): {', '.join(sorted(query))}",
                field="bus.url",
                rule="known-options",
            )
        self.poll_interval = poll_interval
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = self.connect()
        self._conn.executescript(SCHEMA)
        self._topic_partitions: dict[str, int] = {}
        self._round_robin = itertools.count()
        self._last_retention = 0.0
        self.enforce_retention()

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    # ------------------------------------------------------------------ topics
    def partitions_of(self, conn: sqlite3.Connection, topic: str) -> int:
        known = self._topic_partitions.get(topic)
        if known is None:
            conn.execute(
                "INSERT OR IGNORE INTO topics (topic, partitions) VALUES (?, ?)",
                (topic, self.partitions),
            )
            row = conn.execute("SELECT partitions FROM topics WHERE topic = ?", (topic,)).fetchone()
            known = self._topic_partitions[topic] = int(row[0])
        return known

    def topics(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT topic FROM topics ORDER BY topic")]

    def topic_partitions(
        self, conn: sqlite3.Connection, topics: Sequence[str] | None
    ) -> list[TopicPartition]:
        if topics is None:
            rows = conn.execute("SELECT topic, partitions FROM topics").fetchall()
            pairs = [(t, n) for t, n in rows if is_event_topic(t, self.prefix)]
        else:
            pairs = [(t, self.partitions_of(conn, t)) for t in topics]
        return sorted((t, p) for t, n in pairs for p in range(n))

    # ------------------------------------------------------------------ publish
    def publish(self, events: Iterable[Event], *, topic: str | None = None) -> int:
        now = time.time()
        with self._lock:
            rows = []
            for event in events:
                if not isinstance(event, Event):
                    raise ValidationError("only Event objects can be published", field="event")
                target = topic or topic_for(event.type, self.prefix)
                count = self.partitions_of(self._conn, target)
                key = event.key
                part = (
                    zlib.crc32(key) % count if key is not None else next(self._round_robin) % count
                )
                rows.append((target, part, event.to_json(), now))
            if not rows:
                return 0
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT INTO log (topic, partition, event, appended) VALUES (?, ?, ?, ?)", rows
                )
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise PublishError(f"could not append to {self.path}: {exc}") from exc
            if now - self._last_retention > RETENTION_CHECK_EVERY:
                self._enforce_retention_locked()
        return len(rows)

    # ------------------------------------------------------------------ retention
    def enforce_retention(self) -> int:
        """Delete events older than retention_age and the oldest ones beyond retention_bytes."""
        with self._lock:
            return self._enforce_retention_locked()

    def _enforce_retention_locked(self) -> int:
        self._last_retention = time.time()
        deleted = 0
        conn = self._conn
        if self.retention_age is not None:
            cur = conn.execute(
                "DELETE FROM log WHERE appended < ?", (time.time() - self.retention_age,)
            )
            deleted += cur.rowcount
        if self.retention_bytes is not None:
            while self._used_bytes() > self.retention_bytes:
                total = conn.execute("SELECT count(*) FROM log").fetchone()[0]
                if total == 0:
                    break
                chunk = max(1, total // 10)
                cur = conn.execute(
                    "DELETE FROM log WHERE offset IN (SELECT offset FROM log ORDER BY offset LIMIT ?)",
                    (chunk,),
                )
                deleted += cur.rowcount
        return deleted

    def _used_bytes(self) -> int:
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    # ------------------------------------------------------------------ consume
    def consumer(
        self, group: str | None, topics: Sequence[str] | None = None, *, start: StartAt = "latest"
    ) -> SQLiteConsumer:
        return SQLiteConsumer(self, group, topics, start)

    def seek(
        self,
        group: str,
        topics: Sequence[str] | None = None,
        *,
        offset: int | None = None,
        time: datetime | None = None,
        to: StartAt | None = None,
    ) -> dict[TopicPartition, int]:
        check_seek_target(offset, time, to)
        conn = self.connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            result: dict[TopicPartition, int] = {}
            for t, p in self.topic_partitions(conn, topics):
                if offset is not None:
                    nxt = offset
                elif time is not None:
                    ts = time.astimezone(UTC).timestamp()
                    row = conn.execute(
                        "SELECT min(offset) FROM log WHERE topic=? AND partition=? AND appended>=?",
                        (t, p, ts),
                    ).fetchone()
                    nxt = row[0] if row[0] is not None else _end(conn, t, p) + 1
                elif to == "earliest":
                    nxt = 0
                else:
                    nxt = _end(conn, t, p) + 1
                conn.execute(
                    "INSERT INTO offsets VALUES (?, ?, ?, ?) "
                    "ON CONFLICT DO UPDATE SET offset = excluded.offset",
                    (group, t, p, nxt - 1),
                )
                result[(t, p)] = nxt
            conn.execute("COMMIT")
            return result
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _end(conn: sqlite3.Connection, topic: str, partition: int) -> int:
    row = conn.execute(
        "SELECT max(offset) FROM log WHERE topic = ? AND partition = ?", (topic, partition)
    ).fetchone()
    return int(row[0]) if row[0] is not None else 0


class SQLiteConsumer:
    """A member of a consumer group over the SQLite log (see the module docstring)."""

    def __init__(
        self, bus: SQLiteBus, group: str | None, topics: Sequence[str] | None, start: StartAt
    ) -> None:
        self.bus = bus
        self.group = group
        self.topics = list(topics) if topics is not None else None
        self.start = start
        self.member = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.conn = bus.connect()
        self.positions: dict[TopicPartition, int] = {}
        self._last_heartbeat = 0.0
        self._heartbeat_every = min(1.0, bus.session_timeout / 3)
        self._data_version: int | None = None
        self._closed = False
        # Partitions that existed when this consumer fixed its start. One that appears later
        # (a topic created by a later publish) holds only events published after the start, so
        # "latest" reads it from its beginning: otherwise the events published between its
        # creation and the next heartbeat would be skipped.
        self._existing: set[TopicPartition] | None = None
        self._heartbeat()

    def _initial(self, conn: sqlite3.Connection, tp: TopicPartition) -> int:
        if self.start == "earliest" or (self._existing is not None and tp not in self._existing):
            return 0
        return _end(conn, *tp)

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    def keepalive(self) -> None:
        if time.monotonic() - self._last_heartbeat >= self._heartbeat_every:
            self._heartbeat()

    def _heartbeat(self) -> None:
        """Renew membership and leases; take or give partitions toward a fair share."""
        self._last_heartbeat = time.monotonic()
        conn = self.conn
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            wanted = self.bus.topic_partitions(conn, self.topics)
            if self.group is None:
                for tp in wanted:
                    if tp not in self.positions:
                        self.positions[tp] = self._initial(conn, tp)
                        self._data_version = None  # read the new partition on the next poll
            else:
                self._rebalance(conn, now, wanted)
            if self._existing is None:
                self._existing = set(wanted)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _rebalance(
        self, conn: sqlite3.Connection, now: float, wanted: list[TopicPartition]
    ) -> None:
        group, me, expires = self.group, self.member, now + self.bus.session_timeout
        conn.execute("INSERT OR REPLACE INTO members VALUES (?, ?, ?)", (group, me, expires))
        conn.execute("DELETE FROM members WHERE grp = ? AND expires < ?", (group, now))
        conn.execute("DELETE FROM leases WHERE grp = ? AND expires < ?", (group, now))
        live = conn.execute("SELECT count(*) FROM members WHERE grp = ?", (group,)).fetchone()[0]
        held: dict[TopicPartition, str] = {
            (t, p): owner
            for t, p, owner in conn.execute(
                "SELECT topic, partition, owner FROM leases WHERE grp = ?", (group,)
            )
        }
        wanted_set = set(wanted)
        mine = sorted(tp for tp, owner in held.items() if owner == me and tp in wanted_set)
        fair = math.ceil(len(wanted) / max(1, live))
        for tp in mine[fair:]:
            conn.execute(
                "DELETE FROM leases WHERE grp=? AND topic=? AND partition=? AND owner=?",
                (group, *tp, me),
            )
        mine = mine[:fair]
        for tp in wanted:
            if len(mine) >= fair:
                break
            if tp not in held:
                mine.append(tp)
        for tp in mine:
            conn.execute(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?)", (group, *tp, me, expires)
            )
        positions: dict[TopicPartition, int] = {}
        for tp in mine:
            if tp in self.positions:
                positions[tp] = self.positions[tp]
                continue
            row = conn.execute(
                "SELECT offset FROM offsets WHERE grp=? AND topic=? AND partition=?", (group, *tp)
            ).fetchone()
            if row is not None:
                positions[tp] = int(row[0])
            else:
                # No committed offset yet: fix the start now so that later members agree on it.
                positions[tp] = self._initial(conn, tp)
                conn.execute("INSERT INTO offsets VALUES (?, ?, ?, ?)", (group, *tp, positions[tp]))
        self.positions = positions
        self._data_version = None

    def poll(self, timeout: float, max_records: int = 500) -> list[Record]:
        deadline = time.monotonic() + timeout
        sleep = self.bus.poll_interval
        while True:
            self.keepalive()
            version = self.conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version and self.positions:
                records = self._fetch(max_records)
                if records:
                    return records
                self._data_version = version
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            time.sleep(min(sleep, left))
            sleep = min(sleep * 2, 0.01)

    def _fetch(self, limit: int) -> list[Record]:
        clauses = " OR ".join(
            "(topic = ? AND partition = ? AND offset > ?)" for _ in self.positions
        )
        params: list[object] = []
        for (t, p), pos in self.positions.items():
            params.extend((t, p, pos))
        rows = self.conn.execute(
            "SELECT offset, topic, partition, event, appended FROM log "
            f"WHERE {clauses} ORDER BY offset LIMIT ?",
            (*params, limit),
        ).fetchall()
        records = []
        for offset, topic, partition, payload, appended in rows:
            self.positions[(topic, partition)] = offset
            stamp = datetime.fromtimestamp(appended, UTC)
            try:
                event: Event | None = Event.from_json(payload)
                error = None
            except ValidationError as exc:
                event, error = None, str(exc)
            raw = payload.encode() if event is None else None
            records.append(Record(topic, partition, offset, stamp, event, raw, error))
        return records

    def commit(self, records: Sequence[Record]) -> None:
        if self.group is None or not records:
            return
        last: dict[TopicPartition, int] = {}
        for record in records:
            tp = (record.topic, record.partition)
            last[tp] = max(last.get(tp, -1), record.offset)
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for (t, p), offset in last.items():
                conn.execute(
                    "INSERT INTO offsets SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM leases "
                    "WHERE grp = ? AND topic = ? AND partition = ? AND owner = ?) "
                    "ON CONFLICT DO UPDATE SET offset = excluded.offset",
                    (self.group, t, p, offset, self.group, t, p, self.member),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.group is not None:
            with self.conn:
                self.conn.execute(
                    "DELETE FROM leases WHERE grp = ? AND owner = ?", (self.group, self.member)
                )
                self.conn.execute(
                    "DELETE FROM members WHERE grp = ? AND owner = ?", (self.group, self.member)
                )
        self.conn.close()
