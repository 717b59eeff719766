"""Data catalog: datasets, schema versions, batch manifest, rejections, stream checkpoints.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_datasets"),
    )
    op.create_table(
        "dataset_schema_versions",
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("declared", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset"], ["datasets.name"], ondelete="CASCADE",
            name="fk_dataset_schema_versions_dataset_datasets",
        ),
        sa.PrimaryKeyConstraint("dataset", "version", name="pk_dataset_schema_versions"),
    )  # fmt: skip
    op.create_table(
        "dataset_batches",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("lineage", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset"], ["datasets.name"], ondelete="CASCADE",
            name="fk_dataset_batches_dataset_datasets",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_dataset_batches"),
    )  # fmt: skip
    op.create_index(
        "ix_dataset_batches_dataset_created_at", "dataset_batches", ["dataset", "created_at"]
    )
    op.create_table(
        "dataset_rejections",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dataset_rejections"),
    )
    op.create_index("ix_dataset_rejections_dataset", "dataset_rejections", ["dataset"])
    op.create_table(
        "stream_checkpoints",
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("partition", sa.String(255), nullable=False),
        sa.Column("position", sa.String(255), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("source", "partition", name="pk_stream_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("stream_checkpoints")
    op.drop_index("ix_dataset_rejections_dataset", table_name="dataset_rejections")
    op.drop_table("dataset_rejections")
    op.drop_index("ix_dataset_batches_dataset_created_at", table_name="dataset_batches")
    op.drop_table("dataset_batches")
    op.drop_table("dataset_schema_versions")
    op.drop_table("datasets")
