"""EventOps: an event-driven MLOps platform."""

from eventops.errors import (
    BackendUnavailable,
    ConfigError,
    EventOpsError,
    NotFound,
    PublishError,
    ValidationError,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "EventOpsError",
    "NotFound",
    "PublishError",
    "ValidationError",
    "__version__",
]
