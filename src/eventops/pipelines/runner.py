"""The runner: requests runs, executes them step by step with caching and retries, and resumes
runs whose worker died.

State lives in the metadata store and every state change commits with the event announcing it
(outbox): `pipeline.run.requested|started|succeeded|failed`, `pipeline.step.succeeded|failed`.
All of a run's events are caused by its `pipeline.run.requested` event and share its
correlation id, which is inherited from whatever caused the request (a data batch, a drift alert).

A run is claimed atomically (status `running`, this worker, a heartbeat) and the heartbeat is
refreshed every `heartbeat_interval` seconds. A run still `running` whose heartbeat is older than
`stale_after` intervals lost its worker: any runner may claim it again, and it goes on from its
finished steps (`succeeded`/`cached`), whose outputs are read back from their artifacts.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from eventops.errors import EventOpsError, NotFound, ValidationError
from eventops.events.bus import Bus
from eventops.events.catalog import validate_event
from eventops.events.envelope import Event
from eventops.events.subscription import Subscription
from eventops.lake.storage import LakeStorage
from eventops.pipelines.artifacts import ArtifactStore
from eventops.pipelines.dsl import OUTPUT, Node, Pipeline, get_pipeline
from eventops.pipelines.executors import Executor, LocalExecutor, StepCall, StepResult
from eventops.store import PipelineRunRow, PipelineStepRow, StepCacheRow, Store, add_event, utcnow
from eventops.store.idempotency import idempotent

log = logging.getLogger(__name__)

SOURCE = "/eventops/pipelines"
REQUESTED = "pipeline.run.requested"
MAX_ERROR_CHARS = 4000
OnStep = Callable[[str, str], None]  # (step, new status)


class StepFailed(EventOpsError):
    """A step failed after its retries; the run fails with this message."""


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


@dataclass
class _Run:
    """What one `execute` call knows about its run."""

    id: str
    pipeline: Pipeline
    params: dict[str, Any]
    correlation_id: str | None
    cause_id: str | None
    on_step: OnStep | None
    lost: threading.Event = field(default_factory=threading.Event)

    def notify(self, step: str, status: str) -> None:
        if self.on_step is not None:
            self.on_step(step, status)


def new_run_id() -> str:
    return uuid.uuid4().hex


def _json_safe(params: Mapping[str, Any]) -> None:
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"run params must be JSON ({exc})", field="params", rule="json"
        ) from None


def cache_key(node: Node, values: Mapping[str, Any], input_hashes: Mapping[str, str]) -> str:
    """sha256 of the step's source code, the params and constants it takes, its inputs' hashes."""
    try:
        code = inspect.getsource(node.step.fn)
    except (OSError, TypeError):
        code = node.step.fn.__code__.co_code.hex()
    payload = {
        "step": f"{node.step.module}.{node.step.qualname}",
        "code": code,
        "values": values,
        "inputs": input_hashes,
    }
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


class Runner:
    def __init__(
        self,
        store: Store,
        storage: LakeStorage,
        *,
        executor: Executor | None = None,
        worker: str | None = None,
        heartbeat_interval: float = 5.0,
        stale_after: float = 3.0,
    ) -> None:
        if heartbeat_interval <= 0 or stale_after <= 1:
            raise ValueError("heartbeat_interval must be > 0 and stale_after > 1")
        self.store = store
        self.artifacts = ArtifactStore(storage)
        self.executor: Executor = executor or LocalExecutor()
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.heartbeat_interval = heartbeat_interval
        self.stale_seconds = heartbeat_interval * stale_after

    # ------------------------------------------------------------------ requesting
    def request(
        self,
        pipeline_name: str,
        params: Mapping[str, Any] | None = None,
        trigger: str | None = None,
        cause: Event | None = None,
    ) -> str:
        """Record a run (status `requested`) and its `pipeline.run.requested` event; its id."""
        pipe = get_pipeline(pipeline_name)
        resolved = pipe.resolve_params(params)
        _json_safe(resolved)
        run_id = new_run_id()
        name = trigger or "manual"
        data = {"pipeline": pipe.name, "params": resolved, "trigger": name, "run_id": run_id}
        if cause is not None:
            event = cause.caused(REQUESTED, data=data, subject=pipe.name, source=SOURCE)
        else:
            event = Event(type=REQUESTED, data=data, subject=pipe.name, source=SOURCE)
        validate_event(event)
        with self.store.session() as session:
            session.add(self._new_row(run_id, pipe.name, resolved, name, event))
            add_event(session, event)
        return run_id

    @staticmethod
    def _new_row(
        run_id: str, pipeline: str, params: dict[str, Any], trigger: Any, event: Event
    ) -> PipelineRunRow:
        info = dict(trigger) if isinstance(trigger, Mapping) else {"name": str(trigger)}
        info["event_id"] = event.id
        return PipelineRunRow(
            id=run_id,
            pipeline=pipeline,
            status="requested",
            params=params,
            trigger=info,
            correlation_id=event.correlationid or event.id,
        )

    def _adopt(self, event: Event, session: Session) -> str:
        """The run of a `pipeline.run.requested` event, created if it came from elsewhere."""
        data = event.data if isinstance(event.data, Mapping) else {}
        run_id = str(data.get("run_id") or event.id)
        if session.get(PipelineRunRow, run_id) is not None:
            return run_id
        pipe = get_pipeline(str(data.get("pipeline")))
        params = pipe.resolve_params(data.get("params") or {})
        _json_safe(params)
        trigger = data.get("trigger") or "event"
        session.add(self._new_row(run_id, pipe.name, params, trigger, event))
        return run_id

    def run_requested(self, bus: Bus, group: str = "eventops-runner") -> Subscription:
        """A subscription (not started) that executes every requested run, once per event."""
        adopt = idempotent(self.store, group, self._adopt)

        def handle(event: Event) -> None:
            run_id = adopt(event)
            if run_id is not None:
                self.execute(run_id)

        return Subscription(bus, group, handle, types=[REQUESTED], start="earliest")

    # ------------------------------------------------------------------ executing
    def run(self, pipeline_name: str, params: Mapping[str, Any] | None = None) -> RunView:
        """Request and execute a run here; returns it finished."""
        return self.execute(self.request(pipeline_name, params))

    def execute(self, run_id: str, *, on_step: OnStep | None = None) -> RunView:
        """Run (or resume) `run_id` if no live worker holds it; returns its state afterwards."""
        claimed = self._claim(run_id, on_step)
        if claimed is None:
            log.info("run %s is finished or held by a live worker; not executed", run_id)
            return self.get(run_id)
        run, done = claimed
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(run, stop), daemon=True)
        beat.start()
        try:
            error, skipped = self._run_graph(run, done)
        except Exception as exc:  # the store or the lake failed under us
            log.exception("run %s failed", run_id)
            error, skipped = f"{type(exc).__name__}: {exc}", []
        finally:
            stop.set()
            beat.join()
        self._finish(run, error, skipped)
        return self.get(run_id)

    def resume_stale(self) -> list[str]:
        """Execute runs abandoned by a dead worker (or requested and never started); their ids."""
        cutoff = utcnow() - timedelta(seconds=self.stale_seconds)
        with self.store.session() as session:
            ids = list(
                session.scalars(
                    select(PipelineRunRow.id)
                    .where(
                        or_(
                            and_(
                                PipelineRunRow.status == "running",
                                PipelineRunRow.heartbeat_at < cutoff,
                            ),
                            and_(
                                PipelineRunRow.status == "requested",
                                PipelineRunRow.created_at < cutoff,
                            ),
                        )
                    )
                    .order_by(PipelineRunRow.created_at)
                )
            )
        resumed = []
        for run_id in ids:
            try:
                if self._claimable(run_id):
                    self.execute(run_id)
                    resumed.append(run_id)
            except NotFound as exc:
                log.warning("cannot resume run %s: %s", run_id, exc)
        return resumed

    def _claimable(self, run_id: str) -> bool:
        with self.store.session() as session:
            row = session.get(PipelineRunRow, run_id)
            return row is not None and self._is_free(row)

    def _is_free(self, row: PipelineRunRow) -> bool:
        if row.status == "requested":
            return True
        cutoff = utcnow() - timedelta(seconds=self.stale_seconds)
        return row.status == "running" and (row.heartbeat_at is None or row.heartbeat_at < cutoff)

    def _event(self, run: _Run, type_: str, **data: Any) -> Event:
        return Event(
            type=type_,
            source=SOURCE,
            subject=run.pipeline.name,
            data={"pipeline": run.pipeline.name, "run_id": run.id, **data},
            correlationid=run.correlation_id,
            causationid=run.cause_id,
        )

    def _claim(
        self, run_id: str, on_step: OnStep | None
    ) -> tuple[_Run, dict[str, dict[str, Any]]] | None:
        with self.store.session() as session:
            row = session.get(PipelineRunRow, run_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no pipeline run {run_id!r}", field="run_id", rule="exists")
            if not self._is_free(row):
                return None
            pipe = get_pipeline(row.pipeline)
            resumed = row.status == "running"
            now = utcnow()
            row.status, row.worker, row.heartbeat_at = "running", self.worker, now
            row.started_at = row.started_at or now
            run = _Run(
                run_id,
                pipe,
                dict(row.params),
                row.correlation_id,
                (row.trigger or {}).get("event_id"),
                on_step,
            )
            steps = {s.step: s for s in session.scalars(self._steps_query(run_id))}
            for node in pipe.graph:
                if node.name not in steps:
                    session.add(PipelineStepRow(run_id=run_id, step=node.name, status="pending"))
            done = {
                name: dict(s.outputs or {})
                for name, s in steps.items()
                if s.status in ("succeeded", "cached")
            }
            add_event(
                session,
                self._event(run, "pipeline.run.started", worker=self.worker, resumed=resumed),
            )
        for name in done:
            run.notify(name, steps[name].status)
        return run, done

    @staticmethod
    def _steps_query(run_id: str) -> Any:
        return select(PipelineStepRow).where(PipelineStepRow.run_id == run_id)

    def _beat(self, run: _Run, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_interval):
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
                if getattr(result, "rowcount", 1) == 0:
                    log.warning("run %s was taken over by another worker; stopping", run.id)
                    run.lost.set()
                    return
            except EventOpsError as exc:
                log.warning("heartbeat of run %s failed: %s", run.id, exc)

    def _run_graph(
        self, run: _Run, done: dict[str, dict[str, Any]]
    ) -> tuple[str | None, list[str]]:
        """Run the steps not yet done, parallel branches at once; (error, skipped steps)."""
        outputs = dict(done)
        pending = [n for n in run.pipeline.graph if n.name not in outputs]
        error: str | None = None
        running: dict[Future[dict[str, Any]], Node] = {}
        with ThreadPoolExecutor(max(1, self.executor.max_workers), "eventops-step") as pool:
            while True:
                if error is None and not run.lost.is_set():
                    for node in [n for n in pending if set(n.upstreams) <= set(outputs)]:
                        pending.remove(node)
                        running[pool.submit(self._run_step, run, node, outputs)] = node
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    node = running.pop(future)
                    try:
                        outputs[node.name] = future.result()
                    except StepFailed as exc:
                        error = error or exc.message
                    except Exception as exc:
                        error = error or f"step {node.name!r}: {type(exc).__name__}: {exc}"
        return error, [n.name for n in pending]

    def _run_step(
        self, run: _Run, node: Node, outputs: Mapping[str, dict[str, Any]]
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        values: dict[str, Any] = {}
        hashes: dict[str, str] = {}
        for arg, binding in node.inputs.items():
            if binding.kind == "step":
                ref = outputs[binding.source][OUTPUT]
                kwargs[arg] = self.artifacts.load(ref)
                hashes[arg] = ref["sha256"]
            else:
                value = run.params[binding.source] if binding.kind == "param" else binding.value
                kwargs[arg] = values[arg] = value
        key = cache_key(node, values, hashes)
        if node.step.options.cache:
            hit = self._cache_hit(key)
            if hit is not None:
                self._record(run, node.name, "cached", key=key, outputs=hit)
                return hit
        options = node.step.options
        call = StepCall(
            node.name, node.step.module, node.step.qualname, kwargs, options.timeout, node.step.fn
        )
        logs: list[str] = []
        attempt = 0
        while True:
            attempt += 1
            self._start_attempt(run, node.name)
            fatal = False
            try:
                result = self.executor.run(call)
            except ValidationError as exc:  # the executor refuses the step: retrying won't help
                result, fatal = StepResult(error=str(exc)), True
            except Exception as exc:
                result = StepResult(error=f"{type(exc).__name__}: {exc}")
            logs.append(f"--- attempt {attempt} ---\n{result.log}")
            if result.ok or fatal or attempt > options.retries or run.lost.is_set():
                break
            time.sleep(options.backoff * 2 ** (attempt - 1))
        log_text = "\n".join(logs)
        error = result.error
        if error is None:
            try:
                ref = self.artifacts.save(
                    result.value, pipeline=run.pipeline.name, run_id=run.id, step=node.name
                )
            except Exception as exc:
                error = f"cannot save the output: {type(exc).__name__}: {exc}"
        if error is not None:
            message = f"step {node.name!r} failed after {attempt} attempt(s): {error}"
            self._record(run, node.name, "failed", key=key, log=log_text, error=message)
            raise StepFailed(message[:MAX_ERROR_CHARS], field=f"step.{node.name}", rule="failed")
        refs = {OUTPUT: ref}
        cache = options.cache
        self._record(run, node.name, "succeeded", key=key, outputs=refs, log=log_text, cache=cache)
        return refs

    def _cache_hit(self, key: str) -> dict[str, Any] | None:
        with self.store.session() as session:
            row = session.get(StepCacheRow, key)
            outputs = dict(row.outputs) if row is not None else None
        if outputs is None or not all(self.artifacts.exists(ref) for ref in outputs.values()):
            return None
        return outputs

    def _start_attempt(self, run: _Run, step: str) -> None:
        with self.store.session() as session:
            row = session.get(PipelineStepRow, (run.id, step), with_for_update=True)
            assert row is not None
            row.status = "running"
            row.attempts += 1
            row.started_at = row.started_at or utcnow()
        run.notify(step, "running")

    def _record(
        self,
        run: _Run,
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
                event = self._event(run, "pipeline.step.failed", step=step, error=row.error)
            else:
                event = self._event(
                    run, "pipeline.step.succeeded", step=step, cached=status == "cached"
                )
            add_event(session, event)
        run.notify(step, status)

    def _finish(self, run: _Run, error: str | None, skipped: list[str]) -> None:
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
            for step in skipped:
                step_row = session.get(PipelineStepRow, (run.id, step))
                if step_row is not None:
                    step_row.status = "skipped"
            if error:
                add_event(session, self._event(run, "pipeline.run.failed", error=row.error))
            else:
                add_event(session, self._event(run, "pipeline.run.succeeded"))
        for step in skipped:
            run.notify(step, "skipped")

    # ------------------------------------------------------------------ reading
    def get(self, run_id: str) -> RunView:
        with self.store.session() as session:
            row = session.get(PipelineRunRow, run_id)
            if row is None:
                raise NotFound(f"no pipeline run {run_id!r}", field="run_id", rule="exists")
            steps = list(session.scalars(self._steps_query(run_id)))
        order = {n.name: i for i, n in enumerate(_graph_or_empty(row.pipeline))}
        steps.sort(
            key=lambda s: (
                order.get(s.step, len(order)),
                s.started_at is None,
                s.started_at or row.created_at,
            )
        )
        return _view(row, steps)

    def list_runs(self, pipeline: str | None = None, limit: int = 50) -> list[RunView]:
        query = select(PipelineRunRow).order_by(PipelineRunRow.created_at.desc()).limit(limit)
        if pipeline is not None:
            query = query.where(PipelineRunRow.pipeline == pipeline)
        with self.store.session() as session:
            rows = list(session.scalars(query))
        return [_view(row, []) for row in rows]

    def output(self, run_id: str, step: str) -> Any:
        """The value a finished step of a run returned (read from its artifact)."""
        view = self.get(run_id).step(step)
        if not view.outputs:
            raise NotFound(f"step {step!r} of run {run_id} has no output", field="step")
        return self.artifacts.load(view.outputs[OUTPUT])


def _graph_or_empty(name: str) -> list[Node]:
    try:
        return get_pipeline(name).graph
    except NotFound:
        return []


def _view(row: PipelineRunRow, steps: list[PipelineStepRow]) -> RunView:
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
