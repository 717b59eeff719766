"""Tables of the monitors: the checks they made, their open windows, the labels they joined.

A monitor's state lives in the metadata store, not in the process, so a restarted (or second)
monitor service carries on with the window it had half filled, and a check row commits in one
transaction with the outbox rows announcing it (`monitor.check.completed`, ...).

* `monitor_checks`: one row per check (a drift window or a window of labels): the window, the
  verdict, the whole report as JSON, the ids of the events it emitted. `window_seq` numbers the
  windows of one monitor and kind; the unique key on it means a window can close only once,
  whatever two services racing on it do. Manual checks (`eventops monitors run`) have none.
* `monitor_windows`: the window being filled per monitor and kind (batches and rows seen so
  far, when it opened) and how many windows closed before it.
* `monitor_labels`: ground truth from `feedback.received`, pending until its prediction is
  found among the captured predictions, then matched (or unmatched after a bounded wait), and
  finally assigned to the check that counted it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from eventops.store.tables import EVENT_ID_LENGTH, Base, UTCDateTime, utcnow

CHECK_KINDS = ("drift", "performance")
CHECK_STATUSES = ("ok", "error")
LABEL_STATUSES = ("pending", "matched", "unmatched", "invalid")


class MonitorCheckRow(Base):
    __tablename__ = "monitor_checks"
    __table_args__ = (
        Index("ix_monitor_checks_monitor_kind_id", "monitor", "kind", "id"),
        UniqueConstraint("monitor", "kind", "window_seq"),
    )

    # BIGINT on PostgreSQL; SQLite auto-increments only an INTEGER PRIMARY KEY (64-bit there).
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    monitor: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))
    window_seq: Mapped[int | None] = mapped_column(Integer())
    window_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    window_end: Mapped[datetime] = mapped_column(UTCDateTime())
    rows: Mapped[int] = mapped_column(BigInteger())
    drifted: Mapped[bool] = mapped_column(Boolean())
    degraded: Mapped[bool] = mapped_column(Boolean())
    value: Mapped[float | None] = mapped_column(Float())
    result: Mapped[dict[str, Any]] = mapped_column(JSON())
    error: Mapped[str | None] = mapped_column(Text())
    batch_ids: Mapped[list[str]] = mapped_column(JSON())
    event_ids: Mapped[list[str]] = mapped_column(JSON())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MonitorWindowRow(Base):
    __tablename__ = "monitor_windows"

    monitor: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer(), default=0)
    rows: Mapped[int] = mapped_column(BigInteger(), default=0)
    batch_ids: Mapped[list[str]] = mapped_column(JSON())
    event_ids: Mapped[list[str]] = mapped_column(JSON())
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MonitorLabelRow(Base):
    __tablename__ = "monitor_labels"
    __table_args__ = (
        Index("ix_monitor_labels_monitor_status_id", "monitor", "status", "id"),
        Index("ix_monitor_labels_monitor_prediction_id", "monitor", "prediction_id"),
        Index("ix_monitor_labels_check_id", "check_id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    monitor: Mapped[str] = mapped_column(String(255))
    prediction_id: Mapped[str] = mapped_column(String(255))
    label: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    prediction: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(EVENT_ID_LENGTH))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    check_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))


def lock_window(session: Session, monitor: str, kind: str) -> MonitorWindowRow:
    """The monitor's window row of `kind`, created if missing, locked until the transaction
    ends (a row lock on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers), so
    two services never close one window twice."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    values = {"monitor": monitor, "kind": kind, "seq": 0, "rows": 0}
    session.execute(
        insert(MonitorWindowRow)
        .values(**values, batch_ids=[], event_ids=[], updated_at=utcnow())
        .on_conflict_do_nothing()
    )
    query = select(MonitorWindowRow).filter_by(monitor=monitor, kind=kind)
    return session.scalars(query.with_for_update().execution_options(populate_existing=True)).one()
