"""The model server's ASGI app: MLflow scoring, Open Inference Protocol v2, SageMaker, feedback.

Routes (see docs/serving.md for bodies and curl examples):

* ``POST /invocations`` (MLflow scoring, SageMaker), ``GET /ping`` (SageMaker), ``GET /health``;
* ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2/models/{name}``,
  ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``;
* ``POST /feedback``; ``GET /metrics`` (Prometheus).

A prediction request is read, checked against the signature of the model that will answer it
(bad input: 4xx, never 500, and it never reaches a batch), queued for the micro-batcher, and
answered with one prediction id per row (body and ``x-prediction-ids``) and the version that
answered (``x-model-version``). Parsing runs on the event loop for small bodies (it is cheaper
than a thread hop) and in the thread pool above 64 KiB.

Auth: with a token (``EVENTOPS_TOKEN`` for the CLI), ``POST /feedback`` needs ``Authorization:
Bearer <token>``; prediction routes need it too only with ``protect_predictions``. Without a
token, feedback is refused unless `anonymous_feedback` (the CLI allows it on loopback only).
Health, metadata and metrics stay open: they change nothing.

This module is plain Starlette: FastAPI's per-request validation and dependency machinery cost
more than parsing a 1-row request, and the bodies here are checked by our own code anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventops import __version__
from eventops.errors import EventOpsError
from eventops.serving import open_inference as oip
from eventops.serving import protocols as wire
from eventops.serving.access import Guard, HTTPProblem, read_body
from eventops.serving.batching import Answer, MicroBatcher
from eventops.serving.capture import PredictionCapture
from eventops.serving.deployment import Deployment
from eventops.serving.feedback import emit_feedback, parse_feedback
from eventops.serving.follower import AliasFollower
from eventops.serving.ids import new_prediction_ids
from eventops.serving.metrics import ServingMetrics, mark_process_dead
from eventops.serving.models import LoadedModel, ModelSlot
from eventops.serving.protocols import Parsed
from eventops.serving.schema import InputError, InputSchema
from eventops.serving.traffic import TrafficRouter
from eventops.store import Store

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_MAX_BODY = 32 * MiB
THREAD_PARSE_BYTES = 64 * 1024
MAX_ID_HEADER = 32  # ids in x-prediction-ids; all of them are in the body
JSON = "application/json"
Parser = Callable[[bytes, str | None, InputSchema], tuple[Parsed, Any]]


def _slot(value: ModelSlot | LoadedModel | None, role: str) -> ModelSlot | None:
    if value is None or isinstance(value, ModelSlot):
        return value
    return ModelSlot(role, value.ref.requested, value)


class ModelServer:
    """Everything one app serves with; the routes are its methods."""

    def __init__(
        self,
        primary: ModelSlot,
        deployment: Deployment,
        *,
        challenger: ModelSlot | None,
        capture: PredictionCapture | None,
        store: Store | None,
        relay: Any,
        follower: AliasFollower | None,
        metrics: ServingMetrics,
        token: str | None,
        anonymous_feedback: bool,
        seed: int | None,
        max_body_bytes: int,
    ) -> None:
        self.primary = primary
        self.challenger = challenger
        self.deployment = deployment
        self.capture = capture
        self.store = store
        self.relay = relay
        self.follower = follower
        self.metrics = metrics
        self.guard = Guard(token, anonymous_feedback=anonymous_feedback)
        self.max_body = max_body_bytes
        self.router = TrafficRouter(deployment.mode, deployment.canary_percent, seed)
        self.batchers = {
            role: MicroBatcher(
                role,
                max_batch_rows=deployment.max_batch_size,
                max_wait_ms=deployment.max_wait_ms,
                observer=metrics.batch,
            )
            for role in ("primary", "challenger")
        }
        self.background: set[asyncio.Task[None]] = set()
        if follower is not None:  # count its swaps too (hooks set before still run)
            swapped, failed = follower.on_swap, follower.on_failure

            def on_swap(slot: ModelSlot, model: LoadedModel, old: LoadedModel | None) -> None:
                self._swapped(slot, model, old)
                if swapped is not None:
                    swapped(slot, model, old)

            def on_failure(slot: ModelSlot, exc: BaseException) -> None:
                metrics.swapped(slot.role, "failed")
                if failed is not None:
                    failed(slot, exc)

            follower.on_swap, follower.on_failure = on_swap, on_failure
        for slot in (primary, challenger):
            if slot is not None and slot.model is not None:
                metrics.serving(slot.role, slot.model.name, slot.model.version)

    def _swapped(self, slot: ModelSlot, model: LoadedModel, previous: LoadedModel | None) -> None:
        self.metrics.swapped(slot.role, "swapped")
        self.metrics.serving(slot.role, model.name, model.version)

    # ------------------------------------------------------------------ lifecycle
    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        for batcher in self.batchers.values():
            batcher.start()
        if self.capture is not None:
            self.capture.start()
        if self.follower is not None:
            self.follower.start()
        try:
            yield
        finally:
            if self.follower is not None:
                await asyncio.to_thread(self.follower.stop)
            if self.background:
                await asyncio.wait(self.background, timeout=10)
            for batcher in self.batchers.values():
                await batcher.close()
            if self.capture is not None:
                await asyncio.to_thread(self.capture.close)
            mark_process_dead()

    # ------------------------------------------------------------------ plumbing
    def measured(
        self, route: str, handler: Callable[[Request], Awaitable[Response]], *, v2: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            rule = None
            try:
                response = await handler(request)
            except EventOpsError as exc:
                rule = exc.rule or "error"
                status = exc.http_status
                headers = {"www-authenticate": "Bearer"} if status == 401 else None
                response = Response(wire.error_body(exc, v2=v2), status, headers, JSON)
            except Exception as exc:
                log.exception("%s failed", route)
                rule = "internal"
                problem = HTTPProblem(500, f"internal error: {type(exc).__name__}", field=None,
                                      rule="internal")  # fmt: skip
                response = Response(wire.error_body(problem, v2=v2), 500, None, JSON)
            self.metrics.request(route, response.status_code, time.perf_counter() - started, rule)
            return response

        return endpoint

    async def read_body(self, request: Request) -> bytes:
        return await read_body(request, self.max_body)

    # ------------------------------------------------------------------ predicting
    async def predict(self, request: Request, parser: Parser) -> tuple[Answer, list[str], Any, str]:
        """Check, batch and answer one request: (answer, ids, parser's extra, role)."""
        if self.deployment.protect_predictions:
            self.guard.check(request, feedback=False)
        body = await self.read_body(request)
        challenger = self.challenger.model if self.challenger is not None else None
        role = self.router.choose(challenger is not None)
        model = challenger if role == "canary" else self.primary.model
        if model is None:
            raise HTTPProblem(503, "no model is loaded yet", field="model", rule="ready")
        content_type = request.headers.get("content-type")
        if len(body) > THREAD_PARSE_BYTES:
            parsed, extra = await run_in_threadpool(parser, body, content_type, model.schema)
        else:
            parsed, extra = parser(body, content_type, model.schema)
        batcher = self.batchers["challenger" if role == "canary" else "primary"]
        answer = await batcher.predict(model, parsed.inputs, parsed.params)
        ids = new_prediction_ids(parsed.inputs.rows)
        self.metrics.predicted(role, answer.model.version, parsed.inputs.rows)
        captured = self.capture is not None and self.capture.wants()
        if captured:
            self._record(parsed, answer, ids, role)
        if self.router.shadows and challenger is not None:
            task = asyncio.create_task(
                self._shadow(challenger, body, content_type, parsed, model, parser, ids, captured)
            )
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        return answer, ids, extra, role

    def _record(self, parsed: Parsed, answer: Answer, ids: list[str], role: str) -> None:
        assert self.capture is not None
        names = tuple(answer.model.schema.names)
        self.capture.record(parsed.inputs, names, answer.outputs, ids, answer.model.version, role)

    async def _shadow(
        self, model: LoadedModel, body: bytes, content_type: str | None, parsed: Parsed,
        answered_by: LoadedModel, parser: Parser, ids: list[str], captured: bool,
    ) -> None:  # fmt: skip
        """Score the request with the challenger after the answer went; capture, never return."""
        batcher = self.batchers["challenger"]
        if batcher.queued_rows > batcher.max_queue_rows // 2:
            self.metrics.shadow.labels("dropped").inc()
            return
        try:
            if model.schema != answered_by.schema:
                parsed, _ = parser(body, content_type, model.schema)
            answer = await batcher.predict(model, parsed.inputs, parsed.params)
        except Exception as exc:
            self.metrics.shadow.labels("failed").inc()
            log.debug("shadow prediction failed: %s", exc)
            return
        self.metrics.shadow.labels("predicted").inc()
        if captured:
            self._record(parsed, answer, ids, "shadow")

    @staticmethod
    def headers(answer: Answer, ids: list[str], role: str) -> dict[str, str]:
        headers = {
            "x-model-version": answer.model.version,
            "x-model-role": role,
            "x-prediction-count": str(len(ids)),
            "x-prediction-ids": ",".join(ids[:MAX_ID_HEADER]),
        }
        if answer.model.ref.alias:
            headers["x-model-alias"] = answer.model.ref.alias
        return headers

    # ------------------------------------------------------------------ routes
    async def invocations(self, request: Request) -> Response:
        def parse(
            body: bytes, content_type: str | None, schema: InputSchema
        ) -> tuple[Parsed, None]:
            return wire.parse_invocation(body, content_type, schema), None

        answer, ids, _, role = await self.predict(request, parse)
        headers = self.headers(answer, ids, role)
        if "text/csv" in (request.headers.get("accept") or ""):
            return Response(wire.csv_body(answer.outputs, ids), 200, headers, "text/csv")
        return Response(wire.mlflow_body(answer.outputs, ids), 200, headers, JSON)

    async def v2_infer(self, request: Request) -> Response:
        name = self.v2_model_name(request)

        def parse(body: bytes, content_type: str | None, schema: InputSchema) -> tuple[Parsed, Any]:
            media = wire.media_type(content_type)
            if media not in ("application/json", ""):
                raise InputError(f"unsupported content type {media!r}; send application/json",
                                 field="content-type", rule="media-type", status=415)  # fmt: skip
            return oip.parse_infer(wire.load_json(body), schema)

        answer, ids, request_id, role = await self.predict(request, parse)
        body = oip.infer_body(answer.model, name, answer.outputs, ids, request_id)
        return Response(body, 200, self.headers(answer, ids, role), JSON)

    def v2_model_name(self, request: Request) -> str:
        name = str(request.path_params["name"])
        model = self.primary.model
        known = {self.deployment.name, self.deployment.model}
        if model is not None:
            known.add(model.name)
        if name not in known:
            raise HTTPProblem(404, f"no model named {name!r} here (serving: {', '.join(sorted(known))})",
                              field="name", rule="exists")  # fmt: skip
        return name

    async def v2_metadata(self, request: Request) -> Response:
        name = self.v2_model_name(request)
        model = self.primary.model
        if model is None:
            raise HTTPProblem(503, "no model is loaded yet", field="model", rule="ready")
        return Response(wire.dumps(oip.model_metadata(model, name)), 200, None, JSON)

    async def v2_model_ready(self, request: Request) -> Response:
        self.v2_model_name(request)
        return self.ready_response()

    def ready_response(self) -> Response:
        ready = self.primary.ready
        return Response(wire.dumps({"ready": ready}), 200 if ready else 503, None, JSON)

    async def live(self, request: Request) -> Response:
        return Response(b'{"live":true}', 200, None, JSON)

    async def ready(self, request: Request) -> Response:
        return self.ready_response()

    async def server_metadata(self, request: Request) -> Response:
        body = {"name": "eventops", "version": __version__, "extensions": []}
        return Response(wire.dumps(body), 200, None, JSON)

    async def info(self, request: Request) -> Response:
        def describe(slot: ModelSlot | None) -> dict[str, Any] | None:
            if slot is None or slot.model is None:
                return None
            m = slot.model
            return {"uri": slot.uri, "model": m.name, "version": m.version,
                    "loaded_at": m.loaded_at.isoformat(), "swaps": slot.swaps}  # fmt: skip

        body = {
            "deployment": self.deployment.name, "mode": self.deployment.mode,
            "primary": describe(self.primary), "challenger": describe(self.challenger),
            "capture": self.capture.dataset if self.capture is not None else None,
        }  # fmt: skip
        return Response(wire.dumps(body), 200 if self.primary.ready else 503, None, JSON)

    async def feedback(self, request: Request) -> Response:
        self.guard.check(request, feedback=True)
        if wire.media_type(request.headers.get("content-type")) not in ("application/json", ""):
            raise InputError("send application/json", field="content-type", rule="media-type",
                             status=415)  # fmt: skip
        items = parse_feedback(wire.load_json(await self.read_body(request)))
        if self.store is None:
            raise HTTPProblem(503, "this server has no store to record feedback in",
                              field="store", rule="configured")  # fmt: skip
        store = self.store
        events = await run_in_threadpool(
            emit_feedback, store, items, self.deployment.name, self.relay
        )
        body = {"accepted": len(events), "event_ids": [e.id for e in events]}
        return Response(wire.dumps(body), 202, None, JSON)

    async def prometheus(self, request: Request) -> Response:
        for role, batcher in self.batchers.items():
            self.metrics.queued.labels(role).set(batcher.queued_rows)
        body, content_type = self.metrics.expose()
        return Response(body, 200, None, content_type)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    problem = HTTPProblem(status, str(getattr(exc, "detail", "not found")), field=None, rule="http")
    return Response(wire.error_body(problem), status, None, JSON)


def create_app(
    model: ModelSlot | LoadedModel,
    *,
    deployment: Deployment | None = None,
    challenger: ModelSlot | LoadedModel | None = None,
    capture: PredictionCapture | None = None,
    store: Store | None = None,
    relay: Any = None,
    follower: AliasFollower | None = None,
    metrics: ServingMetrics | None = None,
    token: str | None = None,
    anonymous_feedback: bool = True,
    seed: int | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
) -> Starlette:
    """The server app for `model` (a loaded model, or a slot a follower swaps).

    `deployment` carries the knobs (name, mode, canary share, batching, protection); without
    one the model is served alone as deployment ``model``. `follower`, when given, is started
    and stopped with the app and reports its swaps to the app's metrics.
    """
    primary = _slot(model, "primary")
    assert primary is not None
    if deployment is None:
        name = primary.model.name if primary.model is not None else "model"
        deployment = Deployment(name="model", model=name)
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")
    server = ModelServer(
        primary, deployment, challenger=_slot(challenger, "challenger"), capture=capture,
        store=store, relay=relay, follower=follower, metrics=metrics or ServingMetrics(),
        token=token, anonymous_feedback=anonymous_feedback, seed=seed,
        max_body_bytes=max_body_bytes,
    )  # fmt: skip
    m = server.measured
    routes = [
        Route("/invocations", m("/invocations", server.invocations), methods=["POST"]),
        Route("/ping", m("/ping", server.ready), methods=["GET"]),
        Route("/health", m("/health", server.ready), methods=["GET"]),
        Route("/", m("/", server.info), methods=["GET"]),
        Route("/v2", m("/v2", server.server_metadata, v2=True), methods=["GET"]),
        Route("/v2/health/live", m("/v2/health/live", server.live, v2=True), methods=["GET"]),
        Route("/v2/health/ready", m("/v2/health/ready", server.ready, v2=True), methods=["GET"]),
        Route("/v2/models/{name}", m("/v2/models/{name}", server.v2_metadata, v2=True),
              methods=["GET"]),
        Route("/v2/models/{name}/ready", m("/v2/models/{name}/ready", server.v2_model_ready,
              v2=True), methods=["GET"]),
        Route("/v2/models/{name}/infer", m("/v2/models/{name}/infer", server.v2_infer, v2=True),
              methods=["POST"]),
        Route("/feedback", m("/feedback", server.feedback), methods=["POST"]),
        Route("/metrics", m("/metrics", server.prometheus), methods=["GET"]),
    ]  # fmt: skip
    app = Starlette(
        routes=routes,
        lifespan=server.lifespan,
        exception_handlers={404: _not_found, 405: _not_found},
    )
    app.state.server = server
    return app


__all__ = ["DEFAULT_MAX_BODY", "HTTPProblem", "ModelServer", "create_app"]
