"""Pagination: ``?limit=&cursor=``, answered with ``{"items": [...], "next": cursor | null}``.

The cursor is opaque to clients. For most lists it is an offset into a stable order (they are
small: models, datasets, tokens); the event list uses the outbox id instead, so new events do
not shift the pages a client is walking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Query
from pydantic import BaseModel

from eventops.errors import ValidationError

MAX_LIMIT = 500


class Page(BaseModel):
    items: list[dict[str, Any]]
    next: str | None = None


@dataclass(frozen=True)
class PageRequest:
    limit: int
    cursor: str | None

    @property
    def offset(self) -> int:
        return cursor_number(self.cursor)

    @property
    def end(self) -> int:
        """How many items to fetch to know whether there is a next page."""
        return self.offset + self.limit + 1


def page_request(
    limit: int = Query(50, ge=1, le=MAX_LIMIT, description="Items per page."),
    cursor: str | None = Query(None, description="`next` of the previous page."),
) -> PageRequest:
    return PageRequest(limit, cursor)


def cursor_number(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    # isascii: str.isdigit() also accepts digits int() refuses, such as '²'
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
        raise ValidationError("not a cursor from this API", field="cursor", rule="cursor")
    return int(cursor)


def paginate(items: Sequence[dict[str, Any]], page: PageRequest) -> Page:
    """One page of `items`, all of which are fetched (or at least `page.end` of them)."""
    start = page.offset
    chunk = list(items[start : start + page.limit])
    more = len(items) > start + page.limit
    return Page(items=chunk, next=str(start + page.limit) if more else None)
