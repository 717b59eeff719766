"""Serving and monitoring metrics as CloudWatch metrics, so alarms and dashboards on AWS see them.

Three parts:

- `MetricsPublisher` buffers datums and puts them with `PutMetricData`, at most 1,000 datums
  per call (the API's limit) and well under its 1 MB body. Throttling is retried by
  `events.aws.call`; a call that still fails is logged and counted, never raised into the
  caller: a metrics outage must not break serving or monitoring.
- `ServingMetricsReporter` scrapes a model server's own `/metrics` every interval and puts
  what changed since the last scrape: `Requests` and `Errors` (Count) and `Latency`
  (Milliseconds, a statistic set of count and sum, plus `LatencyP50` / `LatencyP95` estimated
  from the histogram's buckets), with dimensions `Deployment`, `Model` and `Version`, and
  again with `Deployment` alone (the series alarms follow across promotions). Scraping
  the HTTP endpoint instead of reading the registry in-process works whatever the server's
  process layout (several uvicorn workers share their metrics through files).
- `MonitorMetricsSink` is a `Sink` for the worker's `forward` role: every numeric metric of a
  `monitor.*` event (drift share, p-values, accuracy...) becomes a datum named after it, with
  dimensions `Monitor` plus `Deployment` / `Model` / `Version` when the event carries them,
  and again with `Monitor` alone.

Dimension values are limited to 1,024 characters and a datum to 30 dimensions by CloudWatch;
non-finite values (NaN, inf) are refused by it, so they are dropped here and counted.
"""

from __future__ import annotations

import logging
import math
import threading
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from eventops.events import aws
from eventops.events.envelope import Event

log = logging.getLogger(__name__)

MAX_DATUMS_PER_CALL = 1000
MAX_DIMENSIONS = 30
MAX_DIMENSION_CHARS = 1024
DIMENSION_KEYS = {"deployment": "Deployment", "model": "Model", "version": "Version"}


@dataclass
class Datum:
    name: str
    value: float | None = None
    unit: str = "None"
    dimensions: dict[str, str] = field(default_factory=dict)
    timestamp: datetime | None = None
    statistics: dict[str, float] | None = None  # SampleCount, Sum, Minimum, Maximum

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "MetricName": self.name,
            "Unit": self.unit,
            "Timestamp": self.timestamp or datetime.now(UTC),
            "Dimensions": [
                {"Name": k, "Value": v[:MAX_DIMENSION_CHARS]}
                for k, v in list(self.dimensions.items())[:MAX_DIMENSIONS]
                if v
            ],
        }
        if self.statistics is not None:
            out["StatisticValues"] = self.statistics
        else:
            out["Value"] = self.value
        return out

    def finite(self) -> bool:
        values = list(self.statistics.values()) if self.statistics else [self.value]
        return all(v is not None and math.isfinite(v) for v in values)


@dataclass
class PublisherStats:
    calls: int = 0
    datums: int = 0
    dropped_non_finite: int = 0
    failed_calls: int = 0
    last_error: str | None = None


class MetricsPublisher:
    """Puts datums in one CloudWatch namespace, batched."""

    def __init__(
        self,
        namespace: str,
        *,
        region: str | None = None,
        client: Any = None,
        max_per_call: int = MAX_DATUMS_PER_CALL,
        backoff: aws.Backoff = aws.DEFAULT_BACKOFF,
    ) -> None:
        if not 1 <= max_per_call <= MAX_DATUMS_PER_CALL:
            raise ValueError(f"max_per_call must be 1..{MAX_DATUMS_PER_CALL}")
        self.namespace, self.max_per_call, self.backoff = namespace, max_per_call, backoff
        self.client = client if client is not None else aws.client("cloudwatch", region=region)
        self.stats = PublisherStats()
        self.retries = aws.RetryStats()
        self._pending: list[Datum] = []
        self._lock = threading.Lock()

    def add(self, datums: Sequence[Datum]) -> None:
        with self._lock:
            for datum in datums:
                if datum.finite():
                    self._pending.append(datum)
                else:
                    self.stats.dropped_non_finite += 1

    def flush(self) -> list[str]:
        """Put everything buffered; returns the errors of calls that failed for good."""
        with self._lock:
            pending, self._pending = self._pending, []
        errors = []
        for start in range(0, len(pending), self.max_per_call):
            chunk = [d.to_api() for d in pending[start : start + self.max_per_call]]
            try:
                aws.call(
                    self.client.put_metric_data, Namespace=self.namespace, MetricData=chunk,
                    what=f"cloudwatch put_metric_data in {self.namespace}", backoff=self.backoff,
                    stats=self.retries,
                )  # fmt: skip
            except aws.AwsError as exc:
                self.stats.failed_calls += 1
                self.stats.last_error = str(exc)
                errors.append(str(exc))
                log.warning("%d metric datum(s) not published: %s", len(chunk), exc)
                continue
            self.stats.calls += 1
            self.stats.datums += len(chunk)
        return errors


def with_rollup(datums: Sequence[Datum], key: str) -> list[Datum]:
    """Each datum twice: with all its dimensions, and with `key`'s alone.

    CloudWatch names a series by its whole set of dimensions, so an alarm on a deployment
    cannot follow a series whose `Version` changes on every promotion; the `key`-only copy is
    the stable series that alarms and dashboards use, the full one says which version it was.
    """
    out = list(datums)
    for datum in datums:
        if set(datum.dimensions) - {key} and datum.dimensions.get(key):
            out.append(replace(datum, dimensions={key: datum.dimensions[key]}))
    return out


# ---------------------------------------------------------------------- serving
@dataclass
class _Scrape:
    requests: float = 0.0
    errors: float = 0.0
    latency_count: float = 0.0
    latency_sum: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)
    model: str | None = None
    version: str | None = None


def parse_metrics(text: str) -> _Scrape:
    """The serving counters and latency histogram out of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    scrape = _Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "eventops_serving_requests_total":
                scrape.requests += value
            elif name == "eventops_serving_errors_total":
                scrape.errors += value
            elif name == "eventops_serving_request_seconds_count":
                scrape.latency_count += value
            elif name == "eventops_serving_request_seconds_sum":
                scrape.latency_sum += value
            elif name == "eventops_serving_request_seconds_bucket":
                bound = float(labels.get("le", "inf"))
                scrape.buckets[bound] = scrape.buckets.get(bound, 0.0) + value
            elif (
                name == "eventops_serving_model_info"
                and value > 0
                and (labels.get("role", "primary") == "primary" or scrape.model is None)
            ):
                scrape.model, scrape.version = labels.get("model"), labels.get("version")
    return scrape


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of cumulative (upper bound -> count) buckets, linear within a bucket, as
    Prometheus' histogram_quantile computes it."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    low_bound, low_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return low_bound
            width = count - low_count
            return low_bound + (bound - low_bound) * ((rank - low_count) / width if width else 1.0)
        low_bound, low_count = bound, count
    return ordered[-1][0]


class ServingMetricsReporter:
    """Every `interval`, what a model server did since the last scrape, put in CloudWatch."""

    def __init__(
        self,
        metrics_url: str,
        publisher: MetricsPublisher,
        *,
        deployment: str,
        interval: float = 60.0,
        timeout: float = 2.0,
    ) -> None:
        self.metrics_url, self.publisher = metrics_url, publisher
        self.deployment, self.interval, self.timeout = deployment, interval, timeout
        self._last: _Scrape | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=self.timeout) as answer:  # noqa: S310 - our own server's URL
            return str(answer.read().decode())

    def tick(self, text: str | None = None) -> list[Datum]:
        """One scrape: the datums of what changed since the previous one (none the first time,
        which only sets the baseline), added to the publisher and flushed."""
        try:
            now = parse_metrics(text if text is not None else self.read())
        except OSError as exc:
            log.info("metrics of %s not read: %s", self.deployment, exc)
            return []
        last, self._last = self._last, now
        if last is None:
            return []
        # A restarted server starts its counters again from zero: count from there.
        if now.requests < last.requests or now.latency_count < last.latency_count:
            last = _Scrape()
        dims = {
            "Deployment": self.deployment,
            "Model": now.model or "",
            "Version": now.version or "",
        }
        stamp = datetime.now(UTC)
        datums = [
            Datum("Requests", now.requests - last.requests, "Count", dims, stamp),
            Datum("Errors", now.errors - last.errors, "Count", dims, stamp),
        ]
        count = now.latency_count - last.latency_count
        if count > 0:
            total_ms = (now.latency_sum - last.latency_sum) * 1000
            stats = {"SampleCount": count, "Sum": total_ms, "Minimum": 0.0, "Maximum": total_ms}
            datums.append(Datum("Latency", None, "Milliseconds", dims, stamp, stats))
            window = {b: c - last.buckets.get(b, 0.0) for b, c in now.buckets.items()}
            for q, name in ((0.5, "LatencyP50"), (0.95, "LatencyP95")):
                value = quantile(q, window)
                if value is not None:
                    datums.append(Datum(name, value * 1000, "Milliseconds", dims, stamp))
        self.publisher.add(with_rollup(datums, "Deployment"))
        self.publisher.flush()
        return datums

    def start(self) -> ServingMetricsReporter:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.tick()

        self.tick()  # the baseline
        self._thread = threading.Thread(target=loop, name="cloudwatch-serving", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)
        self.publisher.flush()


# ---------------------------------------------------------------------- monitors
def metric_name(key: str) -> str:
    """`drift_share` -> `DriftShare`: CloudWatch's usual spelling."""
    return "".join(part[:1].upper() + part[1:] for part in key.replace("-", "_").split("_") if part)


class MonitorMetricsSink:
    """A forward `Sink`: numeric metrics of `monitor.*` events become CloudWatch datums."""

    def __init__(
        self,
        namespace: str,
        *,
        region: str | None = None,
        client: Any = None,
        publisher: MetricsPublisher | None = None,
    ) -> None:
        self.name = f"cloudwatch:{namespace}"
        self.types = ["monitor.*"]
        self.publisher = publisher or MetricsPublisher(namespace, region=region, client=client)
        self.retries = self.publisher.retries

    @staticmethod
    def datums(event: Event) -> list[Datum]:
        data = event.data if isinstance(event.data, Mapping) else {}
        metrics = data.get("metrics") if isinstance(data.get("metrics"), Mapping) else {}
        dims = {"Monitor": str(data.get("monitor", event.subject or ""))}
        for key, label in DIMENSION_KEYS.items():
            value = data.get(key, metrics.get(key) if isinstance(metrics, Mapping) else None)
            if isinstance(value, str | int) and not isinstance(value, bool):
                dims[label] = str(value)
        out = []
        for key, value in (metrics or {}).items():
            if isinstance(value, bool):
                value = float(value)
            if isinstance(value, int | float) and key not in DIMENSION_KEYS:
                out.append(Datum(metric_name(key), float(value), "None", dims, event.time))
        return out

    def send(self, events: Sequence[Event]) -> list[tuple[int, str, str]]:
        for event in events:
            self.publisher.add(with_rollup(self.datums(event), "Monitor"))
        errors = self.publisher.flush()
        if errors:  # nothing was put: the forwarder keeps the batch and tries it again
            raise aws.AwsError(errors[0], code="PutMetricDataFailed")
        return []


__all__ = [
    "Datum",
    "MetricsPublisher",
    "MonitorMetricsSink",
    "ServingMetricsReporter",
    "metric_name",
    "parse_metrics",
    "quantile",
    "with_rollup",
]
