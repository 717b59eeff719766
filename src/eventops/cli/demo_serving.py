"""The serving half of `eventops demo`: the registered model is promoted by the project's gate,
served by its deployment, asked for predictions, retrained, swapped under load and rolled back.

Nothing here calls the server to change model: the registry's decisions are events, and the
running server follows them off the bus, as it would in production.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console

from eventops.cli.demo_data import free_port
from eventops.cli.demo_loop import (
    MONITOR_NAME,
    Load,
    Timeline,
    champion,
    drift_checks,
    drift_runs,
    firing,
    model_inputs,
    new_customers,
    runner_output,
    show_timeline,
    wait,
)
from eventops.config import Settings
from eventops.events.bus import open_bus
from eventops.lake import Lake
from eventops.monitoring.monitors import list_checks
from eventops.pipelines.executors import InlineExecutor
from eventops.pipelines.runner import Runner
from eventops.pipelines.tracking import Tracker
from eventops.project import Project
from eventops.registry import Registry
from eventops.serving.server import ServerParts, build_server
from eventops.worker import Worker

MODEL = "churn"
DEPLOYMENT = "churn-api"


class _Server:
    """The deployment's app under uvicorn in a thread of this process, on a free port."""

    def __init__(self, parts: ServerParts) -> None:
        self.parts = parts
        self.port = free_port()
        config = uvicorn.Config(
            parts.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="demo-serve", daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        wait(lambda: self.server.started, "the model server to start", 30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.parts.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _version_served(client: httpx.Client, body: dict[str, Any]) -> str | None:
    reply = client.post("/invocations", json=body)
    return reply.headers.get("x-model-version") if reply.status_code == 200 else None


def _decision_line(registry: Registry, version: str) -> str:
    found = [d for d in registry.decisions(MODEL) if d.version == version]
    if not found:
        return f"version {version}: no decision"
    d = found[0]
    ev = d.evidence
    if "candidate" in ev and ev.get("champion") is not None:
        detail = (
            f"{ev.get('metric')} {float(ev['candidate']):.3f} vs champion "
            f"{float(ev['champion']):.3f} on the same {ev.get('holdout', {}).get('rows', '?')} "
            "holdout rows"
        )
    else:
        detail = str(ev.get("reason") or ev.get("summary") or "no champion yet")
    return f"version {version}: [bold]{d.decision}[/bold] by {d.actor} ({detail})"


def run_serving(
    console: Console,
    lake: Lake,
    bus_url: str,
    home: Path,
    project: Project,
    tracker: Tracker,
    timeline_path: Path | None = None,
) -> bool:
    settings = Settings(home=home)
    registry = Registry(settings.tracking_uri, lake.store, lake_url=settings.lake_url)
    worker = Worker(
        project, lake.store, lake.storage, lambda: open_bus(bus_url),
        roles=("triggers", "runner", "gates", "monitors", "alerts", "relay"),
        executor=InlineExecutor(), tick_interval=0.2, tracker=tracker, registry=registry,
    )  # fmt: skip
    worker.start()
    try:
        return _serve(console, lake, settings, project, registry, tracker, timeline_path)
    finally:
        worker.stop()
        if worker.errors:
            console.print(f"  [red]worker: {worker.errors[0]}[/red]")


def _serve(
    console: Console,
    lake: Lake,
    settings: Settings,
    project: Project,
    registry: Registry,
    tracker: Tracker,
    timeline_path: Path | None,
) -> bool:
    wait(lambda: registry.alias(MODEL) is not None, "the gate to promote the first model", 90)
    first = registry.alias(MODEL)
    assert first is not None
    console.print(f"  gate {MODEL}: {_decision_line(registry, first)}")

    deployment = project.deployments[DEPLOYMENT].model_copy(
        update={"capture_flush_rows": 50, "capture_flush_seconds": 0.5, "poll_seconds": 5.0}
    )
    parts = build_server(deployment, settings)
    known = lake.read("churn")
    pool = model_inputs(known)
    truth = [int(v or 0) for v in known["churned"].to_pylist()]
    rng = random.Random(5)
    rows = rng.sample(pool, 5)
    body = {"dataframe_records": rows}

    def traffic() -> dict[str, Any]:
        return {"dataframe_records": rng.sample(pool, 5)}

    ok = True
    with _Server(parts) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        console.print(
            f"  serving {deployment.model_uri} (version {first}) as {deployment.name} on {server.url}"
        )
        reply = client.post("/invocations", json=body)
        reply.raise_for_status()
        answer = reply.json()
        console.print(
            f"  POST /invocations, 5 customers -> {answer['predictions']} "
            f"(version {reply.headers['x-model-version']}, ids {answer['prediction_ids'][0][:13]}...)"
        )
        bad = client.post(
            "/invocations", json={"dataframe_records": [{"tenure_months": "soon", "basic": 1}]}
        )
        problem = bad.json().get("error") or {}
        console.print(
            f"  a bad request -> {bad.status_code}: {problem.get('field')}: "
            f"{problem.get('message')} (rule {problem.get('rule')})"
        )
        v2 = client.post(
            f"/v2/models/{deployment.name}/infer",
            json={"inputs": [{"name": k, "shape": [1], "datatype": "FP64", "data": [v]}
                             for k, v in rows[0].items()]},
        )  # fmt: skip
        console.print(
            f"  Open Inference Protocol v2 infer -> {v2.status_code} {v2.json().get('outputs')}"
        )
        labels = [{"prediction_id": pid, "label": 0} for pid in answer["prediction_ids"][:3]]
        fed = client.post("/feedback", json=labels)
        console.print(f"  POST /feedback, 3 labels -> {fed.status_code} (feedback.received events)")

        console.print("  retraining with c=0.05 (a manual run; its model goes through the gate)")
        runner = Runner(lake.store, lake.storage, executor=InlineExecutor(), tracker=tracker)
        run = runner.run("train_churn", {"c": 0.05})
        if run.status != "succeeded":
            console.print(f"  [red]retraining failed: {run.error}[/red]")
            return False
        second = str(int(first) + 1)
        wait(lambda: any(d.version == second for d in registry.decisions(MODEL)), "the gate", 90)
        console.print(f"  gate {MODEL}: {_decision_line(registry, second)}")
        with Load(server.url, traffic) as load:
            if registry.alias(MODEL) != second:
                registry.promote(
                    MODEL, second, actor="demo", evidence={"reason": "operator override"}
                )
                console.print(f"  operator: eventops models promote {MODEL} {second}")
            wait(lambda: _version_served(client, body) == second, "the server to swap", 60)
            console.print(f"  server swapped to version {second} (deployment.updated)")
            registry.rollback(MODEL, actor="demo")
            console.print(f"  operator: eventops models rollback {MODEL}")
            wait(lambda: _version_served(client, body) == first, "the swap back", 60)
            console.print(f"  server swapped back to version {first}")
        console.print(
            f"  steady load across both swaps: {load.sent} requests, {load.failed} failed, "
            f"answered by versions {dict(sorted(load.versions.items()))}"
        )
        ok = ok and load.failed == 0 and 400 <= bad.status_code < 500 and fed.status_code < 300
        metrics = client.get("/metrics").text
        served = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("eventops_serving_requests_total{")
        )
        console.print(f"  GET /metrics: {served:.0f} requests counted")

        console.print("\n[bold]8. the closed loop: monitoring, drift, alert, retraining[/bold]")
        looped = closed_loop(
            console, lake, registry, client, server.url, first, pool, truth, rng, timeline_path
        )
        ok = ok and looped
    dataset = deployment.capture_dataset
    captured = sum(b.rows for b in lake.batches(dataset))
    console.print(f"  captured for monitoring: {captured} predictions in dataset {dataset}")
    return ok and captured > 0


def closed_loop(
    console: Console,
    lake: Lake,
    registry: Registry,
    client: httpx.Client,
    url: str,
    serving: str,
    pool: list[dict[str, float]],
    truth: list[int],
    rng: random.Random,
    timeline_path: Path | None = None,
) -> bool:
    timeline = Timeline()
    checks_before = len(drift_checks(lake))
    # 1. ordinary traffic, its labels sent back: one clean drift window, one accuracy window
    for _ in range(30):
        picks = rng.sample(range(len(pool)), 10)
        reply = client.post("/invocations", json={"dataframe_records": [pool[i] for i in picks]})
        reply.raise_for_status()
        ids = reply.json()["prediction_ids"]
        client.post(
            "/feedback",
            json=[{"prediction_id": p, "label": truth[i]} for p, i in zip(ids, picks, strict=True)],
        ).raise_for_status()
    timeline.mark("300 ordinary predictions served, their 300 labels sent back")
    wait(lambda: len(drift_checks(lake)) > checks_before, "the monitor's first window")
    clean = drift_checks(lake)[0]
    timeline.mark(
        f"monitor {MONITOR_NAME}: window of {clean.rows} rows, "
        f"{'drift' if clean.drifted else 'no drift'}"
    )
    wait(lambda: list_checks(lake.store, MONITOR_NAME, kind="performance"), "an accuracy check")
    accuracy = list_checks(lake.store, MONITOR_NAME, kind="performance")[0]
    timeline.mark(
        f"monitor {MONITOR_NAME}: accuracy {accuracy.value:.3f} on {accuracy.rows} labels"
    )

    # 2. new customers: labelled records reach the lake, their requests reach the API
    arrivals = new_customers(400)
    lake.commit_batch("churn", arrivals, source="crm:new-customers")
    timeline.mark("400 new customers (higher prices, shorter tenure) ingested with labels")
    drifted_pool = model_inputs(arrivals)
    versions_before = {d.version for d in registry.decisions(MODEL)}

    def drifted() -> dict[str, Any]:
        return {"dataframe_records": rng.sample(drifted_pool, 5)}

    with Load(url, drifted) as load:
        timeline.mark("their traffic starts (4 clients, steady)")
        wait(lambda: any(c.drifted for c in drift_checks(lake)[:3]), "drift to be detected")
        hit = next(c for c in drift_checks(lake) if c.drifted)
        columns = ", ".join(hit.result.get("drifted_columns", []))
        timeline.mark(f"monitor.drift.detected: {columns} (window of {hit.rows} rows)")
        wait(lambda: firing(lake), "the alert")
        timeline.mark(f"alert.fired: {firing(lake)[0].rule} (log channel)")
        wait(lambda: drift_runs(lake), "the retraining run to be requested")
        timeline.mark("pipeline.run.requested: train_churn, by its on_drift trigger")
        wait(lambda: drift_runs(lake)[0].status in ("succeeded", "failed"), "the run", 180)
        run = drift_runs(lake)[0]
        rows = (
            int(runner_output(lake, run.id, "evaluate").get("rows_train", 0))
            if run.status == "succeeded"
            else 0
        )
        timeline.mark(f"pipeline.run.{run.status}: trained on {rows} rows, new customers included")
        wait(
            lambda: {d.version for d in registry.decisions(MODEL)} - versions_before,
            "the retrained model's gate decision",
            60,
        )
        new = sorted({d.version for d in registry.decisions(MODEL)} - versions_before, key=int)[0]
        timeline.mark(f"model.version.registered and gated: {_decision_line(registry, new)}")
        if champion(registry) != new:
            console.print(f"  [red]the gate kept version {serving}[/red]")
            show_timeline(console, timeline)
            return False
        wait(lambda: _version_served(client, drifted()) == new, "the hot swap", 60)
        timeline.mark(f"deployment.updated: churn-api serves version {new}")
    show_timeline(console, timeline)
    if timeline_path is not None:
        timeline.save(timeline_path, requests=load.sent, failed=load.failed)
    console.print(
        f"  steady load through the loop: {load.sent} requests, {load.failed} failed, "
        f"answered by versions {dict(sorted(load.versions.items()))}"
    )
    return load.failed == 0
