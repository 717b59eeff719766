"""The closed loop of `eventops demo`: served traffic is watched, drifts, raises an alert and
retrains the model, whose new version passes the gate and replaces the old one in the running
server, under steady load.

New customers arrive with higher prices and shorter tenure: their records (labelled, from the
CRM) reach the lake and their requests reach the API. The monitor sees the served inputs drift
from the training data, the alert rule fires, the drift event triggers `train_churn`, which
learns from the new customers too; the gate finds it better than the champion on the shared
holdout, and the server swaps. Every hop is an event; the timeline is read back from the bus.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from eventops.errors import EventOpsError, NotFound
from eventops.lake import Lake
from eventops.monitoring.monitors import list_checks
from eventops.pipelines.executors import InlineExecutor
from eventops.pipelines.runner import Runner
from eventops.pipelines.runs import list_runs
from eventops.registry import Registry
from eventops.store.alerts import FIRING, alert_state_rows

MONITOR_NAME = "churn-drift"


@dataclass
class Timeline:
    """When each stage of the loop was seen, relative to the start."""

    started: float = field(default_factory=time.monotonic)
    marks: list[tuple[float, str]] = field(default_factory=list)

    def mark(self, what: str) -> float:
        at = time.monotonic() - self.started
        self.marks.append((at, what))
        return at

    def save(self, path: Path, **totals: int) -> None:
        """The marks as JSON, for `benchmarks/bench_loop.py`."""
        stages = [{"at_s": round(at, 3), "stage": what} for at, what in self.marks]
        path.write_text(json.dumps({"stages": stages, **totals}, indent=2))


def wait(condition: Callable[[], object], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise EventOpsError(f"demo: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def new_customers(count: int, seed: int = 11, first_id: int = 50_001) -> pa.Table:
    """Customers after a price rise: higher charges, shorter tenure, and churn now driven
    mostly by what they pay (a relationship the champion never saw)."""
    rng = np.random.default_rng(seed)
    plans = np.array(["basic", "standard", "premium"])
    plan = plans[rng.integers(0, 3, count)]
    base = np.select([plan == "basic", plan == "standard"], [45.0, 70.0], 95.0)
    charges = np.round(base + rng.normal(0, 12, count), 2)
    tenure = rng.integers(1, 18, count)
    risk = (charges - 70) / 9 - 0.5
    churned = (rng.random(count) < 1 / (1 + np.exp(-risk))).astype(np.int64)
    return pa.table(
        {
            "customer_id": np.arange(first_id, first_id + count, dtype=np.int64),
            "tenure_months": tenure.astype(np.int64),
            "plan": pa.array(plan.tolist()),
            "monthly_charges": charges,
            "churned": churned,
            "support_calls": rng.poisson(1.5, count).astype(np.int64),
        }
    )


def model_inputs(table: pa.Table) -> list[dict[str, float]]:
    """The deployment's input columns (the project's features) for each row."""
    plan = table["plan"].to_pylist()
    tenure = table["tenure_months"].to_pylist()
    charges = table["monthly_charges"].to_pylist()
    calls = (
        table["support_calls"].to_pylist()
        if "support_calls" in table.column_names
        else [0] * table.num_rows
    )
    return [
        {
            "tenure_months": float(t or 0),
            "monthly_charges": float(c or 0),
            "basic": float(p == "basic"),
            "premium": float(p == "premium"),
            "support_calls": float(s or 0),
        }
        for t, c, p, s in zip(tenure, charges, plan, calls, strict=True)
    ]


class Load:
    """Steady requests from a few threads while the model changes; counts what failed."""

    def __init__(self, url: str, body: Callable[[], dict[str, Any]], threads: int = 4) -> None:
        self.url, self.body = url, body
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = self.failed = 0
        self.versions: dict[str, int] = {}
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                try:
                    reply = client.post("/invocations", json=self.body())
                    ok, version = reply.status_code == 200, reply.headers.get("x-model-version")
                except httpx.HTTPError:
                    ok, version = False, None
                with self.lock:
                    self.sent += 1
                    self.failed += not ok
                    if version:
                        self.versions[version] = self.versions.get(version, 0) + 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def drift_checks(lake: Lake) -> list[Any]:
    return [c for c in list_checks(lake.store, MONITOR_NAME, kind="drift", limit=50)]


def firing(lake: Lake) -> list[Any]:
    return [a for a in alert_state_rows(lake.store) if a.status == FIRING]


def drift_runs(lake: Lake) -> list[Any]:
    """Runs of train_churn requested by its drift trigger, newest first."""
    return [
        r
        for r in list_runs(lake.store, "train_churn")
        if str(r.trigger.get("rule", "")).startswith("on:monitor.drift")
    ]


def runner_output(lake: Lake, run_id: str, step: str) -> dict[str, Any]:
    out = Runner(lake.store, lake.storage, executor=InlineExecutor()).output(run_id, step)
    return dict(out) if isinstance(out, dict) else {}


def champion(registry: Registry) -> str | None:
    try:
        return registry.alias("churn")
    except NotFound:
        return None


def show_timeline(console: Console, timeline: Timeline) -> None:
    table = Table(title="the loop, as it happened")
    table.add_column("at", justify="right")
    table.add_column("+", justify="right")
    table.add_column("stage")
    previous = 0.0
    for at, what in timeline.marks:
        table.add_row(f"{at:6.1f}s", f"{at - previous:5.1f}s", what)
        previous = at
    console.print(table)
