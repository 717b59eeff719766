"""`eventops config`: what the effective configuration is, and where each value came from."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from eventops.cli.output import handle_errors
from eventops.config import config_path, load_settings

app = typer.Typer(help="Inspect the configuration (eventops.toml + EVENTOPS_* variables).")


def _flatten(data: dict[str, object], prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


@app.command("show")
@handle_errors
def show(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the effective configuration; passwords are redacted."""
    settings = load_settings()
    data = settings.effective()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    path = config_path()
    table = Table(title=f"EventOps configuration ({path if path.exists() else 'no eventops.toml'})")
    table.add_column("setting")
    table.add_column("value")
    table.add_column("variable", style="dim")
    for name, value in _flatten(data):
        table.add_row(
            name, "" if value is None else str(value), "EVENTOPS_" + name.replace(".", "_").upper()
        )
    Console().print(table)
