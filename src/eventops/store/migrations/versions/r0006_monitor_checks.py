"""Monitors: their checks, open windows and joined labels.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "monitor_checks",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("monitor", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("window_seq", sa.Integer(), nullable=True),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("drifted", sa.Boolean(), nullable=False),
        sa.Column("degraded", sa.Boolean(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("batch_ids", sa.JSON(), nullable=False),
        sa.Column("event_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_monitor_checks"),
        sa.UniqueConstraint(
            "monitor", "kind", "window_seq", name="uq_monitor_checks_monitor_kind_window_seq"
        ),
    )
    op.create_index(
        "ix_monitor_checks_monitor_kind_id", "monitor_checks", ["monitor", "kind", "id"]
    )
    op.create_table(
        "monitor_windows",
        sa.Column("monitor", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("batch_ids", sa.JSON(), nullable=False),
        sa.Column("event_ids", sa.JSON(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("monitor", "kind", name="pk_monitor_windows"),
    )
    op.create_table(
        "monitor_labels",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("monitor", sa.String(255), nullable=False),
        sa.Column("prediction_id", sa.String(255), nullable=False),
        sa.Column("label", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("prediction", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("check_id", _id(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_monitor_labels"),
    )
    op.create_index(
        "ix_monitor_labels_monitor_status_id", "monitor_labels", ["monitor", "status", "id"]
    )
    op.create_index(
        "ix_monitor_labels_monitor_prediction_id", "monitor_labels", ["monitor", "prediction_id"]
    )
    op.create_index("ix_monitor_labels_check_id", "monitor_labels", ["check_id"])


def downgrade() -> None:
    op.drop_index("ix_monitor_labels_check_id", table_name="monitor_labels")
    op.drop_index("ix_monitor_labels_monitor_prediction_id", table_name="monitor_labels")
    op.drop_index("ix_monitor_labels_monitor_status_id", table_name="monitor_labels")
    op.drop_table("monitor_labels")
    op.drop_table("monitor_windows")
    op.drop_index("ix_monitor_checks_monitor_kind_id", table_name="monitor_checks")
    op.drop_table("monitor_checks")
