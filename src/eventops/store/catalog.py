"""Tables of the data catalog: datasets, schema versions, the batch manifest, rejections and
stream checkpoints.

They live in the metadata store (not beside the files) so that a batch's manifest row, its
schema version and the events announcing them commit in one transaction with the outbox: a batch
is visible exactly when its row exists. JSON columns hold what is read whole and never queried
by parts (specs, schemas, statistics).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from eventops.store.tables import Base, UTCDateTime, utcnow

NAME_LENGTH = 128


class DatasetRow(Base):
    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON())
    current_version: Mapped[int] = mapped_column(Integer(), default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SchemaVersionRow(Base):
    __tablename__ = "dataset_schema_versions"

    dataset: Mapped[str] = mapped_column(
        String(NAME_LENGTH), ForeignKey("datasets.name", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer(), primary_key=True)
    columns: Mapped[list[dict[str, Any]]] = mapped_column(JSON())
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON())
    declared: Mapped[bool] = mapped_column(Boolean(), default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BatchRow(Base):
    """The manifest: a batch exists for readers exactly when its row does."""

    __tablename__ = "dataset_batches"
    __table_args__ = (Index("ix_dataset_batches_dataset_created_at", "dataset", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset: Mapped[str] = mapped_column(
        String(NAME_LENGTH), ForeignKey("datasets.name", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer())
    uri: Mapped[str] = mapped_column(Text())
    rows: Mapped[int] = mapped_column(BigInteger())
    size_bytes: Mapped[int] = mapped_column(BigInteger())
    stats: Mapped[dict[str, Any]] = mapped_column(JSON())
    source: Mapped[str] = mapped_column(Text())
    lineage: Mapped[list[str] | None] = mapped_column(JSON(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RejectionRow(Base):
    """Rows (or a whole batch) refused, and where they were kept."""

    __tablename__ = "dataset_rejections"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    dataset: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    batch_id: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(BigInteger())
    reason: Mapped[str] = mapped_column(Text())
    uri: Mapped[str] = mapped_column(Text())
    source: Mapped[str] = mapped_column(Text())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class StreamCheckpointRow(Base):
    """How far a stream source has been written to the lake, per partition or shard.

    Committed with the batch that contains the records, so a restart skips what is already in
    the lake even when the bus re-delivers it.
    """

    __tablename__ = "stream_checkpoints"

    source: Mapped[str] = mapped_column(String(255), primary_key=True)
    partition: Mapped[str] = mapped_column(String(255), primary_key=True)
    position: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
