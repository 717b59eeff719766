"""`eventops serve` and `eventops predict`: the model server and batch transform.

`serve` runs one deployment: a project's (``--deployment NAME --project PATH``) or a bare model
(``--model-uri URI``). The token comes from ``EVENTOPS_TOKEN`` only, never from a flag (flags end
up in shell history and process listings). `predict` scores a file or a lake dataset into
Parquet with a progress bar.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eventops.cli.output import handle_errors
from eventops.config import Settings, load_settings
from eventops.errors import ConfigError, NotFound
from eventops.serving.deployment import Deployment

TOKEN_VARIABLE = "EVENTOPS_TOKEN"  # noqa: S105 - the name of the variable, not a secret


def _project_deployment(name: str, project: str | None) -> Deployment:
    from eventops.project import load_project, resolve_path

    settings = load_settings()
    loaded = load_project(resolve_path(project, settings))
    deployments: dict[str, Deployment] = getattr(loaded, "deployments", {}) or {}
    if name not in deployments:
        known = ", ".join(sorted(deployments)) or "none"
        raise NotFound(
            f"project {loaded.name!r} has no deployment {name!r} (it has: {known})",
            field="--deployment",
            rule="exists",
        )
    return deployments[name]


@handle_errors
def serve(
    model_uri: str = typer.Option(
        None, "--model-uri", "-m", help="models:/name@alias, models:/name/3, runs:/..., a path."
    ),
    deployment_name: str = typer.Option(
        None, "--deployment", "-d", help="A deployment of the project (with --project)."
    ),
    project: str = typer.Option(None, "--project", "-p", help="Project file (default: settings)."),
    host: str = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", min=1, max=65535, help="Port (default 8080)."),
    workers: int = typer.Option(None, "--workers", min=1, max=64, help="Worker processes."),
    max_batch_size: int = typer.Option(None, "--max-batch-size", min=1, help="Rows per batch."),
    max_wait_ms: float = typer.Option(None, "--max-wait-ms", min=0, help="Batch wait (ms)."),
    capture_sample: float = typer.Option(
        None, "--capture-sample", min=0, max=1, help="Share of requests captured (0-1)."
    ),
    name: str = typer.Option(None, "--name", help="Deployment name for --model-uri."),
) -> None:
    """Serve a model: MLflow scoring, Open Inference v2 and SageMaker routes, /metrics.

    Follows the alias it serves and swaps to each newly promoted version with no failed
    request. Set EVENTOPS_TOKEN to require `Authorization: Bearer <token>` on /feedback
    (and on predictions with the deployment's protect_predictions).
    """
    from eventops.serving.server import deployment_for_uri, serve_deployment

    if (model_uri is None) == (deployment_name is None):
        raise ConfigError(
            "give --model-uri URI or --deployment NAME (with --project)",
            field="--model-uri",
            rule="one-of",
        )
    knobs: dict[str, Any] = {
        "max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms,
        "capture_sample": capture_sample,
    }  # fmt: skip
    if deployment_name is not None:
        declared = _project_deployment(deployment_name, project)
        changes = {k: v for k, v in knobs.items() if v is not None}
        deployment = Deployment(**{**declared.model_dump(), **changes}) if changes else declared
    else:
        deployment = deployment_for_uri(model_uri, name=name, **knobs)
    console = Console(stderr=True, highlight=False)
    settings = load_settings()
    reporter = _cloudwatch_reporter(settings, deployment.name, port or deployment.port)
    if reporter is not None:
        console.print(
            f"publishing serving metrics to CloudWatch namespace "
            f"{settings.aws.cloudwatch_namespace} every {settings.aws.cloudwatch_interval}"
        )
    try:
        serve_deployment(
            deployment, settings, model_uri=model_uri, host=host, port=port, workers=workers,
            token=os.environ.get(TOKEN_VARIABLE) or None, say=console.print,
        )  # fmt: skip
    finally:
        if reporter is not None:
            reporter.stop()


def _cloudwatch_reporter(settings: Settings, deployment: str, port: int) -> Any:
    """With `aws.cloudwatch_namespace` set, a reporter putting this server's metrics there."""
    namespace = settings.aws.cloudwatch_namespace
    if not namespace:
        return None
    from eventops.monitoring.cloudwatch import MetricsPublisher, ServingMetricsReporter
    from eventops.quantities import parse_duration

    interval = parse_duration(settings.aws.cloudwatch_interval, field="aws.cloudwatch_interval")
    publisher = MetricsPublisher(namespace, region=settings.aws.region)
    return ServingMetricsReporter(
        f"http://127.0.0.1:{port}/metrics", publisher, deployment=deployment, interval=interval
    ).start()


@handle_errors
def predict(
    model_uri: str = typer.Option(..., "--model-uri", "-m", help="The model to score with."),
    input: str = typer.Option(
        ..., "--input", "-i", help="A lake dataset, or a .parquet/.csv/.jsonl path."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="The Parquet file to write."),
    chunk_rows: int = typer.Option(10_000, "--chunk-rows", min=1, help="Rows per predict call."),
) -> None:
    """Score a file or a lake dataset in chunks; write its rows with prediction columns."""
    from eventops.lake import Lake
    from eventops.serving.batch import predict_file

    settings = load_settings()
    lake = None if Path(input).exists() else Lake.from_settings(settings)
    console = Console(stderr=True, highlight=False)
    columns = [
        TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
        TimeElapsedColumn(),
    ]  # fmt: skip
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("scoring", total=None)

        def advance(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        result = predict_file(
            model_uri, input, output, chunk_rows=chunk_rows, lake=lake,
            tracking_uri=settings.tracking_uri, progress=advance,
        )  # fmt: skip
    Console(highlight=False).print(
        f"wrote {result.rows:,} rows to {result.output} "
        f"({result.chunks} chunks, {', '.join(result.prediction_columns)}; "
        f"model {result.model_uri}, version {result.model_version}, {result.seconds:.1f}s)"
    )
