"""Tracking: every pipeline run is an MLflow run.

The runner tells its `Tracker` when a run starts, when each step ends and when the run ends.
`MlflowTracker` mirrors that into MLflow:

- experiment `<prefix>/<pipeline>`, one MLflow run per EventOps run, named after the run id (a
  run resumed by another worker continues the same MLflow run);
- params: the pipeline params (JSON text for anything but a string);
- tags: `eventops.run_id`, `eventops.pipeline`, `eventops.trigger` (the trigger's kind: manual,
  cli, event, schedule...), `eventops.trigger_rule`, `eventops.trigger_event_id` (the event that
  caused the request), `eventops.request_event_id`, `eventops.correlation_id`, and per step
  `eventops.step.<step>.status` and `eventops.artifact.<step>.<output>` (the artifact's URI);
- metrics: per step `step.<step>.duration_s`, `step.<step>.attempts`, `step.<step>.cache_hit`,
  and what the steps logged with `eventops.pipelines.log_metric` under their own names;
- artifact `eventops/artifacts.json`: the references of the run's artifacts (uri, kind, sha256),
  which stay in the lake: nothing is copied;
- status FINISHED or FAILED (with tag `eventops.error`).

Tracking never breaks a run: the runner catches what a tracker raises, logs it, keeps it on the
run (`tracking_errors`) and goes on. Against a tracking server, MLflow retries a failed request
for minutes by default; `MlflowTracker` lowers that (`http_retries`, `http_timeout`) through
MLflow's own variables unless they are set already.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from eventops.config import Settings
from eventops.errors import ConfigError
from eventops.lake.storage import LakeStorage
from eventops.pipelines.context import Metric

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'mlflow-skinny>=3'"
MAX_TAG_CHARS = 5000
MAX_PARAM_CHARS = 6000
_KEY_CHARS = re.compile(r"[^\w\-./ ]")


@dataclass(frozen=True)
class RunInfo:
    """What a tracker knows about a run when it starts."""

    run_id: str
    pipeline: str
    params: Mapping[str, Any]
    trigger: Mapping[str, Any]
    correlation_id: str | None = None
    tracking_id: str | None = None  # set when the run was tracked before (a resumed run)


@dataclass(frozen=True)
class StepRecord:
    """One finished step: `status` succeeded, cached or failed."""

    name: str
    status: str
    attempts: int
    duration: float
    metrics: Sequence[Metric] = ()
    artifacts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    reads: Sequence[Mapping[str, Any]] = ()


class Tracker(Protocol):
    def start_run(self, run: RunInfo) -> str | None:
        """Open (or reopen) the run's tracking record; its id (None: not tracked)."""
        ...

    def log_step(self, tracking_id: str, step: StepRecord) -> None: ...

    def finish_run(
        self,
        tracking_id: str,
        status: str,
        *,
        error: str | None = None,
        artifacts: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """`status`: succeeded or failed. `artifacts`: references, each with its `step`."""
        ...


class NullTracker:
    """Tracks nothing."""

    def start_run(self, run: RunInfo) -> str | None:
        return None

    def log_step(self, tracking_id: str, step: StepRecord) -> None:
        pass

    def finish_run(
        self,
        tracking_id: str,
        status: str,
        *,
        error: str | None = None,
        artifacts: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        pass


def key(*parts: str) -> str:
    """An MLflow metric, param or tag key from parts (characters MLflow refuses become `_`)."""
    return ".".join(_KEY_CHARS.sub("_", p) for p in parts)[:250]


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=repr)
    return text[:limit]


def run_tags(run: RunInfo) -> dict[str, str]:
    trigger = run.trigger
    kind = trigger.get("kind") or trigger.get("name") or "manual"
    tags = {
        "eventops.run_id": run.run_id,
        "eventops.pipeline": run.pipeline,
        "eventops.trigger": str(kind),
        "eventops.trigger_rule": str(trigger.get("rule") or trigger.get("name") or ""),
        "eventops.trigger_event_id": str(trigger.get("cause_id") or ""),
        "eventops.request_event_id": str(trigger.get("event_id") or ""),
        "eventops.correlation_id": run.correlation_id or "",
    }
    return {k: v[:MAX_TAG_CHARS] for k, v in tags.items() if v}


class MlflowTracker:
    """Tracks runs in MLflow at `tracking_uri` (sqlite:///..., http://server, databricks...).

    `artifact_root`: where new experiments keep their artifacts (e.g. `<lake>/mlruns`); None
    leaves it to MLflow (the server's default, or ./mlruns).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_prefix: str = "eventops",
        *,
        artifact_root: str | None = None,
        http_retries: int = 2,
        http_timeout: float = 10.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_prefix = experiment_prefix.rstrip("/")
        self.artifact_root = artifact_root.rstrip("/") if artifact_root else None
        if urlsplit(tracking_uri).scheme in ("http", "https"):
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(http_retries))
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(http_timeout)))
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        self._lock = threading.RLock()
        self._client: Any = None
        self._experiments: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"MlflowTracker({self.tracking_uri!r})"

    @property
    def client(self) -> Any:
        """The `mlflow.tracking.MlflowClient` (MLflow is imported on first use)."""
        with self._lock:
            if self._client is None:
                try:
                    from mlflow.tracking import MlflowClient
                except ImportError as exc:
                    raise ConfigError(
                        f"tracking needs MLflow ({exc}); {INSTALL_HINT}",
                        field="tracking.uri",
                        rule="installed",
                    ) from None
                parts = urlsplit(self.tracking_uri)
                if parts.scheme == "sqlite" and parts.path.startswith("/"):
                    Path(parts.path[1:]).parent.mkdir(parents=True, exist_ok=True)
                self._client = MlflowClient(tracking_uri=self.tracking_uri)
            return self._client

    def experiment_name(self, pipeline: str) -> str:
        return f"{self.experiment_prefix}/{pipeline}"

    def experiment_id(self, pipeline: str) -> str:
        name = self.experiment_name(pipeline)
        with self._lock:
            if name in self._experiments:
                return self._experiments[name]
            client = self.client
            found = client.get_experiment_by_name(name)
            if found is None:
                location = f"{self.artifact_root}/{pipeline}" if self.artifact_root else None
                try:
                    experiment_id = client.create_experiment(name, artifact_location=location)
                except Exception:  # created meanwhile by another runner?
                    found = client.get_experiment_by_name(name)
                    if found is None:
                        raise
                    experiment_id = found.experiment_id
            else:
                experiment_id = found.experiment_id
            self._experiments[name] = str(experiment_id)
            return str(experiment_id)

    def _existing(self, experiment_id: str, run_id: str) -> str | None:
        """The MLflow run already made for `run_id` (a crash before its id was saved)."""
        if "'" in run_id or "\\" in run_id:
            return None
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`eventops.run_id` = '{run_id}'", max_results=1
        )
        return str(found[0].info.run_id) if found else None

    def start_run(self, run: RunInfo) -> str | None:
        from mlflow.entities import Param

        with self._lock:
            client = self.client
            if run.tracking_id:
                client.update_run(run.tracking_id, status="RUNNING")
                return run.tracking_id
            experiment_id = self.experiment_id(run.pipeline)
            existing = self._existing(experiment_id, run.run_id)
            if existing is not None:
                client.update_run(existing, status="RUNNING")
                return existing
            tags = run_tags(run)
            created = client.create_run(experiment_id, run_name=run.run_id, tags=tags)
            tracking_id = str(created.info.run_id)
            params = [
                Param(key(name), _text(value, MAX_PARAM_CHARS))
                for name, value in sorted(run.params.items())
            ]
            for start in range(0, len(params), 100):
                client.log_batch(tracking_id, params=params[start : start + 100])
            return tracking_id

    def log_step(self, tracking_id: str, step: StepRecord) -> None:
        from mlflow.entities import Metric as MlflowMetric
        from mlflow.entities import RunTag

        now = max((m.timestamp_ms for m in step.metrics), default=0) or _now_ms()
        metrics = [
            MlflowMetric(key("step", step.name, "duration_s"), step.duration, now, 0),
            MlflowMetric(key("step", step.name, "attempts"), float(step.attempts), now, 0),
            MlflowMetric(
                key("step", step.name, "cache_hit"), float(step.status == "cached"), now, 0
            ),
        ]
        metrics += [
            MlflowMetric(key(m.name), m.value, m.timestamp_ms or now, m.step) for m in step.metrics
        ]
        tags = [RunTag(key("eventops.step", step.name, "status"), step.status)]
        tags += [
            RunTag(key("eventops.artifact", step.name, name), str(ref.get("uri", ""))[:5000])
            for name, ref in step.artifacts.items()
        ]
        with self._lock:
            for start in range(0, len(metrics), 1000):
                self.client.log_batch(tracking_id, metrics=metrics[start : start + 1000])
            for start in range(0, len(tags), 100):
                self.client.log_batch(tracking_id, tags=tags[start : start + 100])

    def finish_run(
        self,
        tracking_id: str,
        status: str,
        *,
        error: str | None = None,
        artifacts: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        with self._lock:
            client = self.client
            if artifacts:
                client.log_dict(
                    tracking_id, {"artifacts": list(artifacts)}, "eventops/artifacts.json"
                )
            client.set_tag(tracking_id, "eventops.status", status)
            if error:
                client.set_tag(tracking_id, "eventops.error", error[:MAX_TAG_CHARS])
            client.set_terminated(tracking_id, "FINISHED" if status == "succeeded" else "FAILED")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def tracker_from_settings(settings: Settings, experiment_prefix: str = "eventops") -> Tracker:
    """The configured tracker: MLflow at `tracking.uri` (default `sqlite:///<home>/mlflow.db`).

    With a database URI, artifacts of new experiments go under `<lake>/mlruns`. With a tracking
    server (http/https) the server decides: it usually proxies artifacts to its own store
    (`--serve-artifacts`), so workers need no credentials for the artifact bucket."""
    root = None
    if not settings.tracking_uri.startswith(("http://", "https://")):
        storage = LakeStorage(settings.lake_url)
        root = storage.uri(storage.path("mlruns"))
    return MlflowTracker(settings.tracking_uri, experiment_prefix, artifact_root=root)
