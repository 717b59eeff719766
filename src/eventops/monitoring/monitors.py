"""`Monitor`: how a project declares what to watch on a deployment's captured predictions.

    monitors = [
        Monitor(name="churn-drift", deployment="churn-api", reference="churn_features",
                features=["tenure_months", "monthly_charges"], categorical=["plan"],
                window_rows=500, alpha=0.05, prediction_column="prediction",
                performance=Performance(metric="accuracy", min=0.65, window_labels=200)),
    ]

A monitor watches one lake dataset: the deployment's capture dataset (``predictions_<name>``,
see `capture_dataset_name`) unless `dataset` names another. Every `window_rows` rows (or
`window_seconds` after a window opened) it compares the window with its `reference` (a lake
dataset or a Parquet path) column by column; with `performance` it also joins the labels of
``feedback.received`` to the captured predictions and scores every `window_labels` of them.

A declaration that cannot work is refused when it is built, with an `eventops.errors.
ValidationError` whose field names the monitor and the setting (``monitors.churn-drift.alpha``)
and whose rule says what was broken. `Check` is what a monitor records each time it decides.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from eventops.errors import ValidationError
from eventops.events.catalog import validate_event
from eventops.events.envelope import Event
from eventops.lake.spec import NAME_PATTERN as DATASET_PATTERN
from eventops.store.database import Store
from eventops.store.monitoring import MonitorCheckRow
from eventops.store.outbox import add_events

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
Metric = Literal["accuracy", "f1", "auc", "rmse", "mae"]
# Higher is better for these; rmse and mae are errors, where lower is better.
SCORES: frozenset[str] = frozenset({"accuracy", "f1", "auc"})


def capture_dataset_name(deployment: str) -> str:
    """The lake dataset a deployment captures into: ``predictions_<name>``, - (and anything
    else a dataset name cannot hold) as _. The same rule as `eventops.serving.deployment`,
    written here again because monitoring may not import serving; change both together."""
    return "predictions_" + re.sub(r"[^a-z0-9_]", "_", deployment.lower())


def _named_error(exc: PydanticValidationError, prefix: str) -> ValidationError:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    rule = "known-field" if err["type"] == "extra_forbidden" else err["type"]
    return ValidationError(message, field=f"{prefix}.{where}" if where else prefix, rule=rule)


class Performance(BaseModel):
    """Score the model on delayed ground truth: every `window_labels` labels, `metric` of the
    captured predictions against the labels; degraded below `min` (accuracy, f1, auc) or above
    `max` (rmse, mae). Feedback whose prediction is not found among the captured predictions
    (not sampled, or not flushed yet) is retried until `match_timeout_seconds`, then counted
    as unmatched in the next check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Metric
    min: float | None = Field(None, description="degraded below this (accuracy, f1, auc)")
    max: float | None = Field(None, description="degraded above this (rmse, mae)")
    window_labels: int = Field(200, ge=1, le=1_000_000, description="labels per check")
    label_column: str = Field("label", min_length=1, description="the feedback data's field")
    prediction_column: str | None = Field(
        None, min_length=1, description="captured column scored (default: the monitor's)"
    )
    match_timeout_seconds: float = Field(3600.0, gt=0, description="then counted unmatched")

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except PydanticValidationError as exc:
            raise _named_error(exc, "performance") from None

    @model_validator(mode="after")
    def _bounds(self) -> Performance:
        wrong, bound = ("max", self.max) if self.maximize else ("min", self.min)
        if bound is not None:
            better = "higher" if self.maximize else "lower"
            right = "min" if self.maximize else "max"
            raise ValidationError(
                f"{self.metric} is better {better}: give {right}= to say when it degrades",
                field=f"performance.{wrong}",
                rule="bound-direction",
            )
        return self

    @property
    def maximize(self) -> bool:
        return self.metric in SCORES

    def degraded(self, value: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        if self.min is not None and value < self.min:
            return True
        return self.max is not None and value > self.max


class Monitor(BaseModel):
    """Drift windows on a dataset (captured predictions by default) and, optionally, the
    model's performance on delayed labels. See the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="lowercase letters, digits, - and _")
    deployment: str | None = Field(None, min_length=1, description="whose captures to watch")
    dataset: str | None = Field(None, pattern=DATASET_PATTERN, description="or this dataset")
    reference: str | None = Field(None, min_length=1, description="lake dataset or Parquet path")
    features: list[str] | None = Field(None, description="None: every shared column")
    categorical: list[str] = Field(default_factory=list, description="integer codes as classes")
    window_rows: int | None = Field(1000, ge=1, description="close a window at this many rows")
    window_seconds: float | None = Field(None, gt=0, description="... or this long after opening")
    alpha: float = Field(0.05, gt=0, lt=1)
    correction: Literal["bonferroni", "none"] = "bonferroni"
    methods: dict[str, str] = Field(default_factory=dict, description="column -> drift method")
    prediction_column: str | None = Field("prediction", description="tested for drift too")
    performance: Performance | None = None

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except PydanticValidationError as exc:
            name = data.get("name")
            raise _named_error(exc, f"monitors.{name if name else '?'}") from None
        except ValidationError as exc:  # from a validator below
            raise ValidationError(
                exc.message, field=f"monitors.{_name_of(data)}.{exc.field}", rule=exc.rule
            ) from None

    @model_validator(mode="after")
    def _consistent(self) -> Monitor:
        if self.deployment is None and self.dataset is None:
            raise ValidationError(
                "give deployment= (its captured predictions) or dataset=",
                field="dataset",
                rule="data-source",
            )
        if self.reference is None and self.performance is None:
            raise ValidationError(
                "nothing to check: give reference= (drift) or performance=",
                field="reference",
                rule="check",
            )
        if self.window_rows is None and self.window_seconds is None:
            raise ValidationError(
                "give window_rows= or window_seconds= (or both)",
                field="window_rows",
                rule="window",
            )
        if self.performance is not None and self.deployment is None:
            raise ValidationError(
                "performance joins feedback by deployment: give deployment=",
                field="deployment",
                rule="required",
            )
        return self

    @property
    def source_dataset(self) -> str:
        """The dataset whose batches form the windows."""
        if self.dataset is not None:
            return self.dataset
        assert self.deployment is not None
        return capture_dataset_name(self.deployment)

    @property
    def scored_column(self) -> str:
        """The captured column performance scores against the labels."""
        assert self.performance is not None
        return self.performance.prediction_column or self.prediction_column or "prediction"

    def definition(self) -> dict[str, Any]:
        """The canonical JSON a project records (`eventops apply`)."""
        return self.model_dump(mode="json")


def _name_of(data: dict[str, Any]) -> str:
    name = data.get("name")
    return name if isinstance(name, str) and name else "?"


@dataclass(frozen=True)
class Check:
    """One recorded decision of a monitor (a row of `monitor_checks`).

    `value` is the headline number: the share of features drifted, or the metric's value.
    `result` holds the whole report (`DriftReport.to_dict()` for drift).
    """

    id: int
    monitor: str
    kind: str
    status: str
    trigger: str
    window_seq: int | None
    window_start: datetime | None
    window_end: datetime
    rows: int
    drifted: bool
    degraded: bool
    value: float | None
    result: dict[str, Any]
    error: str | None
    batch_ids: list[str]
    event_ids: list[str]
    created_at: datetime

    @classmethod
    def from_row(cls, row: MonitorCheckRow) -> Check:
        return cls(
            row.id, row.monitor, row.kind, row.status, row.trigger, row.window_seq,
            row.window_start, row.window_end, row.rows, row.drifted, row.degraded, row.value,
            dict(row.result), row.error, list(row.batch_ids), list(row.event_ids), row.created_at,
        )  # fmt: skip

    @property
    def alarm(self) -> bool:
        return self.drifted or self.degraded

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("window_start", "window_end", "created_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out


def list_checks(
    store: Store, monitor: str | None = None, *, kind: str | None = None, limit: int = 20
) -> list[Check]:
    """Checks, newest first."""
    query = select(MonitorCheckRow).order_by(MonitorCheckRow.id.desc()).limit(limit)
    if monitor is not None:
        query = query.where(MonitorCheckRow.monitor == monitor)
    if kind is not None:
        query = query.where(MonitorCheckRow.kind == kind)
    with store.session() as session:
        return [Check.from_row(row) for row in session.scalars(query)]


def latest_checks(store: Store, *, status: str | None = None) -> list[Check]:
    """The newest check of every monitor and kind (with `status`, the newest of that status)."""
    newest = select(func.max(MonitorCheckRow.id)).group_by(
        MonitorCheckRow.monitor, MonitorCheckRow.kind
    )
    if status is not None:
        newest = newest.where(MonitorCheckRow.status == status)
    query = (
        select(MonitorCheckRow)
        .where(MonitorCheckRow.id.in_(newest))
        .order_by(MonitorCheckRow.monitor, MonitorCheckRow.kind)
    )
    with store.session() as session:
        return [Check.from_row(row) for row in session.scalars(query)]


# ---------------------------------------------------------------------- recording
@dataclass(frozen=True)
class Window:
    """The data a check looked at: which window (`seq`, None for a manual check), why it
    closed (`trigger`: rows, time, labels, manual), its time span, its batches, and the last
    event that went into it (the cause of the events the check emits)."""

    trigger: str
    seq: int | None
    start: datetime | None
    end: datetime
    batch_ids: list[str] = field(default_factory=list)
    cause: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What a check found, before it is recorded. `metrics` go into
    ``monitor.check.completed``; `alarm`, when set, is the extra data of the alarm event
    (``monitor.drift.detected`` for drift, ``monitor.performance.degraded`` for performance)."""

    kind: str
    rows: int
    value: float | None
    result: dict[str, Any]
    metrics: dict[str, Any]
    drifted: bool = False
    degraded: bool = False
    error: str | None = None
    alarm: dict[str, Any] | None = None


ALARMS = {"drift": "monitor.drift.detected", "performance": "monitor.performance.degraded"}
COMPLETED = "monitor.check.completed"


def record_check(session: Session, monitor: Monitor, window: Window, outcome: Outcome) -> Check:
    """Insert the check row and, in the same transaction, its events: always
    ``monitor.check.completed``, and the alarm event when the outcome has one."""
    row = MonitorCheckRow(
        monitor=monitor.name, kind=outcome.kind, status="error" if outcome.error else "ok",
        trigger=window.trigger, window_seq=window.seq, window_start=window.start,
        window_end=window.end, rows=outcome.rows, drifted=outcome.drifted,
        degraded=outcome.degraded, value=finite(outcome.value), result=finite(outcome.result),
        error=outcome.error, batch_ids=list(window.batch_ids), event_ids=[],
    )  # fmt: skip
    session.add(row)
    session.flush()  # the id, which the events carry
    common = {
        "monitor": monitor.name,
        "deployment": monitor.deployment,
        "dataset": monitor.source_dataset,
        "kind": outcome.kind,
        "check_id": row.id,
        "window": {
            "seq": window.seq,
            "trigger": window.trigger,
            "start": window.start.isoformat() if window.start else None,
            "end": window.end.isoformat(),
            "rows": outcome.rows,
        },
    }
    completed = {
        **common,
        "status": row.status,
        "drifted": outcome.drifted,
        "degraded": outcome.degraded,
        "metrics": outcome.metrics,
    }
    if outcome.error:
        completed["error"] = outcome.error
    events = [_event(COMPLETED, completed, monitor.name, window.cause)]
    if outcome.alarm is not None:
        events.append(_event(ALARMS[outcome.kind], {**common, **outcome.alarm}, monitor.name,
                             window.cause))  # fmt: skip
    add_events(session, events)
    row.event_ids = [e.id for e in events]
    return Check.from_row(row)


def _event(kind: str, data: dict[str, Any], subject: str, cause: str | None) -> Event:
    """Validated against the catalog now, so a bad payload fails the check, not the relay."""
    event = Event(
        type=kind, data=finite(data), subject=subject, correlationid=cause, causationid=cause
    )
    return validate_event(event)


def finite(value: Any) -> Any:
    """JSON without NaN or infinity (which PostgreSQL's json type refuses): those become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


__all__ = [
    "Check",
    "Metric",
    "Monitor",
    "Outcome",
    "Performance",
    "Window",
    "capture_dataset_name",
    "latest_checks",
    "list_checks",
    "record_check",
]
