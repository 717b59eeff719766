"""EventBridge API-destination deliveries: rules on AWS start pipelines and raise alerts.

An EventBridge *API destination* posts the matched event (the whole envelope: `id`, `source`,
`detail-type`, `time`, `detail`...) to an HTTPS endpoint, with a header its *connection* adds.
A connection with API-key auth, header name ``Authorization`` and value ``Bearer <token>``,
carries an EventOps operator token, so these routes use the same authentication and roles as
every other one.

EventBridge retries a delivery it did not see acknowledged, so both routes are idempotent on
the EventBridge event id: a pipeline start records the id in the run's own transaction (a
second delivery answers 200 with the same run instead of 202 with a new one), an alarm's `alert.*` event gets
an id derived from it and is recorded once.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from eventops.api.audit import audit_event
from eventops.api.auth import context_of, require
from eventops.api.tokens import Principal
from eventops.errors import ValidationError
from eventops.events.catalog import validate_event
from eventops.events.envelope import Event
from eventops.pipelines.dsl import get_pipeline
from eventops.pipelines.runner import AlreadyRequested
from eventops.pipelines.runs import list_runs
from eventops.store import add_event
from eventops.store.idempotency import claim

router = APIRouter(prefix="/api/aws/eventbridge", tags=["aws"])

ALARM_DETAIL_TYPE = "CloudWatch Alarm State Change"
SOURCE = "/eventops/aws/eventbridge"
NAMESPACE = uuid.UUID("6f1c0f8e-3b1a-5c55-9a57-0e7e1a1f2b11")  # ids derived from EventBridge ids
PIPELINES_CONSUMER = "eventbridge-pipelines"
ALARMS_CONSUMER = "eventbridge-alarms"
LOOKBACK_RUNS = 500  # how far back a repeated delivery's run is looked for
DETAIL_PARAM = "eventbridge_detail"  # a pipeline parameter of this name receives `detail`


class EventBridgeEvent(BaseModel):
    """The envelope EventBridge delivers (extra fields are kept, not refused)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str = Field(..., min_length=1, max_length=256, description="EventBridge event id")
    source: str = Field(..., min_length=1, max_length=256)
    detail_type: str = Field(..., alias="detail-type", min_length=1, max_length=256)
    time: datetime | None = None
    account: str | None = None
    region: str | None = None
    resources: list[str] = Field(default_factory=list)
    detail: dict[str, Any] = Field(default_factory=dict)


def _summary(event: EventBridgeEvent) -> dict[str, Any]:
    return {
        "id": event.id, "source": event.source, "detail_type": event.detail_type,
        "time": event.time.isoformat() if event.time else None, "account": event.account,
        "region": event.region, "resources": event.resources,
    }  # fmt: skip


@router.post(
    "/pipelines/{name}",
    status_code=202,
    summary="Start a pipeline run from an EventBridge delivery (idempotent on its id)",
)
def start_pipeline(
    request: Request,
    response: Response,
    name: str,
    body: EventBridgeEvent,
    principal: Principal = Depends(require("operator")),
) -> dict[str, Any]:
    """Request a run of pipeline NAME; the EventBridge event is its trigger and its `detail`
    its `eventbridge_detail` parameter when the pipeline function takes one. 202 with the new run, or
    200 with the run an earlier delivery of the same event id started."""
    ctx = context_of(request)
    trigger = f"eventbridge:{body.id}"
    runner = ctx.runner()  # loads the project: its pipelines are known by name after it
    takes = get_pipeline(name).param_names
    params = {DETAIL_PARAM: body.detail} if DETAIL_PARAM in takes else {}
    try:
        run_id = runner.request(
            name, params, trigger=trigger, once=(PIPELINES_CONSUMER, f"{name}:{body.id}")
        )
    except AlreadyRequested:
        response.status_code = 200
        for view in list_runs(ctx.store, name, limit=LOOKBACK_RUNS):
            if view.trigger.get("name") == trigger:
                return {
                    "run_id": view.id,
                    "pipeline": name,
                    "status": view.status,
                    "duplicate": True,
                }
        return {"run_id": None, "pipeline": name, "status": "duplicate", "duplicate": True}
    with ctx.store.session() as session:
        add_event(
            session,
            audit_event(
                principal.name,
                "run",
                "requested",
                f"run/{run_id}",
                pipeline=name,
                eventbridge=_summary(body),
            ),
        )
    return {"run_id": run_id, "pipeline": name, "status": "requested", "duplicate": False}


@router.post(
    "/alarms",
    status_code=202,
    summary="A CloudWatch alarm state change becomes alert.fired / alert.resolved",
)
def alarm(
    request: Request,
    body: EventBridgeEvent,
    severity: Literal["info", "warning", "critical"] = Query(
        "warning", description="severity of the alert.fired events this rule delivers"
    ),
    principal: Principal = Depends(require("operator")),
) -> dict[str, Any]:
    """ALARM becomes `alert.fired`, OK `alert.resolved` (rule `cloudwatch:<alarm name>`,
    subject the alarm's ARN); INSUFFICIENT_DATA is acknowledged and ignored. The event leaves
    through the outbox, so the alert rules' channels and the UI see it like any other alert."""
    if body.detail_type != ALARM_DETAIL_TYPE:
        raise ValidationError(
            f"expected {ALARM_DETAIL_TYPE!r}, got {body.detail_type!r}",
            field="detail-type",
            rule="alarm-state-change",
        )
    detail = body.detail
    alarm_name = detail.get("alarmName")
    state = detail.get("state") if isinstance(detail.get("state"), dict) else None
    if not isinstance(alarm_name, str) or not alarm_name:
        raise ValidationError(
            "the alarm's name is missing", field="detail.alarmName", rule="required"
        )
    if state is None or state.get("value") not in ("ALARM", "OK", "INSUFFICIENT_DATA"):
        raise ValidationError(
            "state.value must be ALARM, OK or INSUFFICIENT_DATA",
            field="detail.state.value",
            rule="one-of",
        )
    value = str(state["value"])
    if value == "INSUFFICIENT_DATA":
        return {"status": "ignored", "reason": "INSUFFICIENT_DATA is neither firing nor resolved"}
    previous = detail.get("previousState") if isinstance(detail.get("previousState"), dict) else {}
    event = validate_event(
        Event(
            id=str(uuid.uuid5(NAMESPACE, body.id)),
            type="alert.fired" if value == "ALARM" else "alert.resolved",
            source=SOURCE,
            subject=body.resources[0] if body.resources else f"cloudwatch:{alarm_name}",
            data={
                "rule": f"cloudwatch:{alarm_name}",
                "severity": severity if value == "ALARM" else "info",
                "summary": str(state.get("reason", ""))[:2000],
                "alarm": alarm_name,
                "state": value,
                "previous_state": (previous or {}).get("value"),
                "eventbridge": _summary(body),
            },
        )
    )
    ctx = context_of(request)
    with ctx.store.session() as session:
        if not claim(session, ALARMS_CONSUMER, body.id):
            return {"status": "duplicate", "event_id": event.id, "type": event.type}
        add_event(session, event)
        add_event(
            session,
            audit_event(
                principal.name,
                "alert",
                "received",
                f"cloudwatch:{alarm_name}",
                state=value,
                event_id=event.id,
            ),
        )
    return {"status": "accepted", "event_id": event.id, "type": event.type}
