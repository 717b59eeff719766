"""Prometheus metrics of one model server, in a registry of its own.

Each app gets its own `CollectorRegistry`, so two apps in one process (tests, a canary beside
its primary) never mix their counts and `/metrics` shows only this server.

With several uvicorn workers each process counts for itself. When `PROMETHEUS_MULTIPROC_DIR`
is set (``eventops serve --workers N`` sets it to a fresh folder), prometheus-client keeps the
values in files there and `/metrics` sums every worker's (gauges: each live worker's value,
labelled by pid). Histograms and counters are exact across workers that way.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class ServingMetrics:
    """The counters, histograms and gauges of one server; `expose()` renders them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "eventops_serving_requests", "Requests answered, by route and HTTP status.",
            ["route", "status"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "eventops_serving_errors", "Requests refused or failed, by route and rule.",
            ["route", "rule"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "eventops_serving_request_seconds", "Time from request to answer, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_rows = Histogram(
            "eventops_serving_batch_rows", "Rows per predict call, by role.",
            ["role"], buckets=ROW_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_requests = Histogram(
            "eventops_serving_batch_requests", "Requests per predict call, by role.",
            ["role"], buckets=ROW_BUCKETS, registry=r,
        )  # fmt: skip
        self.predict_seconds = Histogram(
            "eventops_serving_predict_seconds", "Time of one predict call, by role.",
            ["role"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.predictions = Counter(
            "eventops_serving_predictions", "Rows predicted, by role and model version.",
            ["role", "version"], registry=r,
        )  # fmt: skip
        self.model_info = Gauge(
            "eventops_serving_model_info",
            "1 for the model version each role serves now (0: served before, multiprocess mode).",
            ["role", "model", "version"], registry=r, multiprocess_mode="liveall",
        )  # fmt: skip
        self.swaps = Counter(
            "eventops_serving_model_swaps", "Model swaps, by role and outcome (swapped, failed).",
            ["role", "outcome"], registry=r,
        )  # fmt: skip
        self.shadow = Counter(
            "eventops_serving_shadow_predictions", "Shadow predictions by outcome.",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.captured = Counter(
            "eventops_serving_captured_rows", "Rows captured, by outcome (committed, dropped).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.queued = Gauge(
            "eventops_serving_queued_rows", "Rows waiting for a batch, by role.",
            ["role"], registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self._children: dict[tuple[str, ...], Any] = {}
        self._versions: dict[str, tuple[str, str]] = {}

    # ------------------------------------------------------------------ recording
    def request(self, route: str, status: int, seconds: float, rule: str | None = None) -> None:
        key = (route, str(status))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (
                self.requests.labels(route, str(status)),
                self.latency.labels(route),
            )
        child[0].inc()
        child[1].observe(seconds)
        if rule is not None:
            self.errors.labels(route, rule).inc()

    def batch(self, role: str, requests: int, rows: int, seconds: float) -> None:
        self.batch_rows.labels(role).observe(rows)
        self.batch_requests.labels(role).observe(requests)
        self.predict_seconds.labels(role).observe(seconds)

    def predicted(self, role: str, version: str, rows: int) -> None:
        self.predictions.labels(role, version).inc(rows)

    def serving(self, role: str, model: str, version: str) -> None:
        """Record that `role` now serves `model` `version` (the previous label set goes)."""
        previous = self._versions.get(role)
        if previous is not None and previous != (model, version):
            # 0 first: in multiprocess mode the value lives on in this worker's file
            self.model_info.labels(role, *previous).set(0)
            with contextlib.suppress(KeyError):
                self.model_info.remove(role, *previous)
        self._versions[role] = (model, version)
        self.model_info.labels(role, model, version).set(1)

    def swapped(self, role: str, outcome: str) -> None:
        self.swaps.labels(role, outcome).inc()

    # ------------------------------------------------------------------ exposition
    def expose(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        if os.environ.get(MULTIPROC_VARIABLE):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def mark_process_dead() -> None:
    """In multiprocess mode, drop this worker's live gauges when it exits."""
    if os.environ.get(MULTIPROC_VARIABLE):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


__all__ = ["ServingMetrics", "mark_process_dead"]
