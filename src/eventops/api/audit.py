"""Audit events for the control plane: `audit.<noun>.<verb>` with actor, action and resource.

Every mutating call builds one with `audit_event` and queues it with `add_event` in the session
of the change it records, so the database holds both or neither.
"""

from __future__ import annotations

from typing import Any

from eventops.events.catalog import validate_event
from eventops.events.envelope import Event

SOURCE = "/eventops/api"


def audit_event(actor: str, noun: str, verb: str, resource: str, **details: Any) -> Event:
    """A validated `audit.<noun>.<verb>` event; `details` must not hold secrets."""
    event = Event(
        type=f"audit.{noun}.{verb}",
        source=SOURCE,
        subject=resource,
        data={"actor": actor, "action": f"{noun}.{verb}", "resource": resource, **details},
    )
    return validate_event(event)
