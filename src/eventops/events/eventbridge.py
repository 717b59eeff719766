"""The EventBridge bridge: the platform's lifecycle events put on an EventBridge bus.

Each event becomes one `PutEvents` entry: `Source` is the configured source (``eventops``),
`DetailType` the CloudEvents type (``model.version.promoted``), `Detail` the whole event as
CloudEvents JSON (id, subject, time, data...), `Time` the event's time. A rule on AWS can then
match on type and on anything in the event, e.g.
``{"source": ["eventops"], "detail-type": ["model.version.promoted"]}``.

`PutEvents` takes at most 10 entries and 256 KiB per call and answers 200 even when some entries
failed; `events.aws.put_in_batches` sends 10 at a time and re-sends only the entries that
failed with a transient code. An entry over the size limit is never sent: it is returned as
failed (``EntryTooLarge``), so the forwarder dead-letters it with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventops.events import aws
from eventops.events.envelope import Event

MAX_ENTRIES = 10
MAX_ENTRY_BYTES = 256 * 1024


def entry_size(entry: dict[str, Any]) -> int:
    """The size EventBridge counts for an entry (its strings, UTF-8, plus 14 bytes of time)."""
    size = 14 if "Time" in entry else 0
    for key in ("Source", "DetailType", "Detail", "EventBusName"):
        size += len(str(entry.get(key, "")).encode())
    return size + sum(len(r.encode()) for r in entry.get("Resources", []))


class EventBridgeSink:
    """Puts events on an EventBridge bus (name or ARN)."""

    def __init__(
        self,
        bus: str,
        *,
        types: list[str],
        source: str = "eventops",
        region: str | None = None,
        client: Any = None,
        backoff: aws.Backoff = aws.DEFAULT_BACKOFF,
    ) -> None:
        self.bus, self.types, self.source, self.backoff = bus, list(types), source, backoff
        self.name = f"eventbridge:{bus}"
        self.client = client if client is not None else aws.client("events", region=region)
        self.retries = aws.RetryStats()

    def entry(self, event: Event) -> dict[str, Any]:
        return {
            "Source": self.source,
            "DetailType": event.type,
            "Detail": event.to_json(),
            "Time": event.time,
            "Resources": [],
            "EventBusName": self.bus,
        }

    def send(self, events: Sequence[Event]) -> list[tuple[int, str, str]]:
        entries = [self.entry(e) for e in events]
        failed: list[tuple[int, str, str]] = []
        sendable: list[int] = []
        for index, entry in enumerate(entries):
            size = entry_size(entry)
            if size > MAX_ENTRY_BYTES:
                failed.append(
                    (index, "EntryTooLarge", f"entry is {size:,} bytes; EventBridge takes 256 KiB")
                )
            else:
                sendable.append(index)
        outcome = aws.put_in_batches(
            [entries[i] for i in sendable], size=MAX_ENTRIES, send=self._put,
            what=f"events put_events on {self.bus}", backoff=self.backoff, stats=self.retries,
        )  # fmt: skip
        failed.extend((sendable[i], code, message) for i, code, message in outcome.failed)
        return sorted(failed)

    def _put(self, entries: list[dict[str, Any]]) -> list[tuple[str, str] | None]:
        answer = self.client.put_events(Entries=entries)
        results: list[tuple[str, str] | None] = []
        for item in answer.get("Entries", []):
            code = item.get("ErrorCode")
            results.append((str(code), str(item.get("ErrorMessage", ""))) if code else None)
        return results


__all__ = ["MAX_ENTRIES", "MAX_ENTRY_BYTES", "EventBridgeSink", "entry_size"]
