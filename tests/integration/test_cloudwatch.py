"""Serving and monitoring metrics in CloudWatch, against moto's server on loopback."""

from __future__ import annotations

import math
import types
import uuid
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from eventops.events.aws import AwsError, Backoff
from eventops.events.envelope import Event
from eventops.monitoring.cloudwatch import (
    Datum,
    MetricsPublisher,
    MonitorMetricsSink,
    ServingMetricsReporter,
    metric_name,
    quantile,
)
from eventops.serving.metrics import ServingMetrics

FAST = Backoff(attempts=4, base=0.001, cap=0.01)


def count_calls(client: Any, respond: Any = None) -> list[int]:
    sizes: list[int] = []

    def keep(params: dict[str, Any], **_: Any) -> None:
        sizes.append(len(params["MetricData"]))

    def answer(**_: Any) -> Any:
        return respond() if respond is not None else None

    client.meta.events.register("before-parameter-build.cloudwatch.PutMetricData", keep)
    client.meta.events.register("before-call.cloudwatch.PutMetricData", answer)
    return sizes


def metrics(aws: Any, namespace: str) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    for metric in aws.client("cloudwatch").list_metrics(Namespace=namespace)["Metrics"]:
        dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
        found.setdefault(metric["MetricName"], []).append(dims)
    return found


def test_datums_are_put_at_most_a_thousand_per_call(aws: Any) -> None:
    namespace = f"EventOps-{uuid.uuid4().hex[:6]}"
    client = aws.client("cloudwatch")
    sizes = count_calls(client)
    publisher = MetricsPublisher(namespace, client=client, backoff=FAST)
    dims = {"Deployment": "churn-api", "Model": "churn", "Version": "3"}
    publisher.add([Datum(f"M{i % 5}", float(i), "Count", dims) for i in range(2500)])
    publisher.add([Datum("Bad", math.nan), Datum("Worse", math.inf)])
    assert publisher.flush() == []
    assert sizes == [1000, 1000, 500]
    assert publisher.stats.dropped_non_finite == 2
    found = metrics(aws, namespace)
    assert set(found) == {"M0", "M1", "M2", "M3", "M4"}
    assert all(d == dims for d in found["M0"])


def test_throttling_is_retried_and_a_lasting_failure_is_counted_not_raised(aws: Any) -> None:
    namespace = f"EventOps-{uuid.uuid4().hex[:6]}"
    client = aws.client("cloudwatch")
    left = [2]

    def throttle() -> Any:
        if left[0]:
            left[0] -= 1
            error = {"Code": "Throttling", "Message": "Rate exceeded"}
            return types.SimpleNamespace(status_code=400, headers={}), {
                "Error": error,
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
        return None

    count_calls(client, throttle)
    publisher = MetricsPublisher(namespace, client=client, backoff=FAST)
    publisher.add([Datum("Requests", 1.0, "Count", {"Deployment": "d"})])
    assert publisher.flush() == []
    assert publisher.retries.throttled == 2
    assert "Requests" in metrics(aws, namespace)
    left[0] = 100
    publisher.add([Datum("Requests", 1.0, "Count", {"Deployment": "d"})])
    errors = publisher.flush()
    assert len(errors) == 1 and "Throttling" in errors[0]
    assert publisher.stats.failed_calls == 1


def exposition(metrics: ServingMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_the_serving_reporter_puts_what_changed_between_scrapes(aws: Any) -> None:
    namespace = f"EventOps-{uuid.uuid4().hex[:6]}"
    client = aws.client("cloudwatch")
    publisher = MetricsPublisher(namespace, client=client, backoff=FAST)
    served = ServingMetrics(CollectorRegistry())
    served.model_info.labels("primary", "churn", "4").set(1)
    reporter = ServingMetricsReporter("http://unused", publisher, deployment="churn-api")
    for _ in range(5):
        served.requests.labels("/invocations", "200").inc()
    assert reporter.tick(exposition(served)) == []  # the baseline
    for seconds in (0.01, 0.02, 0.03, 0.5):
        served.requests.labels("/invocations", "200").inc()
        served.latency.labels("/invocations").observe(seconds)
    served.errors.labels("/invocations", "schema").inc()
    datums = {d.name: d for d in reporter.tick(exposition(served))}
    assert datums["Requests"].value == 4
    assert datums["Errors"].value == 1
    latency = datums["Latency"].statistics
    assert latency is not None and latency["SampleCount"] == 4
    assert latency["Sum"] == pytest.approx(560.0)
    assert datums["LatencyP50"].value is not None and datums["LatencyP50"].value < 100
    assert datums["LatencyP95"].value is not None and datums["LatencyP95"].value > 100
    assert datums["Requests"].dimensions == {
        "Deployment": "churn-api",
        "Model": "churn",
        "Version": "4",
    }
    found = metrics(aws, namespace)
    assert {"Requests", "Errors", "Latency", "LatencyP50", "LatencyP95"} <= set(found)
    # each also as the deployment's own series, the one alarms follow across versions
    assert {"Deployment": "churn-api"} in found["Errors"]
    assert {"Deployment": "churn-api", "Model": "churn", "Version": "4"} in found["Errors"]
    # Nothing new: zero requests, no latency datum.
    quiet = {d.name: d for d in reporter.tick(exposition(served))}
    assert quiet["Requests"].value == 0 and "Latency" not in quiet


def test_a_restarted_server_counts_from_zero_again(aws: Any) -> None:
    publisher = MetricsPublisher("EventOps-restart", client=aws.client("cloudwatch"))
    before, after = ServingMetrics(CollectorRegistry()), ServingMetrics(CollectorRegistry())
    for _ in range(10):
        before.requests.labels("/invocations", "200").inc()
    after.requests.labels("/invocations", "200").inc()
    reporter = ServingMetricsReporter("http://unused", publisher, deployment="d")
    reporter.tick(exposition(before))
    datums = {d.name: d for d in reporter.tick(exposition(after))}
    assert datums["Requests"].value == 1


def test_an_unreachable_server_is_skipped_quietly(aws: Any) -> None:
    publisher = MetricsPublisher("EventOps-x", client=aws.client("cloudwatch"))
    reporter = ServingMetricsReporter("http://127.0.0.1:9/metrics", publisher, deployment="d",
                                      timeout=0.5)  # fmt: skip
    assert reporter.tick() == []


def test_monitor_events_become_datums_with_their_dimensions(aws: Any) -> None:
    namespace = f"EventOps-{uuid.uuid4().hex[:6]}"
    sink = MonitorMetricsSink(namespace, client=aws.client("cloudwatch"))
    event = Event(
        type="monitor.drift.detected",
        subject="churn-drift",
        data={
            "monitor": "churn-drift",
            "deployment": "churn-api",
            "metrics": {"drift_share": 0.4, "drifted": True, "model": "churn", "note": "x"},
        },
    )
    datums = {d.name: d for d in sink.datums(event)}
    assert set(datums) == {"DriftShare", "Drifted"}
    assert datums["DriftShare"].dimensions == {
        "Monitor": "churn-drift",
        "Deployment": "churn-api",
        "Model": "churn",
    }
    assert sink.send([event]) == []
    assert {"Monitor": "churn-drift"} in metrics(aws, namespace)["DriftShare"]
    assert sink.types == ["monitor.*"]


def test_a_sink_that_cannot_put_raises_so_the_batch_is_kept(aws: Any) -> None:
    client = aws.client("cloudwatch")

    def denied() -> Any:
        error = {"Code": "AccessDenied", "Message": "no"}
        return types.SimpleNamespace(status_code=403, headers={}), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": 403},
        }

    count_calls(client, denied)
    sink = MonitorMetricsSink("EventOps-denied", client=client)
    event = Event(
        type="monitor.check.completed", subject="m", data={"monitor": "m", "metrics": {"a": 1}}
    )
    with pytest.raises(AwsError):
        sink.send([event])


def test_names_and_quantiles() -> None:
    assert metric_name("drift_share") == "DriftShare"
    assert metric_name("p-value") == "PValue"
    assert quantile(0.5, {0.1: 5, 0.2: 10, math.inf: 10}) == pytest.approx(0.1)
    assert quantile(0.5, {}) is None
