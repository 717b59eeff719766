"""Feedback: ground-truth labels joined to prediction ids, announced as ``feedback.received``.

`POST /feedback` takes one ``{"prediction_id": "...", "label": ...}`` object or a list of them
(at most `MAX_ITEMS`). All items are checked first; a body with one bad item is refused whole
(4xx naming the item and the field), so a client never has to find out which half went in.
The events are written to the outbox in one transaction (all or none) and relayed to the bus;
the monitor joins them to the captured predictions by id. Each event's subject is the
prediction id, so the labels of one prediction stay in order on the bus.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventops.events.catalog import validate_event
from eventops.events.envelope import Event
from eventops.serving.schema import InputError
from eventops.store import Store, add_events

log = logging.getLogger(__name__)

MAX_ITEMS = 10_000
MAX_ID_CHARS = 200


class Relay(Protocol):
    def relay_once(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Feedback:
    prediction_id: str
    label: Any


def parse_feedback(payload: Any) -> list[Feedback]:
    """The feedback items of a JSON body, or InputError naming the item and field."""
    items = payload if type(payload) is list else [payload]
    if not items:
        raise InputError("the list is empty; send feedback items", field="body", rule="non-empty")
    if len(items) > MAX_ITEMS:
        raise InputError(
            f"at most {MAX_ITEMS:,} items per request; got {len(items):,}",
            field="body",
            rule="max-items",
            status=413,
        )
    out = []
    for index, item in enumerate(items):
        where = f"[{index}]" if type(payload) is list else ""
        if type(item) is not dict:
            raise InputError(
                "a feedback item is an object with prediction_id and label",
                field=where or "body",
                rule="object",
            )
        unknown = sorted(set(item) - {"prediction_id", "label"})
        if unknown:
            raise InputError(
                f"unknown field(s) {', '.join(unknown)}; send prediction_id and label",
                field=f"{where}.{unknown[0]}".lstrip("."),
                rule="known-field",
            )
        pid = item.get("prediction_id")
        if type(pid) is not str or not pid.strip() or len(pid) > MAX_ID_CHARS:
            raise InputError(
                f"prediction_id must be a non-empty string of at most {MAX_ID_CHARS} characters",
                field=f"{where}.prediction_id".lstrip("."),
                rule="required" if pid is None else "type",
            )
        if "label" not in item or item["label"] is None:
            raise InputError(
                "label is required (any JSON value but null)",
                field=f"{where}.label".lstrip("."),
                rule="required",
            )
        out.append(Feedback(pid, item["label"]))
    return out


def feedback_events(items: Sequence[Feedback], deployment: str) -> list[Event]:
    source = f"/eventops/serving/{deployment}"
    events = [
        Event(
            type="feedback.received",
            source=source,
            subject=item.prediction_id,
            data={
                "prediction_id": item.prediction_id,
                "label": item.label,
                "deployment": deployment,
            },
        )
        for item in items
    ]
    for event in events:
        validate_event(event)
    return events


def emit_feedback(
    store: Store, items: Sequence[Feedback], deployment: str, relay: Relay | None = None
) -> list[Event]:
    """Write the items' events to the outbox (one transaction), then relay (best effort)."""
    events = feedback_events(items, deployment)
    with store.session() as session:
        add_events(session, events)
    if relay is not None:
        try:
            relay.relay_once()
        except Exception as exc:  # they stay in the outbox for the next relay
            log.warning("relay after feedback failed: %s", exc)
    return events


__all__ = ["MAX_ITEMS", "Feedback", "emit_feedback", "feedback_events", "parse_feedback"]
