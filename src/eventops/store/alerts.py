"""The state of every alert: one row per (rule, group), firing or resolved.

Deduplication and cooldown are decisions about the past ("is this already firing? when did we
last tell anyone?"), so they live in the store, not in a process: a restarted alert service,
or a second replica, sees the same state. The row also holds the notifications that still have
to reach a channel (`pending`), because delivery happens after the state commits: a crash or an
unreachable receiver leaves them here with `delivery_pending` set until a retry delivers them
or gives up with the error recorded in `last_delivery_error`.

Nothing secret is stored: a notification holds the rendered alert (rule, severity, summary and
the causing event, whose data never carries secrets), and channels are referred to by their
position and kind in the rule, never by URL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from eventops.store.database import Store
from eventops.store.tables import EVENT_ID_LENGTH, Base, UTCDateTime, utcnow

FIRING = "firing"
RESOLVED = "resolved"
ALERT_STATUSES = (FIRING, RESOLVED)
GROUP_LENGTH = 512


class AlertStateRow(Base):
    """Where one alert stands, what it has seen since it fired, and what is left to deliver.

    `pending` is a list of notifications in the order they must arrive, each
    ``{"id": ..., "message": {...}, "channels": ["0-slack", ...]}`` with the channels that have
    not confirmed it yet; `next_delivery_at` is when a retry may try them again.
    """

    __tablename__ = "alert_states"
    __table_args__ = (Index("ix_alert_states_pending", "delivery_pending", "next_delivery_at"),)

    rule: Mapped[str] = mapped_column(String(255), primary_key=True)
    group_key: Mapped[str] = mapped_column(String(GROUP_LENGTH), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text())
    since: Mapped[datetime] = mapped_column(UTCDateTime())  # when the current status began
    count: Mapped[int] = mapped_column(Integer(), default=0)  # matching events since it fired
    # Fields of monitor.check.completed that must be False to resolve it ("drifted", ...).
    conditions: Mapped[list[str]] = mapped_column(JSON())
    deduplicated: Mapped[int] = mapped_column(Integer(), default=0)  # ... not notified
    notifications: Mapped[int] = mapped_column(Integer(), default=0)  # sent since it fired
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cause_event_id: Mapped[str | None] = mapped_column(String(EVENT_ID_LENGTH))
    last_event_id: Mapped[str | None] = mapped_column(String(EVENT_ID_LENGTH))
    pending: Mapped[list[dict[str, Any]]] = mapped_column(JSON())
    delivery_pending: Mapped[bool] = mapped_column(Boolean(), default=False)
    delivery_attempts: Mapped[int] = mapped_column(Integer(), default=0)
    next_delivery_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_delivery_error: Mapped[str | None] = mapped_column(Text())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        pending = ", delivery pending" if self.delivery_pending else ""
        return f"AlertStateRow({self.rule!r}, {self.group_key!r}, {self.status}{pending})"

    def enqueue(self, entry: dict[str, Any], limit: int) -> int:
        """Append a notification (keeping at most `limit`); returns how many old ones were
        dropped to make room, which the caller must report."""
        pending = [*(self.pending or []), entry]
        self.pending = pending[-limit:]  # a new list: JSON columns track assignment only
        self.delivery_pending = True
        return len(pending) - len(self.pending)

    def settle(self, tried: set[str], sent: set[tuple[str, str]], *, give_up: bool) -> int:
        """Drop the (notification id, channel) pairs in `sent`, and with `give_up` every
        notification in `tried`; returns how many of `tried` reached all their channels."""
        left: list[dict[str, Any]] = []
        done = 0
        for entry in self.pending or []:
            channels = [c for c in entry["channels"] if (entry["id"], c) not in sent]
            if not channels:
                done += entry["id"] in tried
            elif not (give_up and entry["id"] in tried):
                left.append({**entry, "channels": channels})
        self.pending = left
        self.delivery_pending = bool(left)
        if not left:
            self.next_delivery_at = None
        return done


def alert_state_rows(store: Store) -> list[AlertStateRow]:
    """Every alert's state, ordered by rule and group (detached: read-only use)."""
    with store.session() as session:
        query = select(AlertStateRow).order_by(AlertStateRow.rule, AlertStateRow.group_key)
        return list(session.scalars(query))


__all__ = [
    "ALERT_STATUSES",
    "FIRING",
    "GROUP_LENGTH",
    "RESOLVED",
    "AlertStateRow",
    "alert_state_rows",
]
