"""`eventops apply` and `eventops worker`: record a project in the control plane, run its roles.

`apply` loads and validates the project module, prints the plan against the definition the
store holds (create / change / remove per dataset, pipeline, transform...) and, unless
`--dry-run`, declares the datasets and records the definition with an `audit.project.applied`
event. `--dry-run` exits 0 for a valid project and non-zero for an invalid one (for CI).

`worker` runs the control-plane roles for the project in this process until SIGTERM / SIGINT,
`--timeout` seconds or `--max-runs` runs; a second signal stops at once.
"""

from __future__ import annotations

import getpass
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from eventops.apply import Plan, applied, apply, plan
from eventops.cli.output import err_console, handle_errors
from eventops.cli.pipelines_cmd import configured_executor
from eventops.config import load_settings
from eventops.errors import ValidationError
from eventops.events.bus import open_configured_bus
from eventops.lake.catalog import Lake
from eventops.lake.storage import LakeStorage
from eventops.pipelines.tracking import tracker_from_settings
from eventops.project import Project, load_project, resolve_path
from eventops.registry import Registry
from eventops.store import Store
from eventops.worker import ROLES, Worker

ACTION_STYLE = {"create": "green", "change": "yellow", "remove": "red", "unchanged": "dim"}
ACTION_MARK = {"create": "+", "change": "~", "remove": "-", "unchanged": " "}

PROJECT_OPTION = typer.Option(
    None, "--project", "-P", help="The project: a .py file or a package (default: `project`)."
)


def _console() -> Console:
    return Console(highlight=False)


def _actor() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _load(path: Path | None) -> Project:
    project = load_project(resolve_path(path, load_settings()))
    for warning in project.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True)
    return project


def print_plan(console: Console, result: Plan, *, show_unchanged: bool = False) -> None:
    if result.empty:
        console.print(f"project [cyan]{result.project}[/cyan]: no changes ({result.digest[:12]})")
        return
    table = Table("", "kind", "name", "action", "fields", title=f"plan for {result.project}")
    for item in result.items:
        if item.action == "unchanged" and not show_unchanged:
            continue
        style = ACTION_STYLE[item.action]
        table.add_row(
            f"[{style}]{ACTION_MARK[item.action]}[/]",
            item.kind.rstrip("s"),
            item.name,
            f"[{style}]{item.action}[/]",
            ", ".join(item.fields),
        )
    console.print(table)
    counts = result.counts()
    before = result.previous_digest[:12] if result.previous_digest else "nothing applied"
    console.print(
        f"{counts['create']} to create, {counts['change']} to change, {counts['remove']} to "
        f"remove ({before} -> {result.digest[:12]})"
    )


@handle_errors
def apply_cmd(
    project: Path = PROJECT_OPTION,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate and print the plan; record nothing."
    ),
    actor: str = typer.Option(None, "--actor", help="Who applies (default: the OS user)."),
    show_unchanged: bool = typer.Option(False, "--all", help="Also list unchanged items."),
) -> None:
    """Validate a project, print its plan against the control plane and record it."""
    loaded = _load(project)
    console = _console()
    settings = load_settings()
    store = Store(settings.store_url)
    try:
        store.upgrade()
        if dry_run:
            print_plan(console, plan(loaded, store), show_unchanged=show_unchanged)
            console.print("dry run: nothing recorded")
            return
        lake = Lake(store, LakeStorage(settings.lake_url))
        result = apply(loaded, lake, actor=actor or _actor())
        print_plan(console, result, show_unchanged=show_unchanged)
        if not result.empty:
            console.print(f"[green]applied[/green] project {loaded.name} ({result.digest[:12]})")
    finally:
        store.close()


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGTERM / SIGINT set `stop`; a second one interrupts at once. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        err_console.print(f"{signal.Signals(signum).name}: stopping (again to force)")
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, on_signal)
    return previous


def start_metrics_server(store: Store, host: str, port: int) -> Any:
    """Prometheus exposition of the monitors' latest checks, read from the store at each
    scrape, so any worker (or a small sidecar) can be scraped whatever role checks ran."""
    from prometheus_client import CollectorRegistry, start_http_server

    from eventops.monitoring.prometheus import MonitorCollector

    registry = CollectorRegistry()
    registry.register(MonitorCollector(store))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


@handle_errors
def worker_cmd(
    project: Path = PROJECT_OPTION,
    role: list[str] = typer.Option(
        ["all"], "--role", "-r", help=f"Role(s) to run: {', '.join(ROLES)} or all."
    ),
    timeout: float = typer.Option(None, "--timeout", min=0.1, help="Stop after S seconds."),
    max_runs: int = typer.Option(
        None, "--max-runs", min=1, help="Stop after this many pipeline runs (runner role)."
    ),
    inline: bool = typer.Option(False, "--inline", help="Run steps in this process (debug)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Parallel step processes."),
    triggers_from: str = typer.Option(
        "latest",
        "--triggers-from",
        help="Where a new triggers group starts reading: latest or earliest.",
    ),
    metrics_port: int = typer.Option(
        None,
        "--metrics-port",
        min=1,
        max=65535,
        help="Serve the monitors' Prometheus metrics on this port (GET /metrics).",
    ),
    metrics_host: str = typer.Option("127.0.0.1", "--metrics-host", help="... on this address."),
) -> None:
    """Run the project's control-plane roles until SIGTERM / SIGINT (or --timeout)."""
    roles = list(ROLES) if "all" in role else role
    if triggers_from not in ("latest", "earliest"):
        raise ValidationError("use latest or earliest", field="--triggers-from", rule="enum")
    start: Literal["earliest", "latest"] = "earliest" if triggers_from == "earliest" else "latest"
    loaded = _load(project)
    settings = load_settings()
    store = Store(settings.store_url)
    store.upgrade()
    row = applied(store, loaded.name)
    if row is None or row.digest != loaded.digest:
        err_console.print(
            f"[yellow]warning:[/yellow] project {loaded.name} differs from what was applied; "
            "run `eventops apply` to record it",
            soft_wrap=True,
        )
    executor = configured_executor(settings, inline=inline, workers=workers)
    worker = Worker(
        loaded,
        store,
        LakeStorage(settings.lake_url),
        lambda: open_configured_bus(settings),
        roles=roles,
        executor=executor,
        triggers_from=start,
        max_runs=max_runs,
        tracker=tracker_from_settings(settings),
        registry=Registry.from_settings(settings),
        aws=settings.aws,
    )
    console = _console()
    exporter = None
    if metrics_port is not None:
        exporter = start_metrics_server(store, metrics_host, metrics_port)
        console.print(f"monitor metrics on http://{metrics_host}:{metrics_port}/metrics")
    previous = _install_signals(worker.stop_event)
    started = time.monotonic()
    try:
        worker.start()
        console.print(
            f"worker for project [cyan]{loaded.name}[/cyan]: roles {', '.join(worker.roles)}; "
            f"{len(loaded.pipelines)} pipeline(s), {len(loaded.rules())} trigger(s), "
            f"{len(loaded.transforms)} transform(s), {len(loaded.gates)} gate(s)"
        )
        stopped = worker.wait(timeout)
        reason = "stopped" if stopped else f"timeout after {timeout:g}s"
    finally:
        worker.stop()
        if exporter is not None:
            exporter.shutdown()
        store.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    console.print(
        f"worker {reason}: {worker.runs_done} run(s) handled in {time.monotonic() - started:.1f}s"
    )
    if worker.errors:
        for error in worker.errors:
            err_console.print(f"[red]error:[/red] role {error}", soft_wrap=True)
        raise typer.Exit(1)
