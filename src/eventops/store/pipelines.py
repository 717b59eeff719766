"""Tables of the pipeline engine: runs, their steps, the step cache and trigger state.

Run and step state live in the metadata store so that a worker that dies mid-run leaves enough
behind for another to resume from the last finished step, and so that a state change (a step
succeeded) commits together with the event that announces it (through the outbox).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from eventops.store.tables import Base, UTCDateTime, utcnow

RUN_STATUSES = ("requested", "running", "succeeded", "failed", "cancelled")
STEP_STATUSES = ("pending", "running", "succeeded", "failed", "cached", "skipped")


class PipelineRunRow(Base):
    __tablename__ = "pipeline_runs"
    __table_args__ = (Index("ix_pipeline_runs_pipeline_created_at", "pipeline", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="requested", index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON())
    trigger: Mapped[dict[str, Any]] = mapped_column(JSON())
    correlation_id: Mapped[str | None] = mapped_column(String(255))
    worker: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PipelineStepRow(Base):
    __tablename__ = "pipeline_steps"

    run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("pipeline_runs.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer(), default=0)
    cache_key: Mapped[str | None] = mapped_column(String(64))
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON(), nullable=True)
    error: Mapped[str | None] = mapped_column(Text())
    log: Mapped[str | None] = mapped_column(Text())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StepCacheRow(Base):
    """Outputs of a step keyed by the hash of its code, parameters and inputs."""

    __tablename__ = "step_cache"

    cache_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(255))
    step: Mapped[str] = mapped_column(String(255))
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON())
    run_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TriggerStateRow(Base):
    """What a trigger rule has seen since it last fired (new rows, the last event, cooldown)."""

    __tablename__ = "trigger_state"

    pipeline: Mapped[str] = mapped_column(String(255), primary_key=True)
    rule: Mapped[str] = mapped_column(String(255), primary_key=True)
    pending_rows: Mapped[int] = mapped_column(Integer(), default=0)
    pending_events: Mapped[list[str]] = mapped_column(JSON())
    last_fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_run_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
