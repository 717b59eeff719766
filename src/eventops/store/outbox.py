"""The transactional outbox: a state change and the event announcing it commit together.

A capability that changes state calls `add_event` with the session of that change, so the
database holds either both or neither; there is no moment where the state changed but the event
can be lost (or the event was sent for a change that rolled back). `OutboxRelay` then copies
committed rows to the bus in id order.

Delivery is at-least-once. The relay publishes a batch and then marks it published in the same
database transaction; a crash (or a failed commit) after the bus stored the events and before
the mark committed leaves the rows pending, and the next relay publishes the same event ids
again. Consumers therefore dedupe by event id, which `eventops.store.idempotency` does.

Order: rows are published in id order. On PostgreSQL the relay locks its batch with
``SELECT ... FOR UPDATE`` (not SKIP LOCKED, which would let a second relay overtake the first),
so two relays take turns and never publish the same row concurrently; SQLite gets the same from
``BEGIN IMMEDIATE``. Ids are allocated at insert time but become visible at commit, so two
producers committing out of order can be published out of id order; per-subject order holds as
long as the transactions changing one subject are serialised, which the row lock on that
subject's state normally does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from eventops.errors import EventOpsError, ValidationError
from eventops.events.bus import Bus
from eventops.events.envelope import Event
from eventops.store.database import Store
from eventops.store.tables import OutboxEntry, utcnow

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


def add_event(session: Session, event: Event) -> OutboxEntry:
    """Queue `event` in the caller's transaction; it reaches the bus only if that commits."""
    entry = OutboxEntry(
        event_id=event.id, type=event.type, subject=event.subject, payload=event.to_json()
    )
    session.add(entry)
    return entry


def add_events(session: Session, events: Iterable[Event]) -> list[OutboxEntry]:
    """Queue several events; they are published in the order given."""
    return [add_event(session, event) for event in events]


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


class OutboxRelay:
    """Copies committed outbox rows to the bus, oldest first, and marks them published."""

    def __init__(self, store: Store, bus: Bus, *, batch_size: int = 500) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.store = store
        self.bus = bus
        self.batch_size = batch_size

    def relay_once(self) -> int:
        """Publish one batch of pending events; returns how many were published.

        If the bus refuses, the batch's `attempts` and `last_error` are recorded, the rows stay
        pending and the bus's error is raised. A row whose payload is no longer a valid event
        stops the relay at that row (rows behind it wait, to keep the order) and raises
        ValidationError until someone repairs or deletes it.
        """
        failure: Exception | None = None
        published = 0
        with self.store.session() as session:
            pending = (
                select(OutboxEntry)
                .where(OutboxEntry.published_at.is_(None))
                .order_by(OutboxEntry.id)
                .limit(self.batch_size)
                .with_for_update()  # rendered on PostgreSQL; SQLite relies on BEGIN IMMEDIATE
            )
            entries = list(session.scalars(pending))
            events: list[Event] = []
            for entry in entries:
                try:
                    events.append(Event.from_json(entry.payload))
                except EventOpsError as exc:
                    entry.attempts += 1
                    entry.last_error = _error_text(exc)
                    failure = ValidationError(
                        f"outbox row {entry.id} (event {entry.event_id}) is not a valid event: "
                        f"{exc}",
                        field="outbox.payload",
                        rule="event",
                    )
                    break
            batch = entries[: len(events)]
            if events:
                try:
                    self.bus.publish(events)
                except Exception as exc:
                    self._record_failure(batch, exc)
                    failure = exc
                else:
                    self._mark_published(batch)
                    published = len(batch)
        if failure is not None:
            raise failure
        return published

    @staticmethod
    def _record_failure(batch: Sequence[OutboxEntry], exc: Exception) -> None:
        error = _error_text(exc)
        for entry in batch:
            entry.attempts += 1
            entry.last_error = error

    @staticmethod
    def _mark_published(batch: Sequence[OutboxEntry]) -> None:
        now = utcnow()
        for entry in batch:
            entry.attempts += 1
            entry.published_at = now

    def run(
        self, stop: threading.Event, interval: float = 0.5, *, max_backoff: float = 30.0
    ) -> None:
        """Relay until `stop` is set: drain backlogs at once, poll every `interval` when idle.

        Failures (bus or database down) are logged and retried with exponential backoff up to
        `max_backoff` seconds, so the loop outlives outages of either side.
        """
        if interval <= 0:
            raise ValueError("interval must be positive")
        failures = 0
        while not stop.is_set():
            try:
                published = self.relay_once()
            except Exception as exc:
                failures += 1
                delay = min(max_backoff, interval * 2**failures)
                log.warning("outbox relay failed (%s); retrying in %.1fs", _error_text(exc), delay)
                stop.wait(delay)
                continue
            failures = 0
            if published < self.batch_size:
                stop.wait(interval)

    def pending_count(self) -> int:
        with self.store.session() as session:
            count = session.scalar(
                select(func.count())
                .select_from(OutboxEntry)
                .where(OutboxEntry.published_at.is_(None))
            )
        return int(count or 0)

    def purge_published(self, older_than: timedelta) -> int:
        """Delete rows published more than `older_than` ago; returns how many.

        Keep them at least as long as anyone may need to see what was sent (the bus keeps the
        events themselves); pending rows are never deleted.
        """
        cutoff = utcnow() - older_than
        with self.store.session() as session:
            result = session.execute(
                delete(OutboxEntry).where(
                    OutboxEntry.published_at.is_not(None), OutboxEntry.published_at < cutoff
                )
            )
        return int(getattr(result, "rowcount", 0))
