"""The decisions history: each decision as a row and an event in one transaction, and the
champion stack that rollback reads back from those rows.

MLflow remembers only where an alias points now; rollback and audit need where it pointed
before, who moved it and why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from eventops.events.catalog import ModelDecided
from eventops.events.envelope import Event
from eventops.registry.views import DecisionView, json_safe
from eventops.store import add_event
from eventops.store.registry import ModelDecisionRow

log = logging.getLogger(__name__)


def record(
    session: Session,
    *,
    model: str,
    version: str,
    decision: str,
    alias: str,
    previous: str | None,
    actor: str,
    evidence: Mapping[str, Any] | None,
    cause: Event | None,
) -> DecisionView:
    """Add the decision's row and its `model.version.<decision>` event to `session` (caused by
    `cause` when given, so the chain back to the data batch stays intact)."""
    facts: dict[str, Any] = json_safe(dict(evidence or {}))
    data = ModelDecided(
        model=model,
        version=version,
        alias=alias,
        previous_version=previous,
        actor=actor,
        evidence=facts,
    ).model_dump(mode="json")
    kind = f"model.version.{decision}"
    event = (
        cause.caused(kind, data=data, subject=model)
        if cause is not None
        else Event(type=kind, subject=model, data=data)
    )
    row = ModelDecisionRow(
        model=model,
        version=version,
        decision=decision,
        alias=alias,
        previous_version=previous,
        actor=actor,
        evidence=facts,
        event_id=event.id,
    )
    session.add(row)
    add_event(session, event)
    session.flush()
    log.info("model %s: version %s %s (%s) by %s", model, version, decision, alias, actor)
    return DecisionView.from_row(row)


def decisions(session: Session, model: str, limit: int | None = None) -> list[DecisionView]:
    """Newest first."""
    query = (
        select(ModelDecisionRow)
        .where(ModelDecisionRow.model == model)
        .order_by(ModelDecisionRow.id.desc())
        .limit(limit)
    )
    return [DecisionView.from_row(row) for row in session.scalars(query)]


def champion_history(session: Session, model: str, alias: str) -> list[str]:
    """The versions that held `alias`, oldest first, as a stack: a promotion pushes its version,
    a rollback pops the version it rolled back. A version rolled back is therefore no longer a
    candidate for the next rollback, unless it is promoted again."""
    rows = session.scalars(
        select(ModelDecisionRow)
        .where(ModelDecisionRow.model == model, ModelDecisionRow.alias == alias)
        .order_by(ModelDecisionRow.id)
    )
    stack: list[str] = []
    for row in rows:
        if row.decision == "promoted":
            stack.append(row.version)
        elif row.decision == "rolled_back" and row.previous_version in stack:
            index = len(stack) - 1 - stack[::-1].index(row.previous_version)
            del stack[index]
    return stack
