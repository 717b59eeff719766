"""Run and step state in the metadata store, each change committed with the event announcing it
(outbox). The runner decides; `RunState` writes.

A run is claimed atomically (status `running`, this worker, a heartbeat). A run still `running`
whose heartbeat is older than `stale_seconds` lost its worker: any runner may claim it again.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from eventops.errors import EventOpsError, NotFound, ValidationError
from eventops.events.envelope import Event
from eventops.pipelines.dsl import Pipeline, get_pipeline
from eventops.pipelines.runs import MLFLOW_RUN_ID, TRACKING_ERRORS, steps_query
from eventops.store import PipelineRunRow, PipelineStepRow, StepCacheRow, Store, add_event, utcnow

log = logging.getLogger(__name__)

SOURCE = "/eventops/pipelines"
MAX_ERROR_CHARS = 4000
MAX_TRACKING_ERRORS = 20
OnStep = Callable[[str, str], None]  # (step, new status)


@dataclass
class ActiveRun:
    """What one `Runner.execute` call knows about its run."""

    id: str
    pipeline: Pipeline
    params: dict[str, Any]
    correlation_id: str | None
    cause_id: str | None  # the run's `pipeline.run.requested` event: cause of all its events
    on_step: OnStep | None
    trigger: dict[str, Any] = field(default_factory=dict)
    lost: threading.Event = field(default_factory=threading.Event)
    tracking_id: str | None = None
    tracking_broken: bool = False
    tracking_errors: list[str] = field(default_factory=list)

    def notify(self, step: str, status: str) -> None:
        if self.on_step is not None:
            self.on_step(step, status)


def json_safe(params: Mapping[str, Any]) -> None:
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"run params must be JSON ({exc})", field="params", rule="json"
        ) from None


def cause_summary(cause: Event) -> dict[str, Any]:
    """What lineage keeps of the event that caused a run (its dataset and batch, if any)."""
    summary: dict[str, Any] = {"id": cause.id, "type": cause.type, "subject": cause.subject}
    data = cause.data if isinstance(cause.data, Mapping) else {}
    for name in ("dataset", "batch_id", "rows"):
        if name in data:
            summary[name] = data[name]
    return summary


def new_row(
    run_id: str, pipeline: str, params: dict[str, Any], trigger: Any, event: Event
) -> PipelineRunRow:
    info = dict(trigger) if isinstance(trigger, Mapping) else {"name": str(trigger)}
    info["event_id"] = event.id
    if event.causationid:
        info["cause_id"] = event.causationid  # the event that caused the request
    return PipelineRunRow(
        id=run_id,
        pipeline=pipeline,
        status="requested",
        params=params,
        trigger=info,
        correlation_id=event.correlationid or event.id,
    )


def adopt(event: Event, session: Session) -> str:
    """The run of a `pipeline.run.requested` event, created if it came from elsewhere."""
    data = event.data if isinstance(event.data, Mapping) else {}
    run_id = str(data.get("run_id") or event.id)
    if session.get(PipelineRunRow, run_id) is not None:
        return run_id
    pipe = get_pipeline(str(data.get("pipeline")))
    params = pipe.resolve_params(data.get("params") or {})
    json_safe(params)
    trigger = data.get("trigger") or "event"
    session.add(new_row(run_id, pipe.name, params, trigger, event))
    return run_id


class RunState:
    def __init__(self, store: Store, worker: str, stale_seconds: float) -> None:
        self.store = store
        self.worker = worker
        self.stale_seconds = stale_seconds

    def event(self, run: ActiveRun, type_: str, **data: Any) -> Event:
        return Event(
            type=type_,
            source=SOURCE,
            subject=run.pipeline.name,
            data={"pipeline": run.pipeline.name, "run_id": run.id, **data},
            correlationid=run.correlation_id,
            causationid=run.cause_id,
        )

    def stale_ids(self, pipelines: Collection[str] | None = None) -> list[str]:
        """Runs abandoned by a dead worker, or requested and never started, oldest first
        (of `pipelines` only, when given)."""
        cutoff = utcnow() - timedelta(seconds=self.stale_seconds)
        running = PipelineRunRow.status == "running"
        requested = PipelineRunRow.status == "requested"
        query = (
            select(PipelineRunRow.id)
            .where(
                or_(
                    and_(running, PipelineRunRow.heartbeat_at < cutoff),
                    and_(requested, PipelineRunRow.created_at < cutoff),
                )
            )
            .order_by(PipelineRunRow.created_at)
        )
        if pipelines is not None:
            query = query.where(PipelineRunRow.pipeline.in_(sorted(pipelines)))
        with self.store.session() as session:
            return list(session.scalars(query))

    def claimable(self, run_id: str) -> bool:
        with self.store.session() as session:
            row = session.get(PipelineRunRow, run_id)
            return row is not None and self.is_free(row)

    def is_free(self, row: PipelineRunRow) -> bool:
        if row.status == "requested":
            return True
        cutoff = utcnow() - timedelta(seconds=self.stale_seconds)
        return row.status == "running" and (row.heartbeat_at is None or row.heartbeat_at < cutoff)

    def claim(
        self, run_id: str, on_step: OnStep | None
    ) -> tuple[ActiveRun, dict[str, dict[str, Any]]] | None:
        """Take the run if it is free: (the run, outputs of its finished steps), else None."""
        with self.store.session() as session:
            row = session.get(PipelineRunRow, run_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no pipeline run {run_id!r}", field="run_id", rule="exists")
            if not self.is_free(row):
                return None
            pipe = get_pipeline(row.pipeline)
            resumed = row.status == "running"
            now = utcnow()
            row.status, row.worker, row.heartbeat_at = "running", self.worker, now
            row.started_at = row.started_at or now
            trigger = dict(row.trigger or {})
            run = ActiveRun(
                run_id,
                pipe,
                dict(row.params),
                row.correlation_id,
                trigger.get("event_id"),
                on_step,
                trigger,
                tracking_id=trigger.get(MLFLOW_RUN_ID),
            )
            steps = {s.step: s for s in session.scalars(steps_query(run_id))}
            for node in pipe.graph:
                if node.name not in steps:
                    session.add(PipelineStepRow(run_id=run_id, step=node.name, status="pending"))
            done = {
                name: dict(s.outputs or {})
                for name, s in steps.items()
                if s.status in ("succeeded", "cached")
            }
            started = self.event(run, "pipeline.run.started", worker=self.worker, resumed=resumed)
            add_event(session, started)
        for name in done:
            run.notify(name, steps[name].status)
        return run, done

    def heartbeat(self, run: ActiveRun) -> bool:
        """Refresh the run's heartbeat; False when another worker took it over."""
        try:
            with self.store.session() as session:
                result = session.execute(
                    update(PipelineRunRow)
                    .where(
                        PipelineRunRow.id == run.id,
                        PipelineRunRow.worker == self.worker,
                        PipelineRunRow.status == "running",
                    )
                    .values(heartbeat_at=utcnow())
                )
        except EventOpsError as exc:
            log.warning("heartbeat of run %s failed: %s", run.id, exc)
            return True
        return getattr(result, "rowcount", 1) != 0

    def save_tracking_id(self, run: ActiveRun, tracking_id: str) -> None:
        with self.store.session() as session:
            row = session.get(PipelineRunRow, run.id, with_for_update=True)
            if row is not None:
                row.trigger = {**(row.trigger or {}), MLFLOW_RUN_ID: tracking_id}

    def cached_outputs(self, key: str) -> dict[str, Any] | None:
        with self.store.session() as session:
            row = session.get(StepCacheRow, key)
            return dict(row.outputs) if row is not None else None

    def start_attempt(self, run: ActiveRun, step: str) -> None:
        with self.store.session() as session:
            row = session.get(PipelineStepRow, (run.id, step), with_for_update=True)
            assert row is not None
            row.status = "running"
            row.attempts += 1
            row.started_at = row.started_at or utcnow()
        run.notify(step, "running")

    def record(
        self,
        run: ActiveRun,
        step: str,
        status: str,
        *,
        key: str,
        outputs: dict[str, Any] | None = None,
        log: str | None = None,
        error: str | None = None,
        cache: bool = False,
    ) -> None:
        """A step's final state with its event (and its cache entry), in one transaction."""
        with self.store.session() as session:
            row = session.get(PipelineStepRow, (run.id, step), with_for_update=True)
            assert row is not None
            now = utcnow()
            row.status, row.cache_key, row.outputs = status, key, outputs
            row.error = error[:MAX_ERROR_CHARS] if error else None
            row.log = log if log is not None else row.log
            row.started_at = row.started_at or now
            row.finished_at = now
            if cache and outputs is not None:
                session.merge(
                    StepCacheRow(
                        cache_key=key,
                        pipeline=run.pipeline.name,
                        step=step,
                        outputs=outputs,
                        run_id=run.id,
                    )
                )
            if status == "failed":
                event = self.event(run, "pipeline.step.failed", step=step, error=row.error)
            else:
                cached = status == "cached"
                event = self.event(run, "pipeline.step.succeeded", step=step, cached=cached)
            add_event(session, event)
        run.notify(step, status)

    def finish(self, run: ActiveRun, error: str | None, skipped: list[str]) -> None:
        with self.store.session() as session:
            row = session.get(PipelineRunRow, run.id, with_for_update=True)
            if row is None or row.worker != self.worker or row.status != "running":
                log.warning("run %s is no longer ours; not finishing it", run.id)
                return
            if run.lost.is_set() and error is None:
                return
            row.status = "failed" if error else "succeeded"
            row.error = error[:MAX_ERROR_CHARS] if error else None
            row.finished_at = utcnow()
            if run.tracking_errors:
                errors = [*(row.trigger or {}).get(TRACKING_ERRORS, []), *run.tracking_errors]
                row.trigger = {
                    **(row.trigger or {}),
                    TRACKING_ERRORS: errors[-MAX_TRACKING_ERRORS:],
                }
            for step in skipped:
                step_row = session.get(PipelineStepRow, (run.id, step))
                if step_row is not None:
                    step_row.status = "skipped"
            if error:
                add_event(session, self.event(run, "pipeline.run.failed", error=row.error))
            else:
                add_event(session, self.event(run, "pipeline.run.succeeded"))
        for step in skipped:
            run.notify(step, "skipped")
