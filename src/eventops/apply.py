"""Plan and apply a loaded `Project`.

`plan` diffs a project's canonical `definition` with the one recorded in the store; `apply`
declares its datasets in the lake and records the definition with an ``audit.project.applied``
event in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from eventops.events.envelope import Event
from eventops.lake.catalog import Lake
from eventops.project import Project, digest_of
from eventops.store import Store, add_event, utcnow
from eventops.store.projects import ProjectRow

SOURCE = "/eventops/projects"
APPLIED = "audit.project.applied"
SECTIONS = ("datasets", "pipelines", "transforms", "gates", "deployments", "monitors", "alerts")
Action = Literal["create", "change", "remove", "unchanged"]


@dataclass(frozen=True)
class PlanItem:
    kind: str  # one of SECTIONS
    name: str
    action: Action
    fields: tuple[str, ...] = ()  # for a change: the top-level keys that differ


@dataclass
class Plan:
    project: str
    digest: str
    previous_digest: str | None
    items: list[PlanItem]

    @property
    def changes(self) -> list[PlanItem]:
        return [i for i in self.items if i.action != "unchanged"]

    @property
    def empty(self) -> bool:
        return not self.changes and self.digest == self.previous_digest

    def counts(self) -> dict[str, int]:
        return {
            a: sum(1 for i in self.items if i.action == a) for a in ("create", "change", "remove")
        }


def _keyed(section: Any) -> dict[str, Any]:
    if isinstance(section, Mapping):
        return dict(section)
    if isinstance(section, list):
        return {
            str(item.get("name"))
            if isinstance(item, Mapping) and item.get("name")
            else f"#{i}": item
            for i, item in enumerate(section)
        }
    return {}


def diff(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[PlanItem]:
    """Per item of each section: create, change (with the differing keys), remove, unchanged."""
    items: list[PlanItem] = []
    for kind in SECTIONS:
        after, before = _keyed(new.get(kind)), _keyed((old or {}).get(kind))
        for name in sorted(set(after) | set(before)):
            if name not in before:
                items.append(PlanItem(kind, name, "create"))
            elif name not in after:
                items.append(PlanItem(kind, name, "remove"))
            elif after[name] == before[name]:
                items.append(PlanItem(kind, name, "unchanged"))
            else:
                a, b = after[name], before[name]
                keys = (
                    tuple(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))
                    if isinstance(a, Mapping) and isinstance(b, Mapping)
                    else ()
                )
                items.append(PlanItem(kind, name, "change", keys))
    return items


def applied(store: Store, name: str) -> ProjectRow | None:
    with store.session() as session:
        row = session.get(ProjectRow, name)
        if row is not None:
            session.expunge(row)
        return row


def plan(project: Project, store: Store) -> Plan:
    row = applied(store, project.name)
    definition = project.definition()
    return Plan(
        project.name,
        digest_of(definition),
        row.digest if row else None,
        diff(definition, row.definition if row else None),
    )


def apply(project: Project, lake: Lake, *, actor: str) -> Plan:
    """Declare the created or changed datasets, record the definition and audit it."""
    current = plan(project, lake.store)
    if current.empty:
        return current
    for item in current.changes:
        if item.kind == "datasets" and item.action in ("create", "change"):
            lake.declare(project.datasets[item.name])
    definition = project.definition()
    counts = current.counts()
    event = Event(
        type=APPLIED,
        source=SOURCE,
        subject=project.name,
        data={
            "actor": actor,
            "action": "apply",
            "resource": f"project/{project.name}",
            "digest": current.digest,
            "previous_digest": current.previous_digest,
            "changes": counts,
            "items": [
                {"kind": i.kind, "name": i.name, "action": i.action} for i in current.changes
            ],
        },
    )
    with lake.store.session() as session:
        row = session.get(ProjectRow, project.name, with_for_update=True)
        if row is None:
            row = ProjectRow(name=project.name)
            session.add(row)
        row.digest, row.definition = current.digest, definition
        row.applied_at, row.applied_by = utcnow(), actor
        add_event(session, event)
    return current


__all__ = ["APPLIED", "Plan", "PlanItem", "applied", "apply", "diff", "plan"]
