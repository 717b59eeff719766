"""What the registry shows: models, their versions and the decisions taken about them.

Plain frozen dataclasses rather than MLflow's entities, so callers (CLI, API, gates) get text
versions, parsed EventOps tags and timezone-aware times without knowing MLflow's types.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from eventops.registry.names import (
    TAG_EVENT_ID,
    TAG_HOLDOUT_URI,
    TAG_LABEL,
    TAG_METRICS,
    TAG_PIPELINE,
    TAG_RUN_ID,
)
from eventops.store.registry import ModelDecisionRow


def from_millis(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as None: JSON has no NaN and PostgreSQL refuses it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_safe(value.item())
    return value


@dataclass(frozen=True)
class VersionView:
    model: str
    version: str
    status: str
    aliases: list[str]
    tags: dict[str, str]
    metrics: dict[str, float]
    source: str
    tracking_run_id: str | None
    run_id: str | None  # the EventOps pipeline run that produced it
    pipeline: str | None
    holdout_uri: str | None
    label: str | None
    description: str | None
    created_at: datetime | None

    @classmethod
    def from_mlflow(cls, entity: Any) -> VersionView:
        tags = {str(k): str(v) for k, v in (entity.tags or {}).items()}
        try:
            metrics = {str(k): float(v) for k, v in json.loads(tags.get(TAG_METRICS, "{}")).items()}
        except (ValueError, TypeError, AttributeError):
            metrics = {}
        return cls(
            model=str(entity.name),
            version=str(entity.version),
            status=str(entity.status),
            aliases=sorted(str(a) for a in (entity.aliases or [])),
            tags=tags,
            metrics=metrics,
            source=str(entity.source),
            tracking_run_id=str(entity.run_id) if entity.run_id else None,
            run_id=tags.get(TAG_RUN_ID),
            pipeline=tags.get(TAG_PIPELINE),
            holdout_uri=tags.get(TAG_HOLDOUT_URI),
            label=tags.get(TAG_LABEL),
            description=entity.description or None,
            created_at=from_millis(entity.creation_timestamp),
        )

    @property
    def event_id(self) -> str | None:
        """The `model.version.registered` event announcing this version."""
        return self.tags.get(TAG_EVENT_ID)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat() if self.created_at else None
        return json_safe(out)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ModelSummary:
    name: str
    description: str | None
    aliases: dict[str, str]
    latest_version: str | None
    updated_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["updated_at"] = self.updated_at.isoformat() if self.updated_at else None
        return out


@dataclass(frozen=True)
class ModelView:
    name: str
    description: str | None
    aliases: dict[str, str]
    versions: list[VersionView] = field(default_factory=list)  # newest first

    def version(self, version: str) -> VersionView | None:
        return next((v for v in self.versions if v.version == str(version)), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "aliases": self.aliases,
            "versions": [v.to_json() for v in self.versions],
        }


@dataclass(frozen=True)
class DecisionView:
    id: int
    model: str
    version: str
    decision: str  # promoted | rejected | rolled_back | approval_requested
    alias: str
    previous_version: str | None
    actor: str
    evidence: dict[str, Any]
    event_id: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: ModelDecisionRow) -> DecisionView:
        return cls(
            id=row.id,
            model=row.model,
            version=row.version,
            decision=row.decision,
            alias=row.alias,
            previous_version=row.previous_version,
            actor=row.actor,
            evidence=dict(row.evidence or {}),
            event_id=row.event_id,
            created_at=row.created_at,
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        return out
