"""Exactly-once effects on top of at-least-once delivery.

The bus may deliver an event more than once (a consumer crashed before committing its offset,
the outbox relay re-published after a crash). A handler wrapped by `idempotent` records
(consumer, event id) in `processed_events` in the same transaction as the effects it writes
through the session it is given, so either both commit or neither does: a duplicate finds the
row and is skipped, and a handler that failed left no row, so the redelivery runs it again.

Effects outside the session (an HTTP call, a file) are not covered: they may run again if the
transaction fails after them; make those idempotent themselves or send them as events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from eventops.events.envelope import Event
from eventops.store.database import Store
from eventops.store.tables import ProcessedEvent, utcnow

log = logging.getLogger(__name__)

R = TypeVar("R")


def claim(session: Session, consumer: str, event_id: str) -> bool:
    """Record that `consumer` handles `event_id` in this transaction; False if already recorded.

    INSERT ... ON CONFLICT DO NOTHING rather than catching IntegrityError: no savepoint is
    needed, and on PostgreSQL a concurrent claim of the same event waits for the first
    transaction and then sees its outcome (skip if it committed, claim if it rolled back).
    """
    values = {"consumer": consumer, "event_id": event_id, "processed_at": utcnow()}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        returning = (
            postgresql.insert(ProcessedEvent)
            .values(values)
            .on_conflict_do_nothing()
            .returning(ProcessedEvent.event_id)
        )
    elif dialect == "sqlite":
        returning = (
            sqlite.insert(ProcessedEvent)
            .values(values)
            .on_conflict_do_nothing()
            .returning(ProcessedEvent.event_id)
        )
    else:  # pragma: no cover - Store accepts only these two
        raise NotImplementedError(f"idempotent handlers need SQLite or PostgreSQL, not {dialect}")
    # RETURNING, not rowcount: drivers report -1 for some INSERTs, a row is unambiguous.
    return session.execute(returning).first() is not None


def idempotent(
    store: Store, consumer: str, handler: Callable[[Event, Session], R]
) -> Callable[[Event], R | None]:
    """A bus handler that runs `handler(event, session)` at most once per event id.

    `consumer` names the effect, not the process: every replica of one service uses the same
    name, and two services that must each apply an event use different names. A skipped
    duplicate returns None.
    """
    if not consumer or len(consumer) > 255:
        raise ValueError("consumer must be a non-empty name of at most 255 characters")

    def handle(event: Event) -> R | None:
        with store.session() as session:
            if not claim(session, consumer, event.id):
                log.debug("consumer %s already processed event %s; skipped", consumer, event.id)
                return None
            return handler(event, session)

    handle.__name__ = getattr(handler, "__name__", "handler")
    handle.__qualname__ = f"idempotent[{consumer}]({handle.__name__})"
    return handle


def already_processed(store: Store, consumer: str, event_id: str) -> bool:
    with store.session() as session:
        return session.get(ProcessedEvent, (consumer, event_id)) is not None


def forget_processed(store: Store, older_than: timedelta, consumer: str | None = None) -> int:
    """Delete dedup records older than `older_than`; returns how many.

    A record is only useful while the event can still be redelivered, so keep them longer than
    the bus's retention (and any replay you may run); after that a replay would apply the event
    again.
    """
    stmt = delete(ProcessedEvent).where(ProcessedEvent.processed_at < utcnow() - older_than)
    if consumer is not None:
        stmt = stmt.where(ProcessedEvent.consumer == consumer)
    with store.session() as session:
        result = session.execute(stmt)
    return int(getattr(result, "rowcount", 0))
