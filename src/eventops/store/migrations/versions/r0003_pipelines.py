"""Pipeline engine: runs, steps, step cache, trigger state.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pipeline_runs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("trigger", sa.JSON(), nullable=False),
        sa.Column("correlation_id", sa.String(255), nullable=True),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("heartbeat_at", TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pipeline_runs"),
    )
    op.create_index(
        "ix_pipeline_runs_pipeline_created_at", "pipeline_runs", ["pipeline", "created_at"]
    )
    op.create_index("ix_pipeline_runs_status", "pipeline_runs", ["status"])
    op.create_table(
        "pipeline_steps",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=True),
        sa.Column("outputs", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("log", sa.Text(), nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["pipeline_runs.id"], ondelete="CASCADE",
            name="fk_pipeline_steps_run_id_pipeline_runs",
        ),
        sa.PrimaryKeyConstraint("run_id", "step", name="pk_pipeline_steps"),
    )  # fmt: skip
    op.create_table(
        "step_cache",
        sa.Column("cache_key", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(255), nullable=False),
        sa.Column("step", sa.String(255), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("cache_key", name="pk_step_cache"),
    )
    op.create_table(
        "trigger_state",
        sa.Column("pipeline", sa.String(255), nullable=False),
        sa.Column("rule", sa.String(255), nullable=False),
        sa.Column("pending_rows", sa.Integer(), nullable=False),
        sa.Column("pending_events", sa.JSON(), nullable=False),
        sa.Column("last_fired_at", TS, nullable=True),
        sa.Column("last_run_id", sa.String(64), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("pipeline", "rule", name="pk_trigger_state"),
    )


def downgrade() -> None:
    op.drop_table("trigger_state")
    op.drop_table("step_cache")
    op.drop_table("pipeline_steps")
    op.drop_index("ix_pipeline_runs_status", table_name="pipeline_runs")
    op.drop_index("ix_pipeline_runs_pipeline_created_at", table_name="pipeline_runs")
    op.drop_table("pipeline_runs")
