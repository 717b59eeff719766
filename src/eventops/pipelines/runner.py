"""The runner: requests runs, executes them step by step with caching and retries, and resumes
runs whose worker died.

State lives in the metadata store and every state change commits with the event announcing it
(outbox, see `state.py`): `pipeline.run.requested|started|succeeded|failed`,
`pipeline.step.succeeded|failed`. All of a run's events are caused by its `pipeline.run.requested`
event and share its correlation id, which is inherited from whatever caused the request (a data
batch, a drift alert).

A run is claimed atomically (status `running`, this worker, a heartbeat) and the heartbeat is
refreshed every `heartbeat_interval` seconds. A run still `running` whose heartbeat is older than
`stale_after` intervals lost its worker: any runner may claim it again, and it goes on from its
finished steps (`succeeded`/`cached`), whose outputs are read back from their artifacts.

Every run is also reported to a `Tracker` (MLflow, see `tracking.py`; `NullTracker` by default).
Tracking never breaks a run: its failures are logged and kept on the run (`tracking_errors`).
Read-side views (`RunView`, `StepView`) live in `runs.py`.
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
from collections.abc import Collection, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from eventops.errors import EventOpsError, NotFound, ValidationError
from eventops.events.bus import Bus
from eventops.events.catalog import validate_event
from eventops.events.envelope import Event
from eventops.events.subscription import Subscription
from eventops.lake.storage import LakeStorage
from eventops.pipelines.artifacts import ArtifactStore
from eventops.pipelines.dsl import OUTPUT, Node, get_pipeline
from eventops.pipelines.executors import Executor, LocalExecutor, StepCall, StepResult
from eventops.pipelines.runs import RunView, StepView, artifact_refs, get_run, list_runs, with_meta
from eventops.pipelines.state import (
    MAX_ERROR_CHARS,
    SOURCE,
    ActiveRun,
    OnStep,
    RunState,
    adopt,
    cause_summary,
    json_safe,
    new_row,
)
from eventops.pipelines.tracking import NullTracker, RunInfo, StepRecord, Tracker
from eventops.store import Store, add_event
from eventops.store.idempotency import claim, idempotent


class AlreadyRequested(EventOpsError):
    """A run was already requested under the same once-key."""

    exit_code = 2
    http_status = 409


log = logging.getLogger(__name__)

REQUESTED = "pipeline.run.requested"

__all__ = [
    "REQUESTED",
    "SOURCE",
    "OnStep",
    "RunView",
    "Runner",
    "StepFailed",
    "StepView",
    "cache_key",
    "new_run_id",
]


class StepFailed(EventOpsError):
    """A step failed after its retries; the run fails with this message."""


def new_run_id() -> str:
    return uuid.uuid4().hex


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
        tracker: Tracker | None = None,
    ) -> None:
        if heartbeat_interval <= 0 or stale_after <= 1:
            raise ValueError("heartbeat_interval must be > 0 and stale_after > 1")
        self.store = store
        self.artifacts = ArtifactStore(storage)
        self.executor: Executor = executor or LocalExecutor()
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.heartbeat_interval = heartbeat_interval
        self.stale_seconds = heartbeat_interval * stale_after
        self.tracker: Tracker = tracker or NullTracker()
        self.state = RunState(store, self.worker, self.stale_seconds)

    # ------------------------------------------------------------------ requesting
    def request(
        self,
        pipeline_name: str,
        params: Mapping[str, Any] | None = None,
        trigger: str | None = None,
        cause: Event | None = None,
        once: tuple[str, str] | None = None,
    ) -> str:
        """Record a run (status `requested`) and its `pipeline.run.requested` event; its id.

        `once` = (consumer, key) records the key in the same transaction as the run: a second
        request with the same key raises `AlreadyRequested` and records nothing (a redelivered
        webhook), and a request that fails leaves the key free for the next delivery."""
        pipe = get_pipeline(pipeline_name)
        resolved = pipe.resolve_params(params)
        json_safe(resolved)
        run_id = new_run_id()
        name = trigger or "manual"
        data = {"pipeline": pipe.name, "params": resolved, "trigger": name, "run_id": run_id}
        info: dict[str, Any] = {"name": name}
        if cause is not None:
            event = cause.caused(REQUESTED, data=data, subject=pipe.name, source=SOURCE)
            info["cause"] = cause_summary(cause)
        else:
            event = Event(type=REQUESTED, data=data, subject=pipe.name, source=SOURCE)
        validate_event(event)
        with self.store.session() as session:
            if once is not None and not claim(session, *once):
                raise AlreadyRequested(
                    f"a run was already requested for {once[1]!r}", field="once", rule="duplicate"
                )
            session.add(new_row(run_id, pipe.name, resolved, info, event))
            add_event(session, event)
        return run_id

    def run_requested(self, bus: Bus, group: str = "eventops-runner") -> Subscription:
        """A subscription (not started) that executes every requested run, once per event."""
        adopt_once = idempotent(self.store, group, adopt)

        def handle(event: Event) -> None:
            run_id = adopt_once(event)
            if run_id is not None:
                self.execute(run_id)

        return Subscription(bus, group, handle, types=[REQUESTED], start="earliest")

    # ------------------------------------------------------------------ executing
    def run(self, pipeline_name: str, params: Mapping[str, Any] | None = None) -> RunView:
        """Request and execute a run here; returns it finished."""
        return self.execute(self.request(pipeline_name, params))

    def execute(self, run_id: str, *, on_step: OnStep | None = None) -> RunView:
        """Run (or resume) `run_id` if no live worker holds it; returns its state afterwards."""
        claimed = self.state.claim(run_id, on_step)
        if claimed is None:
            log.info("run %s is finished or held by a live worker; not executed", run_id)
            return self.get(run_id)
        run, done = claimed
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(run, stop), daemon=True)
        beat.start()
        try:
            self._track_start(run)
            error, skipped = self._run_graph(run, done)
        except Exception as exc:  # the store or the lake failed under us
            log.exception("run %s failed", run_id)
            error, skipped = f"{type(exc).__name__}: {exc}", []
        finally:
            stop.set()
            beat.join()
        if not run.lost.is_set():
            self._track_finish(run, error)
        self.state.finish(run, error, skipped)
        return self.get(run_id)

    def resume_stale(self, pipelines: Collection[str] | None = None) -> list[str]:
        """Execute runs abandoned by a dead worker (or requested and never started), of
        `pipelines` only when given; their ids."""
        resumed = []
        for run_id in self.state.stale_ids(pipelines):
            try:
                if self.state.claimable(run_id):
                    self.execute(run_id)
                    resumed.append(run_id)
            except NotFound as exc:
                log.warning("cannot resume run %s: %s", run_id, exc)
        return resumed

    def _beat(self, run: ActiveRun, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_interval):
            if not self.state.heartbeat(run):
                log.warning("run %s was taken over by another worker; stopping", run.id)
                run.lost.set()
                return

    def _run_graph(
        self, run: ActiveRun, done: dict[str, dict[str, Any]]
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
        self, run: ActiveRun, node: Node, outputs: Mapping[str, dict[str, Any]]
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
        started = time.monotonic()
        if node.step.options.cache:
            hit = self._cache_hit(key)
            if hit is not None:
                self.state.record(run, node.name, "cached", key=key, outputs=hit)
                self._track_step(run, node.name, "cached", 0, 0.0, hit)
                return hit
        result, attempt, log_text = self._attempts(run, node, kwargs)
        error = result.error
        if error is None:
            try:
                ref = self.artifacts.save(
                    result.value, pipeline=run.pipeline.name, run_id=run.id, step=node.name
                )
            except Exception as exc:
                error = f"cannot save the output: {type(exc).__name__}: {exc}"
        duration = time.monotonic() - started
        if error is not None:
            message = f"step {node.name!r} failed after {attempt} attempt(s): {error}"
            meta = with_meta({}, result.metrics, result.reads) or None
            self.state.record(
                run, node.name, "failed", key=key, outputs=meta, log=log_text, error=message
            )
            self._track_step(run, node.name, "failed", attempt, duration, meta)
            raise StepFailed(message[:MAX_ERROR_CHARS], field=f"step.{node.name}", rule="failed")
        refs = with_meta({OUTPUT: ref}, result.metrics, result.reads)
        cache = node.step.options.cache
        self.state.record(
            run, node.name, "succeeded", key=key, outputs=refs, log=log_text, cache=cache
        )
        self._track_step(run, node.name, "succeeded", attempt, duration, refs)
        return refs

    def _attempts(
        self, run: ActiveRun, node: Node, kwargs: dict[str, Any]
    ) -> tuple[StepResult, int, str]:
        """Run a step's attempts until one succeeds or retries run out: (last result, attempts,
        the log of all attempts)."""
        options = node.step.options
        context = {
            "run_id": run.id,
            "pipeline": run.pipeline.name,
            "step": node.name,
            "store_url": self.store.url.render_as_string(hide_password=False),
            "lake_url": self.artifacts.storage.url,
            # for what a step records beside its output (a model registered from the run)
            "tracking_uri": getattr(self.tracker, "tracking_uri", None),
            "tracking_run_id": None if run.tracking_broken else run.tracking_id,
            "correlation_id": run.correlation_id,
            "cause_id": run.cause_id,
        }
        call = StepCall(
            node.name,
            node.step.module,
            node.step.qualname,
            kwargs,
            options.timeout,
            node.step.fn,
            context=context,
        )
        logs: list[str] = []
        attempt = 0
        while True:
            attempt += 1
            self.state.start_attempt(run, node.name)
            fatal = False
            try:
                result = self.executor.run(call)
            except ValidationError as exc:  # the executor refuses the step: retrying won't help
                result, fatal = StepResult(error=str(exc)), True
            except Exception as exc:
                result = StepResult(error=f"{type(exc).__name__}: {exc}")
            logs.append(f"--- attempt {attempt} ---\n{result.log}")
            if result.ok or fatal or attempt > options.retries or run.lost.is_set():
                return result, attempt, "\n".join(logs)
            if run.lost.wait(
                options.backoff * 2 ** (attempt - 1)
            ):  # backoff, unless the run is lost
                return result, attempt, "\n".join(logs)

    def _cache_hit(self, key: str) -> dict[str, Any] | None:
        outputs = self.state.cached_outputs(key)
        if outputs is None:
            return None
        if not all(self.artifacts.exists(ref) for ref in artifact_refs(outputs).values()):
            return None
        return outputs

    # ------------------------------------------------------------------ tracking
    def _tracking_failed(self, run: ActiveRun, what: str, exc: Exception) -> None:
        message = f"{what}: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        log.warning("tracking of run %s failed (the run goes on): %s", run.id, message)
        run.tracking_errors.append(message)
        run.tracking_broken = True

    def _track_start(self, run: ActiveRun) -> None:
        info = RunInfo(
            run.id,
            run.pipeline.name,
            run.params,
            run.trigger,
            run.correlation_id,
            run.tracking_id,
        )
        try:
            tracking_id = self.tracker.start_run(info)
        except Exception as exc:
            self._tracking_failed(run, "start", exc)
            return
        if tracking_id is None or tracking_id == run.tracking_id:
            run.tracking_id = tracking_id
            return
        run.tracking_id = tracking_id
        self.state.save_tracking_id(run, tracking_id)  # a resumed run continues the same one

    def _track_step(
        self,
        run: ActiveRun,
        step: str,
        status: str,
        attempts: int,
        duration: float,
        outputs: Mapping[str, Any] | None,
    ) -> None:
        if run.tracking_id is None or run.tracking_broken:
            return
        view = StepView(step, status, attempts, None, dict(outputs or {}), None, None, None, None)
        record = StepRecord(
            step, status, attempts, duration, view.metrics, view.artifacts, view.reads
        )
        try:
            self.tracker.log_step(run.tracking_id, record)
        except Exception as exc:
            self._tracking_failed(run, f"step {step}", exc)

    def _track_finish(self, run: ActiveRun, error: str | None) -> None:
        if run.tracking_id is None:
            return
        try:
            artifacts = [
                {"step": s.name, **ref}
                for s in self.get(run.id).steps
                for ref in s.artifacts.values()
            ]
            status = "failed" if error else "succeeded"
            self.tracker.finish_run(run.tracking_id, status, error=error, artifacts=artifacts)
        except Exception as exc:
            self._tracking_failed(run, "finish", exc)

    # ------------------------------------------------------------------ reading
    def get(self, run_id: str) -> RunView:
        return get_run(self.store, run_id)

    def list_runs(self, pipeline: str | None = None, limit: int = 50) -> list[RunView]:
        return list_runs(self.store, pipeline, limit)

    def output(self, run_id: str, step: str) -> Any:
        """The value a finished step of a run returned (read from its artifact)."""
        view = self.get(run_id).step(step)
        if not view.outputs or OUTPUT not in view.outputs:
            raise NotFound(f"step {step!r} of run {run_id} has no output", field="step")
        return self.artifacts.load(view.outputs[OUTPUT])
