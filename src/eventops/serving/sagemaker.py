"""SageMaker as a deployment target: the platform's image and a registered MLflow model on a
SageMaker endpoint, updated blue/green on every promotion and rollback, and batch transform.

What is created, for endpoint ``churn-api`` and version 7 of model ``churn``:

- ``s3://<bucket>/<endpoint>/<model>-v7-<digest>/model.tar.gz``: the MLflow model directory,
  ``MLmodel`` at the root, as SageMaker unpacks it into ``/opt/ml/model`` (where the image's
  ``serve`` entry point looks). The digest is of the archive, so the same model is uploaded once;
- a SageMaker *model* and an *endpoint configuration*, both named ``churn-api-v7-<digest>``
  (one production variant ``primary``), tagged with the model, version and the configuration
  they replace;
- the *endpoint*: created the first time, then updated with a blue/green deployment
  (``ALL_AT_ONCE``, or ``CANARY`` with a share of capacity first), optionally rolled back by
  CloudWatch alarms. SageMaker keeps the old fleet serving until the new one is healthy.

Rollback updates the endpoint back to the configuration the current one replaced (a tag on it),
blue/green as well. Deploying the version the endpoint already serves changes nothing. Older
models and configurations beyond the last `keep` are deleted.

Every call goes through `events.aws.call` (throttling retried with backoff and jitter). Waiting
for an endpoint is bounded: past the timeout, or on ``Failed``, an error names the endpoint, its
status and SageMaker's ``FailureReason``.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from eventops.errors import ConfigError, EventOpsError, ValidationError
from eventops.events import aws

log = logging.getLogger(__name__)

NAME_RULE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
TAG_MODEL, TAG_VERSION, TAG_PREVIOUS = "eventops:model", "eventops:version", "eventops:previous"
VARIANT = "primary"
PENDING = ("Creating", "Updating", "SystemUpdating", "RollingBack")
TRANSFORM_PENDING = ("InProgress", "Stopping")


class DeploymentFailed(EventOpsError):
    """SageMaker reported the endpoint or job as failed, or it did not finish in time."""

    exit_code = 5
    http_status = 502


def check_name(value: str, field: str) -> str:
    """SageMaker's rule for model, endpoint, configuration and job names."""
    if not NAME_RULE.fullmatch(value):
        raise ValidationError(
            f"{value!r} is not a SageMaker name: 1-63 letters, digits and hyphens, "
            "starting and ending with a letter or digit",
            field=field,
            rule="sagemaker-name",
        )
    return value


def _missing(exc: aws.AwsError) -> bool:
    """SageMaker says "does not exist" as a ValidationException reading "Could not find ..."."""
    return exc.code == "ValidationException" and "could not find" in str(exc).lower()


def _slug(value: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", value).strip("-") or "model"


def resource_name(endpoint: str, version: str, digest: str) -> str:
    suffix = f"-v{_slug(version)}-{digest[:8]}"
    return check_name(endpoint[: 63 - len(suffix)].rstrip("-") + suffix, "name")


def package_model(model_dir: Path, archive: Path) -> str:
    """`model_dir` as a reproducible model.tar.gz (MLmodel at its root); its sha256."""
    if not (model_dir / "MLmodel").is_file():
        raise ValidationError(
            f"{model_dir} is not an MLflow model directory (no MLmodel file)",
            field="model",
            rule="mlflow-model",
        )

    def reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    # gzip's header records a time and a file name: mtime=0 and no name keep the digest
    # stable from run to run and place to place
    with (
        archive.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=raw, mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w") as tar,
    ):
        for path in sorted(model_dir.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(model_dir)), recursive=False, filter=reset)
    return hashlib.sha256(archive.read_bytes()).hexdigest()


@dataclass
class DeployResult:
    endpoint: str
    model: str
    version: str
    config: str
    action: Literal["created", "updated", "unchanged", "rolled back"]
    status: str
    previous_config: str | None = None
    previous_version: str | None = None
    model_data_url: str | None = None


class SageMakerTarget:
    """Deploys registered MLflow models to SageMaker endpoints."""

    def __init__(
        self,
        *,
        role_arn: str | None,
        image: str | None,
        bucket: str | None,
        instance_type: str = "ml.m5.large",
        instance_count: int = 1,
        region: str | None = None,
        client: Any = None,
        s3_client: Any = None,
        backoff: aws.Backoff = aws.DEFAULT_BACKOFF,
        poll_seconds: float = 15.0,
        keep: int = 2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        for value, name in (
            (role_arn, "EVENTOPS_AWS_SAGEMAKER_ROLE_ARN"),
            (image, "EVENTOPS_AWS_SAGEMAKER_IMAGE"),
            (bucket, "EVENTOPS_AWS_SAGEMAKER_BUCKET"),
        ):
            if not value:
                raise ConfigError(
                    f"SageMaker deployments need {name} (or its flag)", field=name, rule="required"
                )
        assert role_arn and image and bucket
        if not bucket.startswith("s3://") or len(bucket) <= len("s3://"):
            raise ConfigError(
                f"{bucket!r} is not an s3:// URI",
                field="EVENTOPS_AWS_SAGEMAKER_BUCKET",
                rule="s3-uri",
            )
        if instance_count < 1:
            raise ValidationError("at least one instance", field="instance_count", rule="min")
        self.role_arn, self.image, self.instance_type = role_arn, image, instance_type
        self.instance_count, self.backoff, self.poll_seconds = instance_count, backoff, poll_seconds
        self.keep, self.sleep = keep, sleep
        self.bucket, _, prefix = bucket.removeprefix("s3://").partition("/")
        self.prefix = prefix.strip("/")
        self.client = client if client is not None else aws.client("sagemaker", region=region)
        self.s3 = s3_client if s3_client is not None else aws.client("s3", region=region)
        self.retries = aws.RetryStats()

    def _call(self, method: str, **kwargs: Any) -> Any:
        return aws.call(
            getattr(self.client, method), what=f"sagemaker {method}", backoff=self.backoff,
            stats=self.retries, **kwargs,
        )  # fmt: skip

    # ------------------------------------------------------------------ model
    def upload(self, endpoint: str, model: str, version: str, model_dir: Path) -> tuple[str, str]:
        """Package and upload the model once; (model data URL, archive digest)."""
        with tempfile.TemporaryDirectory(prefix="eventops-sagemaker-") as scratch:
            archive = Path(scratch) / "model.tar.gz"
            digest = package_model(model_dir, archive)
            key = "/".join(
                p for p in (self.prefix, endpoint, f"{_slug(model)}-v{version}-{digest[:8]}",
                            "model.tar.gz") if p
            )  # fmt: skip
            try:
                head = aws.call(
                    self.s3.head_object, Bucket=self.bucket, Key=key, what="s3 head_object"
                )
                if head.get("Metadata", {}).get("sha256") == digest:
                    return f"s3://{self.bucket}/{key}", digest
            except aws.AwsError as exc:
                if exc.code not in ("404", "NoSuchKey", "NotFound"):
                    raise
            aws.call(
                self.s3.upload_file, str(archive), self.bucket, key,
                ExtraArgs={"Metadata": {"sha256": digest}}, what="s3 upload of the model archive",
            )  # fmt: skip
        return f"s3://{self.bucket}/{key}", digest

    def _ensure_model(self, name: str, model: str, version: str, data_url: str) -> None:
        try:
            self._call("describe_model", ModelName=name)
            return
        except aws.AwsError as exc:
            if not _missing(exc):
                raise
        self._call(
            "create_model",
            ModelName=name,
            ExecutionRoleArn=self.role_arn,
            PrimaryContainer={
                "Image": self.image,
                "ModelDataUrl": data_url,
                "Environment": {"EVENTOPS_MODEL_NAME": model, "EVENTOPS_MODEL_VERSION": version},
            },
            Tags=[{"Key": TAG_MODEL, "Value": model}, {"Key": TAG_VERSION, "Value": version}],
        )

    # ------------------------------------------------------------------ endpoints
    def current(self, endpoint: str) -> dict[str, Any] | None:
        """DescribeEndpoint, or None when there is no such endpoint."""
        try:
            answer: dict[str, Any] = self._call("describe_endpoint", EndpointName=endpoint)
            return answer
        except aws.AwsError as exc:
            if _missing(exc):
                return None
            raise

    def _tags(self, arn: str) -> dict[str, str]:
        answer = self._call("list_tags", ResourceArn=arn)
        return {t["Key"]: t["Value"] for t in answer.get("Tags", [])}

    def config_tags(self, config: str) -> dict[str, str]:
        arn = self._call("describe_endpoint_config", EndpointConfigName=config)["EndpointConfigArn"]
        return self._tags(arn)

    def deploy(
        self,
        endpoint: str,
        *,
        model: str,
        version: str,
        model_dir: Path,
        canary_percent: float | None = None,
        alarms: Sequence[str] = (),
        wait: bool = True,
        timeout: float = 1800.0,
    ) -> DeployResult:
        """Create or update `endpoint` to serve `model` version `version` (blue/green)."""
        check_name(endpoint, "endpoint")
        if canary_percent is not None and not 0 < canary_percent < 100:
            raise ValidationError("between 0 and 100, exclusive", field="canary", rule="range")
        data_url, digest = self.upload(endpoint, model, version, model_dir)
        name = resource_name(endpoint, version, digest)
        existing = self.current(endpoint)
        previous = existing["EndpointConfigName"] if existing else None
        if previous == name:
            log.info("sagemaker %s already serves %s v%s", endpoint, model, version)
            return DeployResult(endpoint, model, version, name, "unchanged",
                                str(existing and existing["EndpointStatus"]), previous, version,
                                data_url)  # fmt: skip
        previous_version = self.config_tags(previous).get(TAG_VERSION) if previous else None
        self._ensure_model(name, model, version, data_url)
        tags = [{"Key": TAG_MODEL, "Value": model}, {"Key": TAG_VERSION, "Value": version}]
        if previous:
            tags.append({"Key": TAG_PREVIOUS, "Value": previous})
        try:
            self._call(
                "create_endpoint_config",
                EndpointConfigName=name,
                ProductionVariants=[
                    {
                        "VariantName": VARIANT,
                        "ModelName": name,
                        "InstanceType": self.instance_type,
                        "InitialInstanceCount": self.instance_count,
                        "InitialVariantWeight": 1.0,
                    }
                ],
                Tags=tags,
            )
        except aws.AwsError as exc:  # a deploy of this version that was interrupted earlier
            if exc.code != "ValidationException" or "exist" not in str(exc).lower():
                raise
        if existing is None:
            self._call("create_endpoint", EndpointName=endpoint, EndpointConfigName=name, Tags=tags)
            action: Literal["created", "updated"] = "created"
        else:
            self._update(endpoint, name, canary_percent, alarms)
            action = "updated"
        status = self.wait(endpoint, timeout) if wait else "Updating"
        self.prune(endpoint, keep={name, *([previous] if previous else [])})
        log.info("sagemaker %s %s: %s v%s (%s)", endpoint, action, model, version, name)
        return DeployResult(endpoint, model, version, name, action, status, previous,
                            previous_version, data_url)  # fmt: skip

    def _update(
        self, endpoint: str, config: str, canary_percent: float | None, alarms: Sequence[str]
    ) -> None:
        routing: dict[str, Any] = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}
        if canary_percent is not None:
            routing = {
                "Type": "CANARY",
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": round(canary_percent)},
                "WaitIntervalInSeconds": 300,
            }
        deployment: dict[str, Any] = {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": routing,
                "TerminationWaitInSeconds": 300,
                "MaximumExecutionTimeoutInSeconds": 3600,
            }
        }
        if alarms:
            deployment["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in alarms]}
        self._call(
            "update_endpoint", EndpointName=endpoint, EndpointConfigName=config,
            DeploymentConfig=deployment,
        )  # fmt: skip

    def rollback(
        self, endpoint: str, *, wait: bool = True, timeout: float = 1800.0
    ) -> DeployResult:
        """Back to the configuration the current one replaced, blue/green."""
        existing = self.current(endpoint)
        if existing is None:
            raise ValidationError(f"no endpoint {endpoint!r}", field="endpoint", rule="exists")
        config = existing["EndpointConfigName"]
        tags = self.config_tags(config)
        previous = tags.get(TAG_PREVIOUS)
        if not previous:
            raise ValidationError(
                f"endpoint {endpoint!r} has no earlier configuration to go back to",
                field="endpoint",
                rule="has-previous",
            )
        back = self.config_tags(previous)
        self._update(endpoint, previous, None, ())
        status = self.wait(endpoint, timeout) if wait else "Updating"
        return DeployResult(
            endpoint, back.get(TAG_MODEL, ""), back.get(TAG_VERSION, ""), previous, "rolled back",
            status, config, tags.get(TAG_VERSION),
        )  # fmt: skip

    def wait(self, endpoint: str, timeout: float) -> str:
        """Poll until InService; Failed or the timeout raise `DeploymentFailed`."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self._call("describe_endpoint", EndpointName=endpoint)
            status = str(answer["EndpointStatus"])
            if status == "InService":
                return status
            if status not in PENDING:
                reason = answer.get("FailureReason", "no reason given")
                raise DeploymentFailed(
                    f"endpoint {endpoint} is {status}: {reason}", field="endpoint", rule=status
                )
            if time.monotonic() >= deadline:
                raise DeploymentFailed(
                    f"endpoint {endpoint} still {status} after {timeout:.0f}s",
                    field="endpoint",
                    rule="timeout",
                )
            self.sleep(self.poll_seconds)

    def prune(self, endpoint: str, *, keep: set[str]) -> list[str]:
        """Delete this endpoint's older configurations and models beyond the newest `keep`."""
        deleted: list[str] = []
        try:
            configs = self._call("list_endpoint_configs", NameContains=endpoint, MaxResults=100)
        except aws.AwsError as exc:
            log.info("not pruning %s: %s", endpoint, exc)
            return deleted
        ours = sorted(
            (c for c in configs.get("EndpointConfigs", [])
             if c["EndpointConfigName"].startswith(f"{endpoint}-v")),
            key=lambda c: c["CreationTime"], reverse=True,
        )  # fmt: skip
        for config in ours[self.keep :]:
            name = config["EndpointConfigName"]
            if name in keep:
                continue
            try:
                self._call("delete_endpoint_config", EndpointConfigName=name)
                self._call("delete_model", ModelName=name)
                deleted.append(name)
            except aws.AwsError as exc:
                log.info("could not delete %s: %s", name, exc)
        return deleted

    # ------------------------------------------------------------------ batch transform
    def batch_transform(
        self,
        job: str,
        *,
        endpoint: str,
        model: str,
        version: str,
        model_dir: Path,
        input_s3: str,
        output_s3: str,
        content_type: str = "text/csv",
        split_type: Literal["Line", "None"] = "Line",
        instance_type: str | None = None,
        wait: bool = False,
        timeout: float = 3600.0,
    ) -> dict[str, Any]:
        """A transform job scoring `input_s3` into `output_s3` with the same model artifacts."""
        check_name(job, "job")
        for uri, field in ((input_s3, "input"), (output_s3, "output")):
            if not uri.startswith("s3://"):
                raise ValidationError(f"{uri!r} is not an s3:// URI", field=field, rule="s3-uri")
        data_url, digest = self.upload(endpoint, model, version, model_dir)
        name = resource_name(endpoint, version, digest)
        self._ensure_model(name, model, version, data_url)
        self._call(
            "create_transform_job",
            TransformJobName=job,
            ModelName=name,
            TransformInput={
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_s3}},
                "ContentType": content_type,
                "SplitType": split_type,
            },
            TransformOutput={"S3OutputPath": output_s3, "Accept": content_type,
                             "AssembleWith": "Line" if split_type == "Line" else "None"},
            TransformResources={"InstanceType": instance_type or self.instance_type,
                                "InstanceCount": self.instance_count},
            Tags=[{"Key": TAG_MODEL, "Value": model}, {"Key": TAG_VERSION, "Value": version}],
        )  # fmt: skip
        if not wait:
            return {"job": job, "model": name, "status": "InProgress"}
        deadline = time.monotonic() + timeout
        while True:
            answer = self._call("describe_transform_job", TransformJobName=job)
            status = str(answer["TransformJobStatus"])
            if status == "Completed":
                return {"job": job, "model": name, "status": status}
            if status not in TRANSFORM_PENDING:
                raise DeploymentFailed(
                    f"transform job {job} is {status}: {answer.get('FailureReason', '')}",
                    field="job",
                    rule=status,
                )
            if time.monotonic() >= deadline:
                raise DeploymentFailed(f"transform job {job} still {status}", field="job",
                                       rule="timeout")  # fmt: skip
            self.sleep(self.poll_seconds)


__all__ = [
    "DeployResult",
    "DeploymentFailed",
    "SageMakerTarget",
    "check_name",
    "package_model",
    "resource_name",
]
