"""The events the lake announces. Built here, written to the outbox by the catalog in the same
transaction as the change they describe; `cause` links them to the event that led to them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventops.events.envelope import Event

SOURCE = "/eventops/lake"
# Per-column figures small enough for every event; the full statistics stay in the catalog.
EVENT_STAT_KEYS = ("count", "nulls", "min", "max", "mean", "distinct")


def _event(type_: str, name: str, data: dict[str, Any], cause: Event | None) -> Event:
    if cause is not None:
        return cause.caused(type_, data=data, subject=name, source=SOURCE)
    return Event(type=type_, source=SOURCE, subject=name, data=data)


def schema_changed(
    name: str,
    before: int | None,
    after: int,
    changes: list[dict[str, Any]],
    cause: Event | None = None,
) -> Event:
    data = {"dataset": name, "from_version": before, "to_version": after, "changes": changes}
    return _event("dataset.schema.changed", name, data, cause)


def batch_rejected(
    name: str, batch_id: str, rows: int, reason: str, uri: str, cause: Event | None
) -> Event:
    data = {"dataset": name, "batch_id": batch_id, "rows_rejected": rows, "reason": reason,
            "quarantine_uri": uri}  # fmt: skip
    return _event("dataset.batch.rejected", name, data, cause)


def batch_ingested(
    name: str, batch_id: str, rows: int, version: int, uri: str, stats: dict[str, Any], source: str,
    lineage: Sequence[str] | None, cause: Event | None,
) -> Event:  # fmt: skip
    summary = {
        column: {k: v for k, v in values.items() if k in EVENT_STAT_KEYS}
        for column, values in stats["columns"].items()
    }
    data = {"dataset": name, "batch_id": batch_id, "rows": rows, "schema_version": version, "uri": uri,
            "source": source, "stats": summary, "lineage": list(lineage or [])}  # fmt: skip
    return _event("dataset.batch.ingested", name, data, cause)
