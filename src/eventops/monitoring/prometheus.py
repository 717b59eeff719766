"""Prometheus metrics of the monitors, read from the checks in the store.

The checks are the truth and they are in the store, so any process can expose them: the worker
on a port of its own, the model server beside its serving metrics, a one-off scrape. The
values are read at scrape time (`MonitorCollector.collect`: four small queries), never kept in
the process, so every replica exposes the same numbers and a restart loses nothing.

`monitor_metrics(store)` renders the exposition text; `MonitorCollector(store)` can be
registered into an existing `CollectorRegistry` instead. Metric names, all gauges but one:

| metric | labels | from |
|---|---|---|
| `eventops_monitor_last_check_timestamp_seconds` | monitor, kind | newest check |
| `eventops_monitor_last_check_error` | monitor, kind | 1 when the newest check failed |
| `eventops_monitor_checks_total` (counter) | monitor, kind, outcome (ok, drifted, degraded, error) | every check |
| `eventops_monitor_window_rows` | monitor, kind | newest good check: rows, or labels |
| `eventops_monitor_drift` | monitor | 1 when the newest drift check found drift |
| `eventops_monitor_drift_share` | monitor | share of features drifted |
| `eventops_monitor_drifted_columns` | monitor | how many features drifted |
| `eventops_monitor_feature_p_value` | monitor, feature | per compared column (the prediction column too) |
| `eventops_monitor_feature_effect` | monitor, feature, measure (wasserstein, psi, jensen_shannon) | per column |
| `eventops_monitor_feature_drifted` | monitor, feature | 1 when that column drifted |
| `eventops_monitor_quality_findings` | monitor | data-quality findings of the window |
| `eventops_monitor_performance` | monitor, metric | the metric's value on the newest window of labels |
| `eventops_monitor_performance_degraded` | monitor, metric | 1 when below min / above max |
| `eventops_monitor_performance_threshold` | monitor, metric, bound (min, max) | the declared bound |
| `eventops_monitor_labels` | monitor, status (matched, unmatched, invalid) | labels of the newest window |
| `eventops_monitor_labels_waiting` | monitor, status (pending, matched, unmatched, invalid) | labels not yet in a check |

A value that a check could not compute (a p-value of an untested column, auc on one class) is
left out rather than exported as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from eventops.monitoring.monitors import Check, latest_checks
from eventops.store.database import Store
from eventops.store.monitoring import MonitorCheckRow, MonitorLabelRow

PREFIX = "eventops_monitor_"


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, labels=labels)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _outcome(status: str, drifted: bool, degraded: bool) -> str:
    if status == "error":
        return "error"
    return "drifted" if drifted else "degraded" if degraded else "ok"


class MonitorCollector(Collector):
    """Yields the monitors' metrics from the store at each scrape (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not query the store

    def collect(self) -> Iterator[Metric]:
        newest = latest_checks(self.store)
        good = latest_checks(self.store, status="ok")
        yield from self._status(newest)
        yield self._totals()
        yield from self._drift([c for c in good if c.kind == "drift"])
        yield from self._performance([c for c in good if c.kind == "performance"])
        yield self._waiting()
        rows = _gauge(
            "window_rows", "Rows (or labels) in the newest good check.", ["monitor", "kind"]
        )
        for check in good:
            rows.add_metric([check.monitor, check.kind], check.rows)
        yield rows

    @staticmethod
    def _status(checks: list[Check]) -> Iterator[Metric]:
        last = _gauge(
            "last_check_timestamp_seconds", "When the newest check was made.", ["monitor", "kind"]
        )
        error = _gauge("last_check_error", "1 when the newest check failed.", ["monitor", "kind"])
        for check in checks:
            last.add_metric([check.monitor, check.kind], check.created_at.timestamp())
            error.add_metric([check.monitor, check.kind], float(check.status == "error"))
        yield last
        yield error

    def _totals(self) -> Metric:
        total = CounterMetricFamily(
            PREFIX + "checks",
            "Checks made, by outcome (ok, drifted, degraded, error).",
            labels=["monitor", "kind", "outcome"],
        )
        row = MonitorCheckRow
        query = select(row.monitor, row.kind, row.status, row.drifted, row.degraded, func.count())
        query = query.group_by(row.monitor, row.kind, row.status, row.drifted, row.degraded)
        outcomes: dict[tuple[str, str, str], int] = {}
        with self.store.session() as session:
            for monitor, kind, status, drifted, degraded, count in session.execute(query):
                key = (monitor, kind, _outcome(status, drifted, degraded))
                outcomes[key] = outcomes.get(key, 0) + int(count)
        for labels, count in sorted(outcomes.items()):
            total.add_metric(list(labels), count)
        return total

    @staticmethod
    def _drift(checks: list[Check]) -> Iterator[Metric]:
        drift = _gauge("drift", "1 when the newest drift check found drift.", ["monitor"])
        share = _gauge("drift_share", "Share of features drifted.", ["monitor"])
        count = _gauge("drifted_columns", "Features drifted.", ["monitor"])
        quality = _gauge("quality_findings", "Data-quality findings.", ["monitor"])
        p_value = _gauge("feature_p_value", "p-value of a column's test.", ["monitor", "feature"])
        effect = _gauge(
            "feature_effect", "A column's effect size.", ["monitor", "feature", "measure"]
        )
        drifted = _gauge("feature_drifted", "1 when the column drifted.", ["monitor", "feature"])
        for check in checks:
            result = check.result
            drift.add_metric([check.monitor], float(check.drifted))
            share.add_metric([check.monitor], _number(result.get("share_drifted")) or 0.0)
            count.add_metric([check.monitor], len(result.get("drifted_columns") or []))
            quality.add_metric([check.monitor], len(result.get("quality") or []))
            columns = [*(result.get("columns") or []), result.get("prediction")]
            for column in (c for c in columns if isinstance(c, dict)):
                labels = [check.monitor, str(column.get("name"))]
                drifted.add_metric(labels, float(bool(column.get("drifted"))))
                if (p := _number(column.get("p_value"))) is not None:
                    p_value.add_metric(labels, p)
                if (e := _number(column.get("effect"))) is not None:
                    effect.add_metric([*labels, str(column.get("effect_name"))], e)
        yield from (drift, share, count, quality, p_value, effect, drifted)

    @staticmethod
    def _performance(checks: list[Check]) -> Iterator[Metric]:
        value = _gauge("performance", "The metric on the newest window.", ["monitor", "metric"])
        degraded = _gauge(
            "performance_degraded", "1 when below min or above max.", ["monitor", "metric"]
        )
        bound = _gauge(
            "performance_threshold", "The declared bound.", ["monitor", "metric", "bound"]
        )
        labels = _gauge("labels", "Labels of the newest window, by status.", ["monitor", "status"])
        for check in checks:
            result = check.result
            metric = str(result.get("metric"))
            if (v := _number(check.value)) is not None:
                value.add_metric([check.monitor, metric], v)
            degraded.add_metric([check.monitor, metric], float(check.degraded))
            for side in ("min", "max"):
                if (b := _number(result.get(side))) is not None:
                    bound.add_metric([check.monitor, metric, side], b)
            for status in ("matched", "unmatched", "invalid"):
                labels.add_metric([check.monitor, status], _number(result.get(status)) or 0.0)
        yield from (value, degraded, bound, labels)

    def _waiting(self) -> Metric:
        waiting = _gauge(
            "labels_waiting", "Labels not yet counted in a check.", ["monitor", "status"]
        )
        query = (
            select(MonitorLabelRow.monitor, MonitorLabelRow.status, func.count())
            .where(MonitorLabelRow.check_id.is_(None))
            .group_by(MonitorLabelRow.monitor, MonitorLabelRow.status)
        )
        with self.store.session() as session:
            for monitor, status, count in sorted(session.execute(query).all()):
                waiting.add_metric([monitor, status], int(count))
        return waiting


def monitor_metrics(store: Store) -> bytes:
    """The monitors' metrics in the Prometheus text format, as of now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(store))
    return generate_latest(registry)


__all__ = ["MonitorCollector", "monitor_metrics"]
