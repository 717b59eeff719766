"""Error types shared by every layer.

Each error carries the *field* it concerns and the *rule* that was broken, so the CLI and the
API can map it once to a message and an exit / HTTP status code instead of parsing strings.
"""

from __future__ import annotations


class EventOpsError(Exception):
    """Base class: anything EventOps raises on purpose derives from it."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str, *, field: str | None = None, rule: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.rule = rule

    def __str__(self) -> str:
        if self.field:
            return f"{self.field}: {self.message}"
        return self.message


class ValidationError(EventOpsError):
    """Input broke a declared rule (a bad event, a malformed setting, a bad record)."""

    exit_code = 2
    http_status = 422


class ConfigError(ValidationError):
    """The configuration (eventops.toml or EVENTOPS_* variables) is invalid."""


class NotFound(EventOpsError):
    exit_code = 3
    http_status = 404


class BackendUnavailable(EventOpsError):
    """A backend service (broker, database) could not be reached or refused the operation."""

    exit_code = 4
    http_status = 503


class PublishError(BackendUnavailable):
    """The bus did not confirm that every event was stored; the caller must retry."""
