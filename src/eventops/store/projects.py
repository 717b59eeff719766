"""The applied project definition: what `eventops apply` last recorded for each project.

One row per project name holds the canonical JSON definition (datasets, pipelines with their
steps and triggers, transforms), its digest, and who applied it when. `apply` diffs a freshly
loaded project against this row to print its plan, and replaces the row in the same
transaction as the `audit.project.applied` event (outbox).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from eventops.store.tables import Base, UTCDateTime, utcnow


class ProjectRow(Base):
    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    definition: Mapped[dict[str, Any]] = mapped_column(JSON())
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    applied_by: Mapped[str] = mapped_column(String(255))
