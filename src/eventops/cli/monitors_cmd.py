"""`eventops monitors`: the declared monitors, the checks they recorded, a check on demand.

    eventops monitors list --project examples/churn/project.py
    eventops monitors checks churn-drift --limit 10 [--json]
    eventops monitors run churn-drift --project examples/churn/project.py

`list` shows a project's monitors with their newest checks (without a project, every monitor
that has recorded a check). `run` checks one monitor now on its latest data without touching
its windows, records the check and relays its events, like a window that closed by itself:
an operator's way to see the state of a deployment after an incident or a fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from eventops.cli.output import handle_errors
from eventops.cli.pipelines_cmd import relay_outbox
from eventops.config import load_settings
from eventops.errors import NotFound
from eventops.project import load_project, resolve_path
from eventops.store import Store

if TYPE_CHECKING:
    from eventops.monitoring.monitors import Check, Monitor

app = typer.Typer(help="Monitors: drift windows and performance on labels, their checks.")

PROJECT_HELP = "The project: a .py file or a package (default: `project`)."


def _console() -> Console:
    return Console(highlight=False, markup=False)


def _declared(path: Path | None, *, required: bool) -> list[Monitor]:
    # Imported here: eventops.monitoring loads scipy, ~0.5 s on every `eventops` start.

    settings = load_settings()
    if path is None and not settings.project and not required:
        return []
    project = load_project(resolve_path(path, settings))
    return list(project.monitors.values())


def _store() -> Store:
    store = Store(load_settings().store_url)
    store.upgrade()
    return store


def verdict(check: Check) -> str:
    """One line: what the check found."""
    if check.status == "error":
        return f"error: {check.error}"
    if check.kind == "drift":
        columns = check.result.get("drifted_columns") or []
        prediction = check.result.get("prediction") or {}
        found = [
            *columns,
            *([f"{prediction.get('name')} (prediction)"] if prediction.get("drifted") else []),
        ]
        return f"drift in {', '.join(found)}" if found else "no drift"
    metric, value = check.result.get("metric"), check.value
    shown = "n/a" if value is None else f"{value:.4g}"
    unmatched = check.result.get("unmatched") or 0
    extra = f" ({unmatched} unmatched)" if unmatched else ""
    return f"{metric} {shown}{' DEGRADED' if check.degraded else ''}{extra}"


def _window(monitor: Monitor) -> str:
    parts = []
    if monitor.window_rows is not None:
        parts.append(f"{monitor.window_rows} rows")
    if monitor.window_seconds is not None:
        parts.append(f"{monitor.window_seconds:g}s")
    return " or ".join(parts)


def _performance(monitor: Monitor) -> str:
    perf = monitor.performance
    if perf is None:
        return ""
    bound = f">= {perf.min:g}" if perf.min is not None else ""
    bound = bound or (f"<= {perf.max:g}" if perf.max is not None else "tracked")
    return f"{perf.metric} {bound} / {perf.window_labels} labels"


@app.command("list")
@handle_errors
def list_(
    project: Path = typer.Option(None, "--project", "-P", help=PROJECT_HELP),
    as_json: bool = typer.Option(False, "--json", help="A JSON array."),
) -> None:
    """The project's monitors and their newest checks."""
    from eventops.monitoring.monitors import latest_checks

    declared = {m.name: m for m in _declared(project, required=False)}
    store = _store()
    try:
        newest: dict[str, dict[str, Check]] = {}
        for check in latest_checks(store):
            newest.setdefault(check.monitor, {})[check.kind] = check
    finally:
        store.close()
    names = [*declared, *sorted(n for n in newest if n not in declared)]
    if as_json:
        out: list[dict[str, Any]] = []
        for name in names:
            monitor = declared.get(name)
            out.append(
                {
                    "name": name,
                    "declared": monitor.definition() if monitor else None,
                    "latest": {k: c.to_dict() for k, c in newest.get(name, {}).items()},
                }
            )
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(
        Column("monitor", no_wrap=True), "dataset", "reference", "window", "performance",
        Column("last drift check", overflow="fold"), Column("last performance check", overflow="fold"),
    )  # fmt: skip
    for name in names:
        monitor = declared.get(name)
        last = newest.get(name, {})
        cells = [_last(last.get("drift")), _last(last.get("performance"))]
        if monitor is None:
            table.add_row(name, "", "", "", "", *cells)
        else:
            table.add_row(
                name, monitor.source_dataset, monitor.reference or "", _window(monitor),
                _performance(monitor), *cells,
            )  # fmt: skip
    _console().print(table)


def _last(check: Check | None) -> str:
    return "" if check is None else f"{str(check.created_at)[:19]} {verdict(check)}"


def _print_checks(checks: list[Check]) -> None:
    table = Table(
        "id", "when", "kind", "trigger", "window", "rows", Column("verdict", overflow="fold")
    )
    for c in checks:
        table.add_row(
            str(c.id), str(c.created_at)[:19], c.kind, c.trigger,
            "" if c.window_seq is None else str(c.window_seq), str(c.rows), verdict(c),
        )  # fmt: skip
    _console().print(table)


@app.command("checks")
@handle_errors
def checks(
    name: str = typer.Argument(..., help="The monitor's name."),
    limit: int = typer.Option(20, "--limit", min=1, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array, with the whole reports."),
) -> None:
    """A monitor's checks, newest first."""
    from eventops.monitoring.monitors import list_checks

    store = _store()
    try:
        found = list_checks(store, name, limit=limit)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps([c.to_dict() for c in found], indent=2))
        return
    if not found:
        typer.echo(f"monitor {name} has recorded no check yet")
        return
    _print_checks(found)


@app.command("run")
@handle_errors
def run(
    name: str = typer.Argument(..., help="The monitor's name."),
    project: Path = typer.Option(None, "--project", "-P", help=PROJECT_HELP),
    as_json: bool = typer.Option(False, "--json", help="The checks as a JSON array."),
) -> None:
    """Check NAME now on its latest data (its windows are left as they are)."""
    from eventops.lake.catalog import Lake
    from eventops.monitoring.service import MonitorService

    monitors = {m.name: m for m in _declared(project, required=True)}
    monitor = monitors.get(name)
    if monitor is None:
        known = ", ".join(sorted(monitors)) or "none"
        raise NotFound(
            f"the project has no monitor {name!r} (monitors: {known})",
            field="monitor",
            rule="exists",
        )
    lake = Lake.from_settings(load_settings())
    try:
        done = MonitorService(lake, [monitor]).run_check(name)
        if done:
            relay_outbox(lake.store)
    finally:
        lake.store.close()
    if as_json:
        typer.echo(json.dumps([c.to_dict() for c in done], indent=2))
    elif not done:
        typer.echo(f"monitor {name}: no captured data or labels to check yet")
    else:
        _print_checks(done)
