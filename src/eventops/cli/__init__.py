"""The `eventops` command: one Typer app, a sub-app per concern.

Every command resolves settings the same way (eventops.toml + EVENTOPS_*) and reports errors
through `eventops.cli.output.handle_errors`.
"""

from __future__ import annotations

import logging
import sys

import typer

from eventops import __version__
from eventops.cli import (
    alerts_cmd,
    api_cmd,
    config_cmd,
    datasets_cmd,
    db_cmd,
    demo_cmd,
    deploy_cmd,
    drift_cmd,
    events_cmd,
    ingest_cmd,
    init_cmd,
    monitors_cmd,
    pipelines_cmd,
    project_cmd,
    serve_cmd,
    sql_cmd,
    tokens_cmd,
    up_cmd,
)
from eventops.cli.models_cmd import app as models_app

app = typer.Typer(
    name="eventops",
    help="EventOps: event-driven MLOps. Every change in a model's life is an event.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def version() -> None:
    """Print the EventOps version."""
    typer.echo(__version__)


app.add_typer(config_cmd.app, name="config")
app.add_typer(events_cmd.app, name="events")
app.add_typer(db_cmd.app, name="db")
app.add_typer(ingest_cmd.app, name="ingest")
app.add_typer(datasets_cmd.app, name="datasets")
app.command(name="sql")(sql_cmd.sql)
app.command(name="run")(pipelines_cmd.run)
app.command(name="lineage")(pipelines_cmd.lineage)
app.add_typer(pipelines_cmd.app, name="runs")
app.command(name="init")(init_cmd.init)
app.command(name="apply")(project_cmd.apply_cmd)
app.command(name="worker")(project_cmd.worker_cmd)
app.command(name="demo")(demo_cmd.demo)
app.add_typer(models_app, name="models", help="Registered models: versions, aliases, decisions.")
app.command(name="serve")(serve_cmd.serve)
app.command(name="predict")(serve_cmd.predict)
app.command(name="drift")(drift_cmd.drift)
app.add_typer(alerts_cmd.app, name="alerts")
app.add_typer(monitors_cmd.app, name="monitors")
app.add_typer(tokens_cmd.app, name="tokens")
app.add_typer(api_cmd.app, name="api")
app.command(name="up")(up_cmd.up)
app.command(name="deploy")(deploy_cmd.deploy)
app.command(name="batch-transform")(deploy_cmd.batch_transform)
