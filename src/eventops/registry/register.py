"""Registering a trained model from a pipeline step: MLflow artifacts, a model version, an event.

    from eventops.registry import register_model

    @step
    def train(table: pa.Table) -> str:
        model = LogisticRegression().fit(X, y)
        return register_model(model, "churn", input_example=X.head(5),
                              holdout=test_frame, label="churned").version

Inside a run the model is logged to the run's own MLflow run (`info["tracking_run_id"]`), so
the version links back to the run, its params and its lineage; the event is caused by the run's
request and carries its correlation id. Outside a run, or in a run that is not tracked, it opens
an MLflow run of its own (experiment `eventops/registry`) from the configured settings.

MLflow's `log_model` / `start_run` work on process-wide state (the active run, the global
tracking URI), which steps running side by side in threads would share; this module saves the
model to a temporary folder and logs it through an explicit `MlflowClient` instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventops.config import Settings, load_settings
from eventops.errors import BackendUnavailable, ValidationError
from eventops.events.catalog import ModelRegistered
from eventops.events.envelope import Event
from eventops.lake.storage import LakeStorage
from eventops.pipelines.context import current
from eventops.pipelines.tracking import MlflowTracker
from eventops.registry.client import missing, mlflow_client
from eventops.registry.flavors import detect_flavor, save_model
from eventops.registry.names import (
    TAG_EVENT_ID,
    TAG_FLAVOR,
    TAG_HOLDOUT_URI,
    TAG_LABEL,
    TAG_METRICS,
    TAG_PIPELINE,
    TAG_RUN_ID,
    check_model_name,
)
from eventops.store import Store, add_event

log = logging.getLogger(__name__)

READY_TIMEOUT = 300.0
MAX_TAG_CHARS = 5000
TRACKER_SUFFIXES = ("duration_s", "attempts", "cache_hit")


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version just registered, and the event announcing it."""

    model: str
    version: str
    model_uri: str  # models:/<model>/<version>
    source: str  # the model's artifact URI in its MLflow run
    tracking_run_id: str
    run_id: str | None  # the EventOps pipeline run (None outside one)
    pipeline: str | None
    holdout_uri: str | None
    label: str | None
    metrics: dict[str, float]
    event_id: str


def _pandas(value: Any, field: str) -> Any:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return value
    if type(value).__module__.startswith("pyarrow") and hasattr(value, "to_pandas"):
        return value.to_pandas()
    raise ValidationError(
        f"{field} must be a pandas DataFrame or a pyarrow Table, not {type(value).__name__}",
        field=field,
        rule="table",
    )


def _tracker_metric(name: str) -> bool:
    """The tracker's own bookkeeping per step (duration, attempts, cache hit), not model
    quality."""
    return name.startswith("step.") and name.rsplit(".", 1)[-1] in TRACKER_SUFFIXES


def _number(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValidationError(
            f"metric {name!r} must be a finite number, not {value!r}",
            field=f"metrics.{name}",
            rule="number",
        )
    return number


def _metrics(client: Any, run_id: str, explicit: Mapping[str, float] | None) -> dict[str, float]:
    """The MLflow run's metrics, then what the running step logged so far (it reaches MLflow
    only when the step ends), then `explicit`: later sources win."""
    logged = client.get_run(run_id).data.metrics.items()
    merged = {
        str(k): float(v) for k, v in logged if not _tracker_metric(str(k)) and math.isfinite(v)
    }
    ctx = current()
    if ctx is not None:
        with ctx.lock:
            merged.update({m.name: m.value for m in ctx.metrics})
    for name, value in (explicit or {}).items():
        merged[str(name)] = _number(str(name), value)
    return merged


def _wait_ready(client: Any, name: str, version: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        status = str(client.get_model_version(name, version).status)
        if status == "READY":
            return
        if status != "PENDING_REGISTRATION":
            raise BackendUnavailable(
                f"version {version} of {name!r} is {status}", field="model", rule="ready"
            )
        if time.monotonic() >= deadline:
            raise BackendUnavailable(
                f"version {version} of {name!r} not READY after {timeout:.0f}s",
                field="model",
                rule="ready",
            )
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _ensure_registered_model(client: Any, name: str) -> None:
    try:
        client.get_registered_model(name)
    except Exception as exc:
        if not missing(exc):
            raise
        try:
            client.create_registered_model(name)
        except Exception as created:  # created meanwhile by another step?
            if getattr(created, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise


def register_model(
    model: Any,
    name: str,
    *,
    input_example: Any,
    holdout: Any = None,
    label: str | None = None,
    metrics: Mapping[str, float] | None = None,
    flavor: str | None = None,
    description: str | None = None,
    predict_fn: str = "predict",
    pip_requirements: Sequence[str] | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> RegisteredVersion:
    """Log `model` to MLflow, register a new version of `name` and announce it.

    `holdout` (a table holding the `label` column) is logged beside the model: gates score the
    candidate and the champion on it. `predict_fn` picks the scikit-learn method serving and
    gates call (`predict_proba` for scores). `pip_requirements` skips MLflow's inference of
    the requirements, which imports the model in a child process (seconds).
    """
    check_model_name(name)
    if input_example is None:
        raise ValidationError(
            "an input example is required: it gives the model its signature",
            field="input_example",
            rule="required",
        )
    example = _pandas(input_example, "input_example")
    if example.empty:
        raise ValidationError("the input example has no rows", field="input_example", rule="rows")
    found = detect_flavor(model, flavor)
    table = _pandas(holdout, "holdout") if holdout is not None else None
    if table is not None and (label is None or label not in table.columns):
        raise ValidationError(
            f"label {label!r} must be a column of the holdout ({', '.join(map(str, table.columns))})",
            field="label",
            rule="in-holdout",
        )
    if metrics is not None:
        for metric_name, value in metrics.items():
            _number(str(metric_name), value)
    ctx = current()
    info: Mapping[str, Any] = ctx.info if ctx is not None else {}
    configured: list[Settings] = []

    def setting(key: str) -> str:
        """From the run's context; from eventops.toml / EVENTOPS_* outside a run."""
        if info.get(key):
            return str(info[key])
        if not configured:
            configured.append(load_settings())
        return str(getattr(configured[0], key))

    tracking_uri = setting("tracking_uri")
    client = mlflow_client(tracking_uri)
    tracked = info.get("tracking_run_id") if info.get("tracking_uri") else None
    run_id = str(tracked) if tracked else _open_run(tracking_uri, name, info, setting("lake_url"))
    try:
        registered = _register(
            client, model, found, name, example, table, label, metrics, description, info,
            run_id, predict_fn, pip_requirements, ready_timeout,
        )  # fmt: skip
    except BaseException:
        if not tracked:
            client.set_terminated(run_id, "FAILED")
        raise
    if not tracked:
        client.set_terminated(run_id, "FINISHED")
    _announce(setting("store_url"), registered, info, upgrade=not info.get("store_url"))
    return registered


def _open_run(tracking_uri: str, name: str, info: Mapping[str, Any], lake_url: str) -> str:
    """An MLflow run for a model registered outside a tracked run, artifacts in the lake."""
    storage = LakeStorage(lake_url)
    tracker = MlflowTracker(tracking_uri, artifact_root=storage.uri(storage.path("mlruns")))
    tags = {"eventops.registered_model": name}
    for key in ("run_id", "pipeline"):
        if info.get(key):
            tags[f"eventops.{key}"] = str(info[key])
    run = tracker.client.create_run(
        tracker.experiment_id("registry"), run_name=f"register-{name}", tags=tags
    )
    return str(run.info.run_id)


def _register(
    client: Any,
    model: Any,
    flavor: str,
    name: str,
    example: Any,
    holdout: Any,
    label: str | None,
    metrics: Mapping[str, float] | None,
    description: str | None,
    info: Mapping[str, Any],
    run_id: str,
    predict_fn: str,
    pip_requirements: Sequence[str] | None,
    ready_timeout: float,
) -> RegisteredVersion:
    # A folder per registration: a retried step, or two models from one step, never overwrite
    # the files an earlier version points at.
    folder = f"registry/{name}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="eventops-model-") as tmp:
        path = os.path.join(tmp, "model")
        save_model(model, flavor, path, example, predict_fn, pip_requirements)
        client.log_artifacts(run_id, path, f"{folder}/model")
        holdout_uri = None
        if holdout is not None:
            file = os.path.join(tmp, "holdout.parquet")
            holdout.to_parquet(file, index=False)
            client.log_artifact(run_id, file, folder)
    artifact_root = str(client.get_run(run_id).info.artifact_uri).rstrip("/")
    source = f"{artifact_root}/{folder}/model"
    if holdout is not None:
        holdout_uri = f"{artifact_root}/{folder}/holdout.parquet"
    merged = _metrics(client, run_id, metrics)
    event_id = uuid.uuid4().hex
    tags = {
        TAG_RUN_ID: str(info.get("run_id") or ""),
        TAG_PIPELINE: str(info.get("pipeline") or ""),
        TAG_HOLDOUT_URI: holdout_uri or "",
        TAG_LABEL: label or "",
        TAG_METRICS: json.dumps(merged, sort_keys=True)[:MAX_TAG_CHARS],
        TAG_FLAVOR: flavor,
        TAG_EVENT_ID: event_id,
    }
    _ensure_registered_model(client, name)
    created = client.create_model_version(
        name,
        source=source,
        run_id=run_id,
        tags={k: v for k, v in tags.items() if v},
        description=description,
    )
    version = str(created.version)
    _wait_ready(client, name, version, ready_timeout)
    return RegisteredVersion(
        model=name,
        version=version,
        model_uri=f"models:/{name}/{version}",
        source=source,
        tracking_run_id=run_id,
        run_id=info.get("run_id"),
        pipeline=info.get("pipeline"),
        holdout_uri=holdout_uri,
        label=label,
        metrics=merged,
        event_id=event_id,
    )


def _announce(
    store_url: str, registered: RegisteredVersion, info: Mapping[str, Any], *, upgrade: bool
) -> None:
    data = ModelRegistered(
        model=registered.model,
        version=registered.version,
        run_id=registered.run_id,
        pipeline=registered.pipeline,
        tracking_run_id=registered.tracking_run_id,
        model_uri=registered.model_uri,
        metrics=registered.metrics,
    ).model_dump(mode="json")
    event = Event(
        id=registered.event_id,
        type="model.version.registered",
        subject=registered.model,
        data=data,
        correlationid=info.get("correlation_id") or None,
        causationid=info.get("cause_id") or None,
    )
    store = Store(store_url)
    try:
        if upgrade:
            store.upgrade()
        with store.session() as session:
            add_event(session, event)
    finally:
        store.close()
    log.info("registered %s version %s (event %s)", registered.model, registered.version, event.id)
