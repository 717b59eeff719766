"""The training half of `eventops demo`: the example project's trigger sees the ingested batches
and requests `train_churn`; the runner executes it, tracked in MLflow, with lineage back to the
batches it read. Nothing calls the pipeline directly: the events do."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console

from eventops.errors import EventOpsError
from eventops.events.bus import open_bus
from eventops.lake import Lake
from eventops.pipelines.executors import InlineExecutor
from eventops.pipelines.lineage import lineage_of_run
from eventops.pipelines.runner import Runner
from eventops.pipelines.runs import get_run, list_runs
from eventops.pipelines.tracking import MlflowTracker
from eventops.project import Project
from eventops.worker import Worker


def demo_tracker(lake: Lake, home: Path) -> MlflowTracker:
    return MlflowTracker(
        f"sqlite:///{home}/mlflow.db", artifact_root=lake.storage.uri(lake.storage.path("mlruns"))
    )


def run_training(console: Console, lake: Lake, bus_url: str, home: Path, project: Project) -> bool:
    for name in (
        "mlflow",
        "eventops.registry",
        "httpx",
    ):  # table-creation chatter; the demo narrates
        logging.getLogger(name).setLevel(logging.WARNING)
    tracker = demo_tracker(lake, home)
    tracking_uri = tracker.tracking_uri
    rule = project.rules()[0][1] if project.rules() else None
    console.print(
        f"  project {project.name}: trigger {rule.name if rule else '-'} on pipeline train_churn"
    )
    worker = Worker(
        project, lake.store, lake.storage, lambda: open_bus(bus_url),
        roles=("triggers", "runner"), executor=InlineExecutor(), triggers_from="earliest",
        tick_interval=0.2, max_runs=1, tracker=tracker,
    )  # fmt: skip
    worker.start()
    try:
        finished = worker.wait(180)
    finally:
        worker.stop()
    if worker.errors:
        raise EventOpsError(f"demo: the worker failed: {worker.errors[0]}")
    runs = list_runs(lake.store, "train_churn")
    if not finished or not runs:
        raise EventOpsError("demo: no training run within 180s")
    run = get_run(lake.store, runs[0].id)
    steps = ", ".join(f"{s.name} {s.status}" for s in run.steps)
    console.print(
        f"  run {run.id[:12]} ({run.trigger.get('kind', 'event')} trigger): {run.status} - {steps}"
    )
    if run.status != "succeeded":
        console.print(f"  [red]{run.error}[/red]")
        return False
    metrics = Runner(lake.store, lake.storage, executor=InlineExecutor()).output(run.id, "evaluate")
    console.print(
        f"  holdout accuracy {metrics['accuracy']:.3f}, AUC {metrics['auc']:.3f} (MLflow: {tracking_uri})"
    )
    registered = Runner(lake.store, lake.storage, executor=InlineExecutor()).output(
        run.id, "register"
    )
    console.print(f"  registered model {registered['model']} version {registered['version']}")
    lineage = lineage_of_run(lake.store, run.id)
    console.print(
        f"  lineage: trigger event -> {len(lineage['batches'])} batches read -> run -> {len(lineage['artifacts'])} artifacts"
    )
    return True
