"""Running a deployment: load its models, wire the platform around the app, run uvicorn.

`build_server` assembles one server process from a `Deployment` and the settings: the primary
model (``models:/<model>@<alias>``, or `model_uri`), the challenger in canary/shadow mode (if
its alias exists yet), the capture into the lake, the follower on the bus, the outbox relay for
the events it emits. `serve_deployment` runs it under uvicorn.

With ``workers > 1`` uvicorn starts that many processes, each building its own server (its own
copy of the model, its own follower and capture buffer) on one shared port. Prometheus then
runs in multiprocess mode over a fresh folder, so `/metrics` from any worker sums all of them.
The settings and the deployment go to the workers as JSON in an environment variable (they
hold no secrets); the token is read by each worker from ``EVENTOPS_TOKEN``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from eventops.config import Settings
from eventops.errors import ConfigError, EventOpsError, NotFound
from eventops.events.bus import Bus, open_configured_bus
from eventops.lake import Lake
from eventops.serving.capture import PredictionCapture
from eventops.serving.deployment import Deployment
from eventops.serving.follower import AliasFollower, resolve_alias
from eventops.serving.metrics import MULTIPROC_VARIABLE, ServingMetrics
from eventops.serving.models import ModelSlot, load_model, use_tracking_uri
from eventops.store import OutboxRelay, Store

log = logging.getLogger(__name__)

# The predict thread holds the GIL in Python stretches between its C loops; at the default
# 5 ms switch interval the event loop waits that long to parse and answer. 1 ms gave ~25% more
# requests/s in benchmarks/bench_serving.py. Set only in server processes, never on import.
SWITCH_INTERVAL = 0.001
SPEC_VARIABLE = "_EVENTOPS_SERVE_SPEC"  # no EVENTOPS_ prefix: settings refuse unknown ones
TOKEN_VARIABLE = "EVENTOPS_TOKEN"  # noqa: S105 - the name of the variable, not a secret
Say = Callable[[str], None]


@dataclass
class ServerParts:
    """One server process's app and what it holds open; `close()` releases them."""

    app: Any
    deployment: Deployment
    primary: ModelSlot
    challenger: ModelSlot | None = None
    follower: AliasFollower | None = None
    capture: PredictionCapture | None = None
    store: Store | None = None
    bus: Bus | None = None
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        """Stop the follower and flush the capture (the app's shutdown does that too; this
        covers an app that never ran or whose shutdown was cut short), then close the bus and
        the store. Idempotent."""
        try:
            if self.follower is not None:
                self.follower.stop()
            if self.capture is not None:
                self.capture.close()
        finally:
            _close_all(self.bus, self.store)


def _close_all(*resources: Any) -> None:
    """Close each one, even when closing an earlier one raised (the first error is raised)."""
    errors: list[Exception] = []
    for resource in resources:
        if resource is None:
            continue
        try:
            resource.close()
        except Exception as exc:
            log.warning("closing %s failed: %s", type(resource).__name__, exc)
            errors.append(exc)
    if errors:
        raise errors[0]


def deployment_for_uri(model_uri: str, **knobs: Any) -> Deployment:
    """A deployment for a bare ``--model-uri``: named after the registered model, if any."""
    followed = resolve_alias(model_uri)
    name = "model"
    if model_uri.startswith("models:/"):
        name = model_uri.removeprefix("models:/").split("/")[0].split("@")[0] or "model"
    alias = followed[1] if followed else "champion"
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower()).strip("-_")
    given = {k: v for k, v in knobs.items() if v is not None}
    given.setdefault("capture_sample", 0.0)
    if not safe or not safe[0].isalpha():
        safe = f"model-{safe}".strip("-")
    return Deployment(name=given.pop("name", None) or safe[:63], model=name, alias=alias, **given)


def build_server(
    deployment: Deployment,
    settings: Settings,
    *,
    model_uri: str | None = None,
    token: str | None = None,
    anonymous_feedback: bool = True,
    say: Say | None = None,
) -> ServerParts:
    """Load the deployment's models and build its app with capture, follower and relay."""
    from eventops.serving.app import create_app

    say = say or log.info
    use_tracking_uri(settings.tracking_uri)
    uri = model_uri or deployment.model_uri
    say(f"loading {uri}")
    notes: list[str] = []
    primary = ModelSlot("primary", uri)
    try:
        primary.swap(load_model(uri))
    except NotFound as exc:
        if resolve_alias(uri) is None or exc.rule != "resolvable":
            raise
        notes.append(f"waiting for {uri} ({exc.message}): 503 until the alias exists")
    challenger = None
    if deployment.challenger_uri is not None:
        challenger = ModelSlot("challenger", deployment.challenger_uri)
        try:
            say(f"loading {deployment.challenger_uri}")
            challenger.swap(load_model(deployment.challenger_uri))
        except EventOpsError as exc:
            notes.append(f"no challenger yet ({exc}); the primary answers everything until then")
    follows = resolve_alias(uri) is not None or challenger is not None
    store = bus = relay = capture = None
    try:
        if follows or deployment.capture_sample > 0:
            lake = Lake.from_settings(settings)
            store = lake.store
            try:
                bus = open_configured_bus(settings)
                relay = OutboxRelay(store, bus)
            except EventOpsError as exc:
                notes.append(f"no bus ({exc}): following the registry by polling only")
            if deployment.capture_sample > 0:
                capture = PredictionCapture(
                    lake, deployment.capture_dataset, sample=deployment.capture_sample,
                    flush_rows=deployment.capture_flush_rows,
                    flush_seconds=deployment.capture_flush_seconds, relay=relay,
                    source=f"serving:{deployment.name}",
                )  # fmt: skip
        follower = None
        if follows:
            slots = [s for s in (primary, challenger) if s is not None]
            follower = AliasFollower(
                deployment.name, slots, bus=bus, store=store, relay=relay,
                poll_seconds=deployment.poll_seconds,
            )  # fmt: skip
        metrics = ServingMetrics()
        if capture is not None:
            captured = metrics.captured
            capture.on_rows = lambda outcome, rows: captured.labels(outcome).inc(rows)
        app = create_app(
            primary, deployment=deployment, challenger=challenger, capture=capture, store=store,
            relay=relay, follower=follower, metrics=metrics, token=token,
            anonymous_feedback=anonymous_feedback,
        )  # fmt: skip
    except BaseException:  # nothing half-built stays open: the caller gets no parts to close
        with contextlib.suppress(Exception):  # the error that stopped the build is the one to see
            _close_all(bus, store)
        raise
    return ServerParts(app, deployment, primary, challenger, follower, capture, store, bus, notes)


def serve_deployment(
    deployment: Deployment,
    settings: Settings,
    *,
    model_uri: str | None = None,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    token: str | None = None,
    anonymous_feedback: bool | None = None,
    say: Say | None = None,
) -> None:
    """Serve `deployment` until interrupted (uvicorn; `workers` processes on one port).

    `host`, `port` and `workers` override the deployment's. Without a token, feedback is
    accepted anonymously only on a loopback address unless `anonymous_feedback` says otherwise.
    """
    import uvicorn

    host = host or deployment.host
    port = port or deployment.port
    workers = workers or deployment.workers
    if deployment.protect_predictions and not token:
        raise ConfigError(
            f"protect_predictions needs a token: set {TOKEN_VARIABLE}",
            field=f"deployments.{deployment.name}.protect_predictions",
            rule="token-required",
        )
    anonymous = is_loopback(host) if anonymous_feedback is None else anonymous_feedback
    level = settings.log_level.lower()
    if workers == 1:
        sys.setswitchinterval(SWITCH_INTERVAL)
        parts = build_server(
            deployment, settings, model_uri=model_uri, token=token,
            anonymous_feedback=anonymous, say=say,
        )  # fmt: skip
        _announce(parts, host, port, say)
        try:
            uvicorn.run(parts.app, host=host, port=port, log_level=level, access_log=False)
        finally:
            parts.close()
        return
    if token and os.environ.get(TOKEN_VARIABLE) != token:
        raise ConfigError(
            f"with several workers the token is read from {TOKEN_VARIABLE} by each worker",
            field="token",
            rule="from-environment",
        )
    spec = {
        "deployment": deployment.model_dump(mode="json"),
        "settings": settings.model_dump(mode="json"),
        "model_uri": model_uri,
        "anonymous_feedback": anonymous,
    }
    metrics_dir = tempfile.mkdtemp(prefix="eventops-metrics-")
    os.environ[SPEC_VARIABLE] = orjson.dumps(spec).decode()
    os.environ[MULTIPROC_VARIABLE] = metrics_dir
    if say is not None:
        say(f"serving {deployment.name} on http://{host}:{port} with {workers} workers")
    try:
        uvicorn.run(
            "eventops.serving.server:worker_app", factory=True, host=host, port=port,
            workers=workers, log_level=level, access_log=False,
        )  # fmt: skip
    finally:
        os.environ.pop(SPEC_VARIABLE, None)
        os.environ.pop(MULTIPROC_VARIABLE, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app() -> Any:
    """The app of one uvicorn worker process (``--workers N``), from the parent's spec."""
    raw = os.environ.get(SPEC_VARIABLE)
    if not raw:
        raise ConfigError(
            f"{SPEC_VARIABLE} is not set: start workers with serve_deployment", field=SPEC_VARIABLE
        )
    spec = orjson.loads(raw)
    sys.setswitchinterval(SWITCH_INTERVAL)
    parts = build_server(
        Deployment(**spec["deployment"]),
        Settings.model_validate(spec["settings"]),
        model_uri=spec["model_uri"],
        token=os.environ.get(TOKEN_VARIABLE) or None,
        anonymous_feedback=spec["anonymous_feedback"],
    )
    return parts.app


def _announce(parts: ServerParts, host: str, port: int, say: Say | None) -> None:
    if say is None:
        return
    d = parts.deployment
    model = parts.primary.model
    served = f"{model.name} version {model.version}" if model is not None else parts.primary.uri
    say(f"serving {served} as {d.name} on http://{host}:{port}")
    if parts.challenger is not None and parts.challenger.model is not None:
        c = parts.challenger.model
        share = f"{d.canary_percent:g}% of requests" if d.mode == "canary" else "shadow"
        say(f"challenger {c.name} version {c.version}: {share}")
    if parts.capture is not None:
        say(f"capturing {d.capture_sample:.0%} of requests into {parts.capture.dataset}")
    for note in parts.notes:
        say(note)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


__all__ = [
    "ServerParts",
    "build_server",
    "deployment_for_uri",
    "is_loopback",
    "serve_deployment",
    "worker_app",
]
