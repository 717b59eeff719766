"""`eventops run`, `eventops runs` and `eventops lineage`: run a pipeline here, list runs, show
one, read its logs, trace a run from its trigger through the data it read to its artifacts.

`run` imports the module defining the pipeline (`--module`, the current folder is importable),
records the run with its `pipeline.run.requested` event and, unless `--no-wait`, executes it in
this process with a live view of its steps, tracked in MLflow (`tracking.uri`). Queued events are relayed to the bus afterwards; if
the bus is down they wait in the outbox for the next relay.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.tree import Tree

from eventops.cli.output import err_console, handle_errors
from eventops.config import Settings, load_settings
from eventops.errors import EventOpsError, ValidationError
from eventops.events.bus import open_configured_bus
from eventops.lake.storage import LakeStorage
from eventops.pipelines.dsl import get_pipeline
from eventops.pipelines.executors import Executor, InlineExecutor, LocalExecutor
from eventops.pipelines.lineage import lineage_of_run
from eventops.pipelines.ray_executor import executor_from_url
from eventops.pipelines.runner import Runner, RunView
from eventops.pipelines.tracking import Tracker, tracker_from_settings
from eventops.project import load_project, resolve_path
from eventops.store import OutboxRelay, Store

app = typer.Typer(help="Pipeline runs: list, show, logs.")

STATUS_STYLE = {
    "succeeded": "green",
    "cached": "cyan",
    "failed": "red",
    "running": "yellow",
    "skipped": "dim",
    "pending": "dim",
    "requested": "dim",
}


def configured_executor(settings: Settings, *, inline: bool = False, workers: int = 2) -> Executor:
    """--inline wins; otherwise `[pipelines] executor` (local process per step by default)."""
    if inline:
        return InlineExecutor()
    if settings.pipelines.executor == "local":
        return LocalExecutor(max_workers=workers)
    return executor_from_url(settings.pipelines.executor)


@contextmanager
def open_runner(executor: Executor | None = None, *, track: bool = False) -> Iterator[Runner]:
    """A runner over the configured store and lake; `track`: runs are tracked in MLflow."""
    settings = load_settings()
    store = Store(settings.store_url)
    store.upgrade()
    tracker: Tracker | None = tracker_from_settings(settings) if track else None
    try:
        yield Runner(store, LakeStorage(settings.lake_url), executor=executor, tracker=tracker)
    finally:
        store.close()


def relay_outbox(store: Store) -> None:
    try:
        bus = open_configured_bus(load_settings())
        try:
            OutboxRelay(store, bus).relay_once()
        finally:
            bus.close()
    except EventOpsError as exc:
        err_console.print(
            f"[yellow]warning:[/yellow] events stay in the outbox: {exc}", soft_wrap=True
        )


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`k=v` pairs; a value that reads as JSON (3, 0.5, true, [1]) is taken as JSON."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValidationError(f"{pair!r} is not key=value", field="--param", rule="format")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def import_modules(modules: list[str]) -> None:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValidationError(
                f"cannot import {module!r}: {exc}", field="--module", rule="importable"
            ) from None


def _console() -> Console:
    return Console(highlight=False, markup=False)


def _styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}s"


@handle_errors
def run(
    pipeline: str = typer.Argument(..., help="Pipeline name."),
    param: list[str] = typer.Option([], "--param", "-p", help="A parameter: key=value."),
    module: list[str] = typer.Option(
        [], "--module", "-m", help="Module defining the pipeline, e.g. myproject.pipelines."
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Execute here and wait."),
    inline: bool = typer.Option(False, "--inline", help="Run steps in this process (debug)."),
    workers: int = typer.Option(2, "--workers", help="Parallel step processes."),
    project: Path = typer.Option(
        None, "--project", "-P", help="Project file or package defining the pipeline."
    ),
) -> None:
    """Run a pipeline now; exit 1 if the run failed."""
    import_modules(module)
    settings = load_settings()
    if project is not None or settings.project:
        load_project(resolve_path(project, settings))
    pipe = get_pipeline(pipeline)
    executor = configured_executor(settings, inline=inline, workers=workers)
    with open_runner(executor, track=True) as runner:
        run_id = runner.request(pipe.name, parse_params(param), trigger="cli")
        if not wait:
            relay_outbox(runner.store)
            typer.echo(f"requested run {run_id} of {pipe.name}")
            return
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        ) as progress:
            tasks: dict[str, TaskID] = {
                n.name: progress.add_task(f"{n.name}: pending", total=1) for n in pipe.graph
            }

            def on_step(step: str, status: str) -> None:
                done = status in ("succeeded", "cached", "failed", "skipped")
                progress.update(
                    tasks[step],
                    description=f"{step}: {_styled(status)}",
                    completed=1 if done else 0,
                )

            view = runner.execute(run_id, on_step=on_step)
        relay_outbox(runner.store)
    _print_summary(view)
    if view.status != "succeeded":
        raise typer.Exit(1)


def _print_summary(view: RunView) -> None:
    console = _console()
    console.print(f"run {view.id} of {view.pipeline}: {view.status}")
    if view.error:
        err_console.print(f"[red]error:[/red] {view.error}", soft_wrap=True, markup=True)


def _run_json(view: RunView, *, steps: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": view.id,
        "pipeline": view.pipeline,
        "status": view.status,
        "params": view.params,
        "trigger": view.trigger,
        "error": view.error,
        "worker": view.worker,
        "correlation_id": view.correlation_id,
        "created_at": str(view.created_at),
        "started_at": str(view.started_at) if view.started_at else None,
        "finished_at": str(view.finished_at) if view.finished_at else None,
    }
    if steps:
        out["steps"] = [
            {
                "name": s.name,
                "status": s.status,
                "attempts": s.attempts,
                "duration_s": s.duration,
                "cache_key": s.cache_key,
                "outputs": s.outputs,
                "error": s.error,
            }
            for s in view.steps
        ]
    return out


@app.command("list")
@handle_errors
def list_(
    pipeline: str = typer.Option(None, "--pipeline", help="Only runs of this pipeline."),
    limit: int = typer.Option(50, "--limit", help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array."),
) -> None:
    """Pipeline runs, newest first."""
    with open_runner(InlineExecutor()) as runner:
        views = runner.list_runs(pipeline, limit)
    if as_json:
        typer.echo(json.dumps([_run_json(v, steps=False) for v in views], indent=2))
        return
    table = Table(
        Column("run", no_wrap=True),
        "pipeline",
        "status",
        "trigger",
        "created",
        Column("error", overflow="ellipsis", no_wrap=True),
    )
    for v in views:
        table.add_row(
            v.id,
            v.pipeline,
            v.status,
            str(v.trigger.get("name", "")),
            str(v.created_at)[:19],
            (v.error or "")[:60],
        )
    _console().print(table)


@app.command("show")
@handle_errors
def show(
    run_id: str = typer.Argument(..., help="Run id."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
) -> None:
    """One run: its steps with status, attempts, duration, cache hits and outputs."""
    with open_runner(InlineExecutor()) as runner:
        view = runner.get(run_id)
    if as_json:
        typer.echo(json.dumps(_run_json(view, steps=True), indent=2))
        return
    console = _console()
    console.print(f"run {view.id} of {view.pipeline}: {view.status}")
    console.print(f"params: {json.dumps(view.params)}  trigger: {json.dumps(view.trigger)}")
    if view.error:
        console.print(f"error: {view.error}")
    table = Table("step", "status", "attempts", "duration", "cache hit", "output")
    for s in view.steps:
        ref = (s.outputs or {}).get("output") or {}
        output = f"{ref.get('kind', '')} {ref.get('uri', '')}".strip()
        table.add_row(
            s.name,
            s.status,
            str(s.attempts),
            _seconds(s.duration),
            "yes" if s.status == "cached" else "",
            output,
        )
    console.print(table)


@app.command("logs")
@handle_errors
def logs(
    run_id: str = typer.Argument(..., help="Run id."),
    step: str = typer.Option(None, "--step", "-s", help="Only this step."),
) -> None:
    """The captured stdout, stderr and logging of a run's steps."""
    with open_runner(InlineExecutor()) as runner:
        view = runner.get(run_id)
    steps = [view.step(step)] if step else view.steps
    for s in steps:
        typer.echo(f"=== {s.name} ({s.status}, {s.attempts} attempt(s)) ===")
        typer.echo(s.log or "(no output)")
        if s.error:
            typer.echo(f"error: {s.error}")


@handle_errors
def lineage(
    run_id: str = typer.Argument(..., help="Run id."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a tree."),
) -> None:
    """Where a run came from and what it made: trigger -> batches read -> run -> artifacts."""
    with open_runner(InlineExecutor()) as runner:
        chain = lineage_of_run(runner.store, run_id)
    if as_json:
        typer.echo(json.dumps(chain, indent=2, default=str))
        return
    _console().print(lineage_tree(chain))


def lineage_tree(chain: dict[str, Any]) -> Tree:
    trigger = chain["trigger"]
    tree = Tree(f"trigger: {trigger['kind']} ({trigger['name'] or '-'})")
    for event in trigger["events"]:
        where = " ".join(f"{k}={event[k]}" for k in ("dataset", "batch_id", "rows") if k in event)
        tree.add(f"event {event['id']} {event.get('type', '(not in the outbox)')} {where}")
    batches = tree.add(f"batches read: {len(chain['batches'])}")
    for b in chain["batches"]:
        facts = f"{b.get('rows', '?')} rows, v{b.get('schema_version', '?')}"
        readers = ", ".join(b["read_by"]) or "trigger only"
        node = batches.add(f"{b.get('dataset')}/{b['batch_id']} ({facts}) read by {readers}")
        if b.get("uri"):
            node.add(str(b["uri"]))
        for upstream in b.get("derived_from") or []:
            node.add(f"derived from {upstream}")
    run = chain["run"]
    mlflow = f" mlflow {run['mlflow_run_id']}" if run.get("mlflow_run_id") else ""
    run_node = batches.add(f"run {run['id']} of {run['pipeline']}: {run['status']}{mlflow}")
    for step in chain["steps"]:
        step_node = run_node.add(f"step {step['name']}: {step['status']}")
        for batch_id in step["reads"]:
            step_node.add(f"read {batch_id}")
        for ref in step["artifacts"]:
            step_node.add(f"artifact {ref.get('kind', '')} {ref.get('uri', '')}")
        if step["metrics"]:
            metrics = ", ".join(f"{k}={v:g}" for k, v in sorted(step["metrics"].items()))
            step_node.add(f"metrics {metrics}")
    for model in chain["models"]:
        run_node.add(f"model {model}")
    return tree
