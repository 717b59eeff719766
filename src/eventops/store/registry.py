"""The history of registry decisions: every promotion, rejection, rollback and approval request.

MLflow keeps only where an alias points now. Rolling back needs to know where it pointed
before, and an audit needs who moved it and on what evidence, so each decision is a row here,
written in the same transaction as the event announcing it (outbox).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from eventops.store.tables import EVENT_ID_LENGTH, Base, UTCDateTime, utcnow

DECISIONS = ("promoted", "rejected", "rolled_back", "approval_requested")


class ModelDecisionRow(Base):
    __tablename__ = "model_decisions"
    __table_args__ = (Index("ix_model_decisions_model_id", "model", "id"),)

    # BIGINT on PostgreSQL; SQLite auto-increments only an INTEGER PRIMARY KEY (64-bit there).
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    model: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(32))
    alias: Mapped[str] = mapped_column(String(255))
    previous_version: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(255))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON())
    event_id: Mapped[str] = mapped_column(String(EVENT_ID_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
