"""The metadata store's tables: the outbox and the processed-event ledger.

Every capability that keeps state adds its models to the same `Base`, so one Alembic history
covers the whole database and a state change can share a transaction with the outbox row that
announces it. The naming convention gives constraints stable names, which migrations need to
alter or drop them later (SQLite can only do that by rebuilding a table, and it finds the
constraint by name).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, DateTime, Dialect, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# An event id is a uuid4 hex (32 chars) when EventOps makes it, but foreign producers may send
# any CloudEvents id; 255 leaves room without making the unique index unwieldy.
EVENT_ID_LENGTH = 255


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database.

    SQLite has no timezone type and hands back naive values while PostgreSQL hands back aware
    ones; comparing the two raises TypeError. Storing UTC everywhere also keeps SQLite's text
    timestamps comparable as strings.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value!r} has no timezone; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class OutboxEntry(Base):
    """An event written in the transaction of the state change it announces, not yet relayed.

    `id` gives the publish order; `payload` is the event in CloudEvents structured JSON, so the
    relay needs nothing else to rebuild it. `type` and `subject` are copies kept for queries.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_published_at_id", "published_at", "id"),)

    # BIGINT on PostgreSQL (an outbox can outlive 2**31 events); SQLite only auto-increments
    # an INTEGER PRIMARY KEY, which is 64-bit there anyway.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(String(EVENT_ID_LENGTH), unique=True)
    type: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(String(1024))
    payload: Mapped[str] = mapped_column(Text())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer(), default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text())

    def __repr__(self) -> str:
        state = "published" if self.published_at is not None else "pending"
        return f"OutboxEntry(id={self.id}, event_id={self.event_id!r}, type={self.type!r}, {state})"


class ProcessedEvent(Base):
    """Proof that `consumer` has applied the effects of `event_id`; its key is the dedup check."""

    __tablename__ = "processed_events"

    consumer: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID_LENGTH), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)

    def __repr__(self) -> str:
        return f"ProcessedEvent(consumer={self.consumer!r}, event_id={self.event_id!r})"
