"""`eventops deploy DEPLOYMENT --target sagemaker` and `eventops batch-transform DEPLOYMENT`.

The deployment is the project's own (its model and alias); the version is the alias's unless
`--version` pins one. Every change is announced as `deployment.updated` (or
`deployment.rolled_back`) through the store's outbox, so the UI, the alerts and the loop see a
SageMaker endpoint change like a local one. `--follow` keeps the command running and redeploys,
blue/green, on every promotion or rollback of the deployment's model.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from eventops.cli.output import handle_errors
from eventops.config import Settings, load_settings
from eventops.errors import ValidationError
from eventops.events.bus import open_configured_bus
from eventops.events.catalog import validate_event
from eventops.events.envelope import Event
from eventops.events.subscription import Subscription
from eventops.serving.deployment import Deployment
from eventops.serving.sagemaker import DeployResult, SageMakerTarget, check_name
from eventops.store import OutboxRelay, Store, add_event

TARGETS = ("sagemaker",)
FOLLOWED = ["model.version.promoted", "model.version.rolled_back"]
SOURCE = "/eventops/deploy/sagemaker"


@dataclass
class Options:
    settings: Settings
    deployment: Deployment
    endpoint: str
    target: SageMakerTarget


def _options(
    name: str, project: str | None, endpoint: str | None, image: str | None,
    role_arn: str | None, bucket: str | None, instance_type: str | None, instance_count: int,
    target: str,
) -> Options:  # fmt: skip
    from eventops.cli.serve_cmd import _project_deployment

    if target not in TARGETS:
        raise ValidationError(
            f"unknown target {target!r}; use {', '.join(TARGETS)}", field="--target", rule="one-of"
        )
    settings = load_settings()
    declared = _project_deployment(name, project)
    aws = settings.aws
    sagemaker = SageMakerTarget(
        role_arn=role_arn or aws.sagemaker_role_arn, image=image or aws.sagemaker_image,
        bucket=bucket or aws.sagemaker_bucket,
        instance_type=instance_type or aws.sagemaker_instance_type,
        instance_count=instance_count, region=aws.region,
    )  # fmt: skip
    endpoint = check_name(endpoint or f"eventops-{declared.name}".replace("_", "-"), "--endpoint")
    return Options(settings, declared, endpoint, sagemaker)


def _version(settings: Settings, model: str, version: str | None, alias: str) -> str:
    if version:
        return version
    from eventops.serving.models import registry_client

    found = registry_client(settings.tracking_uri).get_model_version_by_alias(model, alias)
    return str(found.version)


def _model_dir(settings: Settings, model: str, version: str, scratch: str) -> Path:
    """The registered version's MLflow model, downloaded from the platform's own registry."""
    import mlflow.artifacts

    from eventops.serving.models import use_tracking_uri

    use_tracking_uri(settings.tracking_uri)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{model}/{version}", dst_path=scratch
    )
    return Path(local)


def _announce(settings: Settings, options: Options, result: DeployResult) -> None:
    rolled = result.action == "rolled back"
    event = validate_event(
        Event(
            type="deployment.rolled_back" if rolled else "deployment.updated",
            source=SOURCE,
            subject=options.deployment.name,
            data={
                "deployment": options.deployment.name, "model": result.model or options.deployment.model,
                "version": result.version, "previous_version": result.previous_version,
                "alias": options.deployment.alias, "target": "sagemaker",
                "endpoint": result.endpoint, "endpoint_config": result.config,
            },
        )
    )  # fmt: skip
    store = Store(settings.store_url)
    try:
        store.upgrade()
        with store.session() as session:
            add_event(session, event)
        bus = open_configured_bus(settings)
        try:
            OutboxRelay(store, bus).relay_once()
        finally:
            bus.close()
    finally:
        store.close()


def _deploy_once(options: Options, version: str | None, canary: float | None,
                 alarms: list[str], wait: bool, timeout: float) -> DeployResult:  # fmt: skip
    declared = options.deployment
    pinned = _version(options.settings, declared.model, version, declared.alias)
    with tempfile.TemporaryDirectory(prefix="eventops-deploy-") as scratch:
        model_dir = _model_dir(options.settings, declared.model, pinned, scratch)
        result = options.target.deploy(
            options.endpoint, model=declared.model, version=pinned, model_dir=model_dir,
            canary_percent=canary, alarms=alarms, wait=wait, timeout=timeout,
        )  # fmt: skip
    if result.action != "unchanged":
        _announce(options.settings, options, result)
    return result


def _say(console: Console, result: DeployResult) -> None:
    was = f" (was v{result.previous_version})" if result.previous_version else ""
    console.print(
        f"sagemaker endpoint [cyan]{result.endpoint}[/cyan] {result.action}: "
        f"{result.model} v{result.version}{was}, config {result.config}, status {result.status}"
    )


@handle_errors
def deploy(
    deployment: str = typer.Argument(..., help="A deployment of the project."),
    target: str = typer.Option("sagemaker", "--target", help="Where to deploy: sagemaker."),
    version: str = typer.Option(
        None, "--version", help="Version to deploy (default: the alias's)."
    ),
    rollback: bool = typer.Option(False, "--rollback", help="Go back to the previous config."),
    follow: bool = typer.Option(False, "--follow", help="Redeploy on every promotion/rollback."),
    endpoint: str = typer.Option(
        None, "--endpoint", help="Endpoint name (default: eventops-DEPLOYMENT)."
    ),
    image: str = typer.Option(None, "--image", help="Serving image URI (aws.sagemaker_image)."),
    role_arn: str = typer.Option(
        None, "--role-arn", help="Execution role (aws.sagemaker_role_arn)."
    ),
    bucket: str = typer.Option(
        None, "--bucket", help="s3:// for model archives (aws.sagemaker_bucket)."
    ),
    instance_type: str = typer.Option(
        None, "--instance-type", help="Default: aws.sagemaker_instance_type."
    ),
    instance_count: int = typer.Option(1, "--instance-count", min=1),
    canary: float = typer.Option(None, "--canary", help="Blue/green canary: % of capacity first."),
    alarm: list[str] = typer.Option(
        None, "--alarm", help="CloudWatch alarm that rolls back (repeatable)."
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Wait until the endpoint is InService."
    ),
    timeout: float = typer.Option(
        1800, "--timeout", help="Seconds to wait (with --follow: to run)."
    ),
    project: str = typer.Option(None, "--project", "-p", help="Project file (default: settings)."),
) -> None:
    """Deploy a project deployment's model to a SageMaker endpoint, blue/green.

    Creates the model, the endpoint configuration and the endpoint the first time, and updates
    the endpoint blue/green after that; `--rollback` returns to the configuration the current one
    replaced. Needs the execution role, the serving image and a bucket for model archives.
    """
    options = _options(deployment, project, endpoint, image, role_arn, bucket, instance_type,
                       instance_count, target)  # fmt: skip
    console = Console(highlight=False)
    if rollback:
        result = options.target.rollback(options.endpoint, wait=wait, timeout=timeout)
        _announce(options.settings, options, result)
        _say(console, result)
        return
    _say(console, _deploy_once(options, version, canary, alarm or [], wait, timeout))
    if follow:
        _follow(console, options, canary, alarm or [], wait, timeout)


def _follow(console: Console, options: Options, canary: float | None, alarms: list[str],
            wait: bool, timeout: float) -> None:  # fmt: skip
    model = options.deployment.model

    def handle(event: Event) -> None:
        data: dict[str, Any] = event.data if isinstance(event.data, dict) else {}
        if data.get("model") != model:
            return
        _say(console, _deploy_once(options, None, canary, alarms, wait, timeout))

    bus = open_configured_bus(options.settings)
    group = f"eventops-sagemaker-{options.deployment.name}"
    subscription = Subscription(bus, group, handle, types=FOLLOWED, start="latest").start()
    console.print(f"following promotions of {model} (group {group}); Ctrl-C stops")
    stop = threading.Event()
    try:
        stop.wait(timeout)
    except KeyboardInterrupt:
        pass
    finally:
        subscription.stop()
        bus.close()


@handle_errors
def batch_transform(
    deployment: str = typer.Argument(..., help="A deployment of the project."),
    input_s3: str = typer.Option(..., "--input", help="s3:// prefix of the input files."),
    output_s3: str = typer.Option(..., "--output", help="s3:// prefix for the predictions."),
    job: str = typer.Option(None, "--job", help="Job name (default: DEPLOYMENT-TIMESTAMP)."),
    version: str = typer.Option(None, "--version", help="Version (default: the alias's)."),
    content_type: str = typer.Option(
        "text/csv", "--content-type", help="text/csv or application/json."
    ),
    image: str = typer.Option(None, "--image"),
    role_arn: str = typer.Option(None, "--role-arn"),
    bucket: str = typer.Option(None, "--bucket"),
    instance_type: str = typer.Option(None, "--instance-type"),
    instance_count: int = typer.Option(1, "--instance-count", min=1),
    wait: bool = typer.Option(False, "--wait/--no-wait", help="Wait for the job to finish."),
    timeout: float = typer.Option(3600, "--timeout"),
    project: str = typer.Option(None, "--project", "-p"),
) -> None:
    """Score files on S3 with a SageMaker batch transform job and the deployment's model."""
    options = _options(deployment, project, None, image, role_arn, bucket, instance_type,
                       instance_count, "sagemaker")  # fmt: skip
    declared = options.deployment
    pinned = _version(options.settings, declared.model, version, declared.alias)
    name = job or f"{options.endpoint}-{time.strftime('%Y%m%d%H%M%S')}"
    with tempfile.TemporaryDirectory(prefix="eventops-transform-") as scratch:
        model_dir = _model_dir(options.settings, declared.model, pinned, scratch)
        answer = options.target.batch_transform(
            name, endpoint=options.endpoint, model=declared.model, version=pinned,
            model_dir=model_dir, input_s3=input_s3, output_s3=output_s3,
            content_type=content_type, wait=wait, timeout=timeout,
        )  # fmt: skip
    Console(highlight=False).print(
        f"transform job [cyan]{answer['job']}[/cyan]: {declared.model} v{pinned} "
        f"({answer['model']}), {input_s3} -> {output_s3}, status {answer['status']}"
    )
