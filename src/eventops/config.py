"""Settings: one `eventops.toml` plus `EVENTOPS_*` environment variables (the environment wins).

Embedded defaults live under `./.eventops/` so that a fresh checkout runs with no server. The
environment is mapped by section: `EVENTOPS_BUS_URL` sets `[bus] url`, `EVENTOPS_STORE_URL` sets
`[store] url`, `EVENTOPS_HOME` sets `home`. Unknown keys in the file *and* unknown `EVENTOPS_*`
variables are errors: a typo that silently falls back to a default is the worst kind of bug in a
deployment. (That is why this is a small loader over pydantic models rather than
pydantic-settings, which ignores unknown variables.)

Secrets are never part of these settings: the Kafka SASL password comes from
`EVENTOPS_KAFKA_SASL_PASSWORD` or the file named by `EVENTOPS_KAFKA_SASL_PASSWORD_FILE`, and a
password inside a URL is redacted whenever settings are shown.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from eventops.errors import ConfigError

CONFIG_FILE = "eventops.toml"
ENV_PREFIX = "EVENTOPS_"
# Variables read elsewhere on purpose (secrets and the config file's own location).
NON_SETTING_VARIABLES = frozenset(
    {
        "EVENTOPS_CONFIG",
        "EVENTOPS_KAFKA_SASL_PASSWORD",
        "EVENTOPS_KAFKA_SASL_PASSWORD_FILE",
        "EVENTOPS_TOKEN",
    }
)
BUS_SCHEMES = ("sqlite", "kafka", "kafka+ssl")
STORE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "postgres")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BusSettings(_Section):
    url: str | None = Field(None, description="sqlite:///path/events.db or kafka://host:port,...")
    partitions: int = Field(4, ge=1, description="partitions of each topic the bus creates")
    retention_age: str | None = Field("7d", description="SQLite bus: drop events older than this")
    retention_bytes: str | None = Field(
        None, description="SQLite bus: keep the log under this size"
    )
    session_timeout: str = Field("10s", description="consumer-group session timeout")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, BUS_SCHEMES, "bus.url")


class StoreSettings(_Section):
    url: str | None = Field(None, description="sqlite:///path.db or postgresql://user@host/db")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, STORE_SCHEMES, "store.url")


class LakeSettings(_Section):
    url: str | None = Field(None, description="root of the data lake: a folder, s3://bucket/prefix")


class PipelineSettings(_Section):
    executor: str = Field(
        "local", description="local (process per step), inline, ray (local Ray), ray://host:port"
    )

    @field_validator("executor")
    @classmethod
    def _executor(cls, value: str) -> str:
        if value in ("local", "inline", "ray", "ray+auto") or value.startswith("ray://"):
            return value
        raise ConfigError(
            f"unknown executor {value!r}; use local, inline, ray, ray+auto or ray://host:port",
            field="pipelines.executor",
            rule="executor",
        )


class TrackingSettings(_Section):
    uri: str | None = Field(None, description="MLflow tracking URI (default: SQLite under home)")


class AuthSettings(_Section):
    """OpenID Connect bearer tokens (e.g. Cognito) accepted beside EventOps API tokens.

    Only signature-verified tokens from `oidc_issuer` for `oidc_audience` are accepted; the role
    comes from the `oidc_role_claim` claim, a string or a list (Cognito: `cognito:groups`),
    mapped through `oidc_roles` (claim value -> viewer|operator|admin; values that are role
    names map to themselves). No mapped value: 403, never a default role.
    """

    oidc_issuer: str | None = Field(None, description="issuer URL; setting it turns OIDC on")
    oidc_audience: str | None = Field(None, description="expected `aud` (or `client_id`) claim")
    oidc_jwks_url: str | None = Field(
        None, description="JWKS URL (default: <issuer>/.well-known/jwks.json)"
    )
    oidc_role_claim: str = Field("roles", description="claim holding the role or groups")
    oidc_roles: dict[str, str] = Field(
        default_factory=dict, description="claim value -> role; env: `group=role,group=role`"
    )
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256"])

    @field_validator("oidc_roles", mode="before")
    @classmethod
    def _roles(cls, value: Any) -> Any:
        if isinstance(value, str):  # from EVENTOPS_AUTH_OIDC_ROLES
            pairs = [p.strip() for p in value.split(",") if p.strip()]
            out: dict[str, str] = {}
            for pair in pairs:
                key, sep, role = pair.partition("=")
                if not sep or not key.strip():
                    raise ConfigError(
                        f"{pair!r} is not claim-value=role", field="auth.oidc_roles", rule="pairs"
                    )
                out[key.strip()] = role.strip()
            value = out
        if isinstance(value, dict):
            for key, role in value.items():
                if role not in ("viewer", "operator", "admin"):
                    raise ConfigError(
                        f"{key!r} maps to unknown role {role!r}; use viewer, operator or admin",
                        field=f"auth.oidc_roles.{key}",
                        rule="one-of",
                    )
        return value

    @field_validator("oidc_algorithms", mode="before")
    @classmethod
    def _algorithms(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        for name in value:
            if not str(name).startswith(("RS", "ES", "PS")):  # never HS*/none: no shared secret
                raise ConfigError(
                    f"algorithm {name!r} is not an asymmetric one (RS*, ES*, PS*)",
                    field="auth.oidc_algorithms",
                    rule="asymmetric",
                )
        return value

    @property
    def jwks_url(self) -> str | None:
        if self.oidc_jwks_url:
            return self.oidc_jwks_url
        if self.oidc_issuer:
            return self.oidc_issuer.rstrip("/") + "/.well-known/jwks.json"
        return None


def _patterns(value: Any) -> Any:
    """A list of event type patterns; from the environment, comma-separated."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return value


class AwsSettings(_Section):
    """The AWS integrations (docs/aws.md). Each one is off until its target is named here.

    Credentials and endpoints are never settings: boto3 reads credentials from its own chain
    (environment, profile, IRSA or instance role) and `AWS_ENDPOINT_URL[_<SERVICE>]` points a
    client at a stand-in, so the same configuration runs against AWS and against a test server.
    """

    region: str | None = Field(
        None, description="region (default: AWS_REGION / AWS_DEFAULT_REGION)"
    )
    eventbridge_bus: str | None = Field(
        None, description="EventBridge bus (name or ARN) that platform events are put on"
    )
    eventbridge_types: list[str] = Field(
        default_factory=lambda: [
            "dataset.batch.*",
            "pipeline.run.*",
            "model.version.*",
            "deployment.*",
            "monitor.drift.detected",
            "monitor.performance.degraded",
            "alert.*",
        ],
        description="event type patterns put on the EventBridge bus",
    )
    eventbridge_source: str = Field("eventops", description="`source` of every EventBridge entry")
    kinesis_stream: str | None = Field(
        None, description="Kinesis stream (name or ARN) that platform events are put on"
    )
    kinesis_types: list[str] = Field(
        default_factory=lambda: ["*"], description="event type patterns put on the stream"
    )
    cloudwatch_namespace: str | None = Field(
        None, description="CloudWatch namespace for serving and monitoring metrics"
    )
    cloudwatch_interval: str = Field("60s", description="how often metrics are put")
    sagemaker_role_arn: str | None = Field(None, description="execution role of SageMaker models")
    sagemaker_image: str | None = Field(None, description="serving image URI (ECR)")
    sagemaker_bucket: str | None = Field(
        None, description="s3://bucket/prefix where model archives for SageMaker are written"
    )
    sagemaker_instance_type: str = Field("ml.m5.large", description="endpoint instance type")

    _eventbridge_types = field_validator("eventbridge_types", mode="before")(_patterns)
    _kinesis_types = field_validator("kinesis_types", mode="before")(_patterns)


class Settings(_Section):
    home: Path = Field(Path(".eventops"), description="folder for the embedded defaults")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    project: str | None = Field(None, description="the project module: a .py file or a package")
    bus: BusSettings = BusSettings()
    store: StoreSettings = StoreSettings()
    lake: LakeSettings = LakeSettings()
    pipelines: PipelineSettings = PipelineSettings()
    tracking: TrackingSettings = TrackingSettings()
    auth: AuthSettings = AuthSettings()
    aws: AwsSettings = AwsSettings()

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or f"sqlite:///{self.home}/mlflow.db"

    @property
    def bus_url(self) -> str:
        return self.bus.url or f"sqlite:///{self.home}/events.db"

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.home}/eventops.db"

    @property
    def lake_url(self) -> str:
        return self.lake.url or str(self.home / "lake")

    def effective(self) -> dict[str, Any]:
        """Every setting with defaults filled in and passwords redacted, for display."""
        data = self.model_dump(mode="json")
        data["bus"]["url"] = redact_url(self.bus_url)
        data["store"]["url"] = redact_url(self.store_url)
        data["lake"]["url"] = redact_url(self.lake_url)
        data["tracking"]["uri"] = redact_url(self.tracking_uri)
        secret = bool(
            os.environ.get("EVENTOPS_KAFKA_SASL_PASSWORD")
            or os.environ.get("EVENTOPS_KAFKA_SASL_PASSWORD_FILE")
        )
        data["bus"]["sasl_password"] = "***" if secret else None
        return data


def check_url(value: str, schemes: tuple[str, ...], field: str) -> str:
    """Reject a URL whose scheme is unknown or whose host part cannot be parsed."""
    try:
        parts = urlsplit(value)
        hosts = parts.netloc.rsplit("@", 1)[-1]
        for host in filter(None, hosts.split(",")):
            _, _, port = host.rpartition(":")
            if ":" in host and not (port.isascii() and port.isdigit()):
                raise ValueError(f"port {port!r} is not a number")
    except ValueError as exc:
        raise ConfigError(
            f"malformed URL {redact_url(value)!r}: {exc}", field=field, rule="url"
        ) from None
    if parts.scheme not in schemes:
        raise ConfigError(
            f"unsupported scheme {parts.scheme!r} in {redact_url(value)!r}; "
            f"expected one of {', '.join(schemes)}",
            field=field,
            rule="url-scheme",
        )
    if parts.scheme.startswith("kafka") and not hosts:
        raise ConfigError("a Kafka URL needs host:port", field=field, rule="url-host")
    if parts.scheme == "sqlite" and len(parts.path) < 2:
        raise ConfigError(
            "a SQLite URL needs a file path: sqlite:///relative.db or sqlite:////absolute.db",
            field=field,
            rule="url-path",
        )
    return value


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{host}"))


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    sections = {name for name, f in Settings.model_fields.items() if _is_section(f.annotation)}
    out: dict[str, Any] = {}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or var in NON_SETTING_VARIABLES:
            continue
        name = var[len(ENV_PREFIX) :].lower()
        section = next((s for s in sections if name.startswith(s + "_")), None)
        if section is not None:
            key = name[len(section) + 1 :]
            if key not in Settings.model_fields[section].annotation.model_fields:  # type: ignore[union-attr]
                raise ConfigError(
                    f"unknown setting variable {var}", field=f"{section}.{key}", rule="known-key"
                )
            out.setdefault(section, {})[key] = value
        elif name in Settings.model_fields and name not in sections:
            out[name] = value
        else:
            raise ConfigError(f"unknown setting variable {var}", field=name, rule="known-key")
    return out


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, _Section)


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def config_path(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if "EVENTOPS_CONFIG" in environ:
        return Path(environ["EVENTOPS_CONFIG"])
    return (cwd or Path.cwd()) / CONFIG_FILE


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the file (if present), overlay the environment, validate everything."""
    environ = os.environ if environ is None else environ
    path = path or config_path(environ)
    from_file: dict[str, Any] = {}
    if path.exists():
        try:
            from_file = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"{path} is not valid TOML: {exc}", field=str(path), rule="toml"
            ) from None
    elif "EVENTOPS_CONFIG" in environ:
        raise ConfigError(
            f"config file {path} does not exist", field="EVENTOPS_CONFIG", rule="exists"
        )
    merged = _merge(from_file, _env_overrides(environ))
    try:
        return Settings.model_validate(merged)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, ConfigError):
            raise cause from None
        rule = "known-key" if err["type"] == "extra_forbidden" else err["type"]
        message = "unknown setting" if rule == "known-key" else err["msg"]
        raise ConfigError(
            f"{message} (in {path.name} or EVENTOPS_*)", field=loc, rule=rule
        ) from None
