"""`eventops alerts`: where every alert stands, and a test message through a rule's channels.

`list` reads the alert states from the metadata store (one row per rule and group: firing or
resolved, since when, how many events, the last delivery error). `test` loads the project,
checks the rule's secrets and sends one message marked as a test through each channel,
recording nothing; it exits 4 when a channel did not take it, so it fits a deploy check.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from eventops.cli.output import err_console, handle_errors
from eventops.config import load_settings
from eventops.errors import BackendUnavailable, ConfigError, EventOpsError, NotFound
from eventops.events.envelope import format_time
from eventops.project import load_project, resolve_path
from eventops.store import Store
from eventops.store.alerts import AlertStateRow, alert_state_rows

app = typer.Typer(help="Alerts: their state, and test messages through a rule's channels.")

STATUS_STYLE = {"firing": "red", "resolved": "green"}


def state_json(row: AlertStateRow) -> dict[str, Any]:
    """One alert's state as `list --json` prints it (never a message body or a channel URL)."""
    return {
        "rule": row.rule,
        "group": row.group_key,
        "status": row.status,
        "severity": row.severity,
        "since": format_time(row.since),
        "count": row.count,
        "deduplicated": row.deduplicated,
        "notifications": row.notifications,
        "summary": row.summary,
        "delivery_pending": row.delivery_pending,
        "pending_notifications": len(row.pending or []),
        "last_delivery_error": row.last_delivery_error,
        "delivered_at": format_time(row.delivered_at) if row.delivered_at else None,
    }


@app.command("list")
@handle_errors
def list_(as_json: bool = typer.Option(False, "--json", help="A JSON array.")) -> None:
    """Every alert (rule and group): firing or resolved, since, count, last delivery error."""
    store = Store(load_settings().store_url)
    try:
        store.upgrade()
        states = [state_json(row) for row in alert_state_rows(store)]
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(states, indent=2))
        return
    console = Console(highlight=False)
    if not states:
        console.print("no alerts have fired")
        return
    table = Table("rule", "group", "status", "severity", "since", "count", "delivery")
    for s in states:
        style = STATUS_STYLE.get(s["status"], "")
        delivery = "ok"
        if s["delivery_pending"]:
            delivery = f"[yellow]{s['pending_notifications']} pending[/yellow]"
        if s["last_delivery_error"]:
            delivery += f" [red]{s['last_delivery_error']}[/red]"
        table.add_row(
            s["rule"],
            s["group"],
            f"[{style}]{s['status']}[/]",
            s["severity"],
            s["since"][:19],
            str(s["count"]),
            delivery,
        )
    console.print(table)


@app.command("test")
@handle_errors
def send_test(
    rule: str = typer.Argument(..., help="The alert rule's name."),
    project: Path = typer.Option(
        None, "--project", "-P", help="The project: a .py file or a package (default: `project`)."
    ),
) -> None:
    """Send a test message through each channel of RULE; nothing is recorded."""
    # Imported here: eventops.monitoring loads scipy, ~0.5 s on every `eventops` start.
    from eventops.monitoring.alerts import AlertRule, trial_message
    from eventops.monitoring.channels import Poster, deliver

    loaded = load_project(resolve_path(project, load_settings()))
    rules: dict[str, AlertRule] = dict(loaded.alerts)
    chosen = rules.get(rule)
    if chosen is None:
        known = ", ".join(sorted(rules)) or "none"
        raise NotFound(
            f"project {loaded.name} has no alert rule {rule!r} (rules: {known})",
            field="rule",
            rule="exists",
        )
    message = trial_message(chosen)
    poster = Poster()
    failed = 0
    try:
        for index, channel in enumerate(chosen.channels):
            label = f"{index}: {channel.describe()}"
            try:
                deliver(channel, message, poster, os.environ)
            except ConfigError as exc:
                failed += 1
                field = f"alerts.{chosen.name}.channels[{index}].{exc.field}"
                err_console.print(f"[red]{label}: {field}: {exc.message}[/red]", soft_wrap=True)
            except EventOpsError as exc:
                failed += 1
                err_console.print(f"[red]{label}: {exc.message}[/red]", soft_wrap=True)
            else:
                typer.echo(f"{label}: sent")
    finally:
        poster.close()
    if failed:
        raise BackendUnavailable(
            f"{failed} of {len(chosen.channels)} channel(s) did not take the test message",
            field=f"alerts.{chosen.name}.channels",
            rule="delivered",
        )
