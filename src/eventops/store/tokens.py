"""API tokens: who may call the REST API, with which role, until when.

The secret itself is never stored, only `digest` (see `eventops.api.tokens` for why a salted
SHA-256 is enough) and `prefix`, the first characters of the secret, which find the row without
scanning the table and let a person recognise a token in `eventops tokens list`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from eventops.store.tables import Base, UTCDateTime, utcnow

PREFIX_LENGTH = 12  # characters of the secret after "eo_": 72 bits, enough to find one row


class ApiTokenRow(Base):
    """One API token; revoking sets `revoked_at`, so the audit trail keeps its name and role."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_prefix", "prefix"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(PREFIX_LENGTH))
    digest: Mapped[str] = mapped_column(String(64))  # hex SHA-256 of "<id>:<secret>"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"ApiTokenRow({self.id!r}, {self.name!r}, {self.role})"


__all__ = ["PREFIX_LENGTH", "ApiTokenRow"]
