"""SageMaker as a deployment target, against moto's server on loopback.

moto records SageMaker resources but runs no containers: what the endpoint would serve is
checked on the archive in S3 (MLmodel at its root) and, in test_sagemaker_contract.py, by
running the image's entry point on that archive. UpdateEndpoint's blue/green configuration is
read off the request with a botocore hook, since moto does not act on it.
"""

from __future__ import annotations

import io
import json
import tarfile
import types
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import select
from typer.testing import CliRunner

from eventops.cli import app
from eventops.errors import ConfigError, ValidationError
from eventops.events.aws import Backoff
from eventops.events.envelope import Event
from eventops.serving.sagemaker import (
    DeploymentFailed,
    SageMakerTarget,
    check_name,
    package_model,
)
from eventops.store import OutboxEntry, Store
from serving_models import register_versions

ROLE = "arn:aws:iam::123456789012:role/eventops-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/eventops:0.1.0"
FAST = Backoff(attempts=3, base=0.001, cap=0.01)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("sagemaker")
    uri = f"sqlite:///{root}/mlflow.db"
    register_versions(uri, root)
    return uri, root


@pytest.fixture
def bucket(aws: Any) -> str:
    name = f"models-{uuid.uuid4().hex[:8]}"
    aws.create_bucket(name)
    return name


def target(aws: Any, bucket: str, client: Any = None, **kwargs: Any) -> SageMakerTarget:
    return SageMakerTarget(
        role_arn=ROLE, image=IMAGE, bucket=f"s3://{bucket}/sagemaker",
        client=client or aws.client("sagemaker"), s3_client=aws.client("s3"), backoff=FAST,
        poll_seconds=0.01, **kwargs,
    )  # fmt: skip


def emulate_update_endpoint(
    client: Any, serving: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """moto does not implement UpdateEndpoint: answer it here and let DescribeEndpoint show
    the configuration it switched to (as SageMaker does once the blue/green update is done)."""
    updates: list[dict[str, Any]] = []
    serving = {} if serving is None else serving

    def keep(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["params"] = dict(params)

    def update(context: dict[str, Any], **_: Any) -> Any:
        params = context["params"]
        updates.append(params)
        serving[params["EndpointName"]] = params["EndpointConfigName"]
        arn = f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{params['EndpointName']}"
        return types.SimpleNamespace(status_code=200, headers={}), {
            "EndpointArn": arn,
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }

    def describe(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        name = context.get("params", {}).get("EndpointName")
        if name in serving and "EndpointConfigName" in parsed:
            parsed["EndpointConfigName"] = serving[name]

    for operation in ("UpdateEndpoint", "DescribeEndpoint"):
        client.meta.events.register(f"before-parameter-build.sagemaker.{operation}", keep)
    client.meta.events.register("before-call.sagemaker.UpdateEndpoint", update)
    client.meta.events.register("after-call.sagemaker.DescribeEndpoint", describe)
    return updates


def recorded(client: Any, operation: str) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def keep(params: dict[str, Any], **_: Any) -> None:
        calls.append(dict(params))

    client.meta.events.register(f"before-parameter-build.sagemaker.{operation}", keep)
    return calls


def archive_names(aws: Any, url: str) -> list[str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        return tar.getnames()


def test_first_deploy_creates_then_promotion_updates_blue_green(
    aws: Any, bucket: str, models: tuple[str, Path]
) -> None:
    _, root = models
    client = aws.client("sagemaker")
    updates = emulate_update_endpoint(client)
    deployer = target(aws, bucket, client)
    endpoint = f"churn-{uuid.uuid4().hex[:6]}"
    first = deployer.deploy(endpoint, model="churn", version="1", model_dir=root / "churn-v1")
    assert (first.action, first.status, first.version) == ("created", "InService", "1")
    assert "MLmodel" in archive_names(aws, str(first.model_data_url))
    described = client.describe_model(ModelName=first.config)
    assert described["PrimaryContainer"]["Image"] == IMAGE
    assert described["PrimaryContainer"]["ModelDataUrl"] == first.model_data_url
    assert described["ExecutionRoleArn"] == ROLE
    same = deployer.deploy(endpoint, model="churn", version="1", model_dir=root / "churn-v1")
    assert same.action == "unchanged" and updates == []
    second = deployer.deploy(endpoint, model="churn", version="2", model_dir=root / "churn-v2",
                             canary_percent=10, alarms=["eventops-churn-errors"])  # fmt: skip
    assert (second.action, second.previous_config, second.previous_version) == (
        "updated", first.config, "1",
    )  # fmt: skip
    policy = updates[0]["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"]["Type"] == "CANARY"
    assert policy["TrafficRoutingConfiguration"]["CanarySize"]["Value"] == 10
    assert updates[0]["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"] == [
        {"AlarmName": "eventops-churn-errors"}
    ]
    assert client.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"] == second.config
    back = deployer.rollback(endpoint)
    assert (back.action, back.config, back.version) == ("rolled back", first.config, "1")
    assert updates[-1]["EndpointConfigName"] == first.config
    assert updates[-1]["DeploymentConfig"]["BlueGreenUpdatePolicy"][
        "TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"  # fmt: skip


def test_the_archive_is_reproducible_and_uploaded_once(
    aws: Any, bucket: str, models: tuple[str, Path], tmp_path: Path
) -> None:
    _, root = models
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    assert package_model(root / "churn-v1", a) == package_model(root / "churn-v1", b)
    assert a.read_bytes() == b.read_bytes()
    deployer = target(aws, bucket)
    first = deployer.upload("churn-api", "churn", "1", root / "churn-v1")
    s3 = aws.client("s3")
    puts = []
    s3.meta.events.register("before-call.s3.PutObject", lambda **kw: puts.append(1))
    deployer.s3 = s3
    assert deployer.upload("churn-api", "churn", "1", root / "churn-v1") == first
    assert puts == []
    with pytest.raises(ValidationError) as info:
        package_model(tmp_path, tmp_path / "c.tar.gz")
    assert info.value.rule == "mlflow-model"


def test_a_failed_endpoint_reports_sagemakers_reason(
    aws: Any, bucket: str, models: tuple[str, Path]
) -> None:
    _, root = models
    client = aws.client("sagemaker")

    def failed(**_: Any) -> Any:
        return types.SimpleNamespace(status_code=200, headers={}), {
            "EndpointName": "x", "EndpointArn": "arn", "EndpointConfigName": "c",
            "EndpointStatus": "Failed", "FailureReason": "The primary container did not pass the ping health check",
            "CreationTime": "2026-01-01T00:00:00Z", "LastModifiedTime": "2026-01-01T00:00:00Z",
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }  # fmt: skip

    deployer = target(aws, bucket, client)
    endpoint = f"churn-{uuid.uuid4().hex[:6]}"
    deployer.deploy(endpoint, model="churn", version="1", model_dir=root / "churn-v1", wait=False)
    client.meta.events.register("before-call.sagemaker.DescribeEndpoint", failed)
    with pytest.raises(DeploymentFailed) as info:
        deployer.wait(endpoint, timeout=5)
    assert info.value.rule == "Failed"
    assert "ping health check" in str(info.value)


def test_a_batch_transform_job_uses_the_same_model(
    aws: Any, bucket: str, models: tuple[str, Path]
) -> None:
    _, root = models
    client = aws.client("sagemaker")
    jobs = recorded(client, "CreateTransformJob")
    deployer = target(aws, bucket, client)
    job = f"score-{uuid.uuid4().hex[:6]}"
    answer = deployer.batch_transform(
        job, endpoint="churn-api", model="churn", version="2", model_dir=root / "churn-v2",
        input_s3=f"s3://{bucket}/in/", output_s3=f"s3://{bucket}/out/",
    )  # fmt: skip
    assert answer["job"] == job
    sent = jobs[0]
    assert sent["ModelName"] == answer["model"]
    assert sent["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{bucket}/in/"
    assert sent["TransformOutput"]["S3OutputPath"] == f"s3://{bucket}/out/"
    assert client.describe_model(ModelName=answer["model"])["ModelName"] == answer["model"]
    with pytest.raises(ValidationError) as info:
        deployer.batch_transform(job, endpoint="e", model="churn", version="2",
                                 model_dir=root / "churn-v2", input_s3="/local", output_s3="s3://b/o")  # fmt: skip
    assert info.value.field == "input"


@pytest.mark.parametrize("name", ["-bad", "has_underscore", "x" * 64, ""])
def test_names_follow_sagemakers_rule(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_name(name, "endpoint")
    assert (info.value.field, info.value.rule) == ("endpoint", "sagemaker-name")


def test_missing_settings_name_the_variable(aws: Any) -> None:
    with pytest.raises(ConfigError) as info:
        SageMakerTarget(
            role_arn=None, image=IMAGE, bucket="s3://b", client=object(), s3_client=object()
        )
    assert info.value.field == "EVENTOPS_AWS_SAGEMAKER_ROLE_ARN"
    with pytest.raises(ConfigError) as info:
        SageMakerTarget(role_arn=ROLE, image=IMAGE, bucket="b", client=object(), s3_client=object())
    assert info.value.rule == "s3-uri"


PROJECT = """
from eventops.serving.deployment import Deployment

deployments = [Deployment(name="churn-api", model="churn", alias="champion")]
"""


def test_the_cli_deploys_the_alias_and_announces_it(
    aws: Any, bucket: str, models: tuple[str, Path], home: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    uri, _ = models
    (tmp_path / "project.py").write_text(PROJECT)
    endpoint = f"churn-{uuid.uuid4().hex[:6]}"
    for key, value in {
        "EVENTOPS_TRACKING_URI": uri, "EVENTOPS_AWS_SAGEMAKER_ROLE_ARN": ROLE,
        "EVENTOPS_AWS_SAGEMAKER_IMAGE": IMAGE, "EVENTOPS_AWS_SAGEMAKER_BUCKET": f"s3://{bucket}/sm",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    from eventops.events import aws as aws_api

    real, serving = aws_api.client, {}

    def client(service: str, **kwargs: Any) -> Any:
        made = real(service, **kwargs)
        if service == "sagemaker":
            emulate_update_endpoint(made, serving)
        return made

    monkeypatch.setattr(aws_api, "client", client)
    runner = CliRunner()
    args = ["deploy", "churn-api", "--target", "sagemaker", "--project", "project.py",
            "--endpoint", endpoint]  # fmt: skip
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "created" in first.output and "churn v1" in first.output
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        "churn", "champion", "2"
    )
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "updated" in second.output and "(was v1)" in second.output
    back = runner.invoke(app, [*args, "--rollback"])
    assert back.exit_code == 0 and "rolled back" in back.output
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        "churn", "champion", "1"
    )
    store = Store(f"sqlite:///{home}/eventops.db")
    with store.session() as session:
        rows = session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)).all()
        announced = [Event.from_json(r.payload) for r in rows if r.type.startswith("deployment.")]
    store.close()
    assert [e.type for e in announced] == [
        "deployment.updated",
        "deployment.updated",
        "deployment.rolled_back",
    ]
    assert [e.data["version"] for e in announced] == ["1", "2", "1"]
    assert announced[1].data["previous_version"] == "1"
    assert json.dumps(announced[0].data["endpoint"]) == json.dumps(endpoint)
    bad = runner.invoke(
        app, ["deploy", "churn-api", "--target", "kserve", "--project", "project.py"]
    )
    assert bad.exit_code == 2 and "--target" in bad.output
    missing = runner.invoke(app, ["deploy", "nope", "--project", "project.py"])
    assert missing.exit_code == 3
