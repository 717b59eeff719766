"""What a step can tell the platform while it runs: metrics, and the data batches it read.

Inside a step (whatever executor runs it):

    from eventops.pipelines import log_metric, log_metrics, read_dataset

    table = read_dataset("churn")          # every committed batch; their ids are recorded
    log_metric("accuracy", 0.93)           # one value
    log_metrics({"f1": 0.9, "auc": 0.97}, step=3)

The executor runs each attempt inside `step_context` (see `executors._capture_and_run`), which
collects these calls; they travel back to the runner on the `StepResult` (`metrics`, `reads`),
so they work in this process, in a child process and in a Ray worker alike. The runner keeps them
on the step and hands them to the tracker (MLflow) and to lineage. Outside a run (a step called
as a plain function) `log_metric` does nothing and `read_dataset` reads without recording.

`read_dataset` opens the lake named by the step's context (the runner's store and lake, passed
in `StepCall.context`), or the configured one (`eventops.toml`, `EVENTOPS_*`) when there is none.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eventops.errors import ValidationError

if TYPE_CHECKING:
    import pyarrow as pa

    from eventops.lake.catalog import Lake

# MLflow's rule for metric names (letters, digits, _ - . / and spaces), kept here so a bad name
# fails in the step that logs it rather than later in the tracker.
METRIC_NAME = re.compile(r"^[\w\-./ ]{1,250}$")
MAX_METRICS = 10_000  # per attempt; more is a bug (a metric per row), not tracking


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    step: int = 0
    timestamp_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "step": self.step, "ts": self.timestamp_ms}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Metric:
        return cls(
            str(data["name"]),
            float(data["value"]),
            int(data.get("step", 0)),
            int(data.get("ts", 0)),
        )


@dataclass
class StepContext:
    """One attempt's collector: what the step logged and read."""

    # run_id, pipeline, step, store_url, lake_url, tracking_uri, tracking_run_id (None when the
    # run is not tracked), correlation_id, cause_id (the run's `pipeline.run.requested` event)
    info: Mapping[str, Any] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    reads: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


_CURRENT: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "eventops_step_context", default=None
)


@contextlib.contextmanager
def step_context(info: Mapping[str, Any] | None = None) -> Iterator[StepContext]:
    """Collect what the code run inside logs and reads (used by executors around each attempt)."""
    ctx = StepContext(dict(info or {}))
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def current() -> StepContext | None:
    """The running step's context, None outside a run."""
    return _CURRENT.get()


def _metric(name: str, value: Any, step: int | None) -> Metric:
    if not isinstance(name, str) or not METRIC_NAME.match(name):
        raise ValidationError(
            f"metric name {name!r}: letters, digits, _ - . / and spaces, at most 250",
            field="metric.name",
            rule="format",
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValidationError(
            f"metric {name!r} must be a number, not {type(value).__name__}",
            field=f"metric.{name}",
            rule="number",
        ) from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValidationError(
            f"metric {name!r} must be a finite number, not {value!r}",
            field=f"metric.{name}",
            rule="number",
        )
    return Metric(name, number, int(step or 0), int(time.time() * 1000))


def log_metric(name: str, value: float, step: int | None = None) -> None:
    """Record a metric of the running step (tracked with the run in MLflow under `name`)."""
    metric = _metric(name, value, step)
    ctx = current()
    if ctx is None:
        return
    with ctx.lock:
        if len(ctx.metrics) >= MAX_METRICS:
            raise ValidationError(
                f"a step may log at most {MAX_METRICS} metric values",
                field="metric",
                rule="max-count",
            )
        ctx.metrics.append(metric)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Record several metrics at once."""
    for name, value in metrics.items():
        log_metric(name, value, step)


_LAKES: dict[tuple[str, str], Lake] = {}
_LAKES_LOCK = threading.Lock()


def _lake(info: Mapping[str, Any]) -> Lake:
    from eventops.lake.catalog import Lake
    from eventops.lake.storage import LakeStorage
    from eventops.store import Store

    store_url, lake_url = info.get("store_url"), info.get("lake_url")
    if not store_url or not lake_url:
        from eventops.config import load_settings

        settings = load_settings()
        store_url, lake_url = settings.store_url, settings.lake_url
    key = (str(store_url), str(lake_url))
    with _LAKES_LOCK:
        if key not in _LAKES:
            _LAKES[key] = Lake(Store(key[0]), LakeStorage(key[1]))
        return _LAKES[key]


def read_dataset(name: str) -> pa.Table:
    """Every committed batch of dataset `name` as one table; the batches read are recorded on the
    step (lineage: which data a run's outputs came from)."""
    import pyarrow as pa

    ctx = current()
    lake = _lake(ctx.info if ctx is not None else {})
    batches = lake.batches(name)
    if not batches:
        return lake.read(name)  # the empty table with the dataset's schema (if it has one)
    tables = [lake.storage.read_parquet(lake.storage.path_of(b.uri)) for b in batches]
    if ctx is not None:
        with ctx.lock:
            ctx.reads.extend(
                {"dataset": name, "batch_id": b.id, "rows": b.rows, "schema_version": b.version}
                for b in batches
            )
    return pa.concat_tables(tables, promote_options="permissive")
