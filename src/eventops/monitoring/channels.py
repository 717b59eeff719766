"""Alert channels: where a notification goes (Slack, a signed webhook, the log) and how.

A channel is a declaration in a project (`Slack`, `Webhook`, `Log`) that names its secrets by
the environment variable or file holding them (`*_env`, `*_file`), never by value: a project
file is code that ends up in git and in `eventops apply`'s recorded definition. Secrets are read
when a message is sent (so a rotated file mount is picked up) and checked once when the alert
service starts (`Channel.check`), so a missing one fails the start, naming the variable.

`deliver` makes a bounded number of attempts with exponential backoff and raises
`DeliveryError` when they are spent; the alert service records that error on the alert's state
and retries later, so a failed delivery is never dropped silently.

HTTP goes through `httpx.HTTPTransport` directly rather than `httpx.Client`: the client logs
every request's full URL at INFO, and a Slack incoming-webhook URL *is* the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from eventops.errors import BackendUnavailable, ConfigError, ValidationError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-EventOps-Signature"
TIMESTAMP_HEADER = "X-EventOps-Timestamp"
DELIVERY_HEADER = "X-EventOps-Delivery"
USER_AGENT = "eventops-alerts/1"
MAX_ERROR_CHARS = 500
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_FIELDS = {"webhook_url", "secret", "token", "password", "api_key"}


class DeliveryError(BackendUnavailable):
    """A channel did not accept a message; `retryable` is False for a refusal that the same
    request will meet again (a revoked Slack hook, a 400), which only a person can fix."""

    def __init__(self, message: str, *, channel: str, retryable: bool = True) -> None:
        super().__init__(message, field=channel, rule="delivered")
        self.retryable = retryable


@dataclass(frozen=True)
class AlertMessage:
    """One notification as every channel renders it. `id` is stable across re-deliveries, so
    a receiver can drop the duplicates that at-least-once delivery implies."""

    id: str
    rule: str
    severity: str
    status: Literal["firing", "resolved"]
    summary: str
    group: str
    since: str  # RFC 3339: when the alert started firing (or resolved)
    count: int = 1  # matching events seen since it fired
    notification: int = 1  # 1 for the first message of a firing, 2+ for "still firing"
    event: dict[str, Any] = field(default_factory=dict)  # the causing event, CloudEvents JSON
    test: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AlertMessage:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# ---------------------------------------------------------------------- signatures
def sign(secret: str | bytes, body: bytes, timestamp: str) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``<timestamp>.<body>`` (the timestamp is signed so
    that a captured request cannot be replayed later with a fresh timestamp)."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str | bytes,
    body: bytes,
    timestamp: str,
    header: str,
    tolerance: float = 300.0,
    *,
    now: float | None = None,
) -> bool:
    """True when `header` signs this exact `body` and `timestamp` and the timestamp is within
    `tolerance` seconds of `now` (default: the current time). Constant-time comparison."""
    try:
        sent = float(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header.strip())


# ---------------------------------------------------------------------- secrets
def read_secret(
    env: str | None, file: str | None, *, field: str, environ: Mapping[str, str]
) -> str:
    """The secret from the variable `env` or the file `file`; a ConfigError naming the variable
    or file (never the value) when it is missing or empty."""
    if env:
        value = environ.get(env, "").strip()
        if not value:
            raise ConfigError(
                f"environment variable {env} is not set or empty", field=field, rule="secret-set"
            )
        return value
    if file:
        try:
            value = Path(file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read secret file {file}: {exc.strerror or type(exc).__name__}",
                field=field,
                rule="secret-set",
            ) from None
        if not value:
            raise ConfigError(f"secret file {file} is empty", field=field, rule="secret-set")
        return value
    raise ConfigError("no secret named", field=field, rule="secret-set")


def _scrub(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text[:MAX_ERROR_CHARS]


def _check_url(url: str, where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("not an http(s) URL", field=where, rule="url")
    if parts.password is not None or parts.username is not None:
        raise ConfigError(
            "credentials do not belong in a declared URL; use url_env= or url_file=",
            field=where,
            rule="secret-from-env",
        )


# ---------------------------------------------------------------------- channels
class _Channel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout: float = Field(5.0, gt=0, le=120, description="seconds per HTTP attempt")
    max_attempts: int = Field(3, ge=1, le=10, description="attempts per delivery")
    backoff: float = Field(0.5, ge=0, le=60, description="first retry delay, doubled each time")

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except PydanticValidationError as exc:
            raise _channel_error(exc, type(self)._kind()) from None

    @classmethod
    def _kind(cls) -> str:
        return cls.__name__.lower()

    @model_validator(mode="after")
    def _env_names(self) -> _Channel:
        for name, value in self:
            where = f"{self._kind()}.{name}"
            if name.endswith("_env") and value is not None and not ENV_NAME.match(value):
                raise ValidationError(
                    f"{value!r} is not an environment variable name", field=where, rule="env-name"
                )
            if name.endswith("_env") and value and value.upper().startswith("EVENTOPS_"):
                raise ValidationError(
                    "EVENTOPS_* variables are settings (unknown ones are refused); name the "
                    "secret's variable otherwise, e.g. SLACK_WEBHOOK_URL",
                    field=where,
                    rule="env-name",
                )
        return self

    def check(self, environ: Mapping[str, str]) -> None:
        """Raise ConfigError if a secret this channel needs is missing."""

    def describe(self) -> str:
        return self._kind()

    def send(self, message: AlertMessage, poster: Poster, environ: Mapping[str, str]) -> None:
        raise NotImplementedError


class Slack(_Channel):
    """A Slack incoming webhook (its URL is the secret); the message uses Block Kit."""

    kind: Literal["slack"] = "slack"
    webhook_url_env: str | None = None
    webhook_url_file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Slack:
        if bool(self.webhook_url_env) == bool(self.webhook_url_file):
            raise ValidationError(
                "give exactly one of webhook_url_env or webhook_url_file",
                field="slack.webhook_url_env",
                rule="one-source",
            )
        return self

    def _url(self, environ: Mapping[str, str]) -> str:
        where = "webhook_url_env" if self.webhook_url_env else "webhook_url_file"
        url = read_secret(self.webhook_url_env, self.webhook_url_file, field=where, environ=environ)
        _check_url(url, where)
        return url

    def check(self, environ: Mapping[str, str]) -> None:
        self._url(environ)

    def describe(self) -> str:
        return f"slack ({self.webhook_url_env or self.webhook_url_file})"

    def send(self, message: AlertMessage, poster: Poster, environ: Mapping[str, str]) -> None:
        url = self._url(environ)
        body = orjson.dumps(slack_payload(message))
        poster.post(url, body, {}, timeout=self.timeout, channel="slack", secrets=(url,))


class Webhook(_Channel):
    """A JSON POST signed with HMAC-SHA256 (see `verify_signature` and docs/alerts.md)."""

    kind: Literal["webhook"] = "webhook"
    url: str | None = None
    url_env: str | None = None  # for URLs that carry a token
    url_file: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None

    @model_validator(mode="after")
    def _sources(self) -> Webhook:
        if sum(bool(v) for v in (self.url, self.url_env, self.url_file)) != 1:
            raise ValidationError(
                "give exactly one of url, url_env or url_file",
                field="webhook.url",
                rule="one-source",
            )
        if bool(self.secret_env) == bool(self.secret_file):
            raise ValidationError(
                "give exactly one of secret_env or secret_file (the secret signs each body)",
                field="webhook.secret_env",
                rule="one-source",
            )
        if self.url:
            _check_url(self.url, "webhook.url")
        return self

    def _target(self, environ: Mapping[str, str]) -> tuple[str, str]:
        if self.url:
            url = self.url
        else:
            where = "url_env" if self.url_env else "url_file"
            url = read_secret(self.url_env, self.url_file, field=where, environ=environ)
            _check_url(url, where)
        where = "secret_env" if self.secret_env else "secret_file"
        return url, read_secret(self.secret_env, self.secret_file, field=where, environ=environ)

    def check(self, environ: Mapping[str, str]) -> None:
        self._target(environ)

    def describe(self) -> str:
        return f"webhook ({self.url or self.url_env or self.url_file})"

    def send(self, message: AlertMessage, poster: Poster, environ: Mapping[str, str]) -> None:
        url, secret = self._target(environ)
        body = orjson.dumps(webhook_payload(message))
        timestamp = str(int(time.time()))
        headers = {
            SIGNATURE_HEADER: sign(secret, body, timestamp),
            TIMESTAMP_HEADER: timestamp,
            DELIVERY_HEADER: message.id,
        }
        hidden = (secret,) if self.url else (secret, url)
        poster.post(url, body, headers, timeout=self.timeout, channel="webhook", secrets=hidden)


class Log(_Channel):
    """A structured log record (logger `eventops.alerts` by default); never fails."""

    kind: Literal["log"] = "log"
    level: Literal["debug", "info", "warning", "error", "critical"] = "warning"
    logger: str = Field("eventops.alerts", min_length=1)

    def send(self, message: AlertMessage, poster: Poster, environ: Mapping[str, str]) -> None:
        fields = {k: v for k, v in message.to_json().items() if k != "event"}
        fields["event_id"] = message.event.get("id")
        logging.getLogger(self.logger).log(
            logging.getLevelNamesMapping()[self.level.upper()],
            "alert %s: %s [%s] %s (group %s)",
            message.status, message.rule, message.severity, message.summary, message.group,
            extra={"eventops_alert": fields},
        )  # fmt: skip


Channel = Annotated[Slack | Webhook | Log, Field(discriminator="kind")]


def _channel_error(exc: PydanticValidationError, kind: str) -> ValidationError:
    err = exc.errors()[0]
    name = ".".join(str(p) for p in err["loc"])
    where = f"{kind}.{name}" if name else kind
    if err["type"] == "extra_forbidden" and str(err["loc"][-1]) in SECRET_FIELDS | {"url"}:
        return ValidationError(
            "secrets are never written in a declaration: put the value in an environment "
            "variable or a file and name it (e.g. webhook_url_env=, secret_env=, url_env=)",
            field=where,
            rule="secret-from-env",
        )
    rule = "known-field" if err["type"] == "extra_forbidden" else err["type"]
    return ValidationError(err["msg"].removeprefix("Value error, "), field=where, rule=rule)


# ---------------------------------------------------------------------- HTTP
class Poster:
    """POSTs bodies over one connection pool without logging URLs; raises DeliveryError."""

    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self.transport = transport or httpx.HTTPTransport(retries=0)

    def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout: float,
        channel: str,
        secrets: tuple[str, ...] = (),
    ) -> None:
        request = httpx.Request(
            "POST",
            url,
            content=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            extensions={"timeout": httpx.Timeout(timeout).as_dict()},
        )
        try:
            response = self.transport.handle_request(request)
            try:
                text = response.read()[:200].decode(errors="replace")
            finally:
                response.close()
        except httpx.HTTPError as exc:
            reason = _scrub(f"{type(exc).__name__}: {exc}", *secrets)
            raise DeliveryError(reason, channel=channel) from None
        if 200 <= response.status_code < 300:
            return
        retryable = response.status_code in (408, 425, 429) or response.status_code >= 500
        reason = _scrub(f"HTTP {response.status_code}: {text.strip()}", *secrets)
        raise DeliveryError(reason, channel=channel, retryable=retryable)

    def close(self) -> None:
        self.transport.close()


def deliver(
    channel: Slack | Webhook | Log,
    message: AlertMessage,
    poster: Poster,
    environ: Mapping[str, str],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Send with up to `channel.max_attempts` attempts; returns the attempts used, raises the
    last DeliveryError (or a ConfigError for a secret that went missing) when none succeeded."""
    attempt = 0
    while True:
        attempt += 1
        try:
            channel.send(message, poster, environ)
            return attempt
        except DeliveryError as exc:
            if not exc.retryable or attempt >= channel.max_attempts:
                exc.message = f"{exc.message} (after {attempt} attempt(s))"
                raise
            sleep(min(channel.backoff * 2 ** (attempt - 1), 30.0))


# ---------------------------------------------------------------------- rendering
def webhook_payload(message: AlertMessage) -> dict[str, Any]:
    """The generic webhook's JSON body: the documented keys first, then context."""
    body = message.to_json()
    head = {k: body.pop(k) for k in ("rule", "severity", "status", "summary", "event")}
    return {**head, **body}


def _mrkdwn(text: object) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _subject_field(message: AlertMessage, data: Mapping[str, Any]) -> tuple[str, str]:
    for key, label in (("monitor", "Monitor"), ("deployment", "Deployment")):
        if data.get(key):
            return label, str(data[key])
    return "Group", message.group


def _detail_field(message: AlertMessage, data: Mapping[str, Any]) -> tuple[str, str]:
    columns = data.get("drifted_columns")
    if isinstance(columns, list) and columns:
        shown = ", ".join(str(c) for c in columns[:10])
        more = f" (+{len(columns) - 10} more)" if len(columns) > 10 else ""
        return "Drifted columns", shown + more
    if data.get("metric") is not None:
        text = f"{data['metric']} = {data.get('value', '?')}"
        bounds = [f"{b} {data[b]}" for b in ("min", "max", "threshold") if data.get(b) is not None]
        return "Metric", text + (f" ({', '.join(bounds)})" if bounds else "")
    metrics = data.get("metrics")
    if isinstance(metrics, Mapping) and metrics:
        return "Metrics", ", ".join(f"{k}={v}" for k, v in list(metrics.items())[:6])
    return "Event", str(message.event.get("type", "?"))


def slack_payload(message: AlertMessage) -> dict[str, Any]:
    """Block Kit: a header, the summary with fields, and a context line with the event ids."""
    raw = message.event.get("data")
    data: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    state = message.status.upper()
    if message.status == "firing" and message.notification > 1:
        state = "STILL FIRING"
    if message.test:
        state = f"TEST {state}"
    title = f"{state}: {message.rule} ({message.severity})"
    fields = [
        ("Rule", message.rule),
        ("Severity", message.severity),
        _subject_field(message, data),
        _detail_field(message, data),
        ("Time", str(message.event.get("time") or message.since)),
    ]
    context = f"event `{_mrkdwn(message.event.get('id', '-'))}`"
    if message.event.get("correlationid"):
        context += f" · correlation `{_mrkdwn(message.event['correlationid'])}`"
    context += f" · group `{_mrkdwn(message.group)}` · seen {message.count}x"
    return {
        "text": f"[{state}] {message.rule} ({message.severity}): {message.summary}"[:3000],
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _mrkdwn(message.summary or title)[:3000]},
                "fields": [
                    {"type": "mrkdwn", "text": f"*{label}*\n{_mrkdwn(value)}"[:2000]}
                    for label, value in fields
                ],
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context[:3000]}]},
        ],
    }


__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AlertMessage",
    "Channel",
    "DeliveryError",
    "Log",
    "Poster",
    "Slack",
    "Webhook",
    "deliver",
    "read_secret",
    "sign",
    "slack_payload",
    "verify_signature",
    "webhook_payload",
]
