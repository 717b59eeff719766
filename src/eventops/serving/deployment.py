"""`Deployment`: how a project declares a model server.

    deployments = [
        Deployment(name="churn-api", model="churn", alias="champion", mode="canary",
                   canary_percent=10, challenger_alias="challenger", capture_sample=1.0,
                   max_batch_size=64, max_wait_ms=5, port=8080, workers=1),
    ]

A deployment serves ``models:/<model>@<alias>`` and follows that alias: when the registry moves
it (``model.version.promoted`` / ``model.version.rolled_back``), the server loads the new
version beside the old one and swaps. ``mode`` says what the challenger alias does: nothing
(``single``), answer ``canary_percent`` % of requests (``canary``), or score every request off
the request path for comparison, its answers captured but never returned (``shadow``).

A declaration that cannot work is refused when it is built, with an `eventops.errors.
ValidationError` whose field names the deployment and the setting
(``deployments.churn-api.canary_percent``) and whose rule says what was broken.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from eventops.errors import ValidationError

Mode = Literal["single", "canary", "shadow"]
NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
ALIAS_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$"


class Deployment(BaseModel):
    """A model server: which model alias it serves, how traffic is split, batched and captured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="lowercase letters, digits, - and _")
    model: str = Field(min_length=1, description="registered model name in MLflow")
    alias: str = Field("champion", pattern=ALIAS_PATTERN, description="the alias served")
    mode: Mode = "single"
    canary_percent: float = Field(10.0, ge=0, le=100, description="canary: challenger's share")
    challenger_alias: str = Field("challenger", pattern=ALIAS_PATTERN)
    capture_sample: float = Field(1.0, ge=0, le=1, description="share of requests captured")
    capture_flush_rows: int = Field(1000, ge=1, description="flush the capture every N rows")
    capture_flush_seconds: float = Field(10.0, gt=0, description="... or every T seconds")
    max_batch_size: int = Field(64, ge=1, le=1_000_000, description="rows per predict call")
    max_wait_ms: float = Field(5.0, ge=0, le=60_000, description="wait for a batch to fill")
    poll_seconds: float = Field(30.0, gt=0, description="registry poll, the bus's backstop")
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8080, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    protect_predictions: bool = Field(
        False, description="require the bearer token (EVENTOPS_TOKEN) on prediction routes too"
    )

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except PydanticValidationError as exc:
            raise _named_error(exc, data.get("name")) from None

    @model_validator(mode="after")
    def _challenger(self) -> Deployment:
        if self.mode != "single" and self.challenger_alias == self.alias:
            raise ValidationError(
                f"must differ from alias ({self.alias!r}) in {self.mode} mode",
                field=f"deployments.{self.name}.challenger_alias",
                rule="distinct-alias",
            )
        return self

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model}@{self.alias}"

    @property
    def challenger_uri(self) -> str | None:
        if self.mode == "single":
            return None
        return f"models:/{self.model}@{self.challenger_alias}"

    @property
    def capture_dataset(self) -> str:
        """The lake dataset of captured predictions: ``predictions_<name>`` with - as _."""
        return capture_dataset_name(self.name)


def capture_dataset_name(deployment: str) -> str:
    return "predictions_" + re.sub(r"[^a-z0-9_]", "_", deployment.lower())


def _named_error(exc: PydanticValidationError, name: object) -> ValidationError:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    who = name if isinstance(name, str) and name else "?"
    field = f"deployments.{who}.{where}" if where else f"deployments.{who}"
    message = err["msg"].removeprefix("Value error, ")
    rule = "known-field" if err["type"] == "extra_forbidden" else err["type"]
    return ValidationError(message, field=field, rule=rule)


__all__ = ["Deployment", "Mode", "capture_dataset_name"]
