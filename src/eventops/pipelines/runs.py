"""Pipeline runs as read back from the metadata store: `RunView` and `StepView`.

What a step logged (`log_metric`) and read (`read_dataset`) is kept on its step row. Until the
step table has a column for it, it lives in the row's `outputs` JSON under the reserved key
`_meta` (`{"metrics": [...], "reads": [...]}`); the other keys of `outputs` are artifact
references. Likewise the MLflow run id and tracking errors live in the run's `trigger` JSON under
`mlflow_run_id` and `tracking_errors`. Both are temporary: read them through these views.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from eventops.errors import NotFound
from eventops.pipelines.context import Metric
from eventops.pipelines.dsl import Node, get_pipeline
from eventops.store import PipelineRunRow, PipelineStepRow, Store

META = "_meta"  # reserved key of a step's `outputs`: metrics and reads (temporary, see above)
MLFLOW_RUN_ID = "mlflow_run_id"  # key of a run's `trigger` (temporary, see above)
TRACKING_ERRORS = "tracking_errors"


def artifact_refs(outputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The artifact references among a step's `outputs` (without the `_meta` entry)."""
    return {k: v for k, v in (outputs or {}).items() if k != META}


def with_meta(
    refs: Mapping[str, Any], metrics: list[Metric], reads: list[dict[str, Any]]
) -> dict[str, Any]:
    """`outputs` to store: the references plus what the step logged and read, if anything."""
    out = dict(refs)
    if metrics or reads:
        out[META] = {"metrics": [m.to_json() for m in metrics], "reads": list(reads)}
    return out


@dataclass
class StepView:
    name: str
    status: str
    attempts: int
    cache_key: str | None
    outputs: dict[str, Any] | None
    error: str | None
    log: str | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def artifacts(self) -> dict[str, Any]:
        return artifact_refs(self.outputs)

    @property
    def metrics(self) -> list[Metric]:
        meta = (self.outputs or {}).get(META) or {}
        return [Metric.from_json(m) for m in meta.get("metrics", [])]

    @property
    def reads(self) -> list[dict[str, Any]]:
        """The data batches the step read (`dataset`, `batch_id`, `rows`, `schema_version`)."""
        meta = (self.outputs or {}).get(META) or {}
        return list(meta.get("reads", []))


@dataclass
class RunView:
    id: str
    pipeline: str
    status: str
    params: dict[str, Any]
    trigger: dict[str, Any]
    error: str | None
    worker: str | None
    correlation_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[StepView] = field(default_factory=list)

    def step(self, name: str) -> StepView:
        for view in self.steps:
            if view.name == name:
                return view
        raise NotFound(f"run {self.id} has no step {name!r}", field="step", rule="exists")

    @property
    def mlflow_run_id(self) -> str | None:
        value = self.trigger.get(MLFLOW_RUN_ID)
        return str(value) if value else None

    @property
    def tracking_errors(self) -> list[str]:
        return [str(e) for e in self.trigger.get(TRACKING_ERRORS) or []]


def steps_query(run_id: str) -> Any:
    return select(PipelineStepRow).where(PipelineStepRow.run_id == run_id)


def get_run(store: Store, run_id: str) -> RunView:
    with store.session() as session:
        row = session.get(PipelineRunRow, run_id)
        if row is None:
            raise NotFound(f"no pipeline run {run_id!r}", field="run_id", rule="exists")
        steps = list(session.scalars(steps_query(run_id)))
    order = {n.name: i for i, n in enumerate(_graph_or_empty(row.pipeline))}
    steps.sort(
        key=lambda s: (
            order.get(s.step, len(order)),
            s.started_at is None,
            s.started_at or row.created_at,
        )
    )
    return view_of(row, steps)


def list_runs(store: Store, pipeline: str | None = None, limit: int = 50) -> list[RunView]:
    query = select(PipelineRunRow).order_by(PipelineRunRow.created_at.desc()).limit(limit)
    if pipeline is not None:
        query = query.where(PipelineRunRow.pipeline == pipeline)
    with store.session() as session:
        rows = list(session.scalars(query))
    return [view_of(row, []) for row in rows]


def _graph_or_empty(name: str) -> list[Node]:
    try:
        return get_pipeline(name).graph
    except NotFound:
        return []


def view_of(row: PipelineRunRow, steps: list[PipelineStepRow]) -> RunView:
    return RunView(
        id=row.id,
        pipeline=row.pipeline,
        status=row.status,
        params=dict(row.params or {}),
        trigger=dict(row.trigger or {}),
        error=row.error,
        worker=row.worker,
        correlation_id=row.correlation_id,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        steps=[
            StepView(
                s.step,
                s.status,
                s.attempts,
                s.cache_key,
                s.outputs,
                s.error,
                s.log,
                s.started_at,
                s.finished_at,
            )
            for s in steps
        ],
    )
