"""The catalog of platform event types and the schema of each one's data.

Types are nouns.verbs in the past tense. The platform owns the namespaces below: an event whose
type starts with one of them must be a catalogued type and its data must match the schema, so a
consumer can rely on the fields. Other namespaces are free for users' own events.
Schemas allow extra fields: producers may add context without breaking consumers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from eventops.errors import ValidationError
from eventops.events.envelope import Event


class EventData(BaseModel):
    model_config = ConfigDict(extra="allow")


class BatchIngested(EventData):
    dataset: str
    batch_id: str
    rows: int = Field(ge=0)
    schema_version: int = Field(ge=1)
    uri: str
    stats: dict[str, Any] = {}


class BatchRejected(EventData):
    dataset: str
    batch_id: str | None = None
    rows_rejected: int = Field(ge=0)
    reason: str
    quarantine_uri: str | None = None


class SchemaChanged(EventData):
    dataset: str
    from_version: int | None
    to_version: int
    changes: list[Any] = []


class RunEvent(EventData):
    pipeline: str
    run_id: str


class RunRequested(EventData):
    pipeline: str
    params: dict[str, Any] = {}
    # "manual", or what a trigger rule saw: {"rule": ..., "kind": ..., "events": [...]}
    trigger: dict[str, Any] | str = "manual"


class RunFailed(RunEvent):
    error: str


class StepEvent(RunEvent):
    step: str


class StepFailed(StepEvent):
    error: str


class ModelVersionEvent(EventData):
    model: str
    version: str


class ModelRegistered(ModelVersionEvent):
    run_id: str | None = None  # the EventOps pipeline run that produced the version
    pipeline: str | None = None
    tracking_run_id: str | None = None  # its MLflow run
    model_uri: str | None = None  # models:/<model>/<version>
    metrics: dict[str, float] = {}


class ModelDecided(ModelVersionEvent):
    """A promotion, rejection, rollback or request for approval, with the evidence behind it."""

    alias: str = "champion"
    previous_version: str | None = None  # the alias's version before (None: it had none)
    actor: str = "gate"  # "gate", or who ran `eventops models promote|rollback`
    evidence: dict[str, Any] = {}


class DeploymentEvent(EventData):
    deployment: str
    model: str
    version: str
    previous_version: str | None = None
    alias: str | None = None


class FeedbackReceived(EventData):
    prediction_id: str
    label: Any
    deployment: str | None = None


class MonitorEvent(EventData):
    monitor: str
    metrics: dict[str, Any] = {}


class AlertEvent(EventData):
    rule: str
    severity: str = "warning"
    summary: str = ""


class AuditEvent(EventData):
    actor: str
    action: str
    resource: str | None = None


CATALOG: dict[str, type[EventData]] = {
    "dataset.batch.ingested": BatchIngested,
    "dataset.batch.rejected": BatchRejected,
    "dataset.schema.changed": SchemaChanged,
    "pipeline.run.requested": RunRequested,
    "pipeline.run.started": RunEvent,
    "pipeline.run.succeeded": RunEvent,
    "pipeline.run.failed": RunFailed,
    "pipeline.step.succeeded": StepEvent,
    "pipeline.step.failed": StepFailed,
    "model.version.registered": ModelRegistered,
    "model.version.promoted": ModelDecided,
    "model.version.rejected": ModelDecided,
    "model.version.rolled_back": ModelDecided,
    "model.version.approval_requested": ModelDecided,
    "deployment.updated": DeploymentEvent,
    "deployment.rolled_back": DeploymentEvent,
    "feedback.received": FeedbackReceived,
    "monitor.check.completed": MonitorEvent,
    "monitor.drift.detected": MonitorEvent,
    "monitor.performance.degraded": MonitorEvent,
    "alert.fired": AlertEvent,
    "alert.resolved": AlertEvent,
}
# `audit.<anything>` shares one schema: every mutating call is audited under its own verb.
PREFIX_SCHEMAS: dict[str, type[EventData]] = {"audit.": AuditEvent}
RESERVED_NAMESPACES = frozenset(t.split(".")[0] for t in CATALOG) | {"audit", "bus"}


def schema_for(event_type: str) -> type[EventData] | None:
    if event_type in CATALOG:
        return CATALOG[event_type]
    for prefix, schema in PREFIX_SCHEMAS.items():
        if event_type.startswith(prefix):
            return schema
    return None


def validate_event(event: Event) -> Event:
    """Check a catalogued event's data; refuse unknown types in the platform's namespaces."""
    schema = schema_for(event.type)
    if schema is None:
        if event.type.split(".")[0] in RESERVED_NAMESPACES:
            raise ValidationError(
                f"{event.type!r} is not a catalogued type of the reserved "
                f"'{event.type.split('.')[0]}' namespace (see `eventops events types`)",
                field="type",
                rule="catalog",
            )
        return event
    try:
        schema.model_validate(event.data)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in ("data", *err["loc"]))
        raise ValidationError(
            f"{err['msg']} (schema of {event.type})", field=loc, rule=err["type"]
        ) from None
    return event
